#pragma once
// What the fuzz targets share. Each target is a libFuzzer entry point
// (LLVMFuzzerTestOneInput) over one of Lacuna's readers of untrusted input;
// built with clang by the `fuzz` preset (scripts/fuzz.sh runs them), and
// with the project's compiler as `fuzz-replay-*` programs that run the
// committed corpus as a test (replay-main.cc).
//
// A target's contract: bad input may only raise lacuna::Error (the API's
// HttpError for request bodies); any other exception escapes the target and
// is reported as a crash, as are the sanitizers' findings.
#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>

#include "engine/model/convert.h"
#include "engine/model/model.h"
#include "engine/model/synth.h"
#include "engine/runtime/generate.h"
#include "tests/test-util.h"

namespace lacuna::fuzzing {

// The bytes of an input as a file the readers can open by path, in memory
// (memfd), named /proc/self/fd/N.
class MemoryFile {
 public:
  explicit MemoryFile(std::string_view bytes) : fd_(memfd_create("lacuna-fuzz", 0)) {
    if (fd_ < 0) throw std::runtime_error("memfd_create failed");
    for (size_t done = 0; done < bytes.size();) {
      const ssize_t n = ::write(fd_, bytes.data() + done, bytes.size() - done);
      if (n <= 0) throw std::runtime_error("write to memfd failed");
      done += static_cast<size_t>(n);
    }
  }
  ~MemoryFile() { ::close(fd_); }
  MemoryFile(const MemoryFile&) = delete;
  MemoryFile& operator=(const MemoryFile&) = delete;
  std::string path() const { return "/proc/self/fd/" + std::to_string(fd_); }

 private:
  int fd_;
};

// The synthetic `tiny` Mixtral (with its SentencePiece tokenizer), made once
// per process: the model the request targets parse and generate against.
inline std::shared_ptr<const Model> tiny_model() {
  static const std::shared_ptr<const Model> model = [] {
    const std::string hf = (testing::scratch() / "tiny-hf").string(), file = (testing::scratch() / "tiny.lacuna").string();
    synthesize_checkpoint(hf, SynthOptions{});
    ConvertOptions convert;
    convert.sparsity = 0.5;
    convert_checkpoint(hf, file, convert);
    return Model::open(file);
  }();
  return model;
}

// Two greedy tokens after a two-token prompt: every kernel the model's
// tensors chose runs once, on prefill and on decode.
inline void generate_two_tokens(std::shared_ptr<const Model> model) {
  Forward forward(model);
  GenerateRequest request;
  request.prompt = {static_cast<int32_t>(model->config().vocab - 1), 0};
  request.options.max_tokens = 2;
  request.options.sampling.temperature = 0;
  generate(forward, {request});
}

inline std::string_view as_text(const uint8_t* data, size_t size) { return {reinterpret_cast<const char*>(data), size}; }

}  // namespace lacuna::fuzzing
