/*
 * lacuna.h: the C interface of Lacuna, a sparse CPU inference engine for
 * Mixture-of-Experts language models (C99; usable from C++ and through FFI).
 *
 * Life cycle (docs/c-api.md has a complete program):
 *
 *   lacuna_model_params mp;
 *   lacuna_model_default_params(&mp, sizeof mp);
 *   lacuna_model *model;
 *   if (lacuna_model_load("model.lacuna", &mp, &model) != LACUNA_STATUS_OK)
 *     fprintf(stderr, "%s\n", lacuna_last_error());
 *   lacuna_context_params cp;
 *   lacuna_context_default_params(&cp, sizeof cp);
 *   lacuna_context *ctx;
 *   lacuna_context_create(model, &cp, &ctx);
 *   ... lacuna_model_tokenize, lacuna_context_generate or lacuna_context_eval ...
 *   lacuna_context_free(ctx);
 *   lacuna_model_free(model);
 *
 * Conventions that hold for every function:
 *  - Errors: a fallible function returns a lacuna_status; LACUNA_STATUS_OK is
 *    0. On failure it leaves its out-parameters and the context's sequences
 *    as they were (unless its comment says otherwise) and records a message:
 *    lacuna_last_error() gives the calling thread's last one, and
 *    lacuna_context_last_error() the last one of a context. No C++ exception
 *    ever leaves the library.
 *  - Structs: every struct passed across the interface starts with
 *    `struct_size` and is passed together with its size (`sizeof s`), so a
 *    later version can add fields at the end without breaking programs built
 *    against this one: a library reads a shorter (older) struct, the fields
 *    it lacks taking their defaults, and accepts a longer (newer) one when
 *    the bytes it does not know are zero (else LACUNA_STATUS_UNSUPPORTED);
 *    it fills output structs up to the smaller of the two sizes and sets
 *    their struct_size to the bytes it filled. Option structs are filled by
 *    their *_default_params() function, then changed field by field. Fields
 *    holding an enum's value are int32_t, a size fixed for every compiler.
 *  - Ownership: the caller owns what it passes in; the library copies what it
 *    keeps. Pointers the library returns stay owned by the library, valid for
 *    as long as each comment says; never free() them.
 *  - Threads: a lacuna_model is immutable once loaded; any number of threads
 *    may use one model at once (tokenize, query, create contexts). A
 *    lacuna_context must be used by one thread at a time; different contexts,
 *    on the same model or not, run concurrently. The calls that change a
 *    context (eval, generate, truncate, reset, free) detect a second such
 *    call made while one is running (from another thread, or from the
 *    context's own token callback) and refuse it (LACUNA_STATUS_MISUSE; free
 *    then does nothing); the read-only ones (logits, seq_length, last_error)
 *    must not overlap a running call.
 *  - Blocking: model loading, evaluation and generation run on the calling
 *    thread plus the context's worker threads (OpenMP) and return when done.
 */
#ifndef LACUNA_H
#define LACUNA_H

#include <stddef.h>
#include <stdint.h>

#if defined(__GNUC__)
#define LACUNA_API __attribute__((visibility("default")))
#else
#define LACUNA_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* ---- Version ------------------------------------------------------------ */

#define LACUNA_VERSION_MAJOR 0
#define LACUNA_VERSION_MINOR 1
#define LACUNA_VERSION_PATCH 3
#define LACUNA_VERSION_STRING "0.1.3"
/* MAJOR * 10000 + MINOR * 100 + PATCH, as lacuna_version_number() returns. */
#define LACUNA_VERSION_NUMBER 103
/* The shared library's ABI version: liblacuna.so.LACUNA_ABI_VERSION. It changes
 * only when a program built against an earlier header could break. */
#define LACUNA_ABI_VERSION 0

/* The library's version, "MAJOR.MINOR.PATCH" (static storage). Compare it
 * with LACUNA_VERSION_STRING to check that header and library match. */
LACUNA_API const char *lacuna_version(void);
/* The library's LACUNA_VERSION_NUMBER. */
LACUNA_API int32_t lacuna_version_number(void);

/* ---- Errors ------------------------------------------------------------- */

