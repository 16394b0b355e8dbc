#include "engine/runtime/kv-cache.h"

#include <algorithm>
#include <utility>

#include "sparse/error.h"

namespace lacuna {

KvBlockPool::KvBlockPool(const ModelConfig& c, int64_t block_positions, int64_t max_blocks)
    : block_positions_(block_positions),
      max_blocks_(max_blocks),
      block_floats_(2 * static_cast<uint64_t>(c.layers * block_positions * c.kv_heads * c.head_dim)) {
  if (block_positions <= 0 || max_blocks < 0) throw Error("kv block pool: block_positions must be > 0 and max_blocks >= 0");
}

KvBlockPool::~KvBlockPool() {
  for (float* b : all_) delete[] b;
}

float* KvBlockPool::acquire() {
  const std::lock_guard lock(mutex_);
  if (max_blocks_ > 0 && in_use_ >= max_blocks_) return nullptr;
  ++in_use_;
  if (!free_.empty()) {
    float* b = free_.back();
    free_.pop_back();
    return b;
  }
  all_.reserve(all_.size() + 1);
  // new[] without () leaves the pages untouched until written.
  all_.push_back(new float[block_floats_]);
  return all_.back();
}

void KvBlockPool::release(float* block) {
  const std::lock_guard lock(mutex_);
  free_.push_back(block);
  --in_use_;
}

int64_t KvBlockPool::blocks_in_use() const {
  const std::lock_guard lock(mutex_);
  return in_use_;
}

KvCache::KvCache(const ModelConfig& c, int64_t capacity)
    : KvCache(c, capacity, std::make_shared<KvBlockPool>(c, kDefaultBlockPositions, 0)) {}

KvCache::KvCache(const ModelConfig& c, int64_t capacity, std::shared_ptr<KvBlockPool> pool)
    : pool_(std::move(pool)),
      layers_(c.layers),
      capacity_(capacity),
      kv_heads_(c.kv_heads),
      head_dim_(c.head_dim),
      block_positions_(pool_->block_positions()),
      values_offset_(static_cast<uint64_t>(layers_ * block_positions_ * width())) {
  if (capacity <= 0 || capacity > c.max_context)
    throw Error("kv cache capacity " + std::to_string(capacity) + " must be in 1.." + std::to_string(c.max_context) + " (the model's context)");
}

KvCache::~KvCache() {
  for (float* b : blocks_) pool_->release(b);  // a moved-from cache has none
}

KvCache& KvCache::operator=(KvCache&& other) noexcept {
  std::swap(pool_, other.pool_);
  std::swap(layers_, other.layers_);
  std::swap(capacity_, other.capacity_);
  std::swap(kv_heads_, other.kv_heads_);
  std::swap(head_dim_, other.head_dim_);
  std::swap(block_positions_, other.block_positions_);
  std::swap(length_, other.length_);
  std::swap(values_offset_, other.values_offset_);
  std::swap(blocks_, other.blocks_);
  return *this;
}

bool KvCache::reserve(int64_t positions) {
  positions = std::min(positions, capacity_);
  while (reserved() < positions) {
    float* b = pool_->acquire();
    if (!b) return false;
    blocks_.push_back(b);
  }
  return true;
}

void KvCache::truncate(int64_t length) {
  if (length < 0 || length > length_) throw Error("kv cache: cannot truncate " + std::to_string(length_) + " positions to " + std::to_string(length));
  length_ = length;
}

}  // namespace lacuna
