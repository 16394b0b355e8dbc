#include "engine/runtime/generate.h"

#include <algorithm>
#include <chrono>
#include <memory>

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

}  // namespace

void validate_request(std::span<const int32_t> prompt, const GenerateOptions& o, const KvCache* cache, const ModelConfig& c) {
  if (prompt.empty()) throw Error("the prompt is empty");
  if (o.max_tokens < 0) throw Error("max_tokens must be >= 0");
  if (o.prefill_chunk <= 0) throw Error("prefill_chunk must be > 0");
  for (auto [name, value] : {std::pair{"logprobs", o.logprobs}, std::pair{"prompt_logprobs", o.prompt_logprobs}})
    if (value < -1 || value > kMaxTopLogprobs) throw Error(std::string(name) + " must be -1 (none) or 0.." + std::to_string(kMaxTopLogprobs));
  validate(o.sampling);
  validate_logit_bias_tokens(o.sampling, c.vocab);
  for (size_t i = 0; i < prompt.size(); ++i)
    if (prompt[i] < 0 || prompt[i] >= c.vocab)
      throw Error("token id " + std::to_string(prompt[i]) + " is outside the vocabulary 0.." + std::to_string(c.vocab - 1) + " (token " +
                  std::to_string(i) + " of the prompt)");
  const auto n = static_cast<int64_t>(prompt.size());
  if (cache) {
    // The prompt, and a place for the first generated token.
    if (cache->length() + n + (o.max_tokens > 0 ? 1 : 0) > cache->capacity())
      throw Error("the prompt (" + std::to_string(n) + " tokens) and a generated token do not fit in the " +
                  std::to_string(cache->capacity() - cache->length()) + " positions left in the sequence");
  } else if (n + o.max_tokens > c.max_context) {
    throw Error("the prompt (" + std::to_string(n) + " tokens) plus max_tokens (" + std::to_string(o.max_tokens) +
                ") exceeds the model's context of " + std::to_string(c.max_context) + " tokens");
  }
}

Generation::Generation(const Model& model, const GenerateOptions& options, std::vector<int32_t> history, size_t prompt_begin)
    : config_(&model.config()),
      options_(options),
      sampler_(options.sampling),
      history_(std::move(history)),
      prompt_begin_(prompt_begin),
      generated_from_(history_.size()) {
  if (const Tokenizer* t = model.tokenizer()) stream_.emplace(*t, history_);
  for (const std::string& st : options_.stop) longest_stop_ = std::max(longest_stop_, st.size());
  if (options_.max_tokens == 0 && options_.prompt_logprobs < 0) result_.finish_reason = "length";  // nothing to do
}

Generation::Generation(Generation&&) noexcept = default;
Generation::~Generation() = default;

Generation::Token Generation::next(std::span<const float> logits, bool last_position) {
  GenerateResult& r = result_;
  const int32_t token = sampler_.sample(logits, history_, history_.size() - generated_from_);
  r.tokens.push_back(token);
  if (options_.logprobs >= 0) r.logprobs.push_back(token_logprobs(logits, token, options_.logprobs));
  history_.push_back(token);
  const size_t searched_to = r.text.size();
  if (stream_) r.text += stream_->push(token);
  // Only the new text and the stop string's length before it can hold a new match.
  const size_t from = searched_to - std::min(searched_to, longest_stop_);
  size_t cut = std::string::npos;
  for (const std::string& st : options_.stop)
    if (size_t at = r.text.find(st, from); !st.empty() && at < cut) cut = at;
  if (cut != std::string::npos) r.text.resize(cut), r.finish_reason = "stop";
  else if (options_.stop_at_eos && token == config_->eos_id) r.finish_reason = "eos";
  else if (static_cast<int32_t>(r.tokens.size()) >= options_.max_tokens) r.finish_reason = "length";
  else if (last_position) r.finish_reason = "context";
  const bool done = finished();
  if (done && cut == std::string::npos && stream_) r.text += stream_->flush();
  const size_t clear = done ? r.text.size() : r.text.size() - stop_prefix_at_end(r.text, options_.stop);
  const std::string_view text = std::string_view(r.text).substr(passed_, clear - std::min(clear, passed_));
  passed_ = std::max(passed_, clear);
  const std::span<const TokenLogprobs> prompt_logprobs = r.tokens.size() == 1 ? std::span(r.prompt_logprobs) : std::span<const TokenLogprobs>();
  return {token, text, done, r.logprobs.empty() ? nullptr : &r.logprobs.back(), prompt_logprobs};
}

std::optional<size_t> Generation::next_scored() const {
  const size_t at = prompt_begin_ + result_.prompt_logprobs.size();
  if (options_.prompt_logprobs < 0 || at + 1 >= generated_from_) return std::nullopt;
  return at;
}

bool Generation::scores(size_t from, size_t n) const {
  const std::optional<size_t> at = next_scored();
  return at && *at >= from && *at < from + n;
}

