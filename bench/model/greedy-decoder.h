#pragma once
// A batch of sequences decoded greedily, one timed step at a time: what the
// whole-model benchmarks (`bench model`, `bench numa`) time.
#include <algorithm>
#include <chrono>
#include <memory>
#include <span>
#include <vector>

#include "engine/runtime/forward.h"

namespace lacuna::bench {

class GreedyDecoder {
 public:
  explicit GreedyDecoder(std::shared_ptr<const Model> model, std::shared_ptr<const PlacedExperts> placed = nullptr)
      : model_(model), forward_(std::move(model), BatchPolicy::fastest, std::move(placed)) {}
  Forward& forward() { return forward_; }

  // `batch` sequences, each with an 8-token prompt taken from `prompt` (at
  // least 8 + batch % 64 tokens), then one untimed step; room for `steps` more.
  void start(size_t batch, int steps, std::span<const int32_t> prompt) {
    const ModelConfig& c = model_->config();
    caches_.clear();
    for (size_t b = 0; b < batch; ++b) caches_.emplace_back(c, 8 + steps + 2);
    logits_.assign(batch * c.vocab, 0.0f);
    tokens_.resize(batch);
    std::vector<SequenceStep> seqs;
    for (size_t b = 0; b < batch; ++b) seqs.push_back({&caches_[b], prompt.subspan(b % 64, 8), &logits_[b * c.vocab], false});
    forward_.step(seqs);
    step();
  }
  // Seconds for one greedy decode step of every sequence.
  double step() {
    const auto vocab = static_cast<size_t>(model_->config().vocab);
    std::vector<SequenceStep> seqs;
    for (size_t b = 0; b < caches_.size(); ++b) {
      tokens_[b] = static_cast<int32_t>(std::max_element(&logits_[b * vocab], &logits_[(b + 1) * vocab]) - &logits_[b * vocab]);
      seqs.push_back({&caches_[b], std::span(&tokens_[b], 1), &logits_[b * vocab], false});
    }
    const auto t0 = std::chrono::steady_clock::now();
    forward_.step(seqs);
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }

 private:
  std::shared_ptr<const Model> model_;
  Forward forward_;
  std::vector<KvCache> caches_;
  std::vector<float> logits_;
  std::vector<int32_t> tokens_;
};

// Token ids for benchmark prompts: spread over the vocabulary, the same every run.
inline std::vector<int32_t> bench_prompt(size_t length, int64_t vocab) {
  std::vector<int32_t> ids(length);
  for (size_t i = 0; i < length; ++i) ids[i] = static_cast<int32_t>((i * 7919 + 13) % static_cast<size_t>(vocab));
  return ids;
}

}  // namespace lacuna::bench
