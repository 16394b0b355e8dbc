#include "engine/runtime/generate.h"

#include <chrono>
#include <memory>

#include "sparse/error.h"

namespace lacuna {
namespace {

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

struct Running {
  const GenerateRequest* request;
  std::unique_ptr<KvCache> cache;
  Sampler sampler;
  std::vector<int32_t> history;  // prompt then generated
  size_t prefilled = 0;
  bool done = false;
  std::vector<float> logits;
};

}  // namespace

std::vector<GenerateResult> generate(Forward& forward, const std::vector<GenerateRequest>& requests, GenerateStats* stats,
                                     const TokenCallback& on_token) {
  const Model& model = forward.model();
  const ModelConfig& c = model.config();
  const Tokenizer* tokenizer = model.tokenizer();
  std::vector<Running> seqs;
  seqs.reserve(requests.size());
  for (const GenerateRequest& r : requests) {
    if (r.prompt.empty()) throw Error("generate: empty prompt");
    if (r.options.max_tokens < 0) throw Error("generate: max_tokens must be >= 0");
    if (r.options.prefill_chunk <= 0) throw Error("generate: prefill_chunk must be > 0");
    for (int32_t t : r.prompt)
      if (t < 0 || t >= c.vocab) throw Error("generate: token id " + std::to_string(t) + " is outside the vocabulary 0.." + std::to_string(c.vocab - 1));
    const int64_t need = static_cast<int64_t>(r.prompt.size()) + r.options.max_tokens;
    if (need > c.max_context)
      throw Error("generate: prompt (" + std::to_string(r.prompt.size()) + " tokens) plus max_tokens (" + std::to_string(r.options.max_tokens) +
                  ") exceeds the model's context of " + std::to_string(c.max_context));
    seqs.push_back({&r, std::make_unique<KvCache>(c, need), Sampler(r.options.sampling), r.prompt, 0, r.options.max_tokens == 0, {}});
  }
  std::vector<GenerateResult> results(requests.size());
  GenerateStats local;
  for (const Running& s : seqs) local.prompt_tokens += static_cast<int64_t>(s.request->prompt.size());

  // Prefill: every sequence's next chunk in one step; the last chunk yields logits.
  const auto prefill_start = std::chrono::steady_clock::now();
  for (bool pending = true; pending;) {
    pending = false;
    std::vector<SequenceStep> batch;
    for (Running& s : seqs) {
      const size_t size = s.request->prompt.size();
      if (s.prefilled == size) continue;
      const size_t n = std::min<size_t>(static_cast<size_t>(s.request->options.prefill_chunk), size - s.prefilled);
      const bool last = s.prefilled + n == size;
      if (last) s.logits.resize(c.vocab);
      batch.push_back({s.cache.get(), std::span(s.request->prompt).subspan(s.prefilled, n), last ? s.logits.data() : nullptr, false});
      s.prefilled += n;
      pending |= !last;
    }
    if (!batch.empty()) forward.step(batch);
  }
  local.prefill_seconds = seconds_since(prefill_start);

  const auto decode_start = std::chrono::steady_clock::now();
  std::vector<int32_t> next(seqs.size());
  for (;;) {
    std::vector<SequenceStep> batch;
    for (size_t i = 0; i < seqs.size(); ++i) {
      Running& s = seqs[i];
      if (s.done) continue;
      GenerateResult& r = results[i];
      const int32_t token = s.sampler.sample(s.logits, s.history);
      r.tokens.push_back(token);
      s.history.push_back(token);
      ++local.generated_tokens;
      const GenerateOptions& o = s.request->options;
      // Decoding the whole text per token is quadratic; only stop strings need it.
      if (tokenizer && !o.stop.empty()) r.text = tokenizer->decode(r.tokens);
      bool stop = false;
      for (const std::string& st : o.stop)
        if (size_t at = r.text.find(st); !st.empty() && at != std::string::npos) {
          r.text.resize(at);
          r.finish_reason = "stop";
          stop = true;
          break;
        }
      if (!stop && o.stop_at_eos && token == c.eos_id) r.finish_reason = "eos", stop = true;
      if (!stop && static_cast<int32_t>(r.tokens.size()) >= o.max_tokens) r.finish_reason = "length", stop = true;
      if (on_token && !on_token(i, token) && !stop) r.finish_reason = "stop", stop = true;
      if (stop) {
        s.done = true;
        continue;
      }
      next[i] = token;
      batch.push_back({s.cache.get(), std::span(&next[i], 1), s.logits.data(), false});
    }
    if (batch.empty()) break;
    forward.step(batch);
  }
  for (size_t i = 0; i < seqs.size(); ++i) {
    if (results[i].finish_reason.empty()) results[i].finish_reason = "length";
    if (tokenizer && requests[i].options.stop.empty()) results[i].text = tokenizer->decode(results[i].tokens);
  }
  local.decode_seconds = seconds_since(decode_start);
  if (stats) *stats = local;
  return results;
}

}  // namespace lacuna
