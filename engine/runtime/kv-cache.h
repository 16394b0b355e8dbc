#pragma once
// One sequence's attention keys and values, f32, for every layer. The buffer
// is reserved for `capacity` positions but its pages are touched only as the
// sequence grows, so a long capacity costs address space, not memory.
#include <cstdint>
#include <memory>

#include "engine/model/config.h"

namespace lacuna {

class KvCache {
 public:
  KvCache(const ModelConfig& c, int64_t capacity);
  int64_t length() const { return length_; }
  int64_t capacity() const { return capacity_; }
  int64_t width() const { return width_; }  // kv_heads * head_dim
  float* keys(int64_t layer, int64_t position) { return k_.get() + offset(layer, position); }
  float* values(int64_t layer, int64_t position) { return v_.get() + offset(layer, position); }
  const float* keys(int64_t layer, int64_t position) const { return k_.get() + offset(layer, position); }
  const float* values(int64_t layer, int64_t position) const { return v_.get() + offset(layer, position); }
  // Positions 0..length-1 hold valid entries. Forward advances it; a caller
  // may also restore an earlier length whose positions it knows to be intact.
  void set_length(int64_t length) { length_ = length; }
  // Forget everything after `length` positions (e.g. to reuse a shared prompt).
  void truncate(int64_t length);
  uint64_t bytes_used() const { return 2 * static_cast<uint64_t>(layers_ * length_ * width_) * sizeof(float); }

 private:
  uint64_t offset(int64_t layer, int64_t position) const { return static_cast<uint64_t>((layer * capacity_ + position) * width_); }
  int64_t layers_, capacity_, width_, length_ = 0;
  std::unique_ptr<float[]> k_, v_;
};

}  // namespace lacuna