void Generation::score(size_t from, std::span<const float> rows) {
  const std::optional<size_t> first = next_scored();
  if (!first || *first < from) return;
  const auto vocab = static_cast<size_t>(config_->vocab);
  // Positions first..end-1 of these rows, each a pass over the vocabulary: on every thread.
  const size_t end = std::min(from + rows.size() / vocab, generated_from_ - 1);
  if (*first >= end) return;
  std::vector<TokenLogprobs>& out = result_.prompt_logprobs;
  const size_t begin_index = out.size();
  out.resize(begin_index + (end - *first));
#pragma omp parallel for schedule(dynamic, 8)
  for (size_t at = *first; at < end; ++at)
    out[begin_index + (at - *first)] = token_logprobs(rows.subspan((at - from) * vocab, vocab), history_[at + 1], options_.prompt_logprobs);
}

PromptChunk::PromptChunk(Generation& generation, size_t from, size_t n, bool last, std::vector<float>& logits, std::vector<float>& rows)
    : generation_(&generation), from_(from), n_(n), last_(last), every_position_(generation.scores(from, n)), logits_(&logits), rows_(&rows) {
  const auto vocab = static_cast<size_t>(generation.config().vocab);
  if (last) logits.resize(vocab);
  if (every_position_) rows.resize(n * vocab);
}

void PromptChunk::take() {
  if (!every_position_) return;
  const auto vocab = static_cast<size_t>(generation_->config().vocab);
  generation_->score(from_, std::span(*rows_).first(n_ * vocab));
  if (!last_) return;
  std::copy(rows_->begin() + static_cast<std::ptrdiff_t>((n_ - 1) * vocab), rows_->begin() + static_cast<std::ptrdiff_t>(n_ * vocab), logits_->begin());
  std::vector<float>().swap(*rows_);  // the prompt is scored: up to a chunk's worth of logits goes back
}

void Generation::end_prompt() {
  if (prompt_only()) result_.finish_reason = "length";
}

void Generation::cancel() {
  if (!finished()) result_.finish_reason = "cancelled";
}

void Generation::fail() {
  if (!finished()) result_.finish_reason = "error";
}

std::vector<GenerateResult> generate(Forward& forward, const std::vector<GenerateRequest>& requests, GenerateStats* stats,
                                     const TokenCallback& on_token) {
  const Model& model = forward.model();
  const ModelConfig& c = model.config();
  struct Running {
    const GenerateRequest* request;
    std::unique_ptr<KvCache> owned_cache;
    KvCache* cache;
    Generation generation;
    size_t prefilled = 0;
    std::vector<float> logits, rows;  // rows: every position's, for prompt scoring
  };
  std::vector<Running> seqs;
  seqs.reserve(requests.size());
  for (const GenerateRequest& r : requests) {
    validate_request(r.prompt, r.options, r.cache, c);
    std::vector<int32_t> history = r.preceding;
    history.insert(history.end(), r.prompt.begin(), r.prompt.end());
    Running& s = seqs.emplace_back(Running{&r, nullptr, r.cache, Generation(model, r.options, std::move(history), r.preceding.size()), 0, {}, {}});
    if (!s.cache) {
      s.owned_cache = std::make_unique<KvCache>(c, static_cast<int64_t>(r.prompt.size()) + r.options.max_tokens);
      s.cache = s.owned_cache.get();
    }
  }
  GenerateStats local;
  for (const Running& s : seqs) local.prompt_tokens += static_cast<int64_t>(s.request->prompt.size());

  // Prefill: every sequence's next chunk in one step; the last chunk yields logits.
  const auto prefill_start = std::chrono::steady_clock::now();
  for (bool pending = true; pending;) {
    pending = false;
    std::vector<SequenceStep> batch;
    std::vector<PromptChunk> chunks;
    for (Running& s : seqs) {
      const size_t size = s.request->prompt.size();
      if (s.prefilled == size) continue;
      const size_t n = std::min<size_t>(static_cast<size_t>(s.request->options.prefill_chunk), size - s.prefilled);
      const PromptChunk& chunk = chunks.emplace_back(s.generation, s.request->preceding.size() + s.prefilled, n, s.prefilled + n == size, s.logits, s.rows);
      batch.push_back({s.cache, std::span(s.request->prompt).subspan(s.prefilled, n), chunk.output(), chunk.every_position()});
      s.prefilled += n;
      pending |= s.prefilled < size;
    }
    if (!batch.empty()) forward.step(batch);
    for (PromptChunk& chunk : chunks) chunk.take();
  }
  local.prefill_seconds = seconds_since(prefill_start);
  for (Running& s : seqs) s.generation.end_prompt();

  const auto decode_start = std::chrono::steady_clock::now();
  std::vector<int32_t> next(seqs.size());
  for (;;) {
    std::vector<SequenceStep> batch;
    for (size_t i = 0; i < seqs.size(); ++i) {
      Running& s = seqs[i];
      if (s.generation.finished()) continue;
      // The token takes the cache's last position, so nothing can follow it.
      const Generation::Token t = s.generation.next(s.logits, s.cache->length() + 1 >= s.cache->capacity());
      ++local.generated_tokens;
      if (on_token && !on_token(i, t.id, t.text)) s.generation.cancel();
      if (s.generation.finished()) continue;
      next[i] = t.id;
      batch.push_back({s.cache, std::span(&next[i], 1), s.logits.data(), false});
    }
    if (batch.empty()) break;
    forward.step(batch);
  }
  local.decode_seconds = seconds_since(decode_start);
  if (stats) *stats = local;
  std::vector<GenerateResult> results;
  results.reserve(seqs.size());
  for (Running& s : seqs) results.push_back(s.generation.take_result());
  return results;
}

}  // namespace lacuna
