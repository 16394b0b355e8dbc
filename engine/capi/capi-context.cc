// The C API: contexts, their sequences, evaluation and generation.
#include <omp.h>

#include <algorithm>
#include <set>
#include <span>

#include "engine/capi/capi-internal.h"
#include "engine/runtime/generate.h"

using lacuna::capi::ApiError;
using lacuna::capi::guarded;
using lacuna::capi::require;
using lacuna::capi::Sequence;

namespace {

// Marks a context busy for one call; a second call meanwhile is refused.
class Busy {
 public:
  explicit Busy(lacuna_context* ctx) : ctx_(ctx) {
    require(ctx != nullptr, LACUNA_STATUS_INVALID_ARGUMENT, "ctx is NULL");
    require(!ctx->busy.exchange(true), LACUNA_STATUS_MISUSE,
            "the context is running another call (from another thread, or this is its own token callback)");
  }
  ~Busy() { ctx_->busy.store(false); }
  Busy(const Busy&) = delete;
  Busy& operator=(const Busy&) = delete;

 private:
  lacuna_context* ctx_;
};

// The context's worker threads for one call; the caller's own OpenMP setting
// (a per-thread value) is restored afterwards.
class ThreadCount {
 public:
  explicit ThreadCount(int32_t n) : previous_(omp_get_max_threads()) {
    if (n > 0) omp_set_num_threads(n);
  }
  ~ThreadCount() { omp_set_num_threads(previous_); }
  ThreadCount(const ThreadCount&) = delete;
  ThreadCount& operator=(const ThreadCount&) = delete;

 private:
  int previous_;
};

Sequence& sequence(lacuna_context* ctx, int32_t seq_id) {
  require(seq_id >= 0 && seq_id < ctx->params.n_seq_max, LACUNA_STATUS_INVALID_ARGUMENT,
          "seq_id " + std::to_string(seq_id) + " is outside 0.." + std::to_string(ctx->params.n_seq_max - 1) + " (n_seq_max)");
  Sequence& s = ctx->seqs[static_cast<size_t>(seq_id)];
  if (!s.cache) s.cache = std::make_unique<lacuna::KvCache>(ctx->model->config(), ctx->params.n_ctx);
  return s;
}

void check_tokens(const lacuna_context* ctx, const int32_t* tokens, size_t n, const std::string& what) {
  const int64_t vocab = ctx->model->config().vocab;
  for (size_t i = 0; i < n; ++i)
    require(tokens[i] >= 0 && tokens[i] < vocab, LACUNA_STATUS_INVALID_TOKEN,
            what + "[" + std::to_string(i) + "] = " + std::to_string(tokens[i]) + " is outside the vocabulary 0.." + std::to_string(vocab - 1));
}

// The tokens a call appends: the sequence's pending token, then the caller's.
std::vector<int32_t> appended(const Sequence& s, const int32_t* tokens, size_t n) {
  std::vector<int32_t> all;
  all.reserve(n + 1);
  if (s.pending) all.push_back(*s.pending);
  all.insert(all.end(), tokens, tokens + n);
  return all;
}

// `adding` tokens after the sequence's (its pending one included) must fit in n_ctx.
void check_room(const lacuna_context* ctx, const Sequence& s, size_t adding, int32_t seq_id) {
  const auto room = static_cast<size_t>(ctx->params.n_ctx - s.length());
  require(adding <= room, LACUNA_STATUS_CONTEXT_FULL,
          "sequence " + std::to_string(seq_id) + " holds " + std::to_string(s.length()) + " of " + std::to_string(ctx->params.n_ctx) +
              " positions (n_ctx); " + std::to_string(adding) + " more do not fit");
}

// The sequence's tokens once `added` (in the cache after this call) follow
// them; built before the call commits, so committing cannot fail.
std::vector<int32_t> tokens_after(const Sequence& s, std::span<const int32_t> added) {
  std::vector<int32_t> all;
  all.reserve(s.tokens.size() + added.size());
  all = s.tokens;
  all.insert(all.end(), added.begin(), added.end());
  return all;
}

// Puts the caches back at their lengths if a call fails after changing them
// (an allocation failing inside a forward step), so a sequence's tokens always
// describe its cache. Positions below a saved length are never overwritten
// with anything but what they held (a token evaluated again at its place).
class Rollback {
 public:
  void keep(Sequence& s) { saved_.emplace_back(&s, s.cache->length()); }
  void commit() { saved_.clear(); }
  ~Rollback() {
    for (auto [s, length] : saved_) s->cache->set_length(length);
  }

