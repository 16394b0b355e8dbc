#pragma once
// Text generation over a batch of independent requests: prompts prefilled in
// chunks, then one decode step per token for every unfinished sequence
// together. Each sequence samples with its own Sampler, so its tokens are
// the same alone or inside a batch.
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "engine/runtime/forward.h"
#include "engine/runtime/sampler.h"

namespace lacuna {

struct GenerateOptions {
  SamplingParams sampling;
  // 0: none; with prompt_logprobs the prompt is still evaluated and scored
  // (the completions API's echo with max_tokens 0).
  int32_t max_tokens = 64;
  std::vector<std::string> stop;  // generation ends when the text contains one (it is cut off)
  bool stop_at_eos = true;
  int32_t prefill_chunk = 512;    // prompt tokens per forward step
  // -1: none; 0..kMaxTopLogprobs: each generated token's log-probability
  // (token_logprobs) and that many of the most likely tokens' at its position.
  int32_t logprobs = -1;
  // The same for the prompt's tokens from its second on (each scored by the
  // logits of the position before it): the prompt is then evaluated with
  // every position's logits, [chunk][vocab] floats at a time.
  int32_t prompt_logprobs = -1;
};

struct GenerateRequest {
  std::vector<int32_t> prompt;
  GenerateOptions options;
  // Continue a sequence: the prompt goes after what `cache` holds, and
  // `preceding` lists those tokens (for the repetition penalty and the text's
  // first space). The cache must have room for the prompt and one generated
  // token (none when max_tokens is 0); generation ends
  // with "context" once the tokens fill it. The cache then holds the prompt
  // and every generated token but the last (which would take its last
  // position). nullptr: a new cache for prompt + max_tokens.
  KvCache* cache = nullptr;
  std::vector<int32_t> preceding;
};

struct GenerateResult {
  std::vector<int32_t> tokens;  // generated, not including the prompt
  std::string text;             // decoded (empty without a tokenizer)
  // "length" (max_tokens), "stop" (a stop string), "eos", "context" (the
  // cache is full), "cancelled" (the token callback returned false) or
  // "error" (a forward step failed; only where steps are shared, a server).
  std::string finish_reason;
  std::vector<TokenLogprobs> logprobs;  // one per token, when options.logprobs >= 0
  std::vector<TokenLogprobs> prompt_logprobs;  // one per prompt token but the first, when options.prompt_logprobs >= 0
};

struct GenerateStats {
  int64_t prompt_tokens = 0, generated_tokens = 0;
  double prefill_seconds = 0, decode_seconds = 0;
};

// Throws lacuna::Error naming the problem: an empty prompt, an invalid token
// id, options out of range, a prompt and max_tokens beyond the model's
// context (no cache) or a prompt and one generated token beyond the room
// left in `cache`. Shared by generate() and the server's scheduler.
void validate_request(std::span<const int32_t> prompt, const GenerateOptions& options, const KvCache* cache, const ModelConfig& config);

// One sequence's generation, token by token, for any loop that runs the
// forward steps (generate() below, the server's scheduler): samples each
// token from the logits, follows the text (streaming, stop strings) and
// decides when the sequence ends.
class Generation {
 public:
  // `history`: the tokens before the first generated one (preceding and
  // prompt); the prompt begins at `prompt_begin`.
  Generation(const Model& model, const GenerateOptions& options, std::vector<int32_t> history, size_t prompt_begin = 0);
  Generation(Generation&&) noexcept;
  ~Generation();

  struct Token {
    int32_t id;
    std::string_view text;  // what it adds to the result's text (see TokenCallback); valid until the next call
    bool finished;
    const TokenLogprobs* logprobs;  // when options.logprobs >= 0 (else nullptr); valid until the next call
    // With the first token, when options.prompt_logprobs >= 0: the prompt's
    // (result().prompt_logprobs); empty otherwise.
    std::span<const TokenLogprobs> prompt_logprobs;
  };
  // Samples the next token. `last_position`: the token would take the
  // cache's last position, so nothing could follow it ("context").
  Token next(std::span<const float> logits, bool last_position);
  // Prompt scoring (options.prompt_logprobs): whether the forward step of
  // history[from, from + n) must give every position's logits, and taking
  // those ([n][vocab]) in. A prompt evaluated again (a server's preempted
  // sequence) is not scored twice.
  bool scores(size_t from, size_t n) const;
  void score(size_t from, std::span<const float> rows);
  // A generation of no tokens that scores its prompt (max_tokens 0,
  // prompt_logprobs): the loop evaluates the prompt, then calls
  // end_prompt() where it would call next(), which ends it with "length".
  bool prompt_only() const { return options_.max_tokens == 0 && !finished(); }
  void end_prompt();
  // Ends an unfinished generation with "cancelled".
  void cancel();
  // Ends an unfinished generation with "error" (its forward step failed).
  void fail();
  bool finished() const { return !result_.finish_reason.empty(); }
  const GenerateResult& result() const { return result_; }
  GenerateResult take_result() { return std::move(result_); }
  const std::vector<int32_t>& history() const { return history_; }  // before, then generated
  const ModelConfig& config() const { return *config_; }

 private:
  // The position whose logits score the next prompt token, if one is left to score.
  std::optional<size_t> next_scored() const;

  const ModelConfig* config_;
  GenerateOptions options_;
  Sampler sampler_;
  std::vector<int32_t> history_;
  size_t prompt_begin_;    // where the prompt begins in history_
  size_t generated_from_;  // where the generated tokens begin in history_
  std::optional<TextStream> stream_;
  GenerateResult result_;
  size_t passed_ = 0;  // bytes of the text already given out
  size_t longest_stop_ = 0;
};

// One sequence's run of history in a forward step, and where its logits
// go: nowhere before the prompt's last chunk, one row at its end (for the
// first token), or every position's when the generation scores its prompt
// (the rows go to Generation::score and the last one to `logits`). For the
// loops that run the steps (generate() below, the server's scheduler).
class PromptChunk {
 public:
  PromptChunk(Generation& generation, size_t from, size_t n, bool last, std::vector<float>& logits, std::vector<float>& rows);
  float* output() const { return every_position_ ? rows_->data() : last_ ? logits_->data() : nullptr; }  // SequenceStep::logits
  bool every_position() const { return every_position_; }                                                 // SequenceStep::all_positions
  bool last() const { return last_; }  // the history's end: the logits give the next token
  // After the step.
  void take();

 private:
  Generation* generation_;
  size_t from_, n_;
  bool last_, every_position_;
  std::vector<float>*logits_, *rows_;
};

// Called after every generated token with the request's index, the token and
// the text it adds to the result (empty without a tokenizer; text that may
// begin a stop string is held back until it is clear, and what a stop string
// cuts off is never passed). Returning false stops that request.
using TokenCallback = std::function<bool(size_t request, int32_t token, std::string_view text)>;

// Throws lacuna::Error for an empty prompt, invalid token ids, options out of
// range, prompt + max_tokens beyond the model's context (new caches) or a
// prompt beyond the room left in the request's cache.
std::vector<GenerateResult> generate(Forward& forward, const std::vector<GenerateRequest>& requests, GenerateStats* stats = nullptr,
                                     const TokenCallback& on_token = {});

}  // namespace lacuna
