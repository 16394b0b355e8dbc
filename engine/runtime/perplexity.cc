#include "engine/runtime/perplexity.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "sparse/error.h"

namespace lacuna {

PerplexityResult perplexity(Forward& forward, std::span<const int32_t> ids, int64_t ctx, int64_t stride,
                            const std::function<void(int64_t, int64_t)>& progress) {
  const ModelConfig& c = forward.model().config();
  const auto n = static_cast<int64_t>(ids.size());
  if (n < 2) throw Error("perplexity needs at least 2 tokens, the text has " + std::to_string(n));
  if (ctx < 2 || ctx > c.max_context)
    throw Error("perplexity: --ctx " + std::to_string(ctx) + " must be in 2.." + std::to_string(c.max_context) + " (the model's context)");
  if (stride < 1 || stride > ctx) throw Error("perplexity: --stride " + std::to_string(stride) + " must be in 1.." + std::to_string(ctx));
  for (int64_t i = 0; i < n; ++i)
    if (ids[i] < 0 || ids[i] >= c.vocab) throw Error("perplexity: token id " + std::to_string(ids[i]) + " is outside the vocabulary");
  const auto vocab = static_cast<size_t>(c.vocab);
  std::vector<float> logits;
  PerplexityResult r;
  int64_t scored_to = 1;  // tokens [1, scored_to) have been scored
  for (int64_t begin = 0; scored_to < n; begin += stride) {
    const int64_t len = std::min(ctx, n - begin);
    KvCache cache(c, len);
    logits.resize(static_cast<size_t>(len) * vocab);
    const SequenceStep step{&cache, ids.subspan(static_cast<size_t>(begin), static_cast<size_t>(len)), logits.data(), true};
    forward.step({&step, 1});
    for (int64_t i = std::max<int64_t>(1, scored_to - begin); i < len; ++i) {
      // log-softmax of the previous position's logits, in double.
      const float* row = &logits[static_cast<size_t>(i - 1) * vocab];
      const double top = *std::max_element(row, row + vocab);
      double sum = 0;
      for (size_t v = 0; v < vocab; ++v) sum += std::exp(static_cast<double>(row[v]) - top);
      r.nll -= static_cast<double>(row[ids[static_cast<size_t>(begin + i)]]) - top - std::log(sum);
      ++r.tokens;
    }
    scored_to = begin + len;
    ++r.windows;
    if (progress) progress(r.tokens, n - 1);
  }
  r.perplexity = std::exp(r.nll / static_cast<double>(r.tokens));
  return r;
}

}  // namespace lacuna
