// The C API as an embedding program might call it: a context made with
// parameters from the input, then a sequence of calls (eval, logits,
// seq_length, truncate, reset, generate with any parameters and a token
// callback that may stop or misuse the context, tokenize, detokenize, the
// chat template) with arguments from the input, each call's buffers as large
// as the call is told. The `tiny` model, loaded once.
//
// Beyond the targets' contract (no crash), each call is checked against the
// header's promises, kept here as a model of every sequence's length: a call
// whose arguments are valid succeeds, one whose arguments are not fails with
// the documented status and a message, a failed call changes no sequence,
// eval's logits have the promised rows and are finite, generate stays within
// max_tokens and n_ctx and leaves the sequence holding prompt and answer, a
// too-small buffer reports the size that then works. A failed check aborts.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "include/lacuna.h"
#include "tests/fuzz/fuzz-input.h"

namespace {

namespace testing = lacuna::testing;
namespace fuzzing = lacuna::fuzzing;

[[noreturn]] void finding(const std::string& what) {
  std::fprintf(stderr, "fuzz-c-api: %s (last error: %s)\n", what.c_str(), lacuna_last_error());
  std::abort();
}

void expect(bool ok, const std::string& what) {
  if (!ok) finding(what);
}

// The input, read front to back; zeros once it runs out.
class Reader {
 public:
  Reader(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  bool done() const { return size_ == 0; }
  uint8_t byte() {
    if (size_ == 0) return 0;
    --size_;
    return *data_++;
  }
  template <class T>
  T raw() {
    T value{};
    const size_t n = std::min(sizeof value, size_);
    std::memcpy(&value, data_, n);
    data_ += n, size_ -= n;
    return value;
  }
  template <class T, size_t N>
  T pick(const T (&options)[N]) {
    return options[byte() % N];
  }
  std::string text(size_t max_bytes) {
    const size_t n = std::min<size_t>(byte() % (max_bytes + 1), size_);
    std::string s(reinterpret_cast<const char*>(data_), n);
    data_ += n, size_ -= n;
    return s;
  }

 private:
  const uint8_t* data_;
  size_t size_;
};

struct LoadedModel {
  lacuna_model* handle = nullptr;
  int32_t vocab = 0;
  int64_t n_ctx_max = 0;
  LoadedModel() {
    fuzzing::tiny_model();  // writes the file
    const std::string path = (testing::scratch() / "tiny.lacuna").string();
    if (lacuna_model_load(path.c_str(), nullptr, &handle) != LACUNA_STATUS_OK) finding("the tiny model does not load");
    lacuna_model_info info;
    info.struct_size = sizeof info;
    if (lacuna_model_get_info(handle, &info, sizeof info) != LACUNA_STATUS_OK) finding("no model info");
    vocab = static_cast<int32_t>(info.n_vocab);
    n_ctx_max = info.n_ctx_max;
  }
};

// A token id: in the vocabulary, or now and then one that is not.
int32_t token(Reader& in, int32_t vocab) {
  const uint8_t kind = in.byte();
  if (kind >= 248) {
    static constexpr int32_t kOutside[] = {-1, INT32_MIN, INT32_MAX, 0};
    return kind == 248 ? vocab : kOutside[kind % 4];
  }
  return static_cast<int32_t>(in.raw<uint16_t>() % static_cast<uint32_t>(vocab));
}

bool valid_token(int32_t t, int32_t vocab) { return t >= 0 && t < vocab; }

struct Context {
  lacuna_context* handle;
  int32_t n_ctx, n_seq;
  std::vector<int64_t> lengths;  // the model of every sequence

