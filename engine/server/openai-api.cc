#include "engine/server/openai-api.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <limits>
#include <type_traits>

#include "engine/model/chat-template.h"
#include "sparse/error.h"

namespace lacuna {
namespace {

using nlohmann::json;

HttpError bad(const std::string& param, const std::string& message, const std::string& code = "") {
  return HttpError{400, message, "invalid_request_error", param, code};
}

const char* type_name(const json& v) {
  switch (v.type()) {
    case json::value_t::null: return "null";
    case json::value_t::boolean: return "a boolean";
    case json::value_t::string: return "a string";
    case json::value_t::array: return "an array";
    case json::value_t::object: return "an object";
    case json::value_t::number_float: return "a number";
    default: return "an integer";
  }
}

// A field of the wrong type is named with what it is and what it should be.
template <class T>
T field(const json& body, const char* name, T fallback, const char* expected) {
  const auto it = body.find(name);
  if (it == body.end() || it->is_null()) return fallback;
  const json& v = *it;
  bool ok = false;
  if constexpr (std::is_same_v<T, bool>) ok = v.is_boolean();
  else if constexpr (std::is_integral_v<T>) ok = v.is_number_integer();
  else if constexpr (std::is_floating_point_v<T>) ok = v.is_number();
  else ok = v.is_string();
  if (!ok) throw bad(name, std::string("'") + name + "' must be " + expected + ", not " + type_name(v));
  if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) {
    if (v.is_number_unsigned() ? v.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<T>::max())
                               : v.get<int64_t>() < static_cast<int64_t>(std::numeric_limits<T>::min()) ||
                                     v.get<int64_t>() > static_cast<int64_t>(std::numeric_limits<T>::max()))
      throw bad(name, std::string("'") + name + "' is out of range");
  }
  return v.get<T>();
}

void require(bool ok, const char* param, const std::string& message) {
  if (!ok) throw bad(param, message);
}

void require_object(const json& body) {
  if (!body.is_object()) throw bad("", std::string("the request body must be a JSON object, not ") + type_name(body));
}

