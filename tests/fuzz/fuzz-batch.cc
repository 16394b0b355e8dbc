// `lacuna batch` from untrusted files: the input JSONL (requests in the API's
// shape, or OpenAI's batch shape {"custom_id", "url", "body"}) and the output
// of an earlier, perhaps interrupted, run that the job resumes, against the
// synthetic `tiny` model.
//
// Input: the bytes before the first NUL are IN.jsonl, those after it the
// OUT.jsonl already there.
#include <fstream>

#include "engine/server/batch-job.h"
#include "sparse/error.h"
#include "tests/fuzz/fuzz-input.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace lacuna;
  const std::shared_ptr<const Model> model = fuzzing::tiny_model();
  const std::string_view bytes = fuzzing::as_text(data, size);
  const size_t split = std::min(bytes.find('\0'), bytes.size());
  const std::string in = (testing::scratch() / "in.jsonl").string(), out = (testing::scratch() / "out.jsonl").string();
  std::ofstream(in, std::ios::binary | std::ios::trunc) << bytes.substr(0, split);
  std::ofstream(out, std::ios::binary | std::ios::trunc) << bytes.substr(std::min(split + 1, bytes.size()));
  BatchOptions options;
  options.progress = false;
  try {
    run_batch(model, in, out, options);
  } catch (const Error&) {
  }
  return 0;
}