  void check_lengths(const std::string& after) const {
    for (int32_t s = 0; s < n_seq && s < 8; ++s)
      expect(lacuna_context_seq_length(handle, s) == lengths[static_cast<size_t>(s)],
             "sequence " + std::to_string(s) + " holds " + std::to_string(lacuna_context_seq_length(handle, s)) + " tokens after " + after +
                 ", expected " + std::to_string(lengths[static_cast<size_t>(s)]));
  }
  void check_failure(lacuna_status status, std::initializer_list<lacuna_status> allowed, const std::string& call) const {
    bool listed = false;
    for (lacuna_status a : allowed) listed |= status == a;
    expect(listed, call + " failed with " + lacuna_status_string(status));
    expect(std::strlen(lacuna_context_last_error(handle)) > 0 || std::strlen(lacuna_last_error()) > 0, call + " failed without a message");
  }
};

int32_t seq_id(Reader& in, const Context& c) {
  const uint8_t b = in.byte();
  if (b >= 250) return b == 250 ? -1 : c.n_seq + (b - 251);
  return static_cast<int32_t>(b % static_cast<uint32_t>(std::min(c.n_seq, 4)));
}

void eval(Reader& in, Context& c, int32_t vocab) {
  const size_t n_inputs = in.byte() % 4;
  std::vector<std::vector<int32_t>> tokens(n_inputs);
  std::vector<lacuna_seq_input> inputs(n_inputs);
  bool valid = n_inputs > 0, room = true, ids_valid = true;
  std::vector<int32_t> seen;
  for (size_t i = 0; i < n_inputs; ++i) {
    lacuna_seq_input& x = inputs[i];
    x.seq_id = seq_id(in, c);
    x.all_logits = in.byte() & 1;
    tokens[i].resize(in.byte() % 6);
    for (int32_t& t : tokens[i]) {
      t = token(in, vocab);
      ids_valid &= valid_token(t, vocab);
    }
    x.tokens = tokens[i].empty() ? nullptr : tokens[i].data();
    x.n_tokens = tokens[i].size();
    const bool known = x.seq_id >= 0 && x.seq_id < c.n_seq;
    valid &= known && x.n_tokens > 0 && std::find(seen.begin(), seen.end(), x.seq_id) == seen.end();
    if (known) room &= c.lengths[static_cast<size_t>(x.seq_id)] + static_cast<int64_t>(x.n_tokens) <= c.n_ctx;
    seen.push_back(x.seq_id);
  }
  const lacuna_status status = lacuna_context_eval(c.handle, inputs.empty() ? nullptr : inputs.data(), n_inputs);
  if (!valid || !room || !ids_valid) {
    expect(status != LACUNA_STATUS_OK, "eval of invalid inputs succeeded");
    c.check_failure(status, {LACUNA_STATUS_INVALID_ARGUMENT, LACUNA_STATUS_INVALID_TOKEN, LACUNA_STATUS_CONTEXT_FULL}, "eval");
    expect(lacuna_context_logits(c.handle, 0, nullptr) == nullptr, "logits after a failed eval");
    c.check_lengths("a failed eval");
    return;
  }
  expect(status == LACUNA_STATUS_OK, std::string("eval of valid inputs failed with ") + lacuna_status_string(status));
  for (size_t i = 0; i < n_inputs; ++i) {
    c.lengths[static_cast<size_t>(inputs[i].seq_id)] += static_cast<int64_t>(inputs[i].n_tokens);
    size_t rows = 0;
    const float* logits = lacuna_context_logits(c.handle, i, &rows);
    expect(logits != nullptr && rows == (inputs[i].all_logits ? inputs[i].n_tokens : 1), "eval's logits for input " + std::to_string(i));
    for (size_t k = 0; k < rows * static_cast<size_t>(vocab); ++k) expect(std::isfinite(logits[k]), "a logit that is not finite");
  }
  size_t rows = 1;
  expect(lacuna_context_logits(c.handle, n_inputs, &rows) == nullptr && rows == 0, "logits past the inputs");
  c.check_lengths("an eval");
}

// What the token callback does, chosen by the input.
struct Callback {
  enum Kind : uint8_t { go_on, stop_after, misuse_reset, misuse_free } kind = go_on;
  int32_t stop_at = 0, calls = 0;
  lacuna_context* ctx = nullptr;
  int32_t vocab = 0;
  bool stopped = false;
};

int32_t on_token(void* user_data, int32_t token, const char* text, size_t text_len) {
  auto& cb = *static_cast<Callback*>(user_data);
  expect(valid_token(token, cb.vocab), "the callback got a token outside the vocabulary");
  expect(text != nullptr && text[text_len] == '\0', "the callback's text is not NUL-terminated at text_len");  // U+0000 may be in it
  ++cb.calls;
  if (cb.kind == Callback::misuse_reset) expect(lacuna_context_reset(cb.ctx) == LACUNA_STATUS_MISUSE, "reset from the callback was not refused");
  if (cb.kind == Callback::misuse_free) lacuna_context_free(cb.ctx);  // refused: the context stays usable
  if (cb.kind == Callback::stop_after && cb.calls >= cb.stop_at) {
    cb.stopped = true;
    return 0;
  }
  return 1;
}

void generate(Reader& in, Context& c, int32_t vocab) {
  const int32_t id = seq_id(in, c);
  std::vector<int32_t> prompt(in.byte() % 6);
  bool tokens_valid = true;
  for (int32_t& t : prompt) {
    t = token(in, vocab);
    tokens_valid &= valid_token(t, vocab);
  }
  lacuna_generate_params p;
  static constexpr size_t kSizes[] = {sizeof p, sizeof p, sizeof p, 80, 88, 0, 79, 4097};
  const size_t struct_size = in.pick(kSizes);
  lacuna_generate_default_params(&p, sizeof p);
  static constexpr int32_t kMaxTokens[] = {0, 1, 2, 3, 5, 40, -1, INT32_MAX};
  p.max_tokens = in.pick(kMaxTokens);
  if (in.byte() & 1) p.temperature = in.raw<float>();
  if (in.byte() & 1) p.top_k = in.raw<int32_t>();
  if (in.byte() & 1) p.top_p = in.raw<float>();
  if (in.byte() & 1) p.repetition_penalty = in.raw<float>();
  if (in.byte() & 1) p.frequency_penalty = in.raw<float>(), p.presence_penalty = in.raw<float>();
  p.seed = in.raw<uint8_t>();
  p.stop_at_eos = in.byte() & 1;
  std::vector<std::string> stop_text(in.byte() % 3);
  std::vector<const char*> stop;
  for (std::string& s : stop_text) stop.push_back((s = in.text(6)).c_str());
  p.stop = stop.empty() ? nullptr : stop.data();
  p.n_stop = stop.size();
  std::vector<int32_t> bias_tokens(in.byte() % 3);
  std::vector<float> biases;
  for (int32_t& t : bias_tokens) t = token(in, vocab), biases.push_back(static_cast<float>(static_cast<int8_t>(in.byte())));
  p.logit_bias_tokens = bias_tokens.empty() ? nullptr : bias_tokens.data();
  p.logit_biases = biases.empty() ? nullptr : biases.data();
  p.n_logit_bias = bias_tokens.size();
  Callback cb;
  cb.kind = static_cast<Callback::Kind>(in.byte() % 4);
  cb.stop_at = 1 + in.byte() % 4;
  cb.ctx = c.handle;
  cb.vocab = vocab;
  p.on_token = in.byte() & 1 ? on_token : nullptr;
  p.user_data = &cb;
  p.struct_size = struct_size;
  lacuna_generate_result result;
  static constexpr size_t kResultSizes[] = {sizeof result, sizeof result, 72, 8, 0};
  const size_t result_size = in.pick(kResultSizes);

  const bool known = id >= 0 && id < c.n_seq;
  const int64_t before = known ? c.lengths[static_cast<size_t>(id)] : 0;
  const lacuna_status status =
      lacuna_context_generate(c.handle, id, prompt.empty() ? nullptr : prompt.data(), prompt.size(), &p, &result, result_size);
  const bool valid = known && struct_size >= 80 && struct_size <= 4096 && result_size >= sizeof result && p.max_tokens >= 0 &&
                     (!prompt.empty() || before > 0) && tokens_valid;
  const bool room = before + static_cast<int64_t>(prompt.size()) + (p.max_tokens > 0 ? 1 : 0) <= c.n_ctx;
  if (status != LACUNA_STATUS_OK) {
    c.check_failure(status, {LACUNA_STATUS_INVALID_ARGUMENT, LACUNA_STATUS_INVALID_TOKEN, LACUNA_STATUS_CONTEXT_FULL, LACUNA_STATUS_UNSUPPORTED},
                    "generate");
    // Valid arguments fail only for sampling parameters out of range (and bias ids outside the vocabulary), or for no room.
    const std::string message = lacuna_context_last_error(c.handle);
    expect(!valid || !room || message.find("params: ") != std::string::npos, "generate with valid arguments failed: " + message);
    c.check_lengths("a failed generate");
    return;
  }
  expect(valid && room, "generate with invalid arguments succeeded");
  expect(result.finish_reason >= LACUNA_FINISH_REASON_LENGTH && result.finish_reason <= LACUNA_FINISH_REASON_CANCELLED, "a finish reason out of range");
  expect(result.n_tokens <= static_cast<size_t>(p.max_tokens), "more tokens than max_tokens");
  expect(result.text != nullptr && result.text[result.text_len] == '\0', "the result's text is not NUL-terminated at text_len");
  for (size_t i = 0; i < result.n_tokens; ++i) expect(valid_token(result.tokens[i], vocab), "a generated token outside the vocabulary");
  if (result.finish_reason == LACUNA_FINISH_REASON_LENGTH) expect(result.n_tokens == static_cast<size_t>(p.max_tokens), "length reached early");
  // The callback's 0 ends generation at its token, which may also have ended it (max_tokens, EOS, a stop string).
  if (result.finish_reason == LACUNA_FINISH_REASON_CANCELLED) expect(cb.stopped, "cancelled when the callback did not stop it");
  if (p.on_token) expect(cb.calls == static_cast<int32_t>(result.n_tokens), "the callback missed a token or saw one too many");
  int64_t& length = c.lengths[static_cast<size_t>(id)];
  length = before + static_cast<int64_t>(prompt.size() + result.n_tokens);
  expect(length <= c.n_ctx, "a sequence beyond n_ctx");
  if (result.finish_reason == LACUNA_FINISH_REASON_CONTEXT_FULL) expect(length == c.n_ctx, "context full before n_ctx");
  c.check_lengths("a generate");
}

void truncate(Reader& in, Context& c) {
  const int32_t id = seq_id(in, c);
  static constexpr int64_t kFar[] = {-1, INT64_MIN, INT64_MAX, 1 << 20};
  const uint8_t b = in.byte();
  const bool known = id >= 0 && id < c.n_seq;
  const int64_t length = b >= 252 ? kFar[b - 252] : (known ? b % (c.lengths[static_cast<size_t>(id)] + 2) : b);
  const lacuna_status status = lacuna_context_seq_truncate(c.handle, id, length);
  if (known && length >= 0 && length <= c.lengths[static_cast<size_t>(id)]) {
    expect(status == LACUNA_STATUS_OK, "a valid truncate failed");
    c.lengths[static_cast<size_t>(id)] = length;
  } else {
    c.check_failure(status, {LACUNA_STATUS_INVALID_ARGUMENT}, "truncate");
  }
  c.check_lengths("a truncate");
}

void tokenize(Reader& in, const LoadedModel& m) {
  const std::string text = in.text(40);
  const int32_t add_bos = in.byte() & 1;
  std::vector<int32_t> tokens(in.byte() % 24);
  size_t n = 0;
  const lacuna_status status = lacuna_model_tokenize(m.handle, text.data(), text.size(), add_bos, tokens.data(), tokens.size(), &n);
  if (status == LACUNA_STATUS_BUFFER_TOO_SMALL) {
    expect(n > tokens.size(), "too small a buffer for fewer tokens than it holds");
    tokens.resize(n);
    expect(lacuna_model_tokenize(m.handle, text.data(), text.size(), add_bos, tokens.data(), tokens.size(), &n) == LACUNA_STATUS_OK &&
               n == tokens.size(),
           "the size tokenize asked for did not do");
  } else {
    expect(status == LACUNA_STATUS_OK && n <= tokens.size(), std::string("tokenize failed with ") + lacuna_status_string(status));
  }
  for (size_t i = 0; i < n; ++i) expect(valid_token(tokens[i], m.vocab), "tokenize gave a token outside the vocabulary");
}

void detokenize(Reader& in, const LoadedModel& m) {
  std::vector<int32_t> tokens(in.byte() % 8);
  bool valid = true;
  for (int32_t& t : tokens) t = token(in, m.vocab), valid &= valid_token(t, m.vocab);
  std::vector<char> text(in.byte() % 32);
  size_t length = 0;
  const lacuna_status status = lacuna_model_detokenize(m.handle, tokens.data(), tokens.size(), text.empty() ? nullptr : text.data(), text.size(), &length);
  if (!valid) {
    expect(status == LACUNA_STATUS_INVALID_TOKEN, "detokenize of a token outside the vocabulary did not fail so");
    return;
  }
  if (status == LACUNA_STATUS_BUFFER_TOO_SMALL) {
    expect(length >= text.size(), "too small a buffer for a shorter text");
    text.resize(length + 1);
    expect(lacuna_model_detokenize(m.handle, tokens.data(), tokens.size(), text.data(), text.size(), &length) == LACUNA_STATUS_OK &&
               length + 1 == text.size(),
           "the size detokenize asked for did not do");
  } else {
    expect(status == LACUNA_STATUS_OK, std::string("detokenize failed with ") + lacuna_status_string(status));
  }
  expect(text[length] == '\0' && std::strlen(text.data()) <= length, "detokenize's text is not NUL-terminated at its length");
}

void chat(Reader& in, const LoadedModel& m) {
  static constexpr const char* kRoles[] = {"system", "user", "assistant", "user", "robot", nullptr};
  std::vector<std::string> contents(in.byte() % 4);
  std::vector<lacuna_chat_message> messages;
  bool valid = !contents.empty();
  for (std::string& content : contents) {
    const char* role = in.pick(kRoles);
    content = in.text(12);
    const bool null_content = in.byte() == 255;
    messages.push_back({role, null_content ? nullptr : content.c_str()});
    valid &= role != nullptr && std::strcmp(role, "robot") != 0 && !null_content;
  }
  std::vector<int32_t> tokens(64);
  size_t n = 0;
  const lacuna_status status =
      lacuna_model_apply_chat_template(m.handle, messages.empty() ? nullptr : messages.data(), messages.size(), tokens.data(), tokens.size(), &n);
  if (!valid) {
    expect(status == LACUNA_STATUS_INVALID_ARGUMENT, "a chat with a bad message was not refused");
    return;
  }
  expect(status == LACUNA_STATUS_OK || (status == LACUNA_STATUS_BUFFER_TOO_SMALL && n > tokens.size()),
         std::string("the chat template failed with ") + lacuna_status_string(status));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const LoadedModel model;
  Reader in(data, size);
  lacuna_context_params params;
  lacuna_context_default_params(&params, sizeof params);
  static constexpr int32_t kCtx[] = {0, 1, 2, 16, 17, 64, -1, 513};
  static constexpr int32_t kSeqs[] = {1, 2, 3, 4, 0, 4097};
  static constexpr int32_t kThreads[] = {0, 1, 2, 1025};
  static constexpr int32_t kBatch[] = {512, 1, 3, 16, 0};
  params.n_ctx = in.pick(kCtx);
  params.n_seq_max = in.pick(kSeqs);
  params.n_threads = in.pick(kThreads);
  params.n_batch = in.pick(kBatch);
  lacuna_context* handle = nullptr;
  const lacuna_status status = lacuna_context_create(model.handle, &params, &handle);
  const bool valid = params.n_ctx >= 0 && params.n_ctx <= model.n_ctx_max && params.n_seq_max >= 1 && params.n_seq_max <= 4096 &&
                     params.n_threads >= 0 && params.n_threads <= 1024 && params.n_batch >= 1;
  if (!valid) {
    expect(status == LACUNA_STATUS_INVALID_ARGUMENT && handle == nullptr && std::strlen(lacuna_last_error()) > 0,
           "a context with invalid parameters was made");
    return 0;
  }
  expect(status == LACUNA_STATUS_OK && handle != nullptr, std::string("a context with valid parameters failed: ") + lacuna_status_string(status));
  Context c{handle, params.n_ctx == 0 ? static_cast<int32_t>(model.n_ctx_max) : params.n_ctx, params.n_seq_max,
            std::vector<int64_t>(static_cast<size_t>(params.n_seq_max), 0)};
  for (int calls = 0; !in.done() && calls < 32; ++calls) {
    switch (in.byte() % 8) {
      case 0: eval(in, c, model.vocab); break;
      case 1: generate(in, c, model.vocab); break;
      case 2: truncate(in, c); break;
      case 3:
        expect(lacuna_context_reset(handle) == LACUNA_STATUS_OK, "reset failed");
        std::fill(c.lengths.begin(), c.lengths.end(), 0);
        c.check_lengths("a reset");
        break;
      case 4: tokenize(in, model); break;
      case 5: detokenize(in, model); break;
      case 6: chat(in, model); break;
      default: {
        size_t rows = 0;
        const float* logits = lacuna_context_logits(handle, in.byte(), &rows);
        expect((logits == nullptr) == (rows == 0), "logits without rows, or rows without logits");
      }
    }
  }
  lacuna_context_free(handle);
  return 0;
}
