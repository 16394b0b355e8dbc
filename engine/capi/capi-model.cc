// The C API: version, errors, models and the tokenizer.
#include <cstdio>

#include "engine/capi/capi-internal.h"
#include "engine/model/chat-template.h"
#include "engine/numa/topology.h"

using lacuna::capi::ApiError;
using lacuna::capi::guarded;
using lacuna::capi::require;

namespace {

thread_local std::string t_last_error;
// Where a message goes when even building it fails (out of memory).
thread_local char t_fallback[512];
thread_local bool t_in_fallback = false;

const lacuna::Tokenizer& tokenizer_of(const lacuna_model* model) {
  require(model != nullptr, LACUNA_STATUS_INVALID_ARGUMENT, "model is NULL");
  const lacuna::Tokenizer* t = model->model->tokenizer();
  require(t != nullptr, LACUNA_STATUS_UNSUPPORTED, "the model has no tokenizer (it was converted without one): use token ids");
  return *t;
}

}  // namespace

namespace lacuna::capi {

lacuna_status fail(lacuna_context* ctx, const char* function, lacuna_status status, const char* message) noexcept {
  // A misused context is busy in another call, which owns its message.
  const bool to_context = ctx && status != LACUNA_STATUS_MISUSE;
  try {
    t_last_error.assign(function).append(": ").append(message);
    t_in_fallback = false;
    if (to_context) ctx->last_error = t_last_error;
  } catch (...) {
    std::snprintf(t_fallback, sizeof t_fallback, "%s: %s", function, message);
    t_in_fallback = true;
    if (to_context) ctx->last_error.clear();
  }
  return status;
}

}  // namespace lacuna::capi

