#include "engine/runtime/generate.h"

#include <algorithm>
#include <chrono>
#include <memory>
#include <optional>

#include "sparse/error.h"

namespace lacuna {
namespace {

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// The length of the longest end of `text` that begins one of the stop
// strings: text that must wait until the next token shows whether it stops.
size_t stop_prefix_at_end(std::string_view text, const std::vector<std::string>& stop) {
  size_t held = 0;
  for (const std::string& s : stop)
    for (size_t n = s.empty() ? 0 : std::min(s.size() - 1, text.size()); n > held; --n)
      if (text.ends_with(std::string_view(s).substr(0, n))) {
        held = n;
        break;
      }
  return held;
}

struct Running {
  Running(const GenerateRequest& r, KvCache* c) : request(&r), cache(c), sampler(r.options.sampling), history(r.preceding) {}
  const GenerateRequest* request;
  std::unique_ptr<KvCache> owned_cache;
  KvCache* cache;
  Sampler sampler;
  std::vector<int32_t> history;  // preceding, prompt, then generated
  std::optional<TextStream> stream;
  size_t prefilled = 0;
  size_t passed = 0;  // bytes of the result's text given to the callback
  size_t longest_stop = 0;
  bool done = false;
  std::vector<float> logits;
};

void validate(const GenerateRequest& r, const ModelConfig& c) {
  if (r.prompt.empty()) throw Error("generate: empty prompt");
  if (r.options.max_tokens < 0) throw Error("generate: max_tokens must be >= 0");
  if (r.options.prefill_chunk <= 0) throw Error("generate: prefill_chunk must be > 0");
  lacuna::validate(r.options.sampling);
  for (int32_t t : r.prompt)
    if (t < 0 || t >= c.vocab) throw Error("generate: token id " + std::to_string(t) + " is outside the vocabulary 0.." + std::to_string(c.vocab - 1));
  const int64_t prompt = static_cast<int64_t>(r.prompt.size());
  if (r.cache) {
    if (r.cache->length() + prompt > r.cache->capacity())
      throw Error("generate: prompt (" + std::to_string(prompt) + " tokens) does not fit in the " +
                  std::to_string(r.cache->capacity() - r.cache->length()) + " positions left in the sequence");
  } else if (prompt + r.options.max_tokens > c.max_context) {
    throw Error("generate: prompt (" + std::to_string(prompt) + " tokens) plus max_tokens (" + std::to_string(r.options.max_tokens) +
                ") exceeds the model's context of " + std::to_string(c.max_context));
  }
}

}  // namespace

std::vector<GenerateResult> generate(Forward& forward, const std::vector<GenerateRequest>& requests, GenerateStats* stats,
                                     const TokenCallback& on_token) {
  const Model& model = forward.model();
  const ModelConfig& c = model.config();
  const Tokenizer* tokenizer = model.tokenizer();
  std::vector<Running> seqs;
  seqs.reserve(requests.size());
  for (const GenerateRequest& r : requests) {
    validate(r, c);
    Running& s = seqs.emplace_back(r, r.cache);
    if (!s.cache) {
      s.owned_cache = std::make_unique<KvCache>(c, static_cast<int64_t>(r.prompt.size()) + r.options.max_tokens);
      s.cache = s.owned_cache.get();
    }
    s.history.insert(s.history.end(), r.prompt.begin(), r.prompt.end());
    if (tokenizer) s.stream.emplace(*tokenizer, s.history);
    for (const std::string& st : r.options.stop) s.longest_stop = std::max(s.longest_stop, st.size());
    s.done = r.options.max_tokens == 0;
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
      batch.push_back({s.cache, std::span(s.request->prompt).subspan(s.prefilled, n), last ? s.logits.data() : nullptr, false});
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
      const GenerateOptions& o = s.request->options;
      const int32_t token = s.sampler.sample(s.logits, s.history);
      r.tokens.push_back(token);
      s.history.push_back(token);
      ++local.generated_tokens;
      const size_t searched_to = r.text.size();
      if (s.stream) r.text += s.stream->push(token);
      // Only the new text and the stop string's length before it can hold a new match.
      const size_t from = searched_to - std::min(searched_to, s.longest_stop);
      size_t cut = std::string::npos;
      for (const std::string& st : o.stop)
        if (size_t at = r.text.find(st, from); !st.empty() && at < cut) cut = at;
      if (cut != std::string::npos) r.text.resize(cut), r.finish_reason = "stop";
      else if (o.stop_at_eos && token == c.eos_id) r.finish_reason = "eos";
      else if (static_cast<int32_t>(r.tokens.size()) >= o.max_tokens) r.finish_reason = "length";
      // The token takes the cache's last position, so nothing can follow it.
      else if (s.cache->length() + 1 >= s.cache->capacity()) r.finish_reason = "context";
      const bool finished = !r.finish_reason.empty();
      if (finished && cut == std::string::npos && s.stream) r.text += s.stream->flush();
      const size_t clear = finished ? r.text.size() : r.text.size() - stop_prefix_at_end(r.text, o.stop);
      const std::string_view text = std::string_view(r.text).substr(s.passed, clear - std::min(clear, s.passed));
      s.passed = std::max(s.passed, clear);
      if (on_token && !on_token(i, token, text) && !finished) r.finish_reason = "cancelled";
      if (!r.finish_reason.empty()) {
        s.done = true;
        continue;
      }
      next[i] = token;
      batch.push_back({s.cache, std::span(&next[i], 1), s.logits.data(), false});
    }
    if (batch.empty()) break;
    forward.step(batch);
  }
  for (GenerateResult& r : results)
    if (r.finish_reason.empty()) r.finish_reason = "length";  // max_tokens 0
  local.decode_seconds = seconds_since(decode_start);
  if (stats) *stats = local;
  return results;
}

}  // namespace lacuna
