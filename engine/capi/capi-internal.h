#pragma once
// What the C API's functions share: the handles behind the opaque types,
// error recording, the struct-size rules, and the guard that turns every C++
// exception into a status code.
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
lacuna_status fail(lacuna_context* ctx, const char* function, lacuna_status status, const std::string& message);

// Runs `body` (returning lacuna_status); whatever it throws becomes a status:
// a lacuna::Error the function's `otherwise`, an IoError LACUNA_STATUS_IO.
template <class Body>
lacuna_status guarded(lacuna_context* ctx, const char* function, lacuna_status otherwise, Body&& body) noexcept {
  try {
    return body();
  } catch (const ApiError& e) {
    return fail(ctx, function, e.status, e.message);
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

// A caller's struct of `size` bytes read as this version's T: it may be
// larger (a newer header) only when the bytes this library does not know are zero.
template <class T>
T read_struct(const T* in, const char* name) {
  require(in->struct_size >= sizeof(T), LACUNA_STATUS_INVALID_ARGUMENT,
          std::string(name) + ".struct_size is " + std::to_string(in->struct_size) + ", less than the " + std::to_string(sizeof(T)) +
              " bytes of this version's struct (fill it with its *_default_params function)");
  const auto* bytes = reinterpret_cast<const unsigned char*>(in);
  for (size_t i = sizeof(T); i < in->struct_size; ++i)
    require(bytes[i] == 0, LACUNA_STATUS_UNSUPPORTED,
            std::string(name) + " sets fields this library (" LACUNA_VERSION_STRING ") does not know, at byte " + std::to_string(i));
  T out;
  std::memcpy(&out, in, sizeof(T));
  return out;
}

// The caller's options, or the defaults when it passed NULL.
template <class T>
T params_or_defaults(const T* params, lacuna_status (*defaults)(T*, size_t)) {
  if (params) return read_struct(params, "params");
  T p{};
  defaults(&p, sizeof p);
  return p;
}

// Writes `value` into a caller's struct of `size` bytes, zeroing what this version does not know.
template <class T>
void write_struct(const T& value, T* out, size_t size, const char* name) {
  require(out != nullptr, LACUNA_STATUS_INVALID_ARGUMENT, std::string(name) + " is NULL");
  require(size >= sizeof(T), LACUNA_STATUS_INVALID_ARGUMENT,
          std::string(name) + " size is " + std::to_string(size) + ", less than the " + std::to_string(sizeof(T)) + " bytes of this version's struct");
  std::memset(static_cast<void*>(out), 0, size);
  std::memcpy(static_cast<void*>(out), &value, sizeof(T));
  out->struct_size = size;
}

}  // namespace lacuna::capi

struct lacuna_context {
  lacuna_context(std::shared_ptr<const lacuna::Model> m, const lacuna_context_params& p) : model(m), forward(std::move(m)), params(p) {}
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