typedef enum lacuna_status {
  LACUNA_STATUS_OK = 0,
  /* A null pointer, a size or option out of range, an unknown sequence id. */
  LACUNA_STATUS_INVALID_ARGUMENT = 1,
  /* A file cannot be opened, mapped or locked in memory (see the message for the OS error). */
  LACUNA_STATUS_IO = 2,
  /* The file is not a valid .lacuna model: wrong magic, truncated,
   * corrupted (checksum), newer format version, missing or mis-shaped weight. */
  LACUNA_STATUS_INVALID_MODEL = 3,
  /* Valid but not supported: a model without a tokenizer asked for text, a
   * struct fields this library does not know. */
  LACUNA_STATUS_UNSUPPORTED = 4,
  LACUNA_STATUS_OUT_OF_MEMORY = 5,
  /* The caller's buffer is too small; the size needed was written to the size out-parameter. */
  LACUNA_STATUS_BUFFER_TOO_SMALL = 6,
  /* A token id outside the model's vocabulary [0, n_vocab). */
  LACUNA_STATUS_INVALID_TOKEN = 7,
  /* The tokens do not fit in the sequence's remaining positions (n_ctx). */
  LACUNA_STATUS_CONTEXT_FULL = 8,
  /* A context used by two calls at once (two threads, or from its own callback). */
  LACUNA_STATUS_MISUSE = 9,
  /* A bug in Lacuna; please report it with the message. */
  LACUNA_STATUS_INTERNAL = 10
} lacuna_status;

/* A fixed English description of a status code (static storage). */
LACUNA_API const char *lacuna_status_string(lacuna_status status);

/* The message of the calling thread's most recent failed call, naming what
 * failed and why; "" when none failed yet. Thread-local: valid until this
 * thread's next failing call. */
LACUNA_API const char *lacuna_last_error(void);

/* ---- Model -------------------------------------------------------------- */

typedef struct lacuna_model lacuna_model;
typedef struct lacuna_context lacuna_context;

typedef enum lacuna_numa_policy {
  /* No binding: the OS places pages where they are first touched. */
  LACUNA_NUMA_POLICY_NONE = 0,
  /* Every expert copied into memory interleaved page by page over the nodes;
   * run by all cores. */
  LACUNA_NUMA_POLICY_INTERLEAVE = 1,
  /* Each expert copied into one node's memory (hot experts also into others,
   * within numa_replicate_budget_mb) and run by that node's cores. */
  LACUNA_NUMA_POLICY_EXPERTS = 2,
  /* Each expert's rows split across the nodes; each node's cores compute its
   * rows from its own memory. */
  LACUNA_NUMA_POLICY_SLICES = 3,
  /* EXPERTS or SLICES per layer, from the expected experts per step. */
  LACUNA_NUMA_POLICY_AUTO = 4
} lacuna_numa_policy;

typedef struct lacuna_model_params {
  size_t struct_size;
  /* Worker threads of the model's contexts unless their own params say
   * otherwise, at most 1024; 0: OpenMP's default (one per core, or OMP_NUM_THREADS). */
  int32_t n_threads;
  /* A lacuna_numa_policy; default LACUNA_NUMA_POLICY_NONE. The nodes are the
   * machine's (hwloc), or LACUNA_NUMA_SIMULATE=N virtual ones. Any policy
   * gives bitwise the logits of NONE; all but NONE copy the experts at load
   * (the file's pages of them are dropped) and run one pinned thread team per
   * node. */
  int32_t numa_policy;
  /* Non-zero: read the whole file into memory at load, so that no later call
   * waits on a page fault. Default 0. */
  int32_t prefault;
  /* Non-zero: lock the model's pages in RAM (mlock; implies prefault): the
   * file's, and the copies of its sparse weights in huge pages. Fails
   * with LACUNA_STATUS_IO when RLIMIT_MEMLOCK (ulimit -l) is too low. Default 0. */
  int32_t lock_memory;
  /* Non-zero (default): check every weight's checksum at load (one pass over
   * the file). Structure checks happen always. */
  int32_t verify_checksums;
  /* EXPERTS and AUTO: MB of memory for extra copies of hot experts, >= 0;
   * default 0. Every expert counts as equally hot (the load has no router
   * statistics), so copies are made only for an uneven layer. */
  int32_t numa_replicate_budget_mb;
} lacuna_model_params;

/* Fills *params (params_size = sizeof *params) with the defaults. Returns
 * LACUNA_STATUS_INVALID_ARGUMENT for a null pointer or a size smaller than
 * this version's struct. */
LACUNA_API lacuna_status lacuna_model_default_params(lacuna_model_params *params, size_t params_size);

/* Opens a .lacuna model (made by `lacuna convert`): maps the file, checks it
 * and prepares every weight. params may be NULL (the defaults). On success
 * *model receives a new handle the caller owns (free it with
 * lacuna_model_free); on failure *model is set to NULL. Errors:
 * INVALID_ARGUMENT, IO, INVALID_MODEL, UNSUPPORTED, OUT_OF_MEMORY. Thread-safe. */
