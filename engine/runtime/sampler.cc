#include "engine/runtime/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>

#include "kernels/vector/vector-ops.h"
#include "sparse/error.h"

namespace lacuna {

void validate(const SamplingParams& p) {
  if (!(p.temperature >= 0) || !std::isfinite(p.temperature)) throw Error("temperature must be a finite number >= 0");
  if (p.top_k < 0) throw Error("top_k must be >= 0");
  if (!(p.top_p > 0 && p.top_p <= 1)) throw Error("top_p must be in (0, 1]");
  if (!(p.repetition_penalty > 0) || !std::isfinite(p.repetition_penalty)) throw Error("repetition_penalty must be a finite number > 0");
  if (!(std::abs(p.frequency_penalty) <= 2)) throw Error("frequency_penalty must be in [-2, 2]");
  if (!(std::abs(p.presence_penalty) <= 2)) throw Error("presence_penalty must be in [-2, 2]");
  std::vector<int32_t> biased;
  for (auto [id, bias] : p.logit_bias) {
    if (!(std::abs(bias) <= kMaxLogitBias)) throw Error("the logit bias of token " + std::to_string(id) + " must be in [-100, 100]");
    biased.push_back(id);
  }
  std::sort(biased.begin(), biased.end());
  if (const auto twice = std::adjacent_find(biased.begin(), biased.end()); twice != biased.end())
    throw Error("token " + std::to_string(*twice) + " has two logit biases");
}

void validate_logit_bias_tokens(const SamplingParams& p, int64_t vocab) {
  for (auto [id, bias] : p.logit_bias)
    if (id < 0 || id >= vocab) throw Error("logit bias for token " + std::to_string(id) + ", outside the vocabulary 0.." + std::to_string(vocab - 1));
}

TokenLogprobs token_logprobs(std::span<const float> logits, int32_t token, int32_t top) {
  const float max = *std::max_element(logits.begin(), logits.end());
  double sum = 0;
  for (float l : logits) sum += std::exp(static_cast<double>(l) - max);
  const double log_sum = static_cast<double>(max) + std::log(sum);
  auto logprob = [&](int32_t id) { return static_cast<float>(static_cast<double>(logits[static_cast<size_t>(id)]) - log_sum); };
  TokenLogprobs out{logprob(token), {}};
  if (top <= 0) return out;
  const auto vocab = static_cast<int32_t>(logits.size());
  std::vector<int32_t> ids(static_cast<size_t>(vocab));
  std::iota(ids.begin(), ids.end(), 0);
  const int32_t k = std::min(top, vocab);
  std::partial_sort(ids.begin(), ids.begin() + k, ids.end(), [&](int32_t a, int32_t b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); });
  for (int32_t i = 0; i < k; ++i) out.top.emplace_back(ids[i], logprob(ids[i]));
  return out;
}

Sampler::Sampler(const SamplingParams& p) : p_(p), state_(p.seed ^ 0x5851f42d4c957f2dull) { validate(p); }

double Sampler::uniform() {
  uint64_t z = (state_ += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return static_cast<double>((z ^ (z >> 31)) >> 11) * 0x1.0p-53;
}

int32_t Sampler::sample(std::span<const float> logits, std::span<const int32_t> history, size_t generated) {
  if (logits.empty()) throw Error("sampler: no logits to sample from");
  const auto vocab = static_cast<int32_t>(logits.size());
  validate_logit_bias_tokens(p_, vocab);
  const bool adjusted = p_.repetition_penalty != 1.0f || p_.frequency_penalty != 0.0f || p_.presence_penalty != 0.0f || !p_.logit_bias.empty();
  const auto argmax = [](std::span<const float> x) { return static_cast<int32_t>(kernels::vector_ops().argmax(x.data(), x.size())); };
  // Greedy on the logits as they are: no copy.
  if (p_.temperature == 0 && !adjusted) return argmax(logits);
  work_.assign(logits.begin(), logits.end());
  if (p_.repetition_penalty != 1.0f)
    for (int32_t t : history)
      if (t >= 0 && t < vocab && work_[t] == logits[t])  // once per distinct token
        work_[t] = work_[t] > 0 ? work_[t] / p_.repetition_penalty : work_[t] * p_.repetition_penalty;
  if (p_.frequency_penalty != 0.0f || p_.presence_penalty != 0.0f) {
    // Each distinct generated token once, with its count: a sorted copy's runs.
    counted_.assign(history.end() - static_cast<std::ptrdiff_t>(std::min(generated, history.size())), history.end());
    std::sort(counted_.begin(), counted_.end());
    for (size_t i = 0; i < counted_.size();) {
      size_t end = i;
      while (end < counted_.size() && counted_[end] == counted_[i]) ++end;
      if (counted_[i] >= 0 && counted_[i] < vocab)
        work_[counted_[i]] -= static_cast<float>(end - i) * p_.frequency_penalty + p_.presence_penalty;
      i = end;
    }
  }
  for (auto [id, bias] : p_.logit_bias) work_[id] += bias;
  if (p_.temperature == 0) return argmax(work_);

  // Candidates by logit, highest first (ties to the lower id), cut to top_k.
  ids_.resize(vocab);
  std::iota(ids_.begin(), ids_.end(), 0);
  const int32_t k = p_.top_k > 0 ? std::min(p_.top_k, vocab) : vocab;
  auto higher = [&](int32_t a, int32_t b) { return work_[a] > work_[b] || (work_[a] == work_[b] && a < b); };
  std::partial_sort(ids_.begin(), ids_.begin() + k, ids_.end(), higher);
  ids_.resize(k);
  std::vector<double> prob(k);
  double sum = 0;
  for (int32_t i = 0; i < k; ++i) sum += prob[i] = std::exp(static_cast<double>(work_[ids_[i]] - work_[ids_[0]]) / p_.temperature);
  // top_p: the smallest prefix whose probability reaches top_p.
  double kept = 0;
  int32_t n = 0;
  while (n < k && (n == 0 || kept < p_.top_p * sum)) kept += prob[n++];
  double r = uniform() * kept;
  for (int32_t i = 0; i < n; ++i)
    if ((r -= prob[i]) < 0) return ids_[i];
  return ids_[n - 1];
}

}  // namespace lacuna
