#pragma once
// Picks the next token from a row of logits: repetition, frequency and
// presence penalties and logit biases, then greedy (temperature 0) or temperature, top-k and
// top-p sampling. Deterministic for a seed: a sequence samples the same
// tokens alone or inside a batch. Also the log-probabilities a request may
// ask for (token_logprobs).
#include <cstdint>
#include <span>
#include <utility>
#include <vector>

namespace lacuna {

struct SamplingParams {
  float temperature = 0.8f;  // 0: greedy
  int32_t top_k = 40;        // 0: all tokens
  float top_p = 0.95f;       // 1: all tokens
  float repetition_penalty = 1.0f;  // 1: none; > 1 discourages tokens already in the sequence (CTRL / HF rule)
  uint64_t seed = 0;
  // OpenAI's penalties, in [-2, 2], over the tokens generated so far (not the
  // prompt): a token's logit loses frequency_penalty for each time it was
  // generated, and presence_penalty once if it was.
  float frequency_penalty = 0.0f;
  float presence_penalty = 0.0f;
  // OpenAI's logit_bias: (token id, bias in [-100, 100]) pairs, each token
  // at most once, the bias added to that token's logit after the penalties:
  // -100 all but bans a token, 100 all but forces it.
  std::vector<std::pair<int32_t, float>> logit_bias = {};
};
inline constexpr float kMaxLogitBias = 100;

// Throws lacuna::Error for parameters out of range (logit_bias: a bias out
// of range or a token twice; token ids against the vocabulary are the
// caller's to check, see validate_logit_bias_tokens).
void validate(const SamplingParams& p);
// Throws lacuna::Error for a logit bias of a token outside 0..vocab-1.
void validate_logit_bias_tokens(const SamplingParams& p, int64_t vocab);

// The model's log-probabilities at one position: the log-softmax of its
// logits as the forward pass gave them, before the repetition penalty,
// temperature, top-k and top-p, so that they describe the model whatever
// the request samples with (OpenAI's `logprobs`, and what evaluation
// harnesses score).
struct TokenLogprobs {
  float logprob = 0;  // of the token taken
  std::vector<std::pair<int32_t, float>> top;  // the most likely tokens and their log-probabilities, highest first (ties: lower id)
};
inline constexpr int32_t kMaxTopLogprobs = 20;

// `token`'s log-probability under `logits` and the `top` (0..kMaxTopLogprobs)
// most likely tokens'. Sums in double: a 131072-token vocabulary loses no
// digits of the chosen token's value.
TokenLogprobs token_logprobs(std::span<const float> logits, int32_t token, int32_t top);

class Sampler {
 public:
  explicit Sampler(const SamplingParams& p);
  // `history`: the sequence so far (prompt and generated), for the repetition
  // penalty; its last `generated` tokens, for the frequency and presence penalties.
  // Throws lacuna::Error for empty logits.
  int32_t sample(std::span<const float> logits, std::span<const int32_t> history, size_t generated);

 private:
  double uniform();
  SamplingParams p_;
  uint64_t state_;
  std::vector<float> work_;
  std::vector<int32_t> ids_, counted_;
};

}  // namespace lacuna
