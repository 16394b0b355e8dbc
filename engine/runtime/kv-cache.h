#pragma once
// Attention keys and values (f32 or f16: KvType) in blocks of
// positions taken from a pool as a sequence grows (paged, as vLLM's
// PagedAttention): memory follows the tokens a sequence holds, not the
// length it may reach, and a server's sequences share one bounded pool.
#include <cstddef>
#include <cstdint>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <unordered_map>
#include <vector>

#include "engine/model/config.h"

namespace lacuna {

// What a KV cache stores. f16 halves the bytes attention streams at every
// step; it suits the server, whose forward pass gives a key the same bits
// in any batch, so rounding them to f16 cannot make a sequence's answer
// depend on its company. Where kernels change with the batch (generate(),
// the C API) a key's last f32 bits do, and rounding can turn that into a
// whole f16 step: those keep f32 (docs/benchmarks.md, "The f16 KV cache
// reverted").
enum class KvType : uint8_t { f32, f16 };
const char* kv_type_name(KvType t);  // "f32", "f16"
// Bytes of one stored key or value element.
inline uint64_t kv_element_bytes(KvType t) { return t == KvType::f16 ? 2 : 4; }

// Blocks of `block_positions` positions, every layer's keys and values of
// those positions in one allocation. Thread-safe.
//
// Prefix reuse (as vLLM's automatic prefix caching): a full block can be
// published under the tokens of the sequence up to its end, since its keys
// and values are a function of those tokens alone (the server's forward
// pass gives every token the same bits whatever its batch or chunk). A
// block is counted in use while a cache holds it; published and held by
// none, it stays in the pool with its contents for lookup() to hand out
// again, and is reused for other contents (its entry dropped, least
// recently released first) only when no never-published block is left.
//
// A block's key is the prefix before it, named by the id of that prefix's
// entry, and its own tokens: exact (no hash that could collide) and one
// block of tokens per entry, where keys holding the whole prefix grew with
// the square of a sequence's length. Ids are never given twice, so when a
// block gets new contents the entries published after its prefix can no
// longer be reached, and are given new contents in their turn.
class KvBlockPool {
 public:
  // max_blocks 0: no bound (a sequence's own pool).
  KvBlockPool(const ModelConfig& c, int64_t block_positions, int64_t max_blocks, KvType type = KvType::f32);
  ~KvBlockPool();
  KvBlockPool(const KvBlockPool&) = delete;
  KvBlockPool& operator=(const KvBlockPool&) = delete;

  // A block, or nullptr when max_blocks are in use.
  std::byte* acquire();
  // Gives back one hold on `block` (acquire and lookup each take one).
  void release(std::byte* block);
  // A published prefix of whole blocks: the id of its last block's entry.
  using PrefixId = uint64_t;
  static constexpr PrefixId kEmptyPrefix = 0;
  // Publishes `block`, a full block holding the keys and values of
  // `block_tokens` (block_positions of them) after the prefix `before`.
  // Returns the id of the longer prefix: block's, or that of the block
  // published for the same prefix before (which stays the only one).
  PrefixId publish(PrefixId before, std::span<const int32_t> block_tokens, std::byte* block);
  struct Found {
    std::vector<std::byte*> blocks;     // block 0 first, each held once for the caller
    PrefixId prefix = kEmptyPrefix;     // the prefix they hold
  };
  // The published blocks of the longest prefix of `tokens` of at most
  // `max_blocks` whole blocks.
  Found lookup(std::span<const int32_t> tokens, int64_t max_blocks);
  int64_t block_positions() const { return block_positions_; }
  int64_t max_blocks() const { return max_blocks_; }
  int64_t blocks_in_use() const;  // held by a cache; published blocks held by none are free to take
  int64_t blocks_published() const;
  uint64_t block_bytes() const { return block_bytes_; }
  KvType type() const { return type_; }

