#pragma once
// The OpenAI-compatible request and response JSON shared by `lacuna serve`
// (POST /v1/completions, /v1/chat/completions) and `lacuna batch` (one such
// request per JSONL line): parsing with a clear error per field, the chat
// template, and the response, stream-chunk and error bodies.
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/runtime/generate.h"

namespace lacuna {

// A request the API refuses: its HTTP status and OpenAI's error fields.
struct HttpError {
  int status = 400;
  std::string message;
  std::string type = "invalid_request_error";
  std::string param;  // the offending field, when there is one
  std::string code;   // e.g. "context_length_exceeded"
};

nlohmann::json error_body(const HttpError& e);

enum class Endpoint { completions, chat_completions };

struct ApiRequest {
  Endpoint endpoint = Endpoint::completions;
  std::vector<int32_t> prompt;  // the chat template applied, for chat
  GenerateOptions options;  // options.logprobs: -1 unless the request asked for them
  const Tokenizer* tokenizer = nullptr;  // the model's, naming tokens in logprobs (nullptr: "token_id:N")
  // The completions API's `echo`: the prompt's text goes before the answer's,
  // and with logprobs its tokens (options.prompt_logprobs) before the answer's.
  bool echo = false;
  std::string echo_text;
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage
  // OpenAI's `n`: that many choices, each its own sequence from the prompt
  // (choice_options: choice i samples with the request's seed + i).
  int32_t n = 1;
};
inline constexpr int32_t kMaxChoices = 128;  // OpenAI's limit on n

// The options of choice `index` (0..n-1).
GenerateOptions choice_options(const ApiRequest& r, int32_t index);

// Parses a request body. Unknown fields are ignored; known fields of the
// wrong type or out of range, features Lacuna does not have (completions:
// best_of other than n, suffix; chat: tools or
// functions, a response_format other than text), an invalid token id (in the prompt or logit_bias),
// and a prompt plus max_tokens beyond the model's context throw HttpError.
// `seed` seeds sampling when the request has none.
ApiRequest parse_request(const nlohmann::json& body, Endpoint endpoint, const Model& model, uint64_t seed);
// The same from raw bytes: invalid UTF-8 and malformed JSON throw HttpError.
ApiRequest parse_request_body(std::string_view body, Endpoint endpoint, const Model& model, uint64_t seed);

// A request body as JSON: invalid UTF-8 and malformed JSON throw HttpError.
nlohmann::json parse_body(std::string_view body);

// POST /tokenize (vLLM's shape): {"prompt": text, "add_special_tokens":
// true (default: the BOS a completion's text prompt gets)} or {"messages":
// [...]} (the chat template applied) -> {"tokens", "count", "max_model_len"}.
// POST /detokenize: {"tokens": [ids]} -> {"prompt": text}. Bad input (and a
// model without a tokenizer) throws HttpError.
nlohmann::json tokenize_json(const nlohmann::json& body, const Model& model);
nlohmann::json detokenize_json(const nlohmann::json& body, const Model& model);

// The prompt of a chat: the architecture's template over the messages,
// ending where the assistant's answer begins (docs/server.md gives them).
std::vector<int32_t> apply_chat_template(const Model& model, const nlohmann::json& messages);

// "stop" or "length", as OpenAI names why generation ended.
std::string finish_reason_name(const std::string& ours);

struct ResponseIds {
  std::string id;       // "cmpl-..." / "chatcmpl-..."
  int64_t created = 0;  // Unix seconds
  std::string model;
};

// completion_tokens: of every choice.
nlohmann::json usage_json(const ApiRequest& r, size_t completion_tokens);
// The whole (non-streamed) response: one result per choice, in choice order.
nlohmann::json response_json(const ApiRequest& r, std::span<const GenerateResult> choices, const ResponseIds& ids);
// A generated token as a stream sends it when the request asked for
// logprobs: its id, log-probabilities, and where its bytes start among the
// bytes of the tokens before it (the completions API's text_offset: each
// token counts its own bytes, token_bytes; a control token such as <s> or
// a model without a tokenizer counts its name's, none).
struct StreamedToken {
  int32_t id = 0;
  TokenLogprobs logprobs;
  size_t text_offset = 0;
};
// One streamed chunk of choice `index`: `text` added, the finish reason on the choice's last one ("" before), and
// the logprobs of the token it carries (nullptr: none asked, or a chunk without a token).
nlohmann::json chunk_json(const ApiRequest& r, int32_t index, std::string_view text, const std::string& finish_reason, const ResponseIds& ids,
                          const StreamedToken* token = nullptr);
// How many bytes a token counts for in text_offset.
size_t token_offset_bytes(const ApiRequest& r, int32_t id);
// A stream with echo: choice `index`'s first chunk, the prompt's text, and
// with logprobs asked its tokens' (the first null: nothing scores it). The
// answer's text_offsets then start at echo_offset_bytes.
nlohmann::json echo_chunk_json(const ApiRequest& r, int32_t index, std::span<const TokenLogprobs> prompt_logprobs, const ResponseIds& ids);
size_t echo_offset_bytes(const ApiRequest& r);

}  // namespace lacuna
