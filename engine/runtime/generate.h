#pragma once
// Text generation over a batch of independent requests: prompts prefilled in
// chunks, then one decode step per token for every unfinished sequence
// together. Each sequence samples with its own Sampler, so its tokens are
// the same alone or inside a batch.
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "engine/runtime/forward.h"
#include "engine/runtime/sampler.h"

namespace lacuna {

struct GenerateOptions {
  SamplingParams sampling;
  int32_t max_tokens = 64;
  std::vector<std::string> stop;  // generation ends when the text contains one (it is cut off)
  bool stop_at_eos = true;
  int32_t prefill_chunk = 512;    // prompt tokens per forward step
};

struct GenerateRequest {
  std::vector<int32_t> prompt;
  GenerateOptions options;
};

struct GenerateResult {
  std::vector<int32_t> tokens;  // generated, not including the prompt
  std::string text;             // decoded (empty without a tokenizer)
  std::string finish_reason;    // "length", "stop" or "eos"
};

struct GenerateStats {
  int64_t prompt_tokens = 0, generated_tokens = 0;
  double prefill_seconds = 0, decode_seconds = 0;
};

// Called after every generated token: (request index, token). Returning false stops that request.
using TokenCallback = std::function<bool(size_t, int32_t)>;

// Throws lacuna::Error for an empty prompt, invalid token ids, options out of
// range, or prompt + max_tokens beyond the model's context.
std::vector<GenerateResult> generate(Forward& forward, const std::vector<GenerateRequest>& requests, GenerateStats* stats = nullptr,
                                     const TokenCallback& on_token = {});

}  // namespace lacuna