 private:
  struct Key {
    PrefixId before;
    std::vector<int32_t> tokens;
    auto operator<=>(const Key&) const = default;
  };
  struct Entry {
    std::byte* block;
    PrefixId id;
  };
  struct Held {
    int32_t holds = 0;
    const Key* key = nullptr;           // the key it is published under
    std::list<std::byte*>::iterator idle;  // in idle_, when published and held by none
  };
  int64_t block_positions_, max_blocks_;
  KvType type_;
  uint64_t block_bytes_;
  mutable std::mutex mutex_;
  std::vector<std::byte*> free_, all_;
  std::unordered_map<std::byte*, Held> held_;
  std::map<Key, Entry> published_;
  PrefixId last_id_ = kEmptyPrefix;
  std::list<std::byte*> idle_;  // published, held by none: least recently released first
  int64_t in_use_ = 0;
};

class KvCache {
 public:
  static constexpr int64_t kDefaultBlockPositions = 16;
  // A cache with its own unbounded pool.
  KvCache(const ModelConfig& c, int64_t capacity, KvType type = KvType::f32);
  // A cache drawing blocks from a shared pool (of the pool's type).
  KvCache(const ModelConfig& c, int64_t capacity, std::shared_ptr<KvBlockPool> pool);
  ~KvCache();
  KvCache(KvCache&&) noexcept = default;
  // The blocks this cache held go back to their pool with `other`.
  KvCache& operator=(KvCache&& other) noexcept;

  int64_t length() const { return length_; }
  int64_t capacity() const { return capacity_; }
  int64_t width() const { return kv_heads_ * head_dim_; }
  int64_t block_positions() const { return block_positions_; }
  KvType type() const { return type_; }
  // Key-value head `head`'s key or value at `position`: head_dim elements
  // of type(), floats or the bits of f16 values (uint16_t), valid for
  // positions below reserved(). Within a block a head's positions
  // lie head_dim elements apart (for p and p + 1 in one block), so a query
  // streams its head's keys and values contiguously. With positions
  // outermost they lay kv_heads x head_dim floats apart, 4 KB in mini: every
  // key row of a head fell into the same L1 sets, and a 512-token prefill
  // spent 22 % of its samples reading them from L2.
  void* keys(int64_t layer, int64_t position, int64_t head) { return at(layer, position, head); }
  void* values(int64_t layer, int64_t position, int64_t head) { return at(layer, position, head) + values_offset_; }
  const void* keys(int64_t layer, int64_t position, int64_t head) const { return at(layer, position, head); }
  const void* values(int64_t layer, int64_t position, int64_t head) const { return at(layer, position, head) + values_offset_; }
  // Takes blocks until `positions` fit (at most capacity). False when the
  // pool ran out (the blocks taken so far stay with the cache).
  bool reserve(int64_t positions);
  int64_t reserved() const { return static_cast<int64_t>(blocks_.size()) * block_positions_; }
  // Positions 0..length-1 hold valid entries. Forward advances it; a caller
  // may also restore an earlier length whose positions it knows to be intact.
  void set_length(int64_t length) { length_ = length; }
  // Forget everything after `length` positions (e.g. to reuse a shared
  // prompt). The blocks stay with the cache for the positions to come.
  // Not into blocks taken with adopt or published (others may read them).
  void truncate(int64_t length);
  // An empty cache starts with the pool's published blocks of the longest
  // prefix of `tokens` it holds, at most `max_positions` positions (whole
  // blocks); returns the positions now held. The cache writes only after
  // them, so the blocks stay as published.
  int64_t adopt(std::span<const int32_t> tokens, int64_t max_positions);
  // Publishes the blocks filled since the last call; `tokens`: the
  // sequence's, from position 0 (at least length() of them).
  void publish(std::span<const int32_t> tokens);
  uint64_t bytes_used() const { return 2 * static_cast<uint64_t>(layers_ * length_ * width()) * kv_element_bytes(type_); }

 private:
  std::byte* at(int64_t layer, int64_t position, int64_t head) const {
    return blocks_[static_cast<size_t>(position / block_positions_)] +
           static_cast<uint64_t>(((layer * kv_heads_ + head) * block_positions_ + position % block_positions_) * head_dim_) * kv_element_bytes(type_);
  }
  std::shared_ptr<KvBlockPool> pool_;
  int64_t layers_, capacity_, kv_heads_, head_dim_, block_positions_, length_ = 0;
  KvType type_;
  uint64_t values_offset_;  // bytes within a block, after every layer's keys
  std::vector<std::byte*> blocks_;
  size_t published_ = 0;  // blocks taken with adopt or published since
  KvBlockPool::PrefixId prefix_ = KvBlockPool::kEmptyPrefix;  // what the first published_ blocks hold
};

}  // namespace lacuna