extern "C" {

const char* lacuna_version(void) { return LACUNA_VERSION_STRING; }
int32_t lacuna_version_number(void) { return LACUNA_VERSION_NUMBER; }

const char* lacuna_status_string(lacuna_status status) {
  switch (status) {
    case LACUNA_STATUS_OK: return "ok";
    case LACUNA_STATUS_INVALID_ARGUMENT: return "invalid argument";
    case LACUNA_STATUS_IO: return "input/output error";
    case LACUNA_STATUS_INVALID_MODEL: return "invalid model file";
    case LACUNA_STATUS_UNSUPPORTED: return "unsupported";
    case LACUNA_STATUS_OUT_OF_MEMORY: return "out of memory";
    case LACUNA_STATUS_BUFFER_TOO_SMALL: return "buffer too small";
    case LACUNA_STATUS_INVALID_TOKEN: return "invalid token id";
    case LACUNA_STATUS_CONTEXT_FULL: return "context full";
    case LACUNA_STATUS_MISUSE: return "context used by two calls at once";
    case LACUNA_STATUS_INTERNAL: return "internal error";
  }
  return "unknown status";
}

const char* lacuna_last_error(void) { return t_in_fallback ? t_fallback : t_last_error.c_str(); }

lacuna_status lacuna_model_default_params(lacuna_model_params* params, size_t params_size) {
  return guarded(nullptr, __func__, LACUNA_STATUS_INVALID_ARGUMENT, [&] {
    lacuna_model_params p{};
    p.numa_policy = LACUNA_NUMA_POLICY_NONE;
    p.verify_checksums = 1;
    lacuna::capi::write_defaults(p, params, params_size);
    return LACUNA_STATUS_OK;
  });
}

lacuna_status lacuna_model_load(const char* path, const lacuna_model_params* params, lacuna_model** model) {
  return guarded(nullptr, __func__, LACUNA_STATUS_INVALID_MODEL, [&] {
    require(model != nullptr, LACUNA_STATUS_INVALID_ARGUMENT, "model (the out-parameter) is NULL");
    *model = nullptr;
    require(path != nullptr, LACUNA_STATUS_INVALID_ARGUMENT, "path is NULL");
    const lacuna_model_params p = lacuna::capi::params_or_defaults(params, lacuna_model_default_params);
    require(p.n_threads >= 0 && p.n_threads <= 1024, LACUNA_STATUS_INVALID_ARGUMENT,
            "params.n_threads is " + std::to_string(p.n_threads) + ", must be in 0..1024");
    require(p.numa_policy >= LACUNA_NUMA_POLICY_NONE && p.numa_policy <= LACUNA_NUMA_POLICY_AUTO, LACUNA_STATUS_INVALID_ARGUMENT,
            "params.numa_policy " + std::to_string(p.numa_policy) + " is not a lacuna_numa_policy");
    require(p.numa_replicate_budget_mb >= 0, LACUNA_STATUS_INVALID_ARGUMENT,
            "params.numa_replicate_budget_mb is " + std::to_string(p.numa_replicate_budget_mb) + ", must be >= 0");
    lacuna::OpenOptions o;
    o.verify_checksums = p.verify_checksums != 0;
    o.prefault = p.prefault != 0 || p.lock_memory != 0;
    o.lock_memory = p.lock_memory != 0;
    auto handle = std::make_unique<lacuna_model>();
    handle->model = lacuna::Model::open(path, o, {.weights_in_memory = true, .leave_experts_mapped = p.numa_policy != LACUNA_NUMA_POLICY_NONE});
    handle->n_threads = p.n_threads;
    if (p.numa_policy != LACUNA_NUMA_POLICY_NONE) {
      constexpr lacuna::NumaPolicy kPolicies[] = {lacuna::NumaPolicy::none, lacuna::NumaPolicy::interleave, lacuna::NumaPolicy::experts,
                                                  lacuna::NumaPolicy::slices, lacuna::NumaPolicy::automatic};
      lacuna::Topology topology;
      try {
        topology = lacuna::topology_from_env();
      } catch (const lacuna::Error& e) {
        throw lacuna::capi::ApiError{LACUNA_STATUS_INVALID_ARGUMENT, std::string("params.numa_policy: ") + e.what()};
      }
      lacuna::Placement plan = lacuna::plan_model_placement(*handle->model, static_cast<int>(topology.nodes.size()), kPolicies[p.numa_policy],
                                                            static_cast<uint64_t>(p.numa_replicate_budget_mb) * 1000000, 1, {});
      handle->placed = std::make_shared<const lacuna::PlacedExperts>(*handle->model, std::move(topology), std::move(plan));
    }
    handle->architecture = lacuna::arch_name(handle->model->config().arch);
    handle->metadata = std::string(handle->model->file().metadata());
    *model = handle.release();
    return LACUNA_STATUS_OK;
  });
}

void lacuna_model_free(lacuna_model* model) { delete model; }

lacuna_status lacuna_model_get_info(const lacuna_model* model, lacuna_model_info* info, size_t info_size) {
  return guarded(nullptr, __func__, LACUNA_STATUS_INVALID_ARGUMENT, [&] {
    require(model != nullptr, LACUNA_STATUS_INVALID_ARGUMENT, "model is NULL");
    const lacuna::ModelConfig& c = model->model->config();
    lacuna_model_info i{};
    i.architecture = model->architecture.c_str();
    i.n_vocab = c.vocab;
    i.n_embd = c.hidden;
    i.n_layers = c.layers;
    i.n_heads = c.heads;
    i.n_kv_heads = c.kv_heads;
    i.head_dim = c.head_dim;
    i.n_experts = c.experts;
    i.n_experts_used = c.top_k;
    i.n_ff = c.ffn;
    i.n_ctx_max = c.max_context;
    i.bos_token = c.bos_id;
    i.eos_token = c.eos_id;
    i.has_tokenizer = model->model->tokenizer() != nullptr;
    i.n_params = c.parameters();
    i.file_bytes = model->model->file().file_bytes();
    i.decode_bytes_per_token = model->model->decode_bytes_per_token();
    lacuna::capi::write_struct(i, info, info_size, "info");
    return LACUNA_STATUS_OK;
  });
}

const char* lacuna_model_metadata(const lacuna_model* model) { return model ? model->metadata.c_str() : nullptr; }

lacuna_status lacuna_model_tokenize(const lacuna_model* model, const char* text, size_t text_len, int32_t add_bos, int32_t* tokens,
                                    size_t capacity, size_t* n_tokens) {
  return guarded(nullptr, __func__, LACUNA_STATUS_INVALID_ARGUMENT, [&] {
    require(n_tokens != nullptr, LACUNA_STATUS_INVALID_ARGUMENT, "n_tokens is NULL");
    require(text != nullptr || text_len == 0, LACUNA_STATUS_INVALID_ARGUMENT, "text is NULL");
    require(tokens != nullptr || capacity == 0, LACUNA_STATUS_INVALID_ARGUMENT, "tokens is NULL but capacity is not 0");
    const lacuna::Tokenizer& t = tokenizer_of(model);
    const std::vector<int32_t> ids = t.encode(std::string_view(text ? text : "", text_len), add_bos != 0);
    *n_tokens = ids.size();
    require(ids.size() <= capacity, LACUNA_STATUS_BUFFER_TOO_SMALL,
            "the text is " + std::to_string(ids.size()) + " tokens, the buffer holds " + std::to_string(capacity));
    std::copy(ids.begin(), ids.end(), tokens);
    return LACUNA_STATUS_OK;
  });
}

lacuna_status lacuna_model_detokenize(const lacuna_model* model, const int32_t* tokens, size_t n_tokens, char* text, size_t capacity,
                                      size_t* text_len) {
  return guarded(nullptr, __func__, LACUNA_STATUS_INVALID_ARGUMENT, [&] {
    require(text_len != nullptr, LACUNA_STATUS_INVALID_ARGUMENT, "text_len is NULL");
    require(tokens != nullptr || n_tokens == 0, LACUNA_STATUS_INVALID_ARGUMENT, "tokens is NULL");
    require(text != nullptr || capacity == 0, LACUNA_STATUS_INVALID_ARGUMENT, "text is NULL but capacity is not 0");
    const lacuna::Tokenizer& t = tokenizer_of(model);
    const int64_t vocab = model->model->config().vocab;
    for (size_t i = 0; i < n_tokens; ++i)
      require(tokens[i] >= 0 && tokens[i] < vocab, LACUNA_STATUS_INVALID_TOKEN,
              "tokens[" + std::to_string(i) + "] = " + std::to_string(tokens[i]) + " is outside the vocabulary 0.." + std::to_string(vocab - 1));
    const std::string decoded = t.decode(std::span(tokens, n_tokens));
    *text_len = decoded.size();
    require(decoded.size() < capacity, LACUNA_STATUS_BUFFER_TOO_SMALL,
            "the text is " + std::to_string(decoded.size()) + " bytes plus its NUL, the buffer holds " + std::to_string(capacity));
    std::memcpy(text, decoded.c_str(), decoded.size() + 1);
    return LACUNA_STATUS_OK;
  });
}

lacuna_status lacuna_model_apply_chat_template(const lacuna_model* model, const lacuna_chat_message* messages, size_t n_messages,
                                               int32_t* tokens, size_t capacity, size_t* n_tokens) {
  return guarded(nullptr, __func__, LACUNA_STATUS_INVALID_ARGUMENT, [&] {
    require(n_tokens != nullptr, LACUNA_STATUS_INVALID_ARGUMENT, "n_tokens is NULL");
    require(messages != nullptr || n_messages == 0, LACUNA_STATUS_INVALID_ARGUMENT, "messages is NULL");
    require(tokens != nullptr || capacity == 0, LACUNA_STATUS_INVALID_ARGUMENT, "tokens is NULL but capacity is not 0");
    tokenizer_of(model);
    std::vector<lacuna::ChatMessage> chat;
    for (size_t i = 0; i < n_messages; ++i) {
      const std::string where = "messages[" + std::to_string(i) + "]";
      require(messages[i].role != nullptr, LACUNA_STATUS_INVALID_ARGUMENT, where + ".role is NULL");
      require(messages[i].content != nullptr, LACUNA_STATUS_INVALID_ARGUMENT, where + ".content is NULL");
      chat.push_back({messages[i].role, messages[i].content});
    }
    // No messages or an unknown role: lacuna::Error, INVALID_ARGUMENT.
    const std::vector<int32_t> ids = lacuna::apply_chat_template(*model->model, chat);
    *n_tokens = ids.size();
    require(ids.size() <= capacity, LACUNA_STATUS_BUFFER_TOO_SMALL,
            "the chat is " + std::to_string(ids.size()) + " tokens, the buffer holds " + std::to_string(capacity));
    std::copy(ids.begin(), ids.end(), tokens);
    return LACUNA_STATUS_OK;
  });
}

}  // extern "C"
