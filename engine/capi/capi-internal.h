#pragma once
// What the C API's functions share: the handles behind the opaque types,
// error recording, the struct-size rules, and the guard that turns every C++
// exception into a status code.
#include <algorithm>
#include <atomic>
#include <cstring>
#include <memory>
#include <new>
#include <optional>
#include <string>
#include <vector>

#include "engine/model/model.h"
#include "engine/runtime/forward.h"
#include "include/lacuna.h"
#include "sparse/error.h"

struct lacuna_model {
  std::shared_ptr<const lacuna::Model> model;
  std::shared_ptr<const lacuna::PlacedExperts> placed;  // null for LACUNA_NUMA_POLICY_NONE
  int32_t n_threads = 0;
  std::string architecture, metadata;
};

namespace lacuna::capi {

// One sequence of a context: its cache holds `tokens`; the token generated
// last is `pending` until the next call evaluates it (generation never spends
// a forward step on a token nobody may continue from).
struct Sequence {
  std::unique_ptr<KvCache> cache;
  std::vector<int32_t> tokens;
  std::optional<int32_t> pending;
  int64_t length() const { return static_cast<int64_t>(tokens.size()) + (pending ? 1 : 0); }
};

struct EvalOutput {
  std::vector<float> logits;
  size_t first_row = 0, rows = 0;  // first_row skips the pending token's row
};

// Thrown by the API's own checks; the guard turns it into its status.
struct ApiError {
  lacuna_status status;
  std::string message;
};

inline void require(bool ok, lacuna_status status, const std::string& message) {
  if (!ok) throw ApiError{status, message};
}

// Records a failure for lacuna_last_error (and the context's, when given).
// Never throws: it runs inside the guard's handlers, out of memory included.
lacuna_status fail(lacuna_context* ctx, const char* function, lacuna_status status, const char* message) noexcept;

// Runs `body` (returning lacuna_status); whatever it throws becomes a status:
// a lacuna::Error the function's `otherwise`, an IoError LACUNA_STATUS_IO.
template <class Body>
lacuna_status guarded(lacuna_context* ctx, const char* function, lacuna_status otherwise, Body&& body) noexcept {
  try {
    return body();
  } catch (const ApiError& e) {
    return fail(ctx, function, e.status, e.message.c_str());
  } catch (const IoError& e) {
    return fail(ctx, function, LACUNA_STATUS_IO, e.what());
  } catch (const Error& e) {
    return fail(ctx, function, otherwise, e.what());
  } catch (const std::bad_alloc&) {
    return fail(ctx, function, LACUNA_STATUS_OUT_OF_MEMORY, "out of memory");
  } catch (const std::exception& e) {
    return fail(ctx, function, LACUNA_STATUS_INTERNAL, e.what());
  } catch (...) {
    return fail(ctx, function, LACUNA_STATUS_INTERNAL, "unknown exception");
  }
}

// The sizes of the structs in this version. The first version's sizes are
// the smallest a library accepts, for ever; a change here is an ABI change.
static_assert(sizeof(lacuna_model_params) == 32 && sizeof(lacuna_model_info) == 136 && sizeof(lacuna_context_params) == 24 &&
                  sizeof(lacuna_generate_params) == 112 && sizeof(lacuna_generate_result) == 72 && sizeof(lacuna_seq_input) == 24 &&
                  sizeof(lacuna_chat_message) == 16,
              "the size of a public struct changed: keep the first version's size as its minimum (kMinimumSize)");
template <class T>
inline constexpr size_t kMinimumSize = sizeof(T);  // 0.1 is the first version
// 0.1.1 added the frequency and presence penalties at its end, 0.1.2 the logit
// biases. Inline: an explicit specialisation is not by itself, and each file
// including this one would define it (clang's linker refused the second).
template <>
inline constexpr size_t kMinimumSize<lacuna_generate_params> = 80;
// A struct_size beyond this is not a size (an uninitialised struct).
constexpr size_t kLargestStruct = 4096;

// A caller's options struct: a shorter one (an older header) keeps the
// defaults of the fields it lacks; a longer one (a newer header) is accepted
// when the bytes this library does not know are zero.
template <class T>
T read_struct(const T* in, const T& defaults, const char* name) {
  const size_t size = in->struct_size;
  require(size >= kMinimumSize<T> && size <= kLargestStruct, LACUNA_STATUS_INVALID_ARGUMENT,
          std::string(name) + ".struct_size is " + std::to_string(size) + ", not a size of this struct (" + std::to_string(kMinimumSize<T>) +
              ".." + std::to_string(kLargestStruct) + "); fill it with its *_default_params function");
  const auto* bytes = reinterpret_cast<const unsigned char*>(in);
  for (size_t i = sizeof(T); i < size; ++i)
    require(bytes[i] == 0, LACUNA_STATUS_UNSUPPORTED,
            std::string(name) + " sets fields this library (" LACUNA_VERSION_STRING ") does not know, at byte " + std::to_string(i));
  T out = defaults;
  std::memcpy(static_cast<void*>(&out), in, std::min(size, sizeof(T)));
  return out;
}

// Writes `value` into a caller's struct of `size` bytes: as much as both
// know, the rest of the caller's zeroed; struct_size says how much was written.
template <class T>
void write_struct(const T& value, T* out, size_t size, const char* name) {
  require(out != nullptr, LACUNA_STATUS_INVALID_ARGUMENT, std::string(name) + " is NULL");
  require(size >= kMinimumSize<T> && size <= kLargestStruct, LACUNA_STATUS_INVALID_ARGUMENT,
          std::string(name) + " size is " + std::to_string(size) + ", not a size of this struct (" + std::to_string(kMinimumSize<T>) + ".." +
              std::to_string(kLargestStruct) + ")");
  std::memset(static_cast<void*>(out), 0, size);
  std::memcpy(static_cast<void*>(out), &value, std::min(size, sizeof(T)));
  out->struct_size = std::min(size, sizeof(T));
}

// Fills a caller's options struct with the defaults; its struct_size is the
// caller's size, which the call that reads it needs.
template <class T>
void write_defaults(const T& defaults, T* out, size_t size) {
  write_struct(defaults, out, size, "params");
  out->struct_size = size;
}

// The caller's options, or the defaults when it passed NULL.
template <class T>
T params_or_defaults(const T* params, lacuna_status (*defaults)(T*, size_t)) {
  T d{};
  defaults(&d, sizeof d);
  return params ? read_struct(params, d, "params") : d;
}

}  // namespace lacuna::capi

struct lacuna_context {
  lacuna_context(const lacuna_model& m, const lacuna_context_params& p)
      : model(m.model), forward(m.model, lacuna::BatchPolicy::fastest, m.placed), params(p) {}
  std::shared_ptr<const lacuna::Model> model;
  lacuna::Forward forward;
  lacuna_context_params params;  // with the defaults resolved
  std::vector<lacuna::capi::Sequence> seqs;
  std::vector<lacuna::capi::EvalOutput> outputs;  // of the last successful eval
  std::vector<int32_t> generated;
  std::string generated_text;
  std::string last_error;
  std::atomic<bool> busy{false};
};
