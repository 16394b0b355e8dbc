#include "engine/runtime/kv-cache.h"

#include "sparse/error.h"

namespace lacuna {

KvCache::KvCache(const ModelConfig& c, int64_t capacity)
    : layers_(c.layers), capacity_(capacity), width_(c.kv_heads * c.head_dim) {
  if (capacity <= 0 || capacity > c.max_context)
    throw Error("kv cache capacity " + std::to_string(capacity) + " must be in 1.." + std::to_string(c.max_context) + " (the model's context)");
  // new[] without () leaves the pages untouched until written.
  const uint64_t n = static_cast<uint64_t>(layers_ * capacity_ * width_);
  k_.reset(new float[n]);
  v_.reset(new float[n]);
}

void KvCache::truncate(int64_t length) {
  if (length < 0 || length > length_) throw Error("kv cache: cannot truncate " + std::to_string(length_) + " positions to " + std::to_string(length));
  length_ = length;
}

}  // namespace lacuna
