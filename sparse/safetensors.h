#pragma once
// Hugging Face safetensors checkpoints: reading (memory-mapped, one file or
// shards listed by model.safetensors.index.json) and writing.
// Owned by the safetensors helper; API agreed below.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace lacuna {

enum class StDType : uint8_t { f32, f16, bf16 };
const char* st_dtype_name(StDType d);  // "F32", "F16", "BF16"

struct StTensor {
  std::string name;
  StDType dtype = StDType::f32;
  std::vector<uint64_t> shape;
  std::span<const std::byte> bytes;  // inside the mapped file
  std::string file;                  // the file it lives in (for error messages)
  uint64_t elements() const;
};

// A validated, read-only checkpoint. open() throws lacuna::Error naming the
// file (and tensor) for every problem; afterwards every tensor's bytes are in bounds.
class SafetensorsCheckpoint {
 public:
  // `path`: a directory holding model.safetensors, or model.safetensors.index.json
  // and its shards; or one .safetensors file.
  static SafetensorsCheckpoint open(const std::string& path);
  const std::vector<StTensor>& tensors() const { return tensors_; }  // sorted by name
  const StTensor* find(std::string_view name) const;  // nullptr when absent
  // Converts to f32 (out has t.elements() floats).
  static void to_f32(const StTensor& t, float* out);
  std::vector<float> to_f32(const StTensor& t) const;

 private:
  std::vector<std::shared_ptr<const void>> mappings_;
  std::vector<StTensor> tensors_;
};

// Writes one .safetensors file: tensors are given as f32 and stored in `dtype`
// (bf16 with round-to-nearest-even; f16 likewise).
class SafetensorsWriter {
 public:
  void add(const std::string& name, StDType dtype, std::vector<uint64_t> shape, std::span<const float> values);
  // Writes `path` (via path.tmp + rename). Throws lacuna::Error on I/O failure.
  void write(const std::string& path) const;

 private:
  struct Entry {
    std::string name;
    StDType dtype;
    std::vector<uint64_t> shape;
    std::vector<std::byte> data;
  };
  std::vector<Entry> entries_;
};

}  // namespace lacuna
