#pragma once
// Attention keys and values, f32, in blocks of positions taken from a pool as
// a sequence grows (paged, as vLLM's PagedAttention): memory follows the
// tokens a sequence holds, not the length it may reach, and a server's
// sequences share one bounded pool.
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "engine/model/config.h"

namespace lacuna {

// Blocks of `block_positions` positions, every layer's keys and values of
// those positions in one allocation. Thread-safe.
class KvBlockPool {
 public:
  // max_blocks 0: no bound (a sequence's own pool).
  KvBlockPool(const ModelConfig& c, int64_t block_positions, int64_t max_blocks);
  ~KvBlockPool();
  KvBlockPool(const KvBlockPool&) = delete;
  KvBlockPool& operator=(const KvBlockPool&) = delete;

  // A block, or nullptr when max_blocks are in use.
  float* acquire();
  void release(float* block);
  int64_t block_positions() const { return block_positions_; }
  int64_t max_blocks() const { return max_blocks_; }
  int64_t blocks_in_use() const;
  uint64_t block_bytes() const { return block_floats_ * sizeof(float); }

 private:
  int64_t block_positions_, max_blocks_;
  uint64_t block_floats_;
  mutable std::mutex mutex_;
  std::vector<float*> free_, all_;
  int64_t in_use_ = 0;
};

class KvCache {
 public:
  static constexpr int64_t kDefaultBlockPositions = 16;
  // A cache with its own unbounded pool.
  KvCache(const ModelConfig& c, int64_t capacity);
  // A cache drawing blocks from a shared pool.
  KvCache(const ModelConfig& c, int64_t capacity, std::shared_ptr<KvBlockPool> pool);
  ~KvCache();
  KvCache(KvCache&&) noexcept = default;
  // The blocks this cache held go back to their pool with `other`.
  KvCache& operator=(KvCache&& other) noexcept;

  int64_t length() const { return length_; }
  int64_t capacity() const { return capacity_; }
  int64_t width() const { return kv_heads_ * head_dim_; }
  int64_t block_positions() const { return block_positions_; }
  // Key-value head `head`'s key or value (head_dim floats) at `position`,
  // valid for positions below reserved(). Within a block a head's positions
  // lie head_dim floats apart (for p and p + 1 in one block), so a query
  // streams its head's keys and values contiguously. With positions
  // outermost they lay kv_heads x head_dim floats apart, 4 KB in mini: every
  // key row of a head fell into the same L1 sets, and a 512-token prefill
  // spent 22 % of its samples reading them from L2.
  float* keys(int64_t layer, int64_t position, int64_t head) { return at(layer, position, head); }
  float* values(int64_t layer, int64_t position, int64_t head) { return at(layer, position, head) + values_offset_; }
  const float* keys(int64_t layer, int64_t position, int64_t head) const { return at(layer, position, head); }
  const float* values(int64_t layer, int64_t position, int64_t head) const { return at(layer, position, head) + values_offset_; }
  // Takes blocks until `positions` fit (at most capacity). False when the
  // pool ran out (the blocks taken so far stay with the cache).
  bool reserve(int64_t positions);
  int64_t reserved() const { return static_cast<int64_t>(blocks_.size()) * block_positions_; }
  // Positions 0..length-1 hold valid entries. Forward advances it; a caller
  // may also restore an earlier length whose positions it knows to be intact.
  void set_length(int64_t length) { length_ = length; }
  // Forget everything after `length` positions (e.g. to reuse a shared
  // prompt). The blocks stay with the cache for the positions to come.
  void truncate(int64_t length);
  uint64_t bytes_used() const { return 2 * static_cast<uint64_t>(layers_ * length_ * width()) * sizeof(float); }

 private:
  float* at(int64_t layer, int64_t position, int64_t head) const {
    return blocks_[static_cast<size_t>(position / block_positions_)] +
           static_cast<uint64_t>(((layer * kv_heads_ + head) * block_positions_ + position % block_positions_) * head_dim_);
  }
  std::shared_ptr<KvBlockPool> pool_;
  int64_t layers_, capacity_, kv_heads_, head_dim_, block_positions_, length_ = 0;
  uint64_t values_offset_;  // within a block, after every layer's keys
  std::vector<float*> blocks_;
};

}  // namespace lacuna
