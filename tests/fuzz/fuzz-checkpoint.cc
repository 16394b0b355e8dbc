// A Hugging Face checkpoint from untrusted bytes, converted and run:
// convert_checkpoint (config.json, the safetensors header and tensors,
// pruning, quantisation, the planner), then Model::open on its output and
// two greedy tokens.
//
// Input: one byte choosing the conversion (bits 0-1 the dtype, bit 2
// pruning to 50 %, bits 3-5 the format), a little-endian u32 length, that
// many bytes of config.json, and the rest as model.safetensors.
#include <cstring>
#include <fstream>

#include "sparse/error.h"
#include "tests/fuzz/fuzz-input.h"

namespace {

using namespace lacuna;

void write_file(const std::filesystem::path& path, std::string_view bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!out) throw std::runtime_error("cannot write " + path.string());
}

ConvertOptions options_from(uint8_t choice) {
  ConvertOptions o;
  o.dtype = kAllDTypes[(choice & 3) % std::size(kAllDTypes)];
  o.sparsity = choice & 4 ? 0.5 : 0.0;
  if (o.sparsity > 0) o.prune = PruneMethod::magnitude;
  const unsigned format = (choice >> 3) & 7;
  if (format < std::size(kAllFormats)) o.format = kAllFormats[format];
  return o;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 5) return 0;
  uint32_t config_bytes;
  std::memcpy(&config_bytes, data + 1, sizeof config_bytes);
  const std::string_view rest = fuzzing::as_text(data + 5, size - 5);
  const std::string_view config = rest.substr(0, config_bytes), weights = rest.substr(config.size());

  const std::filesystem::path dir = testing::scratch() / "checkpoint";
  std::filesystem::create_directories(dir);
  write_file(dir / "config.json", config);
  write_file(dir / "model.safetensors", weights);
  const std::string out = (testing::scratch() / "checkpoint.lacuna").string();
  try {
    convert_checkpoint(dir.string(), out, options_from(data[0]));
    fuzzing::generate_two_tokens(Model::open(out));
  } catch (const Error&) {
  }
  return 0;
}
