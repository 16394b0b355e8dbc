#pragma once
// The forward pass over a batch of sequences. Each sequence brings its KV
// cache and the tokens to append (a prompt chunk, or one token when
// decoding); all tokens of the batch go through every weight together, and
// the MoE block groups them per expert so that each expert runs one product
// over all the tokens routed to it.
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "engine/model/model.h"
#include "engine/runtime/kv-cache.h"

namespace lacuna {

struct SequenceStep {
  KvCache* cache = nullptr;
  std::span<const int32_t> tokens;  // appended at cache->length()
  // Where to write logits: [tokens.size()][vocab] with all_positions, else
  // [1][vocab] for the last token; nullptr for none (a prompt chunk before the last).
  float* logits = nullptr;
  bool all_positions = false;
};

class Forward {
 public:
  // BatchPolicy::invariant: every token's result is the same whatever else
  // is in the step (the server's choice); fastest: the fastest kernels for each batch size.
  explicit Forward(std::shared_ptr<const Model> model, BatchPolicy policy = BatchPolicy::fastest);
  ~Forward();
  // Runs one step. Throws lacuna::Error, before changing any cache's
  // contents, for an invalid token id, a cache without room, or a block pool
  // without free blocks. Not thread-safe: one step at a time.
  void step(std::span<const SequenceStep> batch);
  const Model& model() const { return *model_; }
  // Tokens the router sent to each expert, [layer][expert], over every step
  // so far: the router statistics NUMA placement balances.
  const std::vector<std::vector<uint64_t>>& routed_tokens() const { return routed_tokens_; }

 private:
  struct Scratch;
  void attention(int64_t layer, std::span<const SequenceStep> batch, Scratch& s);
  void moe(int64_t layer, const LayerWeights& w, Scratch& s);

  std::shared_ptr<const Model> model_;
  BatchPolicy policy_;
  std::vector<double> inv_freq_;  // RoPE: theta^(-2i/head_dim)
  std::unique_ptr<Scratch> scratch_;
  std::vector<std::vector<uint64_t>> routed_tokens_;
};

}  // namespace lacuna