// The bytes of the UTF-8 character starting at s[i], or 0 where none does
// (a stray continuation byte, a cut-off, overlong or surrogate sequence).
size_t utf8_char_bytes(std::string_view s, size_t i) {
  const auto c = static_cast<unsigned char>(s[i]);
  size_t n = 0;
  uint32_t cp = 0, least = 0;
  if (c < 0x80) return 1;
  if ((c & 0xE0) == 0xC0) n = 1, cp = c & 0x1Fu, least = 0x80;
  else if ((c & 0xF0) == 0xE0) n = 2, cp = c & 0x0Fu, least = 0x800;
  else if ((c & 0xF8) == 0xF0) n = 3, cp = c & 0x07u, least = 0x10000;
  else return 0;
  if (s.size() - i <= n) return 0;
  for (size_t k = 1; k <= n; ++k) {
    const auto cc = static_cast<unsigned char>(s[i + k]);
    if ((cc & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (cc & 0x3Fu);
  }
  if (cp < least || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
  return n + 1;
}

bool valid_utf8(std::string_view s) {
  for (size_t i = 0, n; i < s.size(); i += n)
    if ((n = utf8_char_bytes(s, i)) == 0) return false;
  return true;
}

// `s` with each byte that starts no UTF-8 character replaced by U+FFFD: an
// error message may quote what it was given (nlohmann's parser quotes the
// bytes it stopped at, which can end inside a character), and the error
// body must still serialise.
std::string replacing_invalid_utf8(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size();) {
    if (const size_t n = utf8_char_bytes(s, i)) {
      out.append(s.substr(i, n));
      i += n;
    } else {
      out += "\xEF\xBF\xBD";
      ++i;
    }
  }
  return out;
}

// GenerateOptions::logprobs from OpenAI's two spellings: the completions
// API's `logprobs` (how many alternatives; false as none, as some clients
// send), the chat API's `logprobs` (a boolean) with `top_logprobs`.
int32_t parse_logprobs(const json& body, Endpoint endpoint) {
  const std::string range = "0.." + std::to_string(kMaxTopLogprobs);
  const std::string expected = "an integer " + range;
  auto given = [&](const char* name) { return body.contains(name) && !body[name].is_null(); };
  auto count = [&](const char* name) {
    const auto n = field<int64_t>(body, name, 0, expected.c_str());
    require(n >= 0 && n <= kMaxTopLogprobs, name, std::string("'") + name + "' must be in " + range);
    return static_cast<int32_t>(n);
  };
  if (endpoint == Endpoint::completions) {
    if (!given("logprobs")) return -1;
    if (body["logprobs"].is_boolean()) {
      require(!body["logprobs"].get<bool>(), "logprobs", "'logprobs' must be " + expected + " (how many alternatives) or null");
      return -1;
    }
    return count("logprobs");
  }
  const bool wanted = field<bool>(body, "logprobs", false, "a boolean");
  require(!given("top_logprobs") || wanted, "top_logprobs", "'top_logprobs' needs 'logprobs': true");
  return wanted ? count("top_logprobs") : -1;
}

// OpenAI's logit_bias: an object of token ids (as strings, JSON keys) to
// biases in [-100, 100].
std::vector<std::pair<int32_t, float>> parse_logit_bias(const json& body, int64_t vocab) {
  std::vector<std::pair<int32_t, float>> biases;
  const auto it = body.find("logit_bias");
  if (it == body.end() || it->is_null()) return biases;
  if (!it->is_object()) throw bad("logit_bias", std::string("'logit_bias' must be an object of token ids to biases, not ") + type_name(*it));
  for (const auto& [key, value] : it->items()) {
    int32_t id = -1;
    const auto [end, error] = std::from_chars(key.data(), key.data() + key.size(), id);
    require(error == std::errc() && end == key.data() + key.size() && id >= 0 && id < vocab, "logit_bias",
            "'logit_bias' key \"" + key + "\" is not a token id 0.." + std::to_string(vocab - 1));
    require(value.is_number(), "logit_bias", "'logit_bias' value of token " + key + " must be a number, not " + type_name(value));
    const double bias = value.get<double>();
    require(std::abs(bias) <= kMaxLogitBias, "logit_bias", "'logit_bias' value of token " + key + " must be in [-100, 100]");
    biases.emplace_back(id, static_cast<float>(bias));
  }
  return biases;
}

// OpenAI request features Lacuna does not have: refused by name rather
// than ignored, since ignoring them would answer something else than was asked.
void refuse_missing_features(const json& body, Endpoint endpoint, int32_t n) {
  if (endpoint == Endpoint::completions) {
    require(field<int64_t>(body, "best_of", n, "an integer") == n, "best_of", "'best_of' must equal 'n': choosing the best of more candidates is not supported");
    require(field<std::string>(body, "suffix", "", "a string").empty(), "suffix", "'suffix' (insertion) is not supported");
    return;
  }
  for (const char* name : {"tools", "functions"}) {
    const auto it = body.find(name);
    require(it == body.end() || it->is_null() || (it->is_array() && it->empty()), name, std::string("'") + name + "' (tool calls) is not supported");
  }
  if (const auto it = body.find("response_format"); it != body.end() && !it->is_null()) {
    require(it->is_object(), "response_format", std::string("'response_format' must be an object, not ") + type_name(*it));
    const auto type = it->find("type");
    require(type == it->end() || (type->is_string() && *type == "text"), "response_format",
            "'response_format' type must be \"text\": constrained (JSON) output is not supported");
  }
}

// A token as the logprobs views name it: its own text when that is valid
// UTF-8, else its bytes escaped as OpenAI writes them ("bytes:\\xe2"); a
// control token (no text) by its piece ("<s>"); "token_id:N" for a model
// without a tokenizer. `bytes`: what it adds to the text.
struct TokenName {
  std::string text, bytes;
};
TokenName token_name(const Tokenizer* tokenizer, int32_t id) {
  if (!tokenizer) return {"token_id:" + std::to_string(id), ""};
  std::string bytes = tokenizer->token_bytes(id);
  const std::string shown = bytes.empty() ? tokenizer->piece(id) : bytes;
  if (valid_utf8(shown)) return {shown, bytes};
  std::string text = "bytes:";
  for (unsigned char c : shown) {
    static constexpr char kHex[] = "0123456789abcdef";
    text += "\\x";
    text += kHex[c >> 4];
    text += kHex[c & 15];
  }
  return {text, bytes};
}

json bytes_json(const std::string& bytes) {
  json out = json::array();
  for (unsigned char c : bytes) out.push_back(c);
  return out;
}

// A choice's `logprobs` for these tokens: the completions API's parallel
// lists, or the chat API's `content` list. text_offset counts the bytes of
// the tokens before each, from `offset` (the tokens before the first).
// A token without values (an echoed prompt's first: nothing before it to score it) has null ones.
json logprobs_json(const ApiRequest& r, std::span<const int32_t> tokens, std::span<const TokenLogprobs* const> logprobs, size_t offset) {
  if (r.endpoint == Endpoint::chat_completions) {
    json content = json::array();
    for (size_t i = 0; i < tokens.size(); ++i) {
      const TokenName name = token_name(r.tokenizer, tokens[i]);
      json top = json::array();
      for (const auto& [id, lp] : logprobs[i]->top) {
        const TokenName alt = token_name(r.tokenizer, id);
        top.push_back({{"token", alt.text}, {"logprob", lp}, {"bytes", bytes_json(alt.bytes)}});
      }
      content.push_back({{"token", name.text}, {"logprob", logprobs[i]->logprob}, {"bytes", bytes_json(name.bytes)}, {"top_logprobs", top}});
    }
    return {{"content", content}};
  }
  json names = json::array(), values = json::array(), tops = json::array(), offsets = json::array();
  for (size_t i = 0; i < tokens.size(); ++i) {
    const TokenName name = token_name(r.tokenizer, tokens[i]);
    names.push_back(name.text);
    if (logprobs[i]) {
      values.push_back(logprobs[i]->logprob);
      json top = json::object();
      // Highest first: two tokens of one name (a piece and its byte-fallback twin) keep the higher value.
      for (const auto& [id, lp] : logprobs[i]->top)
        if (const std::string alt = token_name(r.tokenizer, id).text; !top.contains(alt)) top[alt] = lp;
      tops.push_back(top);
    } else {
      values.push_back(nullptr);
      tops.push_back(nullptr);
    }
    offsets.push_back(offset);
    offset += name.bytes.size();
  }
  return {{"tokens", names}, {"token_logprobs", values}, {"top_logprobs", tops}, {"text_offset", offsets}};
}

const Tokenizer& tokenizer_for_text(const Model& model, const char* param) {
  const Tokenizer* t = model.tokenizer();
  if (!t) throw bad(param, "the model has no tokenizer: give the prompt as an array of token ids");
  return *t;
}

// OpenAI's `prompt` may also be a batch (an array of strings or of token
// arrays); a batch of exactly one prompt is taken as that prompt, as
// clients such as lm-evaluation-harness send it.
const json& single_prompt(const json& p) {
  if (!p.is_array() || p.size() != 1 || !(p[0].is_string() || p[0].is_array())) return p;
  return p[0];
}

std::vector<int32_t> parse_prompt(const json& body, const Model& model) {
  const auto it = body.find("prompt");
  if (it == body.end()) throw bad("prompt", "'prompt' is required");
  const json& p = single_prompt(*it);
  if (p.is_string()) return tokenizer_for_text(model, "prompt").encode(p.get<std::string>(), /*add_bos=*/true);
  if (p.is_array() && !p.empty() && std::all_of(p.begin(), p.end(), [](const json& t) { return t.is_number_integer(); })) {
    std::vector<int32_t> ids;
    for (const json& t : p) {
      const int64_t id = t.get<int64_t>();
      if (id < 0 || id >= model.config().vocab)
        throw bad("prompt", "token id " + std::to_string(id) + " is outside the vocabulary 0.." + std::to_string(model.config().vocab - 1));
      ids.push_back(static_cast<int32_t>(id));
    }
    return ids;
  }
  if (p.is_array() && !p.empty() && (p[0].is_string() || p[0].is_array()))
    throw bad("prompt", "one prompt per request: send several requests (they are batched)");
  throw bad("prompt", std::string("'prompt' must be a string or a non-empty array of token ids, not ") + type_name(p));
}

}  // namespace

json error_body(const HttpError& e) {
  return {{"error", {{"message", replacing_invalid_utf8(e.message)}, {"type", e.type}, {"param", e.param.empty() ? json() : json(e.param)},
                     {"code", e.code.empty() ? json() : json(e.code)}}}};
}

std::vector<int32_t> apply_chat_template(const Model& model, const json& messages) {
  if (!messages.is_array() || messages.empty()) throw bad("messages", "'messages' must be a non-empty array");
  tokenizer_for_text(model, "messages");
  std::vector<ChatMessage> chat;
  for (size_t i = 0; i < messages.size(); ++i) {
    const json& m = messages[i];
    const std::string where = "messages[" + std::to_string(i) + "]";
    if (!m.is_object()) throw bad("messages", where + " must be an object");
    const auto role = m.find("role"), content = m.find("content");
    if (role == m.end() || !role->is_string()) throw bad("messages", where + ".role must be a string");
    if (content == m.end() || !content->is_string()) throw bad("messages", where + ".content must be a string");
    chat.push_back({role->get_ref<const std::string&>(), content->get_ref<const std::string&>()});
  }
  try {
    return lacuna::apply_chat_template(model, chat);
  } catch (const Error& e) {
    throw bad("messages", e.what());
  }
}

ApiRequest parse_request(const json& body, Endpoint endpoint, const Model& model, uint64_t seed) {
  require_object(body);
  ApiRequest r;
  r.endpoint = endpoint;
  if (endpoint == Endpoint::chat_completions) {
    const auto it = body.find("messages");
    if (it == body.end()) throw bad("messages", "'messages' is required");
    r.prompt = apply_chat_template(model, *it);
  } else {
    r.prompt = parse_prompt(body, model);
  }
  field<std::string>(body, "model", "", "a string");  // any name: one model is served
  const int64_t n = field<int64_t>(body, "n", 1, "an integer");
  require(n >= 1 && n <= kMaxChoices, "n", "'n' must be in 1.." + std::to_string(kMaxChoices));
  r.n = static_cast<int32_t>(n);
  refuse_missing_features(body, endpoint, r.n);

  GenerateOptions& o = r.options;
  const int64_t context = model.config().max_context;
  const auto prompt_tokens = static_cast<int64_t>(r.prompt.size());
  const int64_t default_max = endpoint == Endpoint::completions ? 16 : std::max<int64_t>(1, context - prompt_tokens);
  const int64_t max_tokens = field<int64_t>(body, "max_tokens", field<int64_t>(body, "max_completion_tokens", default_max, "an integer"), "an integer");
  // max_tokens 0 with echo scores the prompt alone (as clients computing a text's log-likelihood send it).
  r.echo = endpoint == Endpoint::completions && field<bool>(body, "echo", false, "a boolean");
  require(max_tokens >= 1 || (max_tokens == 0 && r.echo), "max_tokens", "'max_tokens' must be at least 1 (0 only with 'echo')");
  if (prompt_tokens + max_tokens > context)
    throw bad("max_tokens",
              "the prompt (" + std::to_string(prompt_tokens) + " tokens) plus max_tokens (" + std::to_string(max_tokens) +
                  ") exceeds the model's context of " + std::to_string(context) + " tokens",
              "context_length_exceeded");
  o.max_tokens = static_cast<int32_t>(max_tokens);
  o.sampling.temperature = static_cast<float>(field<double>(body, "temperature", 1.0, "a number"));
  require(o.sampling.temperature >= 0 && o.sampling.temperature <= 2, "temperature", "'temperature' must be in [0, 2]");
  o.sampling.top_p = static_cast<float>(field<double>(body, "top_p", 1.0, "a number"));
  require(o.sampling.top_p > 0 && o.sampling.top_p <= 1, "top_p", "'top_p' must be in (0, 1]");
  o.sampling.top_k = field<int32_t>(body, "top_k", 0, "an integer");
  require(o.sampling.top_k >= 0, "top_k", "'top_k' must be >= 0 (0: all tokens)");
  o.sampling.repetition_penalty = static_cast<float>(field<double>(body, "repetition_penalty", 1.0, "a number"));
  require(o.sampling.repetition_penalty > 0, "repetition_penalty", "'repetition_penalty' must be > 0");
  for (auto [penalty, value] : {std::pair{"frequency_penalty", &o.sampling.frequency_penalty}, std::pair{"presence_penalty", &o.sampling.presence_penalty}}) {
    *value = static_cast<float>(field<double>(body, penalty, 0.0, "a number"));
    require(std::abs(*value) <= 2, penalty, std::string("'") + penalty + "' must be in [-2, 2]");
  }
  o.sampling.logit_bias = parse_logit_bias(body, model.config().vocab);
  o.sampling.seed = body.contains("seed") && !body["seed"].is_null() ? static_cast<uint64_t>(field<int64_t>(body, "seed", 0, "an integer")) : seed;
  if (const auto it = body.find("stop"); it != body.end() && !it->is_null()) {
    if (it->is_string()) {
      o.stop = {it->get<std::string>()};
    } else if (it->is_array() && it->size() <= 4 && std::all_of(it->begin(), it->end(), [](const json& v) { return v.is_string(); })) {
      for (const json& v : *it) o.stop.push_back(v.get<std::string>());
    } else {
      throw bad("stop", "'stop' must be a string or an array of at most 4 strings");
    }
    require(std::none_of(o.stop.begin(), o.stop.end(), [](const std::string& v) { return v.empty(); }), "stop", "'stop' strings must not be empty");
  }
  o.logprobs = parse_logprobs(body, endpoint);
  r.tokenizer = model.tokenizer();
  r.stream = field<bool>(body, "stream", false, "a boolean");
  if (r.echo) {
    const json& p = single_prompt(body["prompt"]);
    r.echo_text = p.is_string() ? p.get<std::string>() : r.tokenizer ? r.tokenizer->decode(r.prompt) : "";
    o.prompt_logprobs = o.logprobs;
  }
  if (const auto it = body.find("stream_options"); it != body.end() && !it->is_null()) {
    if (!it->is_object()) throw bad("stream_options", "'stream_options' must be an object");
    r.include_usage = field<bool>(*it, "include_usage", false, "a boolean");
  }
  return r;
}

nlohmann::json parse_body(std::string_view body) {
  if (!valid_utf8(body)) throw bad("", "the request body is not valid UTF-8");
  try {
    return json::parse(body);
  } catch (const json::exception& e) {  // parse_error, or out_of_range for a number beyond double's range
    throw bad("", std::string("the request body is not valid JSON: ") + e.what());
  }
}

ApiRequest parse_request_body(std::string_view body, Endpoint endpoint, const Model& model, uint64_t seed) {
  return parse_request(parse_body(body), endpoint, model, seed);
}

json tokenize_json(const json& body, const Model& model) {
  require_object(body);
  std::vector<int32_t> tokens;
  if (const auto messages = body.find("messages"); messages != body.end()) {
    tokens = apply_chat_template(model, *messages);
  } else {
    const auto prompt = body.find("prompt");
    require(prompt != body.end() && prompt->is_string(), "prompt", "'prompt' (a string) or 'messages' is required");
    const bool special = field<bool>(body, "add_special_tokens", true, "a boolean");
    tokens = tokenizer_for_text(model, "prompt").encode(prompt->get<std::string>(), special);
  }
  return {{"tokens", tokens}, {"count", tokens.size()}, {"max_model_len", model.config().max_context}};
}

json detokenize_json(const json& body, const Model& model) {
  require_object(body);
  const auto it = body.find("tokens");
  require(it != body.end() && it->is_array() && std::all_of(it->begin(), it->end(), [](const json& t) { return t.is_number_integer(); }), "tokens",
          "'tokens' must be an array of token ids");
  std::vector<int32_t> ids;
  for (const json& t : *it) {
    const int64_t id = t.get<int64_t>();
    require(id >= 0 && id < model.config().vocab, "tokens",
            "token id " + std::to_string(id) + " is outside the vocabulary 0.." + std::to_string(model.config().vocab - 1));
    ids.push_back(static_cast<int32_t>(id));
  }
  const Tokenizer* tokenizer = model.tokenizer();
  require(tokenizer != nullptr, "tokens", "the model has no tokenizer: its tokens have no text");
  return {{"prompt", tokenizer->decode(ids)}};
}

std::string finish_reason_name(const std::string& ours) { return ours == "length" || ours == "context" ? "length" : "stop"; }

size_t token_offset_bytes(const ApiRequest& r, int32_t id) { return token_name(r.tokenizer, id).bytes.size(); }

json usage_json(const ApiRequest& r, size_t completion_tokens) {
  return {{"prompt_tokens", r.prompt.size()}, {"completion_tokens", completion_tokens}, {"total_tokens", r.prompt.size() + completion_tokens}};
}

GenerateOptions choice_options(const ApiRequest& r, int32_t index) {
  GenerateOptions o = r.options;
  o.sampling.seed += static_cast<uint64_t>(index);
  return o;
}

namespace {

// Tokens and their values side by side for logprobs_json, a run at a time.
struct ScoredTokens {
  std::vector<int32_t> tokens;
  std::vector<const TokenLogprobs*> values;
  // `unscored` tokens of the run have no values (an echoed prompt's first);
  // past `scored`, neither have the rest (a request cancelled before its
  // prompt was scored).
  void append(std::span<const int32_t> run, std::span<const TokenLogprobs> scored, size_t unscored) {
    tokens.insert(tokens.end(), run.begin(), run.end());
    for (size_t i = 0; i < run.size(); ++i) values.push_back(i >= unscored && i - unscored < scored.size() ? &scored[i - unscored] : nullptr);
  }
  void append_prompt(const ApiRequest& r, std::span<const TokenLogprobs> prompt_logprobs) { append(r.prompt, prompt_logprobs, 1); }
};

json choice_json(const ApiRequest& r, const GenerateResult& result, size_t index) {
  json choice = {{"index", index}, {"finish_reason", finish_reason_name(result.finish_reason)}};
  if (r.endpoint == Endpoint::chat_completions)
    choice["message"] = {{"role", "assistant"}, {"content", result.text}};
  else
    choice["text"] = r.echo ? r.echo_text + result.text : result.text;
  if (r.options.logprobs >= 0) {
    ScoredTokens all;
    if (r.echo) all.append_prompt(r, result.prompt_logprobs);
    all.append(result.tokens, result.logprobs, 0);
    choice["logprobs"] = logprobs_json(r, all.tokens, all.values, 0);
  } else {
    choice["logprobs"] = nullptr;
  }
  return choice;
}

}  // namespace

json response_json(const ApiRequest& r, std::span<const GenerateResult> choices, const ResponseIds& ids) {
  json list = json::array();
  size_t completion_tokens = 0;
  for (size_t i = 0; i < choices.size(); ++i) {
    list.push_back(choice_json(r, choices[i], i));
    completion_tokens += choices[i].tokens.size();
  }
  return {{"id", ids.id},
          {"object", r.endpoint == Endpoint::chat_completions ? "chat.completion" : "text_completion"},
          {"created", ids.created},
          {"model", ids.model},
          {"choices", list},
          {"usage", usage_json(r, completion_tokens)}};
}

json echo_chunk_json(const ApiRequest& r, int32_t index, std::span<const TokenLogprobs> prompt_logprobs, const ResponseIds& ids) {
  json chunk = chunk_json(r, index, r.echo_text, "", ids);
  if (r.options.logprobs >= 0) {
    ScoredTokens prompt;
    prompt.append_prompt(r, prompt_logprobs);
    chunk["choices"][0]["logprobs"] = logprobs_json(r, prompt.tokens, prompt.values, 0);
  }
  return chunk;
}

size_t echo_offset_bytes(const ApiRequest& r) {
  size_t bytes = 0;
  for (int32_t id : r.prompt) bytes += token_offset_bytes(r, id);
  return bytes;
}

json chunk_json(const ApiRequest& r, int32_t index, std::string_view text, const std::string& finish_reason, const ResponseIds& ids,
                const StreamedToken* token) {
  json choice = {{"index", index}, {"finish_reason", finish_reason.empty() ? json() : json(finish_reason)}};
  if (r.endpoint == Endpoint::chat_completions)
    choice["delta"] = finish_reason.empty() ? json{{"content", text}} : json::object();
  else
    choice["text"] = text;
  const TokenLogprobs* values = token ? &token->logprobs : nullptr;
  choice["logprobs"] = token ? logprobs_json(r, std::span(&token->id, 1), std::span(&values, 1), token->text_offset) : json();
  return {{"id", ids.id},
          {"object", r.endpoint == Endpoint::chat_completions ? "chat.completion.chunk" : "text_completion"},
          {"created", ids.created},
          {"model", ids.model},
          {"choices", json::array({choice})}};
}

}  // namespace lacuna
