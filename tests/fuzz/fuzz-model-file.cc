// A .lacuna file from untrusted bytes: Model::open (the file's structure,
// then the config, tokenizer and every weight against the architecture),
// then two greedy tokens through the kernels the file's tensors chose.
//
// Random bytes almost never carry valid XXH3 checksums, so the target
// reseals the header's regions, the tensor records' payloads and the header
// itself before opening: the checksum test is covered by the unit tests
// (ModelFileTest.FlippedBytesInEveryRegionAreCaught); the fuzzer's job is
// what lies behind it.
#include <xxhash.h>

#include <cstring>
#include <vector>

#include "sparse/error.h"
#include "sparse/model-file-layout.h"
#include "tests/fuzz/fuzz-input.h"

namespace {

using namespace lacuna;
namespace layout = lacuna::file_layout;

void reseal(layout::Region& r, const std::vector<uint8_t>& file) {
  if (r.offset <= file.size() && r.bytes <= file.size() - r.offset) r.checksum = XXH3_64bits(file.data() + r.offset, r.bytes);
}

std::vector<uint8_t> resealed(const uint8_t* data, size_t size) {
  std::vector<uint8_t> file(data, data + size);
  if (size < sizeof(layout::Header)) return file;
  layout::Header h;
  std::memcpy(&h, file.data(), sizeof h);
  if (h.table.offset <= size && h.table.bytes <= size - h.table.offset) {
    const uint64_t records = std::min<uint64_t>(h.tensor_count, h.table.bytes / sizeof(layout::TensorRecord));
    for (uint64_t i = 0; i < records; ++i) {
      uint8_t* at = file.data() + h.table.offset + i * sizeof(layout::TensorRecord);
      layout::TensorRecord t;
      std::memcpy(&t, at, sizeof t);
      reseal(t.payload, file);
      std::memcpy(at, &t, sizeof t);
    }
  }
  reseal(h.metadata, file);
  reseal(h.tokenizer, file);
  reseal(h.table, file);
  std::memcpy(file.data(), &h, sizeof h);
  h.header_checksum = XXH3_64bits(file.data(), offsetof(layout::Header, header_checksum));
  std::memcpy(file.data(), &h, sizeof h);
  return file;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::vector<uint8_t> file = resealed(data, size);
  const fuzzing::MemoryFile input(std::string_view(reinterpret_cast<const char*>(file.data()), file.size()));
  try {
    fuzzing::generate_two_tokens(Model::open(input.path()));
  } catch (const Error&) {
  }
  return 0;
}
