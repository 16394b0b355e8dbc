// An HTTP request body from untrusted bytes, as `lacuna serve` and `lacuna
// batch` take it: parsed for both endpoints against the synthetic `tiny`
// model (its tokenizer and chat template), run for at most three tokens a
// choice, and answered in every shape the server sends (the response, its
// stream chunks, the echo chunk, usage, the error body); and as /tokenize
// and /detokenize bodies. Every answer is serialised as the server sends
// it (dump() with its default, strict UTF-8 handling).
#include <algorithm>

#include "engine/server/openai-api.h"
#include "sparse/error.h"
#include "tests/fuzz/fuzz-input.h"

namespace {

using namespace lacuna;

constexpr int32_t kMaxTokens = 3;

void answer(const ApiRequest& r, Forward& forward) {
  std::vector<GenerateRequest> choices;
  for (int32_t i = 0; i < std::min(r.n, 2); ++i) {
    GenerateRequest g;
    g.prompt = r.prompt;
    g.options = choice_options(r, i);
    g.options.max_tokens = std::min(g.options.max_tokens, kMaxTokens);
    choices.push_back(std::move(g));
  }
  const std::vector<GenerateResult> results = generate(forward, choices);
  const ResponseIds ids{"cmpl-fuzz", 0, "lacuna"};
  response_json(r, results, ids).dump();
  usage_json(r, results.front().tokens.size()).dump();
  for (size_t i = 0; i < results.size(); ++i) {
    const int32_t index = static_cast<int32_t>(i);
    if (r.echo) echo_chunk_json(r, index, results[i].prompt_logprobs, ids).dump();
    size_t offset = r.echo ? echo_offset_bytes(r) : 0;
    for (size_t t = 0; t < results[i].tokens.size(); ++t) {
      StreamedToken token{results[i].tokens[t], {}, offset};
      if (t < results[i].logprobs.size()) token.logprobs = results[i].logprobs[t];
      chunk_json(r, index, "", t + 1 == results[i].tokens.size() ? results[i].finish_reason : "", ids, &token).dump();
      offset += token_offset_bytes(r, token.id);
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::shared_ptr<const Model> model = fuzzing::tiny_model();
  static Forward forward(model);
  const std::string_view body = fuzzing::as_text(data, size);
  for (Endpoint endpoint : {Endpoint::completions, Endpoint::chat_completions}) {
    try {
      answer(parse_request_body(body, endpoint, *model, 1), forward);
    } catch (const HttpError& e) {
      error_body(e).dump();
    } catch (const Error&) {
    }
  }
  for (auto endpoint : {&tokenize_json, &detokenize_json}) {
    try {
      endpoint(parse_body(body), *model).dump();
    } catch (const HttpError& e) {
      error_body(e).dump();
    }
  }
  return 0;
}