LACUNA_API lacuna_status lacuna_model_load(const char *path, const lacuna_model_params *params, lacuna_model **model);

/* Releases the caller's handle. Contexts created from it keep the weights
 * alive until the last of them is freed, so the order of frees does not
 * matter. NULL is a no-op. Must not run concurrently with other calls on the
 * same handle. */
LACUNA_API void lacuna_model_free(lacuna_model *model);

typedef struct lacuna_model_info {
  size_t struct_size;
  const char *architecture; /* "grok-1" or "mixtral"; owned by the model */
  int64_t n_vocab;          /* token ids are 0 .. n_vocab - 1 */
  int64_t n_embd;           /* hidden size */
  int64_t n_layers;
  int64_t n_heads;
  int64_t n_kv_heads;
  int64_t head_dim;
  int64_t n_experts;
  int64_t n_experts_used; /* per token (top-k) */
  int64_t n_ff;           /* one expert's hidden size */
  int64_t n_ctx_max;      /* the longest sequence the model supports */
  int32_t bos_token;      /* -1 when the model has none */
  int32_t eos_token;      /* -1 when the model has none */
  int32_t has_tokenizer;  /* 0: only the token-id functions work */
  uint64_t n_params;
  uint64_t file_bytes;
  /* Weight bytes one decode step reads per token: attention, the experts used, the output. */
  uint64_t decode_bytes_per_token;
} lacuna_model_info;

/* Fills *info (info_size = sizeof *info). Strings in it are owned by the
 * model and live as long as it. Errors: INVALID_ARGUMENT. Thread-safe. */
LACUNA_API lacuna_status lacuna_model_get_info(const lacuna_model *model, lacuna_model_info *info, size_t info_size);

/* The model's metadata as JSON (its config and where it was converted from),
 * NUL-terminated, owned by the model; NULL for a NULL model. Thread-safe. */
LACUNA_API const char *lacuna_model_metadata(const lacuna_model *model);

/* ---- Tokenizer ---------------------------------------------------------- */

/* Encodes text_len bytes of UTF-8 text (no NUL needed) into token ids, with
 * the model's BOS token first when add_bos is non-zero. Writes at most
 * capacity ids to tokens (which may be NULL when capacity is 0) and the count
 * to *n_tokens; when capacity is too small returns BUFFER_TOO_SMALL with the
 * count needed in *n_tokens. Errors: INVALID_ARGUMENT, UNSUPPORTED (no
 * tokenizer), BUFFER_TOO_SMALL. Thread-safe. */
LACUNA_API lacuna_status lacuna_model_tokenize(const lacuna_model *model, const char *text, size_t text_len, int32_t add_bos,
                                               int32_t *tokens, size_t capacity, size_t *n_tokens);

/* Decodes token ids into UTF-8 text, NUL-terminated, in text[capacity]; the
 * length without the NUL goes to *text_len. When capacity is not more than
 * the length, returns BUFFER_TOO_SMALL with the length in *text_len (text may
 * be NULL to ask). Ids in the model's vocabulary but not the tokenizer's
 * decode as "<|id|>". Errors: INVALID_ARGUMENT, INVALID_TOKEN, UNSUPPORTED,
 * BUFFER_TOO_SMALL. Thread-safe. */
LACUNA_API lacuna_status lacuna_model_detokenize(const lacuna_model *model, const int32_t *tokens, size_t n_tokens, char *text,
                                                 size_t capacity, size_t *text_len);

/* One message of a chat. Used in arrays, so its layout is frozen. */
typedef struct lacuna_chat_message {
  const char *role;    /* "system", "user" or "assistant", NUL-terminated */
  const char *content; /* UTF-8, NUL-terminated */
} lacuna_chat_message;

/* Since 0.1.3. The tokens of a chat through the model's chat template (the
 * one the server's /v1/chat/completions applies: Mixtral's [INST] ...
 * [/INST], Grok-1's "Human: ... Assistant:"), BOS first, ending where the
 * assistant's next answer begins: pass them as the prompt of
 * lacuna_context_generate. The messages are borrowed for the call. Writes
 * at most capacity ids to tokens (which may be NULL when capacity is 0) and
 * the count to *n_tokens; when capacity is too small returns
 * BUFFER_TOO_SMALL with the count needed in *n_tokens. Errors:
 * INVALID_ARGUMENT (a NULL pointer, no messages, an unknown role: the
 * message names the message's index), UNSUPPORTED (no tokenizer),
 * BUFFER_TOO_SMALL. Thread-safe. */
LACUNA_API lacuna_status lacuna_model_apply_chat_template(const lacuna_model *model, const lacuna_chat_message *messages,
                                                          size_t n_messages, int32_t *tokens, size_t capacity, size_t *n_tokens);

