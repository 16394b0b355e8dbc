#pragma once
// Token-level perplexity of a text under a model, with a sliding window: a
// window of `ctx` tokens starts every `stride` tokens; each token is scored
// once, by the first window that holds it past that window's first token
// (so with stride < ctx every scored token but the first window's has at
// least ctx - stride tokens of context). The window is the usual one of
// Hugging Face's perplexity guide; scripts/train-kjv-moe.py computes the same.
#include <cstdint>
#include <functional>
#include <span>

#include "engine/runtime/forward.h"

namespace lacuna {

struct PerplexityResult {
  double perplexity = 0;   // exp(mean negative log-likelihood)
  double nll = 0;          // summed, natural log
  int64_t tokens = 0;      // tokens scored (all but the first)
  int64_t windows = 0;
};

// Throws lacuna::Error for fewer than 2 tokens, ctx < 2 or beyond the
// model's context, stride outside 1..ctx, or an invalid token id.
// `progress(tokens_scored_so_far, tokens_to_score)` is called after each window.
PerplexityResult perplexity(Forward& forward, std::span<const int32_t> ids, int64_t ctx, int64_t stride,
                            const std::function<void(int64_t, int64_t)>& progress = {});

}  // namespace lacuna
