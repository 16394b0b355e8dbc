// A Hugging Face checkpoint from untrusted bytes, converted and run:
// convert_checkpoint (config.json, the safetensors headers and tensors, one
// file or shards and their index, the tokenizer, pruning, quantisation, the
// planner), then Model::open on its output and two greedy tokens.
//
// Input: one byte choosing the conversion (bits 0-1 the dtype, bit 2
// pruning to 50 %, bits 3-5 the format), then the checkpoint's files, each
// a byte naming it (kFiles, modulo their count), a little-endian u32 length
// and its bytes (the last file takes what is left when shorter).
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

constexpr const char* kFiles[] = {"config.json", "model.safetensors", "model.safetensors.index.json",
                                  "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", "tokenizer.model"};

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
  if (size < 1) return 0;
  const std::filesystem::path dir = testing::scratch() / "checkpoint";
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  std::string_view rest = fuzzing::as_text(data + 1, size - 1);
  while (rest.size() >= 5) {
    uint32_t bytes;
    std::memcpy(&bytes, rest.data() + 1, sizeof bytes);
    const char* name = kFiles[static_cast<uint8_t>(rest[0]) % std::size(kFiles)];
    rest.remove_prefix(5);
    write_file(dir / name, rest.substr(0, bytes));
    rest.remove_prefix(std::min<size_t>(bytes, rest.size()));
  }
  const std::string out = (testing::scratch() / "checkpoint.lacuna").string();
  try {
    convert_checkpoint(dir.string(), out, options_from(data[0]));
    fuzzing::generate_two_tokens(Model::open(out));
  } catch (const Error&) {
  }
  return 0;
}