/* ---- Context: sequences, their KV caches and evaluation ----------------- */

typedef struct lacuna_context_params {
  size_t struct_size;
  /* Positions per sequence (its KV cache); 0 (default): the model's n_ctx_max.
   * Memory is reserved, and touched only as a sequence grows. */
  int32_t n_ctx;
  /* Sequences the context holds, with ids 0 .. n_seq_max - 1; at most 4096. Default 1. */
  int32_t n_seq_max;
  /* Worker threads, at most 1024; 0 (default): the model's n_threads. */
  int32_t n_threads;
  /* Most tokens of one sequence per forward step; longer inputs are split. Default 512. */
  int32_t n_batch;
} lacuna_context_params;

/* Fills *params (params_size = sizeof *params) with the defaults. Errors: INVALID_ARGUMENT. */
LACUNA_API lacuna_status lacuna_context_default_params(lacuna_context_params *params, size_t params_size);

/* Creates a context on a model: n_seq_max empty sequences (a sequence's
 * cache takes memory as it grows, in blocks of 16 positions). params may be
 * NULL. On success *ctx receives a new handle the caller owns (free it with
 * lacuna_context_free); on failure it is set to NULL. The context holds a
 * reference to the model's weights. Errors: INVALID_ARGUMENT, UNSUPPORTED,
 * OUT_OF_MEMORY. Thread-safe with respect to the model. */
LACUNA_API lacuna_status lacuna_context_create(const lacuna_model *model, const lacuna_context_params *params, lacuna_context **ctx);

/* Frees a context and everything it returned. NULL is a no-op. Refused
 * (nothing freed, LACUNA_STATUS_MISUSE in lacuna_last_error) while a call on
 * the context runs, e.g. from its own token callback. */
LACUNA_API void lacuna_context_free(lacuna_context *ctx);

/* The message of the context's most recent failed call; "" when none
 * failed. Owned by the context, valid until its next call. */
LACUNA_API const char *lacuna_context_last_error(const lacuna_context *ctx);

/* One sequence's part of an evaluation. The layout of this struct is fixed
 * (it is passed in arrays). */
typedef struct lacuna_seq_input {
  int32_t seq_id;         /* 0 .. n_seq_max - 1; each at most once per call */
  int32_t all_logits;     /* non-zero: logits for every token; 0: for the last one */
  const int32_t *tokens;  /* appended to the sequence; borrowed for the call */
  size_t n_tokens;        /* at least 1 */
} lacuna_seq_input;

/* Appends each input's tokens to its sequence and computes their logits, all
 * sequences together (one product per weight for the whole batch). Either
 * every sequence advances or, on error, none does. Whether it succeeds or
 * not, the outputs of the context's previous eval or generate are gone.
 * Errors: INVALID_ARGUMENT, INVALID_TOKEN, CONTEXT_FULL, OUT_OF_MEMORY,
 * MISUSE, INTERNAL. Blocking. */
LACUNA_API lacuna_status lacuna_context_eval(lacuna_context *ctx, const lacuna_seq_input *inputs, size_t n_inputs);

/* The logits the last lacuna_context_eval computed for inputs[index]: rows x
 * n_vocab floats, row-major, *n_rows set to the rows (its n_tokens with
 * all_logits, else 1). Owned by the context, valid until its next eval,
 * generate, truncate, reset or free. NULL (and *n_rows 0) for an index out of
 * range or when the last call was not a successful eval. n_rows may be NULL. */
LACUNA_API const float *lacuna_context_logits(const lacuna_context *ctx, size_t index, size_t *n_rows);

/* The number of tokens sequence seq_id holds (everything evaluated or
 * generated into it), or -1 for an unknown id. */
LACUNA_API int64_t lacuna_context_seq_length(const lacuna_context *ctx, int32_t seq_id);

/* Keeps the first `length` tokens of a sequence and forgets the rest (0
 * empties it), e.g. to reuse a shared prompt or undo a turn. Like every call
 * that changes the context, it ends the validity of the previous outputs.
 * Errors: INVALID_ARGUMENT (unknown id, length beyond the sequence), MISUSE. */
LACUNA_API lacuna_status lacuna_context_seq_truncate(lacuna_context *ctx, int32_t seq_id, int64_t length);

/* Empties every sequence. Errors: INVALID_ARGUMENT, MISUSE. */
LACUNA_API lacuna_status lacuna_context_reset(lacuna_context *ctx);

/* ---- Generation --------------------------------------------------------- */

