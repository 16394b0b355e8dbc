/* Loads a .lacuna model and continues a prompt, printing the text as it is
 * generated: the C API's whole life cycle in one program.
 *
 *   lacuna-generate MODEL.lacuna ["prompt"] [max_tokens]
 */
#include <lacuna.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int32_t print_piece(void *user_data, int32_t token, const char *text, size_t text_len) {
  int *count = user_data;
  (void)token;
  fwrite(text, 1, text_len, stdout);
  fflush(stdout);
  ++*count;
  return 1; /* go on */
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s MODEL.lacuna [\"prompt\"] [max_tokens]\n", argv[0]);
    return 2;
  }
  const char *prompt_text = argc > 2 ? argv[2] : "The old train left the station";
  const int32_t max_tokens = argc > 3 ? (int32_t)atoi(argv[3]) : 32;
  if (strcmp(lacuna_version(), LACUNA_VERSION_STRING) != 0)
    fprintf(stderr, "warning: built against lacuna %s, running with %s\n", LACUNA_VERSION_STRING, lacuna_version());

  lacuna_model_params mp;
  lacuna_model_default_params(&mp, sizeof mp);
  lacuna_model *model = NULL;
  if (lacuna_model_load(argv[1], &mp, &model) != LACUNA_STATUS_OK) {
    fprintf(stderr, "%s\n", lacuna_last_error());
    return 1;
  }
  lacuna_model_info info;
  lacuna_model_get_info(model, &info, sizeof info);
  fprintf(stderr, "%s: %lld layers, %lld experts (%lld per token), vocabulary %lld\n", info.architecture, (long long)info.n_layers,
          (long long)info.n_experts, (long long)info.n_experts_used, (long long)info.n_vocab);

  int status = 1;
  lacuna_context *ctx = NULL;
  int32_t *prompt = NULL;
  size_t n_prompt = 0;
  /* Ask for the size first, then tokenize into a buffer of that size. */
  lacuna_status s = lacuna_model_tokenize(model, prompt_text, strlen(prompt_text), 1, NULL, 0, &n_prompt);
  if (s != LACUNA_STATUS_BUFFER_TOO_SMALL && s != LACUNA_STATUS_OK) goto fail;
  prompt = malloc(n_prompt * sizeof *prompt);
  if (!prompt || lacuna_model_tokenize(model, prompt_text, strlen(prompt_text), 1, prompt, n_prompt, &n_prompt) != LACUNA_STATUS_OK) goto fail;

  lacuna_context_params cp;
  lacuna_context_default_params(&cp, sizeof cp);
  cp.n_ctx = 512;
  if (lacuna_context_create(model, &cp, &ctx) != LACUNA_STATUS_OK) goto fail;

  lacuna_generate_params gp;
  lacuna_generate_default_params(&gp, sizeof gp);
  gp.max_tokens = max_tokens;
  gp.temperature = 0; /* greedy */
  int pieces = 0;
  gp.on_token = print_piece;
  gp.user_data = &pieces;
  lacuna_generate_result result;
  fputs(prompt_text, stdout);
  if (lacuna_context_generate(ctx, 0, prompt, n_prompt, &gp, &result, sizeof result) != LACUNA_STATUS_OK) goto fail;
  printf("\n");
  fprintf(stderr, "%zu tokens generated (finish reason %d), %.1f tokens/s\n", result.n_tokens, (int)result.finish_reason,
          result.decode_seconds > 0 && result.n_tokens > 1 ? (double)(result.n_tokens - 1) / result.decode_seconds : 0.0);
  status = pieces == (int)result.n_tokens ? 0 : 1;
  goto done;

fail:
  fprintf(stderr, "%s\n", lacuna_last_error());
done:
  free(prompt);
  lacuna_context_free(ctx);
  lacuna_model_free(model);
  return status;
}