 private:
  std::vector<std::pair<Sequence*, int64_t>> saved_;
};

// Every output of an earlier call dies with the next one that changes the context.
void forget_outputs(lacuna_context* ctx) {
  ctx->outputs.clear();
  ctx->generated.clear();
  ctx->generated_text.clear();
}

}  // namespace

extern "C" {

lacuna_status lacuna_context_default_params(lacuna_context_params* params, size_t params_size) {
  return guarded(nullptr, __func__, LACUNA_STATUS_INVALID_ARGUMENT, [&] {
    lacuna_context_params p{};
    p.n_seq_max = 1;
    p.n_batch = 512;
    lacuna::capi::write_defaults(p, params, params_size);
    return LACUNA_STATUS_OK;
  });
}

lacuna_status lacuna_context_create(const lacuna_model* model, const lacuna_context_params* params, lacuna_context** ctx) {
  return guarded(nullptr, __func__, LACUNA_STATUS_INVALID_ARGUMENT, [&] {
    require(ctx != nullptr, LACUNA_STATUS_INVALID_ARGUMENT, "ctx (the out-parameter) is NULL");
    *ctx = nullptr;
    require(model != nullptr, LACUNA_STATUS_INVALID_ARGUMENT, "model is NULL");
    lacuna_context_params p = lacuna::capi::params_or_defaults(params, lacuna_context_default_params);
    const int64_t max_ctx = model->model->config().max_context;
    require(p.n_ctx >= 0 && p.n_ctx <= max_ctx, LACUNA_STATUS_INVALID_ARGUMENT,
            "params.n_ctx is " + std::to_string(p.n_ctx) + ", must be in 0.." + std::to_string(max_ctx) + " (the model's n_ctx_max; 0 means it)");
    require(p.n_seq_max >= 1 && p.n_seq_max <= 4096, LACUNA_STATUS_INVALID_ARGUMENT,
            "params.n_seq_max is " + std::to_string(p.n_seq_max) + ", must be in 1..4096");
    require(p.n_threads >= 0 && p.n_threads <= 1024, LACUNA_STATUS_INVALID_ARGUMENT,
            "params.n_threads is " + std::to_string(p.n_threads) + ", must be in 0..1024");
    require(p.n_batch >= 1, LACUNA_STATUS_INVALID_ARGUMENT, "params.n_batch is " + std::to_string(p.n_batch) + ", must be >= 1");
    if (p.n_ctx == 0) p.n_ctx = static_cast<int32_t>(std::min<int64_t>(max_ctx, INT32_MAX));
    if (p.n_threads == 0) p.n_threads = model->n_threads;
    auto c = std::make_unique<lacuna_context>(*model, p);
    c->seqs.resize(static_cast<size_t>(p.n_seq_max));
    *ctx = c.release();
    return LACUNA_STATUS_OK;
  });
}

void lacuna_context_free(lacuna_context* ctx) {
  if (ctx && ctx->busy.load()) {
    lacuna::capi::fail(nullptr, __func__, LACUNA_STATUS_MISUSE, "the context is running a call (this is its own token callback, or another thread's call): not freed");
    return;
  }
  delete ctx;
}

const char* lacuna_context_last_error(const lacuna_context* ctx) { return ctx ? ctx->last_error.c_str() : ""; }

lacuna_status lacuna_context_eval(lacuna_context* ctx, const lacuna_seq_input* inputs, size_t n_inputs) {
  return guarded(ctx, __func__, LACUNA_STATUS_INTERNAL, [&] {
    const Busy busy(ctx);
    const ThreadCount threads(ctx->params.n_threads);
    forget_outputs(ctx);
    require(inputs != nullptr && n_inputs > 0, LACUNA_STATUS_INVALID_ARGUMENT, "no inputs (inputs is NULL or n_inputs is 0)");
    // Everything is checked before any sequence changes.
    std::set<int32_t> seen;
    std::vector<std::vector<int32_t>> tokens(n_inputs);
    std::vector<Sequence*> seqs(n_inputs);
    for (size_t i = 0; i < n_inputs; ++i) {
      const lacuna_seq_input& in = inputs[i];
      const std::string name = "inputs[" + std::to_string(i) + "]";
      seqs[i] = &sequence(ctx, in.seq_id);
      require(seen.insert(in.seq_id).second, LACUNA_STATUS_INVALID_ARGUMENT, name + ": sequence " + std::to_string(in.seq_id) + " appears twice");
      require(in.n_tokens > 0 && in.tokens != nullptr, LACUNA_STATUS_INVALID_ARGUMENT, name + " has no tokens");
      check_room(ctx, *seqs[i], in.n_tokens, in.seq_id);
      check_tokens(ctx, in.tokens, in.n_tokens, name + ".tokens");
      tokens[i] = appended(*seqs[i], in.tokens, in.n_tokens);
    }
    std::vector<std::vector<int32_t>> after(n_inputs);
    for (size_t i = 0; i < n_inputs; ++i) after[i] = tokens_after(*seqs[i], tokens[i]);
    const auto vocab = static_cast<size_t>(ctx->model->config().vocab);
    std::vector<lacuna::capi::EvalOutput> outputs(n_inputs);
    Rollback rollback;
    for (size_t i = 0; i < n_inputs; ++i) {
      const bool all = inputs[i].all_logits != 0;
      outputs[i].logits.resize((all ? tokens[i].size() : 1) * vocab);
      outputs[i].first_row = all && seqs[i]->pending ? 1 : 0;
      outputs[i].rows = all ? inputs[i].n_tokens : 1;
      rollback.keep(*seqs[i]);
    }
    const auto chunk = static_cast<size_t>(ctx->params.n_batch);
    for (size_t done = 0;; done += chunk) {
      std::vector<lacuna::SequenceStep> batch;
      for (size_t i = 0; i < n_inputs; ++i) {
        const size_t size = tokens[i].size();
        if (done >= size) continue;
        const size_t n = std::min(chunk, size - done);
        const bool all = inputs[i].all_logits != 0, last = done + n == size;
        float* logits = all ? outputs[i].logits.data() + done * vocab : (last ? outputs[i].logits.data() : nullptr);
        batch.push_back({seqs[i]->cache.get(), std::span(tokens[i]).subspan(done, n), logits, all});
      }
      if (batch.empty()) break;
      ctx->forward.step(batch);
    }
    rollback.commit();
    for (size_t i = 0; i < n_inputs; ++i) {
      seqs[i]->tokens.swap(after[i]);
      seqs[i]->pending.reset();
    }
    ctx->outputs.swap(outputs);
    return LACUNA_STATUS_OK;
  });
}

const float* lacuna_context_logits(const lacuna_context* ctx, size_t index, size_t* n_rows) {
  if (n_rows) *n_rows = 0;
  if (!ctx || index >= ctx->outputs.size()) return nullptr;
  const lacuna::capi::EvalOutput& o = ctx->outputs[index];
  if (n_rows) *n_rows = o.rows;
  return o.logits.data() + o.first_row * static_cast<size_t>(ctx->model->config().vocab);
}

int64_t lacuna_context_seq_length(const lacuna_context* ctx, int32_t seq_id) {
  if (!ctx || seq_id < 0 || seq_id >= ctx->params.n_seq_max) return -1;
  return ctx->seqs[static_cast<size_t>(seq_id)].length();
}

lacuna_status lacuna_context_seq_truncate(lacuna_context* ctx, int32_t seq_id, int64_t length) {
  return guarded(ctx, __func__, LACUNA_STATUS_INVALID_ARGUMENT, [&] {
    const Busy busy(ctx);
    forget_outputs(ctx);
    Sequence& s = sequence(ctx, seq_id);
    require(length >= 0 && length <= s.length(), LACUNA_STATUS_INVALID_ARGUMENT,
            "length " + std::to_string(length) + " is outside 0.." + std::to_string(s.length()) + " (sequence " + std::to_string(seq_id) + "'s length)");
    if (length == s.length()) return LACUNA_STATUS_OK;
    s.pending.reset();
    s.tokens.resize(static_cast<size_t>(length));
    s.cache->truncate(length);
    return LACUNA_STATUS_OK;
  });
}

lacuna_status lacuna_context_reset(lacuna_context* ctx) {
  return guarded(ctx, __func__, LACUNA_STATUS_INVALID_ARGUMENT, [&] {
    const Busy busy(ctx);
    forget_outputs(ctx);
    for (Sequence& s : ctx->seqs) {
      s.pending.reset();
      s.tokens.clear();
      if (s.cache) s.cache->truncate(0);
    }
    return LACUNA_STATUS_OK;
  });
}

lacuna_status lacuna_generate_default_params(lacuna_generate_params* params, size_t params_size) {
  return guarded(nullptr, __func__, LACUNA_STATUS_INVALID_ARGUMENT, [&] {
    const lacuna::GenerateOptions o;
    lacuna_generate_params p{};
    p.max_tokens = o.max_tokens;
    p.temperature = o.sampling.temperature;
    p.top_k = o.sampling.top_k;
    p.top_p = o.sampling.top_p;
    p.repetition_penalty = o.sampling.repetition_penalty;
    p.seed = o.sampling.seed;
    p.frequency_penalty = o.sampling.frequency_penalty;
    p.presence_penalty = o.sampling.presence_penalty;
    p.stop_at_eos = o.stop_at_eos;
    lacuna::capi::write_defaults(p, params, params_size);
    return LACUNA_STATUS_OK;
  });
}

lacuna_status lacuna_context_generate(lacuna_context* ctx, int32_t seq_id, const int32_t* prompt, size_t n_prompt,
                                      const lacuna_generate_params* params, lacuna_generate_result* result, size_t result_size) {
  // Every caller error is found before the sequence changes; a lacuna::Error after that is Lacuna's.
  return guarded(ctx, __func__, LACUNA_STATUS_INTERNAL, [&] {
    const Busy busy(ctx);
    const ThreadCount threads(ctx->params.n_threads);
    forget_outputs(ctx);
    const lacuna_generate_params p = lacuna::capi::params_or_defaults(params, lacuna_generate_default_params);
    if (result) lacuna::capi::write_struct(lacuna_generate_result{}, result, result_size, "result");
    Sequence& s = sequence(ctx, seq_id);
    require(prompt != nullptr || n_prompt == 0, LACUNA_STATUS_INVALID_ARGUMENT, "prompt is NULL");
    require(p.max_tokens >= 0, LACUNA_STATUS_INVALID_ARGUMENT, "params.max_tokens is " + std::to_string(p.max_tokens) + ", must be >= 0");
    require(p.stop != nullptr || p.n_stop == 0, LACUNA_STATUS_INVALID_ARGUMENT, "params.stop is NULL but params.n_stop is not 0");
    require((p.logit_bias_tokens != nullptr && p.logit_biases != nullptr) || p.n_logit_bias == 0, LACUNA_STATUS_INVALID_ARGUMENT,
            "params.logit_bias_tokens or params.logit_biases is NULL but params.n_logit_bias is not 0");
    lacuna::GenerateOptions o;
    o.max_tokens = p.max_tokens;
    o.sampling = {.temperature = p.temperature,
                  .top_k = p.top_k,
                  .top_p = p.top_p,
                  .repetition_penalty = p.repetition_penalty,
                  .seed = p.seed,
                  .frequency_penalty = p.frequency_penalty,
                  .presence_penalty = p.presence_penalty};
    for (size_t i = 0; i < p.n_logit_bias; ++i) o.sampling.logit_bias.emplace_back(p.logit_bias_tokens[i], p.logit_biases[i]);
    try {
      lacuna::validate(o.sampling);
      lacuna::validate_logit_bias_tokens(o.sampling, ctx->model->config().vocab);
    } catch (const lacuna::Error& e) {
      throw ApiError{LACUNA_STATUS_INVALID_ARGUMENT, std::string("params: ") + e.what()};
    }
    for (size_t i = 0; i < p.n_stop; ++i) {
      require(p.stop[i] != nullptr, LACUNA_STATUS_INVALID_ARGUMENT, "params.stop[" + std::to_string(i) + "] is NULL");
      o.stop.emplace_back(p.stop[i]);
    }
    o.stop_at_eos = p.stop_at_eos != 0;
    o.prefill_chunk = ctx->params.n_batch;
    require(n_prompt > 0 || s.length() > 0, LACUNA_STATUS_INVALID_ARGUMENT, "the prompt is empty and so is sequence " + std::to_string(seq_id));
    // The prompt, and a place for the first generated token.
    check_room(ctx, s, n_prompt + (p.max_tokens > 0 ? 1 : 0), seq_id);
    check_tokens(ctx, prompt, n_prompt, "prompt");

    lacuna::GenerateRequest r;
    r.options = std::move(o);
    r.prompt = appended(s, prompt, n_prompt);
    r.preceding = s.tokens;
    Rollback rollback;
    rollback.keep(s);
    if (r.prompt.empty()) {
      // Continuing a sequence whose every token is in the cache: the logits
      // of its last one are gone, so it is evaluated again.
      r.prompt = {r.preceding.back()};
      r.preceding.pop_back();
      s.cache->truncate(s.cache->length() - 1);
    }
    r.cache = s.cache.get();
    lacuna::TokenCallback on_token;
    std::string piece;
    if (p.on_token)
      on_token = [&](size_t, int32_t token, std::string_view text) {
        piece.assign(text);
        return p.on_token(p.user_data, token, piece.c_str(), piece.size()) != 0;
      };
    lacuna::GenerateStats stats;
    lacuna::GenerateResult out = std::move(lacuna::generate(ctx->forward, {r}, &stats, on_token)[0]);
    // The cache now holds the prompt and every generated token but the last,
    // which stays pending; everything is built before anything is committed.
    std::vector<int32_t> in_cache = r.preceding;
    in_cache.insert(in_cache.end(), r.prompt.begin(), r.prompt.end());
    if (!out.tokens.empty()) in_cache.insert(in_cache.end(), out.tokens.begin(), out.tokens.end() - 1);
    require(static_cast<int64_t>(in_cache.size()) == s.cache->length(), LACUNA_STATUS_INTERNAL,
            "sequence bookkeeping lost track of the cache (" + std::to_string(in_cache.size()) + " tokens, cache " +
                std::to_string(s.cache->length()) + ")");
    lacuna_generate_result res{};
    const std::string& why = out.finish_reason;
    res.finish_reason = why == "stop"        ? LACUNA_FINISH_REASON_STOP
                        : why == "eos"       ? LACUNA_FINISH_REASON_EOS
                        : why == "context"   ? LACUNA_FINISH_REASON_CONTEXT_FULL
                        : why == "cancelled" ? LACUNA_FINISH_REASON_CANCELLED
                                             : LACUNA_FINISH_REASON_LENGTH;
    res.n_prompt_tokens = static_cast<size_t>(stats.prompt_tokens);
    res.prefill_seconds = stats.prefill_seconds;
    res.decode_seconds = stats.decode_seconds;
    rollback.commit();
    s.tokens.swap(in_cache);
    s.pending.reset();
    if (!out.tokens.empty()) s.pending = out.tokens.back();
    ctx->generated.swap(out.tokens);
    ctx->generated_text.swap(out.text);
    if (result) {
      res.tokens = ctx->generated.data();
      res.n_tokens = ctx->generated.size();
      res.text = ctx->generated_text.c_str();
      res.text_len = ctx->generated_text.size();
      const size_t filled = std::min(result_size, sizeof res);
      res.struct_size = filled;
      std::memcpy(static_cast<void*>(result), &res, filled);
    }
    return LACUNA_STATUS_OK;
  });
}

}  // extern "C"
