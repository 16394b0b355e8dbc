#pragma once
// Picks the next token from a row of logits: repetition penalty, then greedy
// (temperature 0) or temperature, top-k and top-p sampling. Deterministic for
// a seed: a sequence samples the same tokens alone or inside a batch.
#include <cstdint>
#include <span>
#include <vector>

namespace lacuna {

struct SamplingParams {
  float temperature = 0.8f;  // 0: greedy
  int32_t top_k = 40;        // 0: all tokens
  float top_p = 0.95f;       // 1: all tokens
  float repetition_penalty = 1.0f;  // 1: none; > 1 discourages tokens already in the sequence (CTRL / HF rule)
  uint64_t seed = 0;
};

// Throws lacuna::Error for parameters out of range.
void validate(const SamplingParams& p);

class Sampler {
 public:
  explicit Sampler(const SamplingParams& p);
  // `history`: the sequence so far (prompt and generated), for the penalty.
  int32_t sample(std::span<const float> logits, std::span<const int32_t> history);

 private:
  double uniform();
  SamplingParams p_;
  uint64_t state_;
  std::vector<float> work_;
  std::vector<int32_t> ids_;
};

}  // namespace lacuna