/* Called after every generated token with the token id and the text it adds
 * (UTF-8, NUL-terminated, text_len bytes; empty without a tokenizer, while a
 * character is incomplete, or while the text may be the start of a stop
 * string; never any of a stop string). The pointer is valid only during the
 * call. Return non-zero to go on, 0 to stop generating. The callback runs on
 * the thread that called lacuna_context_generate and must not call functions
 * on the same context (they return MISUSE). */
typedef int32_t (*lacuna_token_callback)(void *user_data, int32_t token, const char *text, size_t text_len);

typedef struct lacuna_generate_params {
  size_t struct_size;
  int32_t max_tokens;         /* tokens to generate at most; default 64 */
  float temperature;          /* 0: greedy; default 0.8 */
  int32_t top_k;              /* sample from the k most likely; 0: all; default 40 */
  float top_p;                /* nucleus threshold in (0, 1]; default 0.95 */
  float repetition_penalty;   /* > 0; 1 (default): none */
  uint64_t seed;              /* same seed, same tokens; default 0 */
  const char *const *stop;    /* n_stop NUL-terminated strings; borrowed for the call */
  size_t n_stop;
  int32_t stop_at_eos;        /* non-zero (default): the EOS token ends generation */
  lacuna_token_callback on_token; /* may be NULL */
  void *user_data;            /* passed to on_token */
  /* Since 0.1.1 (a 0.1.0 struct, without them, gets the defaults): */
  float frequency_penalty;    /* in [-2, 2], OpenAI's: subtracted from a token's logit per time it was generated; default 0 */
  float presence_penalty;     /* in [-2, 2], OpenAI's: subtracted once if the token was generated; default 0 */
  /* Since 0.1.2 (an older struct, without them, gets the defaults): */
  const int32_t *logit_bias_tokens; /* n_logit_bias token ids, each at most once; borrowed for the call */
  const float *logit_biases;        /* their biases in [-100, 100], added to their logits after the
                                       penalties (OpenAI's logit_bias: -100 all but bans a token) */
  size_t n_logit_bias;              /* default 0 */
} lacuna_generate_params;

typedef enum lacuna_finish_reason {
  LACUNA_FINISH_REASON_LENGTH = 0,       /* max_tokens reached */
  LACUNA_FINISH_REASON_STOP = 1,         /* a stop string appeared: the text ends before it; the tokens,
                                            and the sequence, keep the ones that made it */
  LACUNA_FINISH_REASON_EOS = 2,          /* the model produced its EOS token */
  LACUNA_FINISH_REASON_CONTEXT_FULL = 3, /* the sequence reached n_ctx */
  LACUNA_FINISH_REASON_CANCELLED = 4     /* the callback returned 0 */
} lacuna_finish_reason;

typedef struct lacuna_generate_result {
  size_t struct_size;
  const int32_t *tokens; /* the generated ids (not the prompt); owned by the context */
  size_t n_tokens;
  const char *text;      /* their text, NUL-terminated, owned by the context; "" without a tokenizer */
  size_t text_len;
  int32_t finish_reason;  /* a lacuna_finish_reason */
  /* Tokens evaluated before generating: the prompt, plus the sequence's
   * last token when it had not been evaluated yet (the previous call
   * generated it, or the prompt was empty). */
  size_t n_prompt_tokens;
  double prefill_seconds;
  double decode_seconds;
} lacuna_generate_result;

/* Fills *params (params_size = sizeof *params) with the defaults. Errors: INVALID_ARGUMENT. */
LACUNA_API lacuna_status lacuna_generate_default_params(lacuna_generate_params *params, size_t params_size);

/* Appends the prompt to sequence seq_id and generates after it, so a
 * conversation continues where the sequence ends (the prompt may be empty
 * when the sequence is not). The sequence then holds the prompt and the
 * generated tokens, never more than n_ctx. params may be NULL (the
 * defaults). result (may be NULL; result_size = sizeof *result) receives the
 * generated tokens and text, owned by the context and valid until its next
 * eval, generate, truncate, reset or free. Errors (the sequence unchanged):
 * INVALID_ARGUMENT, INVALID_TOKEN, CONTEXT_FULL (the prompt and one
 * generated token do not fit), UNSUPPORTED, OUT_OF_MEMORY, MISUSE, INTERNAL.
 * Blocking; the callback runs on the calling thread. */
LACUNA_API lacuna_status lacuna_context_generate(lacuna_context *ctx, int32_t seq_id, const int32_t *prompt, size_t n_prompt,
                                                 const lacuna_generate_params *params, lacuna_generate_result *result,
                                                 size_t result_size);

#ifdef __cplusplus
}
#endif

#endif /* LACUNA_H */
