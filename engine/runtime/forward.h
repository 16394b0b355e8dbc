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
#include "engine/numa/node-teams.h"
#include "engine/runtime/kv-cache.h"
#include "engine/runtime/placed-experts.h"

namespace lacuna {

struct SequenceStep {
  KvCache* cache = nullptr;
  std::span<const int32_t> tokens;  // appended at cache->length()
  // Where to write logits: [tokens.size()][vocab] with all_positions, else
  // [1][vocab] for the last token; nullptr for none (a prompt chunk before the last).
  float* logits = nullptr;
  bool all_positions = false;
};

// What the NUMA execution did, over every step so far (one entry per node).
struct NumaCounters {
  std::vector<uint64_t> node_tokens;       // (token, expert) pairs each node computed; a slice counts on every node
  std::vector<double> node_busy_seconds;   // time each node's team spent on experts
  uint64_t remote_weight_bytes = 0;        // expert weight bytes read from another node's memory
  // The busiest node's work, in (token, whole expert) pairs, summed over
  // layers and steps: what the time of a bandwidth-bound step follows when
  // every node streams its own memory (docs/numa.md, the model on paper).
  double critical_pairs = 0;
  double imbalance() const;                // max / mean of node_busy_seconds (1 when even or idle)
};

// Sees the input of each product a step runs with a model weight: how
// calibration collects Wanda's activation norms. Called on the stepping
// thread, in the order the products run.
class LinearInputObserver {
 public:
  virtual ~LinearInputObserver() = default;
  // x: [n][weight.cols()], the tokens multiplied by `weight` (an expert's:
  // only the tokens routed to it; the output projection's: only the rows
  // whose logits were asked for).
  virtual void observe(const Linear& weight, const float* x, size_t n) = 0;
};

class Forward {
 public:
  // BatchPolicy::invariant: every token's result is the same whatever else
  // is in the step (the server's choice); fastest: the fastest kernels for each batch size.
  // With `placed`, the experts run on the placed copies, each on the team of
  // the node holding it, and every token's result is the same as without
  // (outputs are summed in expert order as in the unplaced pass).
  explicit Forward(std::shared_ptr<const Model> model, BatchPolicy policy = BatchPolicy::fastest,
                   std::shared_ptr<const PlacedExperts> placed = nullptr);
  ~Forward();
  // Runs one step. Throws lacuna::Error, before changing any cache's
  // contents, for an invalid token id, a cache without room, or a block pool
  // without free blocks. Not thread-safe: one step at a time.
  void step(std::span<const SequenceStep> batch);
  const Model& model() const { return *model_; }
  // Tokens the router sent to each expert, [layer][expert], over every step
  // so far: the router statistics NUMA placement balances.
  const std::vector<std::vector<uint64_t>>& routed_tokens() const { return routed_tokens_; }
  // Zero-sized without a placement.
  NumaCounters numa_counters() const;
  const PlacedExperts* placed() const { return placed_.get(); }
  // Later steps show their products' inputs to `observer` (nullptr: to none).
  // Throws lacuna::Error with a NUMA placement, whose copies are not the
  // model's weights.
  void observe_inputs(LinearInputObserver* observer);

 private:
  struct Scratch;
  void attention(int64_t layer, std::span<const SequenceStep> batch, Scratch& s);
  void moe(int64_t layer, const LayerWeights& w, Scratch& s);
  void run_placed_experts(int64_t layer, Scratch& s);
  // Every expert's gate/up products in one parallel region, then every down
  // product in another, where each is one kernel over its tokens; false
  // (nothing run) otherwise.
  bool run_experts_together(const LayerWeights& w, Scratch& s, bool gelu);
  void run(const Linear& weight, const float* x, size_t n, float* y) const;
  // y = x · Wᵀ over n tokens for each call.
  struct LinearCall {
    const Linear* weight;
    const float* x;
    size_t n;
    float* y;
  };
  // The calls' products in one parallel region (spmm_run_all, through
  // `jobs`) where each is one kernel over all its tokens, else one by one.
  void run_all(std::span<const LinearCall> calls, std::vector<SpmmJob>& jobs) const;

  std::shared_ptr<const Model> model_;
  BatchPolicy policy_;
  std::vector<double> inv_freq_;  // RoPE: theta^(-2i/head_dim)
  std::unique_ptr<Scratch> scratch_;
  std::vector<std::vector<uint64_t>> routed_tokens_;
  std::shared_ptr<const PlacedExperts> placed_;
  std::unique_ptr<NodeTeams> teams_;
  NumaCounters numa_;
  LinearInputObserver* observer_ = nullptr;
};

}  // namespace lacuna
