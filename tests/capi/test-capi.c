/* The C API's tests, in C11 as an embedder writes it.
 *
 *   test-capi CASE FIXTURE_DIR GOLDEN_DIR
 *
 * FIXTURE_DIR is made by make-models.sh: the tiny Mixtral checkpoint the
 * goldens come from converted three ways (model.lacuna: bf16 pruned to 50 %;
 * model-f32.lacuna: f32 unpruned; model-notok.lacuna: without its tokenizer),
 * and cpp.logits, what `lacuna logits` (the C++ path) writes for the golden
 * tokens with model.lacuna. GOLDEN_DIR holds the NumPy reference's logits. */
#define _POSIX_C_SOURCE 200809L /* setenv */
#include <lacuna.h>

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int g_failures;
static const char *g_fixtures, *g_golden;

#define CHECK(cond)                                                                    \
  do {                                                                                 \
    if (!(cond)) {                                                                     \
      fprintf(stderr, "%s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #cond);         \
      ++g_failures;                                                                    \
    }                                                                                  \
  } while (0)

/* A call that must return `want`, and a message naming what went wrong when it is an error. */
#define CHECK_STATUS(call, want)                                                                                   \
  do {                                                                                                             \
    lacuna_status got_ = (call);                                                                                   \
    if (got_ != (want)) {                                                                                          \
      fprintf(stderr, "%s:%d: %s returned %d (%s), want %d: %s\n", __FILE__, __LINE__, #call, (int)got_,          \
              lacuna_status_string(got_), (int)(want), lacuna_last_error());                                       \
      ++g_failures;                                                                                                \
    } else if ((want) != LACUNA_STATUS_OK && lacuna_last_error()[0] == '\0') {                                     \
      fprintf(stderr, "%s:%d: %s failed without a message\n", __FILE__, __LINE__, #call);                          \
      ++g_failures;                                                                                                \
    }                                                                                                              \
  } while (0)

static char *path_in(const char *dir, const char *name) {
  static char buf[4][4096];
  static int next;
  char *p = buf[next++ % 4];
  snprintf(p, sizeof buf[0], "%s/%s", dir, name);
  return p;
}

static void *read_file(const char *path, size_t *size) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    fprintf(stderr, "cannot open %s\n", path);
    exit(2);
  }
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  void *data = malloc((size_t)n + 1);
  if (!data || fread(data, 1, (size_t)n, f) != (size_t)n) exit(2);
  fclose(f);
  ((char *)data)[n] = '\0';
  *size = (size_t)n;
  return data;
}

/* The golden prompt: token ids separated by spaces. */
static size_t golden_tokens(int32_t *ids, size_t capacity) {
  size_t size, n = 0;
  char *text = read_file(path_in(g_golden, "tokens.txt"), &size);
  for (char *p = strtok(text, " \n"); p && n < capacity; p = strtok(NULL, " \n")) ids[n++] = (int32_t)atoi(p);
  free(text);
  return n;
}

static lacuna_model *load(const char *name) {
  lacuna_model *model = NULL;
  CHECK_STATUS(lacuna_model_load(path_in(g_fixtures, name), NULL, &model), LACUNA_STATUS_OK);
  if (!model) exit(1);
  return model;
}

static lacuna_context *context(const lacuna_model *model, int32_t n_ctx, int32_t n_seq, int32_t n_threads) {
  lacuna_context_params p;
  CHECK_STATUS(lacuna_context_default_params(&p, sizeof p), LACUNA_STATUS_OK);
  p.n_ctx = n_ctx;
  p.n_seq_max = n_seq;
  p.n_threads = n_threads;
  lacuna_context *ctx = NULL;
  CHECK_STATUS(lacuna_context_create(model, &p, &ctx), LACUNA_STATUS_OK);
  if (!ctx) exit(1);
  return ctx;
}

/* max |a - b| / max |b| over n values, and how many of the rows of width
 * `vocab` have a different largest entry. */
static double relative_error(const float *a, const float *b, size_t n, size_t vocab, int *top1_mismatches) {
  double err = 0, scale = 0;
  *top1_mismatches = 0;
  for (size_t i = 0; i < n; ++i) {
    err = fmax(err, fabs((double)a[i] - (double)b[i]));
    scale = fmax(scale, fabs((double)b[i]));
  }
  for (size_t r = 0; r < n / vocab; ++r) {
    size_t ia = 0, ib = 0;
    for (size_t j = 1; j < vocab; ++j) {
      if (a[r * vocab + j] > a[r * vocab + ia]) ia = j;
      if (b[r * vocab + j] > b[r * vocab + ib]) ib = j;
    }
    *top1_mismatches += ia != ib;
  }
  return err / scale;
}

static int32_t argmax(const float *row, size_t n) {
  size_t best = 0;
  for (size_t j = 1; j < n; ++j)
    if (row[j] > row[best]) best = j;
  return (int32_t)best;
}

/* ---- cases -------------------------------------------------------------- */

static void test_version(void) {
  CHECK(strcmp(lacuna_last_error(), "") == 0); /* nothing failed yet in this process */
  CHECK(strcmp(lacuna_version(), LACUNA_VERSION_STRING) == 0);
  CHECK(lacuna_version_number() == LACUNA_VERSION_NUMBER);
  CHECK(LACUNA_VERSION_NUMBER == LACUNA_VERSION_MAJOR * 10000 + LACUNA_VERSION_MINOR * 100 + LACUNA_VERSION_PATCH);
  for (int s = LACUNA_STATUS_OK; s <= LACUNA_STATUS_INTERNAL; ++s) {
    CHECK(strlen(lacuna_status_string((lacuna_status)s)) > 0);
    for (int t = LACUNA_STATUS_OK; t < s; ++t)
      CHECK(strcmp(lacuna_status_string((lacuna_status)s), lacuna_status_string((lacuna_status)t)) != 0);
  }
  CHECK(strcmp(lacuna_status_string((lacuna_status)999), "unknown status") == 0);
}

static void test_info(void) {
  lacuna_model *model = load("model.lacuna");
  lacuna_model_info info;
  CHECK_STATUS(lacuna_model_get_info(model, &info, sizeof info), LACUNA_STATUS_OK);
  /* The tiny preset (engine/model/synth.cc). */
  CHECK(info.struct_size == sizeof info);
  CHECK(strcmp(info.architecture, "mixtral") == 0);
  CHECK(info.n_vocab == 512 && info.n_embd == 64 && info.n_layers == 2 && info.n_heads == 4 && info.n_kv_heads == 2);
  CHECK(info.head_dim == 16 && info.n_experts == 4 && info.n_experts_used == 2 && info.n_ff == 128 && info.n_ctx_max == 512);
  CHECK(info.bos_token == 1 && info.eos_token == 2 && info.has_tokenizer == 1);
  CHECK(info.n_params > 0 && info.file_bytes > 0 && info.decode_bytes_per_token > 0 && info.decode_bytes_per_token < info.file_bytes);
  CHECK(strstr(lacuna_model_metadata(model), "\"mixtral\"") != NULL);
  lacuna_model_free(model);
}

static void test_tokenize(void) {
  lacuna_model *model = load("model.lacuna");
  const char *text = "The night train to the coast leaves a little before eleven.";
  size_t n = 0;
  CHECK_STATUS(lacuna_model_tokenize(model, text, strlen(text), 1, NULL, 0, &n), LACUNA_STATUS_BUFFER_TOO_SMALL);
  CHECK(n > 2);
  int32_t ids[256];
  size_t n2 = 0;
  CHECK_STATUS(lacuna_model_tokenize(model, text, strlen(text), 1, ids, n - 1, &n2), LACUNA_STATUS_BUFFER_TOO_SMALL);
  CHECK(n2 == n);
  CHECK_STATUS(lacuna_model_tokenize(model, text, strlen(text), 1, ids, 256, &n2), LACUNA_STATUS_OK);
  CHECK(n2 == n && ids[0] == 1);
  size_t without_bos = 0;
  int32_t ids2[256];
  CHECK_STATUS(lacuna_model_tokenize(model, text, strlen(text), 0, ids2, 256, &without_bos), LACUNA_STATUS_OK);
  CHECK(without_bos == n - 1 && memcmp(ids2, ids + 1, without_bos * sizeof *ids) == 0);

  char out[512];
  size_t len = 0;
  CHECK_STATUS(lacuna_model_detokenize(model, ids, n, out, sizeof out, &len), LACUNA_STATUS_OK);
  CHECK(len == strlen(text) && strcmp(out, text) == 0);
  /* The NUL needs room too. */
  CHECK_STATUS(lacuna_model_detokenize(model, ids, n, out, len, &len), LACUNA_STATUS_BUFFER_TOO_SMALL);
  CHECK(len == strlen(text));
  CHECK_STATUS(lacuna_model_detokenize(model, ids, n, NULL, 0, &len), LACUNA_STATUS_BUFFER_TOO_SMALL);
  int32_t bad[2] = {5, 512};
  CHECK_STATUS(lacuna_model_detokenize(model, bad, 2, out, sizeof out, &len), LACUNA_STATUS_INVALID_TOKEN);
  CHECK(strstr(lacuna_last_error(), "512") != NULL);
  /* Text with a NUL inside and without one at the end: text_len decides. */
  CHECK_STATUS(lacuna_model_tokenize(model, "ab\0cd", 5, 0, ids, 256, &n), LACUNA_STATUS_OK);
  CHECK_STATUS(lacuna_model_detokenize(model, ids, n, out, sizeof out, &len), LACUNA_STATUS_OK);
  CHECK(len == 5 && memcmp(out, "ab\0cd", 5) == 0);
  lacuna_model_free(model);
}

/* Appends text's tokens (no BOS) at ids + *n. */
static void append_tokens(const lacuna_model *model, const char *text, int32_t *ids, size_t *n) {
  size_t added = 0;
  CHECK_STATUS(lacuna_model_tokenize(model, text, strlen(text), 0, ids + *n, 512 - *n, &added), LACUNA_STATUS_OK);
  *n += added;
}

/* A chat through Mixtral's template, as docs/server.md writes it: BOS, each
 * user turn "[INST] (system, blank line) text [/INST]", each assistant turn
 * its text and EOS, each part tokenized on its own. */
static void test_chat_template(void) {
  lacuna_model *model = load("model.lacuna");
  const lacuna_chat_message chat[] = {{"system", "Answer briefly."},
                                      {"user", "Where does the night train go?"},
                                      {"assistant", "To the coast."},
                                      {"user", "When?"}};
  int32_t want[512] = {1};
  size_t n_want = 1;
  append_tokens(model, "[INST] Answer briefly.\n\nWhere does the night train go? [/INST]", want, &n_want);
  append_tokens(model, "To the coast.", want, &n_want);
  want[n_want++] = 2;
  append_tokens(model, "[INST] When? [/INST]", want, &n_want);

  size_t n = 0;
  CHECK_STATUS(lacuna_model_apply_chat_template(model, chat, 4, NULL, 0, &n), LACUNA_STATUS_BUFFER_TOO_SMALL);
  CHECK(n == n_want);
  int32_t got[512];
  CHECK_STATUS(lacuna_model_apply_chat_template(model, chat, 4, got, n_want - 1, &n), LACUNA_STATUS_BUFFER_TOO_SMALL);
  CHECK_STATUS(lacuna_model_apply_chat_template(model, chat, 4, got, 512, &n), LACUNA_STATUS_OK);
  CHECK(n == n_want && memcmp(got, want, n * sizeof *got) == 0);

  const lacuna_chat_message tool[] = {{"user", "Hi"}, {"tool", "{}"}};
  CHECK_STATUS(lacuna_model_apply_chat_template(model, tool, 2, got, 512, &n), LACUNA_STATUS_INVALID_ARGUMENT);
  CHECK(strstr(lacuna_last_error(), "messages[1].role is \"tool\"") != NULL);
  const lacuna_chat_message no_content[] = {{"user", NULL}};
  CHECK_STATUS(lacuna_model_apply_chat_template(model, no_content, 1, got, 512, &n), LACUNA_STATUS_INVALID_ARGUMENT);
  CHECK(strstr(lacuna_last_error(), "messages[0].content is NULL") != NULL);
  CHECK_STATUS(lacuna_model_apply_chat_template(model, chat, 0, got, 512, &n), LACUNA_STATUS_INVALID_ARGUMENT);
  CHECK_STATUS(lacuna_model_apply_chat_template(model, NULL, 1, got, 512, &n), LACUNA_STATUS_INVALID_ARGUMENT);
  CHECK_STATUS(lacuna_model_apply_chat_template(model, chat, 4, got, 512, NULL), LACUNA_STATUS_INVALID_ARGUMENT);
  CHECK_STATUS(lacuna_model_apply_chat_template(NULL, chat, 4, got, 512, &n), LACUNA_STATUS_INVALID_ARGUMENT);
  lacuna_model *notok = load("model-notok.lacuna");
  CHECK_STATUS(lacuna_model_apply_chat_template(notok, chat, 4, got, 512, &n), LACUNA_STATUS_UNSUPPORTED);
  lacuna_model_free(notok);
  lacuna_model_free(model);
}

/* Logits through the C API against the C++ path (`lacuna logits`) and
 * against the independent NumPy reference. */
static void test_logits(void) {
  int32_t ids[256];
  const size_t n = golden_tokens(ids, 256);
  CHECK(n == 40);
  const size_t vocab = 512;
  int mismatches = 0;
  {
    lacuna_model *model = load("model.lacuna");
    lacuna_context *ctx = context(model, 0, 1, 0);
    lacuna_seq_input in = {.seq_id = 0, .all_logits = 1, .tokens = ids, .n_tokens = n};
    CHECK_STATUS(lacuna_context_eval(ctx, &in, 1), LACUNA_STATUS_OK);
    size_t rows = 0;
    const float *logits = lacuna_context_logits(ctx, 0, &rows);
    size_t size;
    float *cpp = read_file(path_in(g_fixtures, "cpp.logits"), &size);
    CHECK(rows == n && size == n * vocab * sizeof(float));
    /* The same engine and weights: equal up to summation order. */
    const double err = relative_error(logits, cpp, n * vocab, vocab, &mismatches);
    printf("C API vs C++ path: max relative error %.3g, top-1 mismatches %d\n", err, mismatches);
    CHECK(err <= 1e-5 && mismatches == 0);
    CHECK(lacuna_context_logits(ctx, 1, &rows) == NULL && rows == 0);
    CHECK(lacuna_context_seq_length(ctx, 0) == (int64_t)n);

    /* Split into two evaluations through the cache, the last one only: the same rows. */
    CHECK_STATUS(lacuna_context_reset(ctx), LACUNA_STATUS_OK);
    CHECK(lacuna_context_seq_length(ctx, 0) == 0);
    lacuna_seq_input first = {0, 1, ids, 17}, rest = {0, 0, ids + 17, n - 17};
    CHECK_STATUS(lacuna_context_eval(ctx, &first, 1), LACUNA_STATUS_OK);
    CHECK(relative_error(lacuna_context_logits(ctx, 0, &rows), cpp, 17 * vocab, vocab, &mismatches) <= 1e-4 && mismatches == 0);
    CHECK_STATUS(lacuna_context_eval(ctx, &rest, 1), LACUNA_STATUS_OK);
    const float *last = lacuna_context_logits(ctx, 0, &rows);
    CHECK(rows == 1 && relative_error(last, cpp + (n - 1) * vocab, vocab, vocab, &mismatches) <= 1e-4 && mismatches == 0);
    free(cpp);
    lacuna_context_free(ctx);
    lacuna_model_free(model);
  }
  {
    /* f32 weights against the NumPy reference (tests/test-model.cc's tolerance for f32). */
    lacuna_model *model = load("model-f32.lacuna");
    lacuna_context *ctx = context(model, 64, 1, 0);
    lacuna_seq_input in = {.seq_id = 0, .all_logits = 1, .tokens = ids, .n_tokens = n};
    CHECK_STATUS(lacuna_context_eval(ctx, &in, 1), LACUNA_STATUS_OK);
    size_t rows = 0, size;
    const float *logits = lacuna_context_logits(ctx, 0, &rows);
    float *golden = read_file(path_in(g_golden, "mixtral-tiny.logits"), &size);
    CHECK(rows == n && size == n * vocab * sizeof(float));
    const double err = relative_error(logits, golden, n * vocab, vocab, &mismatches);
    printf("C API (f32) vs NumPy reference: max relative error %.3g, top-1 mismatches %d\n", err, mismatches);
    CHECK(err <= 1e-4 && mismatches == 0);
    free(golden);
    lacuna_context_free(ctx);
    lacuna_model_free(model);
  }
}

/* Every NUMA policy on simulated 2- and 4-node topologies: bitwise the
 * logits of LACUNA_NUMA_POLICY_NONE, for a prompt and a decode step, with
 * two contexts sharing the placed model. */
static void test_numa(void) {
  int32_t ids[256];
  const size_t n = golden_tokens(ids, 256);
  const size_t vocab = 512;
  float *reference = malloc((n + 1) * vocab * sizeof(float));
  {
    lacuna_model *model = load("model.lacuna");
    lacuna_context *ctx = context(model, 64, 1, 0);
    lacuna_seq_input in = {.seq_id = 0, .all_logits = 1, .tokens = ids, .n_tokens = n};
    CHECK_STATUS(lacuna_context_eval(ctx, &in, 1), LACUNA_STATUS_OK);
    size_t rows = 0;
    memcpy(reference, lacuna_context_logits(ctx, 0, &rows), n * vocab * sizeof(float));
    lacuna_seq_input next = {.seq_id = 0, .all_logits = 0, .tokens = ids, .n_tokens = 1};
    CHECK_STATUS(lacuna_context_eval(ctx, &next, 1), LACUNA_STATUS_OK);
    memcpy(reference + n * vocab, lacuna_context_logits(ctx, 0, &rows), vocab * sizeof(float));
    lacuna_context_free(ctx);
    lacuna_model_free(model);
  }
  const char *nodes[] = {"2", "4"};
  const int32_t policies[] = {LACUNA_NUMA_POLICY_INTERLEAVE, LACUNA_NUMA_POLICY_EXPERTS, LACUNA_NUMA_POLICY_SLICES, LACUNA_NUMA_POLICY_AUTO};
  for (size_t k = 0; k < 2; ++k)
    for (size_t i = 0; i < sizeof policies / sizeof policies[0]; ++i) {
      setenv("LACUNA_NUMA_SIMULATE", nodes[k], 1);
      lacuna_model_params mp;
      CHECK_STATUS(lacuna_model_default_params(&mp, sizeof mp), LACUNA_STATUS_OK);
      mp.numa_policy = policies[i];
      mp.numa_replicate_budget_mb = 1;
      lacuna_model *model = NULL;
      CHECK_STATUS(lacuna_model_load(path_in(g_fixtures, "model.lacuna"), &mp, &model), LACUNA_STATUS_OK);
      unsetenv("LACUNA_NUMA_SIMULATE");
      if (!model) continue;
      lacuna_context *a = context(model, 64, 1, 0), *b = context(model, 64, 1, 1);
      lacuna_context *both[] = {a, b};
      for (size_t c = 0; c < 2; ++c) {
        lacuna_seq_input in = {.seq_id = 0, .all_logits = 1, .tokens = ids, .n_tokens = n};
        CHECK_STATUS(lacuna_context_eval(both[c], &in, 1), LACUNA_STATUS_OK);
        size_t rows = 0;
        const float *logits = lacuna_context_logits(both[c], 0, &rows);
        CHECK(rows == n && memcmp(logits, reference, n * vocab * sizeof(float)) == 0);
        lacuna_seq_input next = {.seq_id = 0, .all_logits = 0, .tokens = ids, .n_tokens = 1};
        CHECK_STATUS(lacuna_context_eval(both[c], &next, 1), LACUNA_STATUS_OK);
        logits = lacuna_context_logits(both[c], 0, &rows);
        CHECK(rows == 1 && memcmp(logits, reference + n * vocab, vocab * sizeof(float)) == 0);
      }
      lacuna_context_free(a);
      lacuna_context_free(b);
      lacuna_model_free(model);
    }
  free(reference);
}

/* Sequences of different lengths in one evaluation: each as if alone. */
static void test_batch(void) {
  int32_t ids[256];
  const size_t n = golden_tokens(ids, 256), vocab = 512;
  lacuna_model *model = load("model.lacuna");
  lacuna_context *ctx = context(model, 128, 3, 0);
  const size_t lengths[3] = {5, 39, 13}; /* sequence s starts at ids[s] */
  float *alone[3];
  for (int s = 0; s < 3; ++s) {
    lacuna_seq_input in = {s, 1, ids + (size_t)s, lengths[s]};
    CHECK_STATUS(lacuna_context_eval(ctx, &in, 1), LACUNA_STATUS_OK);
    size_t rows;
    const float *l = lacuna_context_logits(ctx, 0, &rows);
    alone[s] = malloc(rows * vocab * sizeof(float));
    memcpy(alone[s], l, rows * vocab * sizeof(float));
  }
  CHECK_STATUS(lacuna_context_reset(ctx), LACUNA_STATUS_OK);
  lacuna_seq_input batch[3] = {{2, 1, ids + 2, lengths[2]}, {0, 1, ids, lengths[0]}, {1, 1, ids + 1, lengths[1]}};
  CHECK_STATUS(lacuna_context_eval(ctx, batch, 3), LACUNA_STATUS_OK);
  for (int i = 0; i < 3; ++i) {
    const int s = batch[i].seq_id;
    size_t rows;
    int mismatches;
    const float *l = lacuna_context_logits(ctx, (size_t)i, &rows);
    CHECK(rows == lengths[s]);
    CHECK(relative_error(l, alone[s], rows * vocab, vocab, &mismatches) <= 1e-5 && mismatches == 0);
    CHECK(lacuna_context_seq_length(ctx, s) == (int64_t)lengths[s]);
    free(alone[s]);
  }
  (void)n;
  lacuna_context_free(ctx);
  lacuna_model_free(model);
}

struct stream {
  char text[8192];
  size_t len;
  int calls, stop_after;
};

static int32_t collect(void *user_data, int32_t token, const char *text, size_t text_len) {
  struct stream *s = user_data;
  (void)token;
  if (text[text_len] != '\0' || s->len + text_len >= sizeof s->text) return 0;
  memcpy(s->text + s->len, text, text_len);
  s->len += text_len;
  s->text[s->len] = '\0';
  return ++s->calls != s->stop_after;
}

/* Greedy by hand: evaluate, take the largest logit, repeat. */
static void greedy_by_hand(lacuna_context *ctx, const int32_t *prompt, size_t n_prompt, int32_t *out, size_t n_out) {
  lacuna_seq_input in = {0, 0, prompt, n_prompt};
  for (size_t i = 0; i < n_out; ++i) {
    CHECK_STATUS(lacuna_context_eval(ctx, &in, 1), LACUNA_STATUS_OK);
    out[i] = argmax(lacuna_context_logits(ctx, 0, NULL), 512);
    in.tokens = &out[i];
    in.n_tokens = 1;
  }
}

static void test_generate(void) {
  lacuna_model *model = load("model.lacuna");
  lacuna_context *ctx = context(model, 128, 1, 0);
  const int32_t prompt[5] = {1, 124, 306, 281, 69};
  int32_t expected[12];
  greedy_by_hand(ctx, prompt, 5, expected, 12);
  CHECK_STATUS(lacuna_context_reset(ctx), LACUNA_STATUS_OK);

  lacuna_generate_params gp;
  CHECK_STATUS(lacuna_generate_default_params(&gp, sizeof gp), LACUNA_STATUS_OK);
  CHECK(gp.max_tokens == 64 && gp.stop_at_eos == 1 && gp.repetition_penalty == 1.0f);
  CHECK(gp.frequency_penalty == 0.0f && gp.presence_penalty == 0.0f);
  gp.temperature = 0;
  gp.max_tokens = 12;
  gp.stop_at_eos = 0;
  struct stream s = {.stop_after = -1};
  gp.on_token = collect;
  gp.user_data = &s;
  lacuna_generate_result r;
  CHECK_STATUS(lacuna_context_generate(ctx, 0, prompt, 5, &gp, &r, sizeof r), LACUNA_STATUS_OK);
  CHECK(r.n_tokens == 12 && memcmp(r.tokens, expected, sizeof expected) == 0);
  CHECK(r.finish_reason == LACUNA_FINISH_REASON_LENGTH && r.n_prompt_tokens == 5 && s.calls == 12);
  CHECK(r.text[r.text_len] == '\0' && s.len == r.text_len && memcmp(s.text, r.text, r.text_len) == 0);
  /* The text follows the prompt's: decoding prompt and tokens together gives prompt text + r.text. */
  int32_t all[17];
  memcpy(all, prompt, sizeof prompt);
  memcpy(all + 5, expected, sizeof expected);
  char joined[4096], prompt_text[4096];
  size_t len;
  CHECK_STATUS(lacuna_model_detokenize(model, prompt, 5, prompt_text, sizeof prompt_text, &len), LACUNA_STATUS_OK);
  size_t joined_len;
  CHECK_STATUS(lacuna_model_detokenize(model, all, 17, joined, sizeof joined, &joined_len), LACUNA_STATUS_OK);
  CHECK(joined_len == len + r.text_len && memcmp(joined + len, r.text, r.text_len) == 0);
  CHECK(lacuna_context_seq_length(ctx, 0) == 17);

  /* Six, then six more after the same sequence with an empty prompt: the same twelve. */
  CHECK_STATUS(lacuna_context_seq_truncate(ctx, 0, 5), LACUNA_STATUS_OK);
  CHECK(lacuna_context_seq_length(ctx, 0) == 5);
  gp.on_token = NULL;
  gp.max_tokens = 6;
  CHECK_STATUS(lacuna_context_generate(ctx, 0, prompt, 0, &gp, &r, sizeof r), LACUNA_STATUS_OK);
  CHECK(r.n_tokens == 6 && memcmp(r.tokens, expected, 6 * sizeof *expected) == 0);
  CHECK_STATUS(lacuna_context_generate(ctx, 0, NULL, 0, &gp, &r, sizeof r), LACUNA_STATUS_OK);
  CHECK(r.n_tokens == 6 && memcmp(r.tokens, expected + 6, 6 * sizeof *expected) == 0);
  CHECK(lacuna_context_seq_length(ctx, 0) == 17);

  /* The callback stops generation. */
  CHECK_STATUS(lacuna_context_reset(ctx), LACUNA_STATUS_OK);
  struct stream s2 = {.stop_after = 3};
  gp.on_token = collect;
  gp.user_data = &s2;
  gp.max_tokens = 12;
  CHECK_STATUS(lacuna_context_generate(ctx, 0, prompt, 5, &gp, &r, sizeof r), LACUNA_STATUS_OK);
  CHECK(r.finish_reason == LACUNA_FINISH_REASON_CANCELLED && r.n_tokens == 3 && memcmp(r.tokens, expected, 3 * sizeof *expected) == 0);

  /* A stop string taken from the text: the result ends before it, and the callback never saw it. */
  CHECK_STATUS(lacuna_context_reset(ctx), LACUNA_STATUS_OK);
  struct stream s3 = {.stop_after = -1};
  gp.user_data = &s3;
  char stop[4] = {0};
  memcpy(stop, s.text + s.len / 2, 3);
  const char *stops[1] = {stop};
  gp.stop = stops;
  gp.n_stop = 1;
  CHECK_STATUS(lacuna_context_generate(ctx, 0, prompt, 5, &gp, &r, sizeof r), LACUNA_STATUS_OK);
  CHECK(r.finish_reason == LACUNA_FINISH_REASON_STOP);
  CHECK(strstr(r.text, stop) == NULL && strncmp(r.text, s.text, r.text_len) == 0 && strcmp(s3.text, r.text) == 0);

  /* A logit bias of -100 on the greedy first token: the next most likely comes first. */
  gp.stop = NULL;
  gp.n_stop = 0;
  gp.on_token = NULL;
  CHECK_STATUS(lacuna_context_reset(ctx), LACUNA_STATUS_OK);
  const lacuna_seq_input whole_prompt = {0, 0, prompt, 5};
  CHECK_STATUS(lacuna_context_eval(ctx, &whole_prompt, 1), LACUNA_STATUS_OK);
  float biased_row[512];
  memcpy(biased_row, lacuna_context_logits(ctx, 0, NULL), sizeof biased_row);
  biased_row[expected[0]] -= 100.0f;
  const int32_t second = argmax(biased_row, 512);
  CHECK(second != expected[0]);
  const int32_t banned[1] = {expected[0]};
  const float minus_100[1] = {-100.0f};
  gp.logit_bias_tokens = banned;
  gp.logit_biases = minus_100;
  gp.n_logit_bias = 1;
  gp.max_tokens = 1;
  CHECK_STATUS(lacuna_context_reset(ctx), LACUNA_STATUS_OK);
  CHECK_STATUS(lacuna_context_generate(ctx, 0, prompt, 5, &gp, &r, sizeof r), LACUNA_STATUS_OK);
  CHECK(r.n_tokens == 1 && r.tokens[0] == second);
  gp.n_logit_bias = 0;
  gp.max_tokens = 12;

  /* Seeded sampling repeats itself. */
  gp.temperature = 1.0f;
  gp.seed = 42;
  int32_t sampled[12];
  CHECK_STATUS(lacuna_context_reset(ctx), LACUNA_STATUS_OK);
  CHECK_STATUS(lacuna_context_generate(ctx, 0, prompt, 5, &gp, &r, sizeof r), LACUNA_STATUS_OK);
  memcpy(sampled, r.tokens, sizeof sampled);
  CHECK_STATUS(lacuna_context_reset(ctx), LACUNA_STATUS_OK);
  CHECK_STATUS(lacuna_context_generate(ctx, 0, prompt, 5, &gp, &r, sizeof r), LACUNA_STATUS_OK);
  CHECK(r.n_tokens == 12 && memcmp(sampled, r.tokens, sizeof sampled) == 0);

  /* The sequence fills: generation ends with CONTEXT_FULL, the sequence holding n_ctx tokens. */
  lacuna_context *small = context(model, 9, 1, 0);
  gp.temperature = 0;
  CHECK_STATUS(lacuna_context_generate(small, 0, prompt, 5, &gp, &r, sizeof r), LACUNA_STATUS_OK);
  CHECK(r.finish_reason == LACUNA_FINISH_REASON_CONTEXT_FULL && r.n_tokens == 4 && memcmp(r.tokens, expected, 4 * sizeof *expected) == 0);
  CHECK(lacuna_context_seq_length(small, 0) == 9);
  CHECK_STATUS(lacuna_context_generate(small, 0, NULL, 0, &gp, &r, sizeof r), LACUNA_STATUS_CONTEXT_FULL);
  lacuna_context_free(small);
  lacuna_context_free(ctx);
  lacuna_model_free(model);
}

static void test_errors(void) {
  lacuna_model *model = NULL;
  CHECK_STATUS(lacuna_model_load(NULL, NULL, &model), LACUNA_STATUS_INVALID_ARGUMENT);
  CHECK_STATUS(lacuna_model_load("x", NULL, NULL), LACUNA_STATUS_INVALID_ARGUMENT);
  CHECK_STATUS(lacuna_model_load(path_in(g_fixtures, "no-such-file.lacuna"), NULL, &model), LACUNA_STATUS_IO);
  CHECK(model == NULL && strstr(lacuna_last_error(), "no-such-file.lacuna") != NULL);
  CHECK_STATUS(lacuna_model_load(g_fixtures, NULL, &model), LACUNA_STATUS_IO); /* a directory */
  CHECK_STATUS(lacuna_model_load(path_in(g_fixtures, "cpp.logits"), NULL, &model), LACUNA_STATUS_INVALID_MODEL);
  CHECK(strstr(lacuna_last_error(), "not a .lacuna file") != NULL);
  CHECK_STATUS(lacuna_model_load(path_in(g_fixtures, "truncated.lacuna"), NULL, &model), LACUNA_STATUS_INVALID_MODEL);
  CHECK_STATUS(lacuna_model_load(path_in(g_fixtures, "corrupted.lacuna"), NULL, &model), LACUNA_STATUS_INVALID_MODEL);
  CHECK(strstr(lacuna_last_error(), "checksum") != NULL);

  lacuna_model_params mp;
  CHECK_STATUS(lacuna_model_default_params(NULL, sizeof mp), LACUNA_STATUS_INVALID_ARGUMENT);
  CHECK_STATUS(lacuna_model_default_params(&mp, sizeof mp - 1), LACUNA_STATUS_INVALID_ARGUMENT);
  CHECK_STATUS(lacuna_model_default_params(&mp, sizeof mp), LACUNA_STATUS_OK);
  mp.numa_policy = 7;
  CHECK_STATUS(lacuna_model_load(path_in(g_fixtures, "model.lacuna"), &mp, &model), LACUNA_STATUS_INVALID_ARGUMENT);
  CHECK(strstr(lacuna_last_error(), "numa_policy") != NULL);
  CHECK_STATUS(lacuna_model_default_params(&mp, sizeof mp), LACUNA_STATUS_OK);
  mp.numa_replicate_budget_mb = -1;
  CHECK_STATUS(lacuna_model_load(path_in(g_fixtures, "model.lacuna"), &mp, &model), LACUNA_STATUS_INVALID_ARGUMENT);
  CHECK(strstr(lacuna_last_error(), "numa_replicate_budget_mb") != NULL);
  CHECK_STATUS(lacuna_model_default_params(&mp, sizeof mp), LACUNA_STATUS_OK);
  setenv("LACUNA_NUMA_SIMULATE", "zero", 1);
  mp.numa_policy = LACUNA_NUMA_POLICY_EXPERTS;
  CHECK_STATUS(lacuna_model_load(path_in(g_fixtures, "model.lacuna"), &mp, &model), LACUNA_STATUS_INVALID_ARGUMENT);
  CHECK(model == NULL && strstr(lacuna_last_error(), "LACUNA_NUMA_SIMULATE") != NULL);
  unsetenv("LACUNA_NUMA_SIMULATE");
  CHECK_STATUS(lacuna_model_default_params(&mp, sizeof mp), LACUNA_STATUS_OK);
  CHECK_STATUS(lacuna_model_default_params(&mp, sizeof mp), LACUNA_STATUS_OK);
  mp.struct_size = (size_t)1 << 40; /* never set: garbage */
  CHECK_STATUS(lacuna_model_load(path_in(g_fixtures, "model.lacuna"), &mp, &model), LACUNA_STATUS_INVALID_ARGUMENT);
  mp.struct_size = 8;
  CHECK_STATUS(lacuna_model_load(path_in(g_fixtures, "model.lacuna"), &mp, &model), LACUNA_STATUS_INVALID_ARGUMENT);
  CHECK(strstr(lacuna_last_error(), "struct_size") != NULL);
  /* A struct from a newer header: its unknown fields must be zero. */
  struct {
    lacuna_model_params known;
    int64_t newer_field;
  } newer;
  CHECK_STATUS(lacuna_model_default_params(&newer.known, sizeof newer), LACUNA_STATUS_OK);
  CHECK(newer.known.struct_size == sizeof newer && newer.newer_field == 0);
  CHECK_STATUS(lacuna_model_load(path_in(g_fixtures, "model.lacuna"), &newer.known, &model), LACUNA_STATUS_OK);
  lacuna_model_free(model);
  newer.newer_field = 1;
  CHECK_STATUS(lacuna_model_load(path_in(g_fixtures, "model.lacuna"), &newer.known, &model), LACUNA_STATUS_UNSUPPORTED);
  CHECK(model == NULL);

  model = load("model.lacuna");
  lacuna_model_info info;
  CHECK_STATUS(lacuna_model_get_info(NULL, &info, sizeof info), LACUNA_STATUS_INVALID_ARGUMENT);
  CHECK_STATUS(lacuna_model_get_info(model, &info, 4), LACUNA_STATUS_INVALID_ARGUMENT);
  /* An output struct from a newer header: filled as far as this library knows, the rest zeroed. */
  struct {
    lacuna_model_info known;
    uint64_t newer_field;
  } wide;
  memset(&wide, 0xff, sizeof wide);
  CHECK_STATUS(lacuna_model_get_info(model, &wide.known, sizeof wide), LACUNA_STATUS_OK);
  CHECK(wide.known.struct_size == sizeof(lacuna_model_info) && wide.newer_field == 0 && wide.known.n_vocab == 512);
  size_t n;
  CHECK_STATUS(lacuna_model_tokenize(model, "abc", 3, 0, NULL, 0, NULL), LACUNA_STATUS_INVALID_ARGUMENT);
  CHECK_STATUS(lacuna_model_tokenize(model, NULL, 3, 0, NULL, 0, &n), LACUNA_STATUS_INVALID_ARGUMENT);
  CHECK_STATUS(lacuna_model_tokenize(model, "abc", 3, 0, NULL, 5, &n), LACUNA_STATUS_INVALID_ARGUMENT);

  lacuna_context *ctx = NULL;
  CHECK_STATUS(lacuna_context_create(NULL, NULL, &ctx), LACUNA_STATUS_INVALID_ARGUMENT);
  lacuna_context_params cp;
  lacuna_context_default_params(&cp, sizeof cp);
  cp.n_ctx = 100000;
  CHECK_STATUS(lacuna_context_create(model, &cp, &ctx), LACUNA_STATUS_INVALID_ARGUMENT);
  CHECK(ctx == NULL && strstr(lacuna_last_error(), "n_ctx") != NULL);
  ctx = context(model, 16, 2, 0);
  CHECK(strcmp(lacuna_context_last_error(ctx), "") == 0);
  const int32_t ok[3] = {1, 2, 3}, bad[3] = {1, 512, 3}, negative[1] = {-4};
  lacuna_seq_input in = {0, 1, ok, 3};
  CHECK_STATUS(lacuna_context_eval(ctx, &in, 1), LACUNA_STATUS_OK);
  /* A bad input anywhere in the batch: nothing advances. */
  lacuna_seq_input two[2] = {{1, 0, ok, 3}, {0, 0, bad, 3}};
  CHECK_STATUS(lacuna_context_eval(ctx, two, 2), LACUNA_STATUS_INVALID_TOKEN);
  CHECK(strstr(lacuna_context_last_error(ctx), "inputs[1].tokens[1] = 512") != NULL);
  CHECK(strcmp(lacuna_context_last_error(ctx), lacuna_last_error()) == 0);
  CHECK(lacuna_context_seq_length(ctx, 0) == 3 && lacuna_context_seq_length(ctx, 1) == 0);
  CHECK(lacuna_context_logits(ctx, 0, NULL) == NULL);
  two[1].tokens = negative;
  two[1].n_tokens = 1;
  CHECK_STATUS(lacuna_context_eval(ctx, two, 2), LACUNA_STATUS_INVALID_TOKEN);
  two[1] = (lacuna_seq_input){1, 0, ok, 1};
  CHECK_STATUS(lacuna_context_eval(ctx, two, 2), LACUNA_STATUS_INVALID_ARGUMENT); /* sequence 1 twice */
  two[1] = (lacuna_seq_input){2, 0, ok, 1};
  CHECK_STATUS(lacuna_context_eval(ctx, two, 2), LACUNA_STATUS_INVALID_ARGUMENT); /* no sequence 2 */
  two[1] = (lacuna_seq_input){0, 0, ok, 0};
  CHECK_STATUS(lacuna_context_eval(ctx, two, 2), LACUNA_STATUS_INVALID_ARGUMENT); /* no tokens */
  CHECK_STATUS(lacuna_context_eval(ctx, NULL, 1), LACUNA_STATUS_INVALID_ARGUMENT);
  CHECK_STATUS(lacuna_context_eval(NULL, &in, 1), LACUNA_STATUS_INVALID_ARGUMENT);
  int32_t fourteen[14] = {0};
  in.tokens = fourteen;
  in.n_tokens = 14;
  CHECK_STATUS(lacuna_context_eval(ctx, &in, 1), LACUNA_STATUS_CONTEXT_FULL);
  CHECK(lacuna_context_seq_length(ctx, 0) == 3);
  CHECK(lacuna_context_seq_length(ctx, 5) == -1 && lacuna_context_seq_length(NULL, 0) == -1);
  CHECK_STATUS(lacuna_context_seq_truncate(ctx, 0, 4), LACUNA_STATUS_INVALID_ARGUMENT);
  CHECK_STATUS(lacuna_context_seq_truncate(ctx, 0, -1), LACUNA_STATUS_INVALID_ARGUMENT);
  CHECK_STATUS(lacuna_context_seq_truncate(ctx, 9, 0), LACUNA_STATUS_INVALID_ARGUMENT);

  lacuna_generate_params gp;
  lacuna_generate_default_params(&gp, sizeof gp);
  lacuna_generate_result r;
  CHECK_STATUS(lacuna_context_generate(ctx, 1, bad, 3, &gp, &r, sizeof r), LACUNA_STATUS_INVALID_TOKEN);
  CHECK_STATUS(lacuna_context_generate(ctx, 1, ok, 3, &gp, &r, 8), LACUNA_STATUS_INVALID_ARGUMENT);
  CHECK_STATUS(lacuna_context_generate(ctx, 1, NULL, 0, &gp, &r, sizeof r), LACUNA_STATUS_INVALID_ARGUMENT); /* nothing to continue */
  gp.top_p = 2.0f;
  CHECK_STATUS(lacuna_context_generate(ctx, 1, ok, 3, &gp, &r, sizeof r), LACUNA_STATUS_INVALID_ARGUMENT);
  CHECK(strstr(lacuna_last_error(), "top_p") != NULL);
  lacuna_generate_default_params(&gp, sizeof gp);
  gp.presence_penalty = 2.5f;
  CHECK_STATUS(lacuna_context_generate(ctx, 1, ok, 3, &gp, &r, sizeof r), LACUNA_STATUS_INVALID_ARGUMENT);
  CHECK(strstr(lacuna_last_error(), "presence_penalty") != NULL);
  /* A 0.1.0 caller's struct ends before the penalties: they keep their defaults. */
  gp.struct_size = 80;
  CHECK_STATUS(lacuna_context_generate(ctx, 1, ok, 3, &gp, &r, sizeof r), LACUNA_STATUS_OK);
  CHECK_STATUS(lacuna_context_seq_truncate(ctx, 1, 0), LACUNA_STATUS_OK);
  /* Logit biases: both arrays given, tokens in the vocabulary, biases in [-100, 100]. */
  lacuna_generate_default_params(&gp, sizeof gp);
  gp.n_logit_bias = 1;
  CHECK_STATUS(lacuna_context_generate(ctx, 1, ok, 3, &gp, &r, sizeof r), LACUNA_STATUS_INVALID_ARGUMENT);
  CHECK(strstr(lacuna_last_error(), "n_logit_bias") != NULL);
  const int32_t outside[1] = {512}, inside[1] = {5};
  const float one[1] = {1.0f}, too_large[1] = {101.0f};
  gp.logit_bias_tokens = outside;
  gp.logit_biases = one;
  CHECK_STATUS(lacuna_context_generate(ctx, 1, ok, 3, &gp, &r, sizeof r), LACUNA_STATUS_INVALID_ARGUMENT);
  CHECK(strstr(lacuna_last_error(), "outside the vocabulary") != NULL);
  gp.logit_bias_tokens = inside;
  gp.logit_biases = too_large;
  CHECK_STATUS(lacuna_context_generate(ctx, 1, ok, 3, &gp, &r, sizeof r), LACUNA_STATUS_INVALID_ARGUMENT);
  CHECK(strstr(lacuna_last_error(), "[-100, 100]") != NULL);
  CHECK(lacuna_context_seq_length(ctx, 1) == 0);
  /* A 0.1.1 caller's struct ends before them: they keep their default, none. */
  gp.struct_size = 88;
  CHECK_STATUS(lacuna_context_generate(ctx, 1, ok, 3, &gp, &r, sizeof r), LACUNA_STATUS_OK);
  CHECK_STATUS(lacuna_context_seq_truncate(ctx, 1, 0), LACUNA_STATUS_OK);
  lacuna_generate_default_params(&gp, sizeof gp);
  gp.n_stop = 2;
  CHECK_STATUS(lacuna_context_generate(ctx, 1, ok, 3, &gp, &r, sizeof r), LACUNA_STATUS_INVALID_ARGUMENT);
  CHECK(lacuna_context_seq_length(ctx, 1) == 0);
  gp.n_stop = 0;
  lacuna_context_free(ctx);

  /* A model without a tokenizer works through token ids only. */
  lacuna_model *notok = load("model-notok.lacuna");
  CHECK_STATUS(lacuna_model_get_info(notok, &info, sizeof info), LACUNA_STATUS_OK);
  CHECK(info.has_tokenizer == 0);
  CHECK_STATUS(lacuna_model_tokenize(notok, "abc", 3, 0, NULL, 0, &n), LACUNA_STATUS_UNSUPPORTED);
  CHECK_STATUS(lacuna_model_detokenize(notok, ok, 3, NULL, 0, &n), LACUNA_STATUS_UNSUPPORTED);
  lacuna_context *c2 = context(notok, 32, 1, 0);
  gp.max_tokens = 4;
  CHECK_STATUS(lacuna_context_generate(c2, 0, ok, 3, &gp, &r, sizeof r), LACUNA_STATUS_OK);
  CHECK(r.n_tokens == 4 && r.text_len == 0 && strcmp(r.text, "") == 0);
  /* Freeing the model first is allowed: the context keeps its weights. */
  lacuna_model_free(notok);
  CHECK_STATUS(lacuna_context_generate(c2, 0, ok, 3, &gp, &r, sizeof r), LACUNA_STATUS_OK);
  lacuna_context_free(c2);
  lacuna_model_free(NULL);
  lacuna_context_free(NULL);
  lacuna_model_free(model);
}

/* The sequence bookkeeping around the token generation leaves unevaluated:
 * evaluating after a generate, filling n_ctx exactly, truncating, chunking. */
static void test_sequences(void) {
  lacuna_model *model = load("model.lacuna");
  const size_t vocab = 512;
  const int32_t prompt[5] = {1, 124, 306, 281, 69};
  lacuna_generate_params gp;
  lacuna_generate_default_params(&gp, sizeof gp);
  gp.temperature = 0;
  gp.stop_at_eos = 0;
  gp.max_tokens = 6;
  lacuna_generate_result r;

  /* n_ctx 12: prompt 5 + 6 generated = 11; one more token fits exactly. */
  lacuna_context *ctx = context(model, 12, 1, 0);
  CHECK_STATUS(lacuna_context_generate(ctx, 0, prompt, 5, &gp, &r, sizeof r), LACUNA_STATUS_OK);
  CHECK(r.n_tokens == 6 && lacuna_context_seq_length(ctx, 0) == 11);
  int32_t all[12];
  memcpy(all, prompt, sizeof prompt);
  memcpy(all + 5, r.tokens, 6 * sizeof *all);
  all[11] = 42;
  lacuna_seq_input one = {0, 1, &all[11], 1};
  CHECK_STATUS(lacuna_context_eval(ctx, &one, 1), LACUNA_STATUS_OK);
  size_t rows = 0;
  const float *after_generate = lacuna_context_logits(ctx, 0, &rows);
  CHECK(rows == 1 && lacuna_context_seq_length(ctx, 0) == 12);
  float *kept = malloc(vocab * sizeof(float));
  memcpy(kept, after_generate, vocab * sizeof(float));
  CHECK_STATUS(lacuna_context_eval(ctx, &one, 1), LACUNA_STATUS_CONTEXT_FULL);
  /* The same twelve tokens evaluated from scratch give the same last row. */
  lacuna_context *fresh = context(model, 12, 1, 0);
  lacuna_seq_input twelve = {0, 1, all, 12};
  CHECK_STATUS(lacuna_context_eval(fresh, &twelve, 1), LACUNA_STATUS_OK);
  const float *scratch = lacuna_context_logits(fresh, 0, &rows);
  int mismatches;
  CHECK(rows == 12 && relative_error(kept, scratch + 11 * vocab, vocab, vocab, &mismatches) <= 1e-5 && mismatches == 0);

  /* all_logits after a generate: one row per token given, the pending token's row left out. */
  CHECK_STATUS(lacuna_context_seq_truncate(ctx, 0, 11), LACUNA_STATUS_OK);
  CHECK_STATUS(lacuna_context_seq_truncate(ctx, 0, 5), LACUNA_STATUS_OK);
  CHECK_STATUS(lacuna_context_generate(ctx, 0, NULL, 0, &gp, &r, sizeof r), LACUNA_STATUS_OK);
  CHECK(r.n_tokens == 6 && memcmp(r.tokens, all + 5, 6 * sizeof *all) == 0 && r.n_prompt_tokens == 1);
  lacuna_seq_input last = {0, 1, &all[11], 1};
  CHECK_STATUS(lacuna_context_eval(ctx, &last, 1), LACUNA_STATUS_OK);
  const float *row = lacuna_context_logits(ctx, 0, &rows);
  CHECK(rows == 1 && relative_error(row, scratch + 11 * vocab, vocab, vocab, &mismatches) <= 1e-5 && mismatches == 0);

  /* Truncating away only the pending token, then continuing. */
  CHECK_STATUS(lacuna_context_seq_truncate(ctx, 0, 5), LACUNA_STATUS_OK);
  gp.max_tokens = 3;
  CHECK_STATUS(lacuna_context_generate(ctx, 0, NULL, 0, &gp, &r, sizeof r), LACUNA_STATUS_OK);
  CHECK(lacuna_context_seq_length(ctx, 0) == 8);
  CHECK_STATUS(lacuna_context_seq_truncate(ctx, 0, 7), LACUNA_STATUS_OK);
  CHECK_STATUS(lacuna_context_seq_truncate(ctx, 0, 7), LACUNA_STATUS_OK);
  CHECK_STATUS(lacuna_context_generate(ctx, 0, NULL, 0, &gp, &r, sizeof r), LACUNA_STATUS_OK);
  CHECK(r.n_tokens == 3 && memcmp(r.tokens, all + 7, 3 * sizeof *all) == 0);

  /* A prompt that fills n_ctx leaves no place for a generated token. */
  lacuna_context *tight = context(model, 5, 1, 0);
  CHECK_STATUS(lacuna_context_generate(tight, 0, prompt, 5, &gp, &r, sizeof r), LACUNA_STATUS_CONTEXT_FULL);
  CHECK(lacuna_context_seq_length(tight, 0) == 0);
  gp.max_tokens = 0;
  CHECK_STATUS(lacuna_context_generate(tight, 0, prompt, 5, &gp, &r, sizeof r), LACUNA_STATUS_OK);
  CHECK(r.n_tokens == 0 && r.finish_reason == LACUNA_FINISH_REASON_LENGTH && lacuna_context_seq_length(tight, 0) == 5);
  gp.max_tokens = 6;
  CHECK_STATUS(lacuna_context_generate(tight, 0, NULL, 0, &gp, &r, sizeof r), LACUNA_STATUS_CONTEXT_FULL);
  CHECK(lacuna_context_seq_length(tight, 0) == 5);

  /* A failed continuation (a bad parameter) leaves the sequence as it was. */
  gp.top_k = -1;
  CHECK_STATUS(lacuna_context_generate(ctx, 0, NULL, 0, &gp, &r, sizeof r), LACUNA_STATUS_INVALID_ARGUMENT);
  gp.top_k = 40;
  CHECK(lacuna_context_seq_length(ctx, 0) == 10);
  CHECK_STATUS(lacuna_context_seq_truncate(ctx, 0, 5), LACUNA_STATUS_OK);
  CHECK_STATUS(lacuna_context_generate(ctx, 0, NULL, 0, &gp, &r, sizeof r), LACUNA_STATUS_OK);
  CHECK(r.n_tokens == 6 && memcmp(r.tokens, all + 5, 6 * sizeof *all) == 0);

  /* Inputs longer than n_batch go through in chunks, all sequences together. */
  int32_t ids[256];
  golden_tokens(ids, 256);
  lacuna_context_params cp;
  lacuna_context_default_params(&cp, sizeof cp);
  cp.n_ctx = 64;
  cp.n_seq_max = 2;
  cp.n_batch = 7;
  lacuna_context *chunked = NULL;
  CHECK_STATUS(lacuna_context_create(model, &cp, &chunked), LACUNA_STATUS_OK);
  lacuna_context *whole = context(model, 64, 2, 0);
  lacuna_seq_input pair[2] = {{0, 1, ids, 30}, {1, 0, ids + 3, 17}};
  CHECK_STATUS(lacuna_context_eval(chunked, pair, 2), LACUNA_STATUS_OK);
  CHECK_STATUS(lacuna_context_eval(whole, pair, 2), LACUNA_STATUS_OK);
  for (size_t i = 0; i < 2; ++i) {
    size_t a_rows, b_rows;
    const float *a = lacuna_context_logits(chunked, i, &a_rows), *b = lacuna_context_logits(whole, i, &b_rows);
    CHECK(a_rows == b_rows && relative_error(a, b, a_rows * vocab, vocab, &mismatches) <= 1e-4 && mismatches == 0);
  }
  lacuna_context_free(chunked);
  lacuna_context_free(whole);
  free(kept);
  lacuna_context_free(tight);
  lacuna_context_free(fresh);
  lacuna_context_free(ctx);
  lacuna_model_free(model);
}

/* Calling back into the context from its own callback is refused. */
static lacuna_context *g_reentered;
static lacuna_status g_reentry_status;
static int32_t reenter(void *user_data, int32_t token, const char *text, size_t text_len) {
  (void)user_data, (void)token, (void)text, (void)text_len;
  g_reentry_status = lacuna_context_reset(g_reentered);
  lacuna_context_free(g_reentered); /* refused too, or the caller would run on freed memory */
  return 0;
}

static void test_misuse(void) {
  lacuna_model *model = load("model.lacuna");
  lacuna_context *ctx = context(model, 32, 1, 0);
  lacuna_generate_params gp;
  lacuna_generate_default_params(&gp, sizeof gp);
  gp.on_token = reenter;
  g_reentered = ctx;
  const int32_t prompt[2] = {1, 5};
  CHECK_STATUS(lacuna_context_generate(ctx, 0, prompt, 2, &gp, NULL, 0), LACUNA_STATUS_OK);
  CHECK(g_reentry_status == LACUNA_STATUS_MISUSE);
  CHECK(strstr(lacuna_last_error(), "lacuna_context_free") != NULL);
  CHECK(lacuna_context_seq_length(ctx, 0) == 3);
  lacuna_context_free(ctx);
  lacuna_model_free(model);
}

/* One model, one context per thread, all generating at once: each gets the
 * tokens it gets alone. */
enum { kThreads = 4, kTokens = 16 };
struct worker {
  const lacuna_model *model;
  int32_t n_threads;
  int32_t prompt[4];
  size_t n_prompt;
  int32_t tokens[kTokens];
  int ok;
};

static void *work(void *arg) {
  struct worker *w = arg;
  lacuna_context_params cp;
  lacuna_context_default_params(&cp, sizeof cp);
  cp.n_ctx = 64;
  cp.n_threads = w->n_threads;
  lacuna_context *ctx = NULL;
  w->ok = lacuna_context_create(w->model, &cp, &ctx) == LACUNA_STATUS_OK;
  lacuna_generate_params gp;
  lacuna_generate_default_params(&gp, sizeof gp);
  gp.temperature = 0;
  gp.max_tokens = kTokens;
  gp.stop_at_eos = 0;
  for (int round = 0; round < 3 && w->ok; ++round) {
    lacuna_generate_result r;
    w->ok = lacuna_context_reset(ctx) == LACUNA_STATUS_OK &&
            lacuna_context_generate(ctx, 0, w->prompt, w->n_prompt, &gp, &r, sizeof r) == LACUNA_STATUS_OK && r.n_tokens == kTokens &&
            (round == 0 || memcmp(w->tokens, r.tokens, sizeof w->tokens) == 0);
    if (w->ok) memcpy(w->tokens, r.tokens, sizeof w->tokens);
  }
  lacuna_context_free(ctx);
  return NULL;
}

static void test_threads(void) {
  /* Both dense (oneDNN, f32 model) and sparse weights are shared. The
   * concurrent phase runs on a model loaded afresh, so that the lazily
   * filled caches (the planner's choices, oneDNN's primitives) are filled
   * concurrently too. Teams of one and two threads; under ThreadSanitizer
   * only one (LACUNA_TEST_ONE_THREAD), since libgomp is not instrumented. */
  const int one_thread = getenv("LACUNA_TEST_ONE_THREAD") != NULL;
  const char *models[2] = {"model.lacuna", "model-f32.lacuna"};
  for (int m = 0; m < 2; ++m) {
    lacuna_model *warm = load(models[m]), *cold = load(models[m]);
    struct worker alone[kThreads], together[kThreads];
    for (int i = 0; i < kThreads; ++i) {
      alone[i] = (struct worker){.model = warm, .n_threads = one_thread ? 1 : 1 + i % 2,
                                 .prompt = {1, (int32_t)(40 + 7 * i), (int32_t)(300 - 11 * i), (int32_t)(20 + i)}, .n_prompt = 2 + (size_t)i % 3};
      together[i] = alone[i];
      together[i].model = cold;
      work(&alone[i]);
      CHECK(alone[i].ok);
    }
    pthread_t threads[kThreads];
    for (int i = 0; i < kThreads; ++i) CHECK(pthread_create(&threads[i], NULL, work, &together[i]) == 0);
    for (int i = 0; i < kThreads; ++i) pthread_join(threads[i], NULL);
    for (int i = 0; i < kThreads; ++i) CHECK(together[i].ok && memcmp(alone[i].tokens, together[i].tokens, sizeof alone[i].tokens) == 0);
    lacuna_model_free(warm);
    lacuna_model_free(cold);
  }
}

/* Loading and freeing again and again must not leak (LeakSanitizer in the asan preset). */
static void test_load_free(void) {
  for (int i = 0; i < 10; ++i) {
    lacuna_model *model = load(i % 2 ? "model.lacuna" : "model-notok.lacuna");
    lacuna_context *ctx = context(model, 32, 2, 0);
    const int32_t prompt[2] = {1, 9};
    lacuna_generate_params gp;
    lacuna_generate_default_params(&gp, sizeof gp);
    gp.max_tokens = 4;
    CHECK_STATUS(lacuna_context_generate(ctx, 1, prompt, 2, &gp, NULL, 0), LACUNA_STATUS_OK);
    lacuna_model_free(model);
    lacuna_context_free(ctx);
  }
}

int main(int argc, char **argv) {
  static const struct {
    const char *name;
    void (*run)(void);
  } cases[] = {{"version", test_version}, {"info", test_info},         {"tokenize", test_tokenize}, {"chat-template", test_chat_template}, {"logits", test_logits},
               {"batch", test_batch},     {"generate", test_generate}, {"errors", test_errors},     {"misuse", test_misuse}, {"sequences", test_sequences},
               {"threads", test_threads}, {"load_free", test_load_free}, {"numa", test_numa}};
  if (argc != 4) {
    fprintf(stderr, "usage: %s CASE FIXTURE_DIR GOLDEN_DIR\n", argv[0]);
    return 2;
  }
  g_fixtures = argv[2];
  g_golden = argv[3];
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; ++i)
    if (strcmp(argv[1], cases[i].name) == 0) {
      cases[i].run();
      if (g_failures) fprintf(stderr, "%s: %d checks failed\n", argv[1], g_failures);
      return g_failures ? 1 : 0;
    }
  fprintf(stderr, "unknown case %s\n", argv[1]);
  return 2;
}
