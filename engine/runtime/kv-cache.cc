#include "engine/runtime/kv-cache.h"

#include <algorithm>
#include <utility>

#include "sparse/error.h"

namespace lacuna {

const char* kv_type_name(KvType t) { return t == KvType::f16 ? "f16" : "f32"; }

KvBlockPool::KvBlockPool(const ModelConfig& c, int64_t block_positions, int64_t max_blocks, KvType type)
    : block_positions_(block_positions),
      max_blocks_(max_blocks),
      type_(type),
      block_bytes_(2 * static_cast<uint64_t>(c.layers * block_positions * c.kv_heads * c.head_dim) * kv_element_bytes(type)) {
  if (block_positions <= 0 || max_blocks < 0) throw Error("kv block pool: block_positions must be > 0 and max_blocks >= 0");
}

KvBlockPool::~KvBlockPool() {
  for (std::byte* b : all_) delete[] b;
}

std::byte* KvBlockPool::acquire() {
  const std::lock_guard lock(mutex_);
  if (max_blocks_ > 0 && in_use_ >= max_blocks_) return nullptr;
  std::byte* b = nullptr;
  if (!free_.empty()) {
    b = free_.back();
    free_.pop_back();
  } else if (max_blocks_ == 0 || static_cast<int64_t>(all_.size()) < max_blocks_ || idle_.empty()) {
    all_.reserve(all_.size() + 1);
    // new[] without () leaves the pages untouched until written.
    b = all_.emplace_back(new std::byte[block_bytes_]);
  } else {
    // Every block exists: the published one released longest ago gets new contents.
    b = idle_.front();
    idle_.pop_front();
    Held& h = held_[b];
    published_.erase(*h.key);
    h.key = nullptr;
  }
  ++held_[b].holds;
  ++in_use_;
  return b;
}

void KvBlockPool::release(std::byte* block) {
  const std::lock_guard lock(mutex_);
  Held& h = held_[block];
  if (--h.holds > 0) return;
  --in_use_;
  if (h.key)
    h.idle = idle_.insert(idle_.end(), block);
  else
    free_.push_back(block);
}

KvBlockPool::PrefixId KvBlockPool::publish(PrefixId before, std::span<const int32_t> block_tokens, std::byte* block) {
  if (static_cast<int64_t>(block_tokens.size()) != block_positions_)
    throw Error("kv block pool: a published block holds " + std::to_string(block_positions_) + " positions, not " + std::to_string(block_tokens.size()));
  const std::lock_guard lock(mutex_);
  Key key{before, std::vector<int32_t>(block_tokens.begin(), block_tokens.end())};
  if (const auto it = published_.find(key); it != published_.end()) return it->second.id;
  Held& h = held_[block];
  if (h.key) throw Error("kv block pool: a block is published once, under one prefix");
  const auto it = published_.emplace(std::move(key), Entry{block, ++last_id_}).first;
  h.key = &it->first;
  return last_id_;
}

KvBlockPool::Found KvBlockPool::lookup(std::span<const int32_t> tokens, int64_t max_blocks) {
  const std::lock_guard lock(mutex_);
  Found found;
  Key key{kEmptyPrefix, {}};
  for (int64_t i = 0; i < max_blocks && static_cast<int64_t>(tokens.size()) >= (i + 1) * block_positions_; ++i) {
    const auto block = tokens.subspan(static_cast<size_t>(i * block_positions_), static_cast<size_t>(block_positions_));
    key.tokens.assign(block.begin(), block.end());
    const auto it = published_.find(key);
    if (it == published_.end()) break;
    Held& h = held_[it->second.block];
    if (h.holds++ == 0) {
      idle_.erase(h.idle);
      ++in_use_;
    }
    found.blocks.push_back(it->second.block);
    found.prefix = key.before = it->second.id;
  }
  return found;
}

int64_t KvBlockPool::blocks_in_use() const {
  const std::lock_guard lock(mutex_);
  return in_use_;
}

int64_t KvBlockPool::blocks_published() const {
  const std::lock_guard lock(mutex_);
  return static_cast<int64_t>(published_.size());
}

KvCache::KvCache(const ModelConfig& c, int64_t capacity, KvType type)
    : KvCache(c, capacity, std::make_shared<KvBlockPool>(c, kDefaultBlockPositions, 0, type)) {}

KvCache::KvCache(const ModelConfig& c, int64_t capacity, std::shared_ptr<KvBlockPool> pool)
    : pool_(std::move(pool)),
      layers_(c.layers),
      capacity_(capacity),
      kv_heads_(c.kv_heads),
      head_dim_(c.head_dim),
      block_positions_(pool_->block_positions()),
      type_(pool_->type()),
      values_offset_(static_cast<uint64_t>(layers_ * block_positions_ * width()) * kv_element_bytes(type_)) {
  if (capacity <= 0 || capacity > c.max_context)
    throw Error("kv cache capacity " + std::to_string(capacity) + " must be in 1.." + std::to_string(c.max_context) + " (the model's context)");
}

KvCache::~KvCache() {
  // Last block first: released blocks get new contents in the order they
  // came back, and a prefix's later blocks are no use without its earlier ones.
  for (auto b = blocks_.rbegin(); b != blocks_.rend(); ++b) pool_->release(*b);  // a moved-from cache has none
}

KvCache& KvCache::operator=(KvCache&& other) noexcept {
  std::swap(pool_, other.pool_);
  std::swap(layers_, other.layers_);
  std::swap(capacity_, other.capacity_);
  std::swap(kv_heads_, other.kv_heads_);
  std::swap(head_dim_, other.head_dim_);
  std::swap(block_positions_, other.block_positions_);
  std::swap(length_, other.length_);
  std::swap(type_, other.type_);
  std::swap(values_offset_, other.values_offset_);
  std::swap(blocks_, other.blocks_);
  std::swap(published_, other.published_);
  std::swap(prefix_, other.prefix_);
  return *this;
}

bool KvCache::reserve(int64_t positions) {
  positions = std::min(positions, capacity_);
  while (reserved() < positions) {
    std::byte* b = pool_->acquire();
    if (!b) return false;
    blocks_.push_back(b);
  }
  return true;
}

void KvCache::truncate(int64_t length) {
  if (length < 0 || length > length_) throw Error("kv cache: cannot truncate " + std::to_string(length_) + " positions to " + std::to_string(length));
  if (length < static_cast<int64_t>(published_) * block_positions_)
    throw Error("kv cache: cannot truncate to " + std::to_string(length) + " positions, into blocks shared with other sequences");
  length_ = length;
}

int64_t KvCache::adopt(std::span<const int32_t> tokens, int64_t max_positions) {
  if (!blocks_.empty()) throw Error("kv cache: only an empty cache adopts published blocks");
  KvBlockPool::Found found = pool_->lookup(tokens, std::min(max_positions, capacity_) / block_positions_);
  blocks_ = std::move(found.blocks);
  published_ = blocks_.size();
  prefix_ = found.prefix;
  length_ = static_cast<int64_t>(blocks_.size()) * block_positions_;
  return length_;
}

void KvCache::publish(std::span<const int32_t> tokens) {
  const auto positions = static_cast<size_t>(block_positions_);
  for (; static_cast<int64_t>(published_ + 1) * block_positions_ <= length_; ++published_)
    prefix_ = pool_->publish(prefix_, tokens.subspan(published_ * positions, positions), blocks_[published_]);
}

}  // namespace lacuna
