// The model commands: `lacuna demo`, `synth`, `convert`, `run`, `logits`, `numa-plan` and `perplexity`.
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <map>
#include <fstream>
#include <sstream>

#include "engine/cli/commands.h"
#include "engine/cli/numa-options.h"
#include "engine/runtime/text-file.h"
#include "engine/model/convert.h"
#include "engine/model/model.h"
#include "engine/model/synth.h"
#include "engine/numa/placement.h"
#include "engine/numa/topology.h"
#include "engine/runtime/calibration.h"
#include "engine/runtime/perplexity.h"
#include "engine/runtime/progress-bar.h"
#include "engine/runtime/generate.h"
#include "sparse/error.h"

namespace lacuna::cli {
namespace {

std::vector<int32_t> parse_tokens(const std::string& text) {
  std::vector<int32_t> ids;
  std::istringstream in(text);
  std::string word;
  while (in >> word) {
    size_t used = 0;
    long long v = 0;
    try {
      v = std::stoll(word, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != word.size() || v < 0 || v > INT32_MAX) throw Error("--tokens: \"" + word + "\" is not a token id");
    ids.push_back(static_cast<int32_t>(v));
  }
  if (ids.empty()) throw Error("--tokens: no token ids given");
  return ids;
}

// --logit-bias ID=BIAS, as many times as there are tokens to bias.
std::vector<std::pair<int32_t, float>> parse_logit_biases(const std::vector<std::string>& given) {
  std::vector<std::pair<int32_t, float>> biases;
  for (const std::string& item : given) {
    const size_t eq = item.find('=');
    const std::string id = item.substr(0, eq), bias = eq == std::string::npos ? "" : item.substr(eq + 1);
    size_t id_used = 0, bias_used = 0;
    long long token = -1;
    float value = 0;
    try {
      token = std::stoll(id, &id_used);
      value = std::stof(bias, &bias_used);
    } catch (const std::exception&) {
      id_used = 0;
    }
    if (id.empty() || id_used != id.size() || bias.empty() || bias_used != bias.size() || token < 0 || token > INT32_MAX)
      throw Error("--logit-bias: \"" + item + "\" is not TOKEN_ID=BIAS");
    biases.emplace_back(static_cast<int32_t>(token), value);
  }
  return biases;
}

double peak_rss_mb() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_maxrss) / 1024.0;
}

void add_synth(CLI::App& app, int& exit_code) {
  auto* cmd = app.add_subcommand("synth", "Write a random-weight Hugging Face-style checkpoint (config.json, safetensors, tokenizer.model)");
  auto arch = std::make_shared<std::string>("mixtral");
  auto opts = std::make_shared<SynthOptions>();
  auto dir = std::make_shared<std::string>();
  auto layout = std::make_shared<std::string>("model");
  cmd->add_option("--arch", *arch, "grok-1 or mixtral")->check(CLI::IsMember({"grok-1", "mixtral"}))->capture_default_str();
  cmd->add_option("--preset", opts->preset, "tiny (tests), small (~0.1B parameters), mini (~2B), grok-1-layer (one layer at Grok-1's size)")
      ->check(CLI::IsMember({"tiny", "small", "mini", "grok-1-layer"}))
      ->capture_default_str();
  cmd->add_option("--sparsity", opts->sparsity, "Zero this fraction of each attention and expert row (a pruned checkpoint)")
      ->check(CLI::Range(0.0, 0.99))
      ->capture_default_str();
  cmd->add_option("--seed", opts->seed, "Random seed")->capture_default_str();
  cmd->add_flag("--f32", opts->f32, "Store f32 tensors (default bf16)");
  cmd->add_option("--grok-layout", *layout, "Grok-1 tensor names: model (model.layers.N.attn) or transformer (transformer.decoder_layer.N)")
      ->check(CLI::IsMember({"model", "transformer"}))
      ->capture_default_str();
  cmd->add_option("OUT_DIR", *dir, "Directory to write")->required();
  cmd->callback([=, &exit_code] {
    opts->arch = parse_arch(*arch);
    opts->grok_layout = *layout == "model" ? HfLayout::grok_model : HfLayout::grok_transformer;
    synthesize_checkpoint(*dir, *opts);
    const ModelConfig c = synth_config(opts->arch, opts->preset);
    std::printf("wrote %s: %s %s, %.3g B parameters, sparsity %.2f\n", dir->c_str(), arch_name(c.arch), opts->preset.c_str(),
                static_cast<double>(c.parameters()) / 1e9, opts->sparsity);
    exit_code = 0;
  });
}

// "0=0.3", "2-3=0.8": per-layer sparsities (a layer or an inclusive range of layers).
std::map<int64_t, double> parse_layer_sparsity(const std::vector<std::string>& items) {
  std::map<int64_t, double> out;
  for (const std::string& item : items) {
    auto fail = [&] { return Error("--layer-sparsity: \"" + item + "\" is not LAYER=SPARSITY or FIRST-LAST=SPARSITY, e.g. 0=0.3 or 2-5=0.8"); };
    // The whole of `text` as a number, else the error above.
    auto whole = [&](const std::string& text, auto parse) {
      size_t used = 0;
      try {
        const auto v = parse(text, &used);
        if (!text.empty() && used == text.size()) return v;
      } catch (const std::exception&) {
      }
      throw fail();
    };
    auto layer = [&](const std::string& t) { return whole(t, [](const std::string& x, size_t* used) { return std::stoll(x, used); }); };
    const size_t eq = item.find('=');
    if (eq == std::string::npos) throw fail();
    const std::string layers = item.substr(0, eq);
    const size_t dash = layers.find('-');
    const int64_t first = layer(layers.substr(0, dash));
    const int64_t last = dash == std::string::npos ? first : layer(layers.substr(dash + 1));
    const double sparsity = whole(item.substr(eq + 1), [](const std::string& x, size_t* used) { return std::stod(x, used); });
    if (first < 0 || last < first || last - first > (1 << 20)) throw fail();
    for (int64_t l = first; l <= last; ++l) out[l] = sparsity;
  }
  return out;
}

void add_convert(CLI::App& app, int& exit_code) {
  auto* cmd = app.add_subcommand("convert", "Convert a Hugging Face checkpoint (Mixtral, Grok-1) to a .lacuna model");
  auto in = std::make_shared<std::string>(), out = std::make_shared<std::string>();
  auto sparsity = std::make_shared<double>(0.0);
  auto prune = std::make_shared<std::string>();
  auto layer_sparsity = std::make_shared<std::vector<std::string>>();
  auto calib_path = std::make_shared<std::string>();
  auto calib = std::make_shared<CalibrationOptions>();
  auto dtype = std::make_shared<std::string>("bf16");
  auto output_dtype = std::make_shared<std::string>();
  auto format = std::make_shared<std::string>("auto");
  auto progress = std::make_shared<bool>(true);
  cmd->add_option("HF_DIR", *in, "Checkpoint directory: config.json, *.safetensors, optional tokenizer.model")->required();
  cmd->add_option("OUT", *out, "The .lacuna file to write")->required();
  cmd->add_option("--sparsity", *sparsity, "Prune each attention and expert row to this fraction of zeros (zeros already there count)")
      ->check(CLI::Range(0.0, 0.99));
  cmd->add_option("--layer-sparsity", *layer_sparsity, "Per-layer sparsity in place of --sparsity: LAYER=S or FIRST-LAST=S, e.g. 0=0.3,2-3=0.8")
      ->delimiter(',');
  cmd->add_option("--prune", *prune, "Pruning method: magnitude (the default when a sparsity is given) or wanda (needs --calib)")
      ->check(CLI::IsMember({"magnitude", "wanda"}));
  cmd->add_option("--calib", *calib_path, "Wanda: calibration text, run through the dense model to weigh each input channel");
  cmd->add_option("--calib-tokens", calib->tokens, "Wanda: calibration tokens (the text's first)")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 30))
      ->capture_default_str();
  cmd->add_option("--calib-ctx", calib->ctx, "Wanda: tokens per calibration window")->check(CLI::Range(int64_t{1}, int64_t{1} << 20))->capture_default_str();
  cmd->add_option("--dtype", *dtype, "Weight dtype: f32, bf16, int8 (per-row scale)")->check(CLI::IsMember({"f32", "bf16", "int8"}))->capture_default_str();
  cmd->add_option("--output-dtype", *output_dtype, "Dtype of the output projection alone (the embedding when tied): f32, bf16, int8; default --dtype")
      ->check(CLI::IsMember({"f32", "bf16", "int8"}));
  cmd->add_option("--format", *format, "auto (the planner, per tensor), dense, csr, csr8 (bf16 only), bitmap, bsr (16x1 blocks)")
      ->check(CLI::IsMember({"auto", "dense", "csr", "csr8", "bitmap", "bsr"}))
      ->capture_default_str();
  cmd->add_flag("!--no-progress", *progress, "No progress bar during calibration");
  cmd->callback([=, &exit_code] {
    ConvertOptions o;
    o.sparsity = *sparsity;
    o.layer_sparsity = parse_layer_sparsity(*layer_sparsity);
    const bool pruning = *sparsity > 0 || !o.layer_sparsity.empty();
    o.prune = !prune->empty() ? *parse_prune_method(*prune) : pruning ? PruneMethod::magnitude : PruneMethod::none;
    if (o.prune == PruneMethod::wanda) {
      if (calib_path->empty()) throw Error("--prune wanda needs calibration text: --calib TEXT_FILE");
      ProgressBar bar(*progress, calib->tokens, "calibration tokens");
      CalibrationOptions run = *calib;
      run.progress = [&bar](int64_t done, int64_t) { bar.update(done, "dense model"); };
      run.scratch_path = *out + ".calibration.tmp";
      Calibration c = calibrate_checkpoint(*in, read_text_file(*calib_path, "the calibration text"), run);
      std::printf("calibration: %lld tokens of %s through the dense model, %zu weights saw tokens\n", static_cast<long long>(c.tokens),
                  calib_path->c_str(), c.input_norms.size());
      o.input_norms = std::move(c.input_norms);
    } else if (!calib_path->empty()) {
      throw Error("--calib is for --prune wanda");
    }
    o.dtype = *parse_dtype(*dtype);
    if (!output_dtype->empty()) o.output_dtype = *parse_dtype(*output_dtype);
    if (*format != "auto") o.format = *parse_format(*format);
    o.log = [](const std::string& line) { std::printf("%s\n", line.c_str()); };
    const ConvertSummary s = convert_checkpoint(*in, *out, o);
    std::printf("wrote %s: %llu tensors, %.2f MB, %.2fx smaller than dense bf16 (%.2f MB)%s\n", out->c_str(),
                static_cast<unsigned long long>(s.tensors), static_cast<double>(s.bytes) / 1e6,
                static_cast<double>(s.dense_bf16_bytes) / static_cast<double>(s.bytes), static_cast<double>(s.dense_bf16_bytes) / 1e6,
                s.has_tokenizer ? "" : ", no tokenizer");
    if (!s.magnitude_fallbacks.empty())
      std::printf("%zu weights saw no calibration token and were pruned by magnitude (warnings above)\n", s.magnitude_fallbacks.size());
    exit_code = 0;
  });
}

void add_run(CLI::App& app, int& exit_code) {
  auto* cmd = app.add_subcommand("run", "Generate text (or token ids) with a .lacuna model");
  auto path = std::make_shared<std::string>(), prompt = std::make_shared<std::string>(), tokens = std::make_shared<std::string>();
  auto o = std::make_shared<GenerateOptions>();
  o->sampling.temperature = 0;
  cmd->add_option("MODEL", *path, "A .lacuna model")->required();
  auto* p = cmd->add_option("-p,--prompt", *prompt, "Prompt text (needs the model's tokenizer)");
  cmd->add_option("--tokens", *tokens, "Prompt as token ids, e.g. \"1 2 3\"")->excludes(p);
  cmd->add_option("-n,--max-tokens", o->max_tokens, "Tokens to generate")->check(CLI::Range(0, 1 << 20))->capture_default_str();
  cmd->add_option("--temp", o->sampling.temperature, "Temperature (0: greedy)")->check(CLI::Range(0.0, 100.0))->capture_default_str();
  cmd->add_option("--top-k", o->sampling.top_k, "Sample from the k most likely tokens (0: all)")->check(CLI::NonNegativeNumber)->capture_default_str();
  cmd->add_option("--top-p", o->sampling.top_p, "Nucleus sampling threshold")->check(CLI::Range(0.0, 1.0))->capture_default_str();
  cmd->add_option("--repeat-penalty", o->sampling.repetition_penalty, "Repetition penalty (1: none)")->check(CLI::PositiveNumber)->capture_default_str();
  cmd->add_option("--frequency-penalty", o->sampling.frequency_penalty, "Subtracted from a token's logit per time it was generated (OpenAI's)")
      ->check(CLI::Range(-2.0, 2.0))
      ->capture_default_str();
  cmd->add_option("--presence-penalty", o->sampling.presence_penalty, "Subtracted once from the logit of a token already generated (OpenAI's)")
      ->check(CLI::Range(-2.0, 2.0))
      ->capture_default_str();
  auto logit_biases = std::make_shared<std::vector<std::string>>();
  cmd->add_option("--logit-bias", *logit_biases, "TOKEN_ID=BIAS: add BIAS in [-100, 100] to that token's logit (repeatable; -100 all but bans it)");
  cmd->add_option("--seed", o->sampling.seed, "Sampling seed")->capture_default_str();
  cmd->add_option("--stop", o->stop, "Stop when the output contains this text (repeatable)");
  cmd->add_option("--prefill-chunk", o->prefill_chunk, "Prompt tokens per forward step")->check(CLI::Range(1, 1 << 16))->capture_default_str();
  auto numa = std::make_shared<NumaCliOptions>();
  add_numa_options(cmd, *numa);
  cmd->callback([=, &exit_code] {
    const auto model = Model::open(*path, {}, load_options(*numa));
    const Tokenizer* tok = model->tokenizer();
    GenerateRequest r;
    r.options = *o;
    r.options.sampling.logit_bias = parse_logit_biases(*logit_biases);
    if (!tokens->empty()) {
      r.prompt = parse_tokens(*tokens);
    } else {
      if (prompt->empty()) throw Error("give a prompt: -p TEXT or --tokens \"ID ...\"");
      if (!tok) throw Error(*path + " has no tokenizer: give the prompt as --tokens \"ID ...\"");
      r.prompt = tok->encode(*prompt, /*add_bos=*/true);
    }
    Forward forward(model, BatchPolicy::fastest, place_experts(model, *numa));
    GenerateStats stats;
    if (tok) std::printf("%s", tok->decode(r.prompt).c_str());
    const std::vector<GenerateResult> out = generate(forward, {r}, &stats, [&](size_t, int32_t token, std::string_view text) {
      if (tok)
        std::fwrite(text.data(), 1, text.size(), stdout);
      else
        std::printf("%d ", token);
      std::fflush(stdout);
      return true;
    });
    std::printf("\n");
    std::fprintf(stderr, "prefill: %lld tokens, %.1f tokens/s; decode: %lld tokens, %.2f tokens/s; finish: %s; peak memory %.0f MB\n",
                 static_cast<long long>(stats.prompt_tokens), static_cast<double>(stats.prompt_tokens) / stats.prefill_seconds,
                 static_cast<long long>(stats.generated_tokens),
                 stats.generated_tokens > 1 ? static_cast<double>(stats.generated_tokens - 1) / stats.decode_seconds : 0.0,
                 out[0].finish_reason.c_str(), peak_rss_mb());
    print_numa_counters(forward);
    exit_code = 0;
  });
}

void add_logits(CLI::App& app, int& exit_code) {
  auto* cmd = app.add_subcommand("logits", "Write the logits of every position as raw little-endian f32 [positions, vocab]");
  auto path = std::make_shared<std::string>(), tokens = std::make_shared<std::string>(), out = std::make_shared<std::string>();
  auto chunk = std::make_shared<int>(512);
  cmd->add_option("MODEL", *path, "A .lacuna model")->required();
  cmd->add_option("--tokens", *tokens, "Token ids, e.g. \"1 2 3\"")->required();
  cmd->add_option("--out", *out, "Output file")->required();
  cmd->add_option("--chunk", *chunk, "Tokens per forward step")->check(CLI::Range(1, 1 << 16))->capture_default_str();
  auto numa = std::make_shared<NumaCliOptions>();
  add_numa_options(cmd, *numa);
  cmd->callback([=, &exit_code] {
    const auto model = Model::open(*path, {}, load_options(*numa));
    const std::vector<int32_t> ids = parse_tokens(*tokens);
    const int64_t vocab = model->config().vocab;
    if (static_cast<int64_t>(ids.size()) > model->config().max_context)
      throw Error(std::to_string(ids.size()) + " tokens exceed the model's context of " + std::to_string(model->config().max_context));
    Forward forward(model, BatchPolicy::fastest, place_experts(model, *numa));
    KvCache cache(model->config(), static_cast<int64_t>(ids.size()));
    std::vector<float> logits(ids.size() * vocab);
    for (size_t at = 0; at < ids.size(); at += static_cast<size_t>(*chunk)) {
      const size_t n = std::min(ids.size() - at, static_cast<size_t>(*chunk));
      const SequenceStep step{&cache, std::span(ids).subspan(at, n), &logits[at * vocab], true};
      forward.step({&step, 1});
    }
    std::ofstream f(*out, std::ios::binary);
    f.write(reinterpret_cast<const char*>(logits.data()), static_cast<std::streamsize>(logits.size() * sizeof(float)));
    if (!f) throw Error(*out + ": cannot write");
    std::printf("wrote %s: %zu positions x %lld logits\n", out->c_str(), ids.size(), static_cast<long long>(vocab));
    exit_code = 0;
  });
}

// `lacuna perplexity`: held-out quality of a model, for choosing a sparsity.
void add_perplexity(CLI::App& app, int& exit_code) {
  auto* cmd = app.add_subcommand("perplexity", "Token-level perplexity of a text file, with a sliding window");
  auto path = std::make_shared<std::string>(), text_path = std::make_shared<std::string>();
  auto ctx = std::make_shared<int64_t>(256), stride = std::make_shared<int64_t>(128);
  auto progress = std::make_shared<bool>(true);
  cmd->add_option("MODEL", *path, "A .lacuna model (with its tokenizer)")->required();
  cmd->add_option("TEXT_FILE", *text_path, "UTF-8 text; tokenized with a BOS first")->required();
  cmd->add_option("--ctx", *ctx, "Tokens per window")->check(CLI::Range(int64_t{2}, int64_t{1} << 20))->capture_default_str();
  cmd->add_option("--stride", *stride, "Tokens between window starts (each token is scored once)")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 20))
      ->capture_default_str();
  cmd->add_flag("!--no-progress", *progress, "No progress bar");
  cmd->callback([=, &exit_code] {
    const auto model = Model::open(*path);
    if (!model->tokenizer()) throw Error(*path + " has no tokenizer: perplexity needs one to read text");
    const std::vector<int32_t> ids = model->tokenizer()->encode(read_text_file(*text_path, "the text"), /*add_bos=*/true);
    const int64_t window = std::min<int64_t>(*ctx, model->config().max_context);
    Forward forward(model);
    ProgressBar bar(*progress, static_cast<int64_t>(ids.size()) - 1, "tokens");
    const auto start = std::chrono::steady_clock::now();
    auto seconds = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(); };
    const PerplexityResult r = perplexity(forward, ids, window, std::min(*stride, window), [&](int64_t done, int64_t) {
      char detail[48];
      std::snprintf(detail, sizeof detail, "%.0f tokens/s", static_cast<double>(done) / std::max(seconds(), 1e-9));
      bar.update(done, detail);
    });
    std::printf("perplexity %.4f over %lld tokens of %s (ctx %lld, stride %lld, %lld windows, %.1f s)\n", r.perplexity,
                static_cast<long long>(r.tokens), text_path->c_str(), static_cast<long long>(window), static_cast<long long>(std::min(*stride, window)),
                static_cast<long long>(r.windows), seconds());
    exit_code = 0;
  });
}

// `lacuna numa-plan`: where each expert would live on this machine's NUMA
// nodes (or LACUNA_NUMA_SIMULATE's), from router statistics gathered by
// running the model over calibration tokens.
void add_numa_plan(CLI::App& app, int& exit_code) {
  auto* cmd = app.add_subcommand("numa-plan", "Plan NUMA placement of the experts from router statistics on calibration text");
  auto path = std::make_shared<std::string>(), prompt = std::make_shared<std::string>(), tokens = std::make_shared<std::string>();
  auto numa = std::make_shared<NumaCliOptions>();
  numa->policy = "auto";
  cmd->add_option("MODEL", *path, "A .lacuna model")->required();
  auto* p = cmd->add_option("-p,--prompt", *prompt, "Calibration text (needs the model's tokenizer)");
  cmd->add_option("--tokens", *tokens, "Calibration token ids, e.g. \"1 2 3\"")->excludes(p);
  add_numa_options(cmd, *numa, /*calibration_file=*/false);
  cmd->add_option("--batch", numa->batch, "Decode batch the plan is for (auto)")->check(CLI::Range(1, 65536))->capture_default_str();
  cmd->callback([=, &exit_code] {
    const auto model = Model::open(*path);
    const ModelConfig& c = model->config();
    std::vector<int32_t> ids;
    if (!tokens->empty()) {
      ids = parse_tokens(*tokens);
    } else {
      if (prompt->empty()) throw Error("give calibration text with -p or token ids with --tokens");
      if (!model->tokenizer()) throw Error(*path + " has no tokenizer: give calibration token ids with --tokens");
      ids = model->tokenizer()->encode(*prompt, true);
    }
    const Topology topology = topology_from_env();
    const auto routed = calibrate_routing(model, ids);
    const Placement plan = plan_model_placement(*model, static_cast<int>(topology.nodes.size()), *parse_numa_policy(numa->policy),
                                                static_cast<uint64_t>(numa->replicate_budget_mb * 1e6), numa->batch, routed);
    std::printf("topology: %s\n", topology.describe().c_str());
    std::printf("calibration: %zu tokens, top-%lld of %lld experts\n", ids.size(), static_cast<long long>(c.top_k), static_cast<long long>(c.experts));
    for (size_t l = 0; l < plan.layers.size(); ++l) {
      const LayerPlacement& layer = plan.layers[l];
      std::printf("layer %zu: %s (%s)\n", l, numa_policy_name(layer.policy), layer.why.c_str());
      if (layer.policy == NumaPolicy::experts) {
        const auto share = share_tokens(layer, routed[l], plan.nodes);
        const auto per_node = node_tokens(layer, share, plan.nodes);
        for (int n = 0; n < plan.nodes; ++n) {
          std::string held;
          for (size_t e = 0; e < layer.experts.size(); ++e)
            for (size_t k = 0; k < layer.experts[e].nodes.size(); ++k)
              if (layer.experts[e].nodes[k] == n) held.append(" ").append(std::to_string(e)).append(k ? "*" : "");
          std::printf("  node %d: experts%s; %llu of the calibration tokens\n", n, held.c_str(), static_cast<unsigned long long>(per_node[static_cast<size_t>(n)]));
        }
        std::printf("  imbalance on the calibration routing: %.3f (max / mean node tokens; * marks a replica)\n", load_imbalance(per_node));
      } else if (layer.policy == NumaPolicy::slices) {
        std::string rows;
        for (size_t k = 0; k < layer.experts[0].row_ends.size(); ++k)
          rows.append(" node ").append(std::to_string(k)).append(" rows ").append(std::to_string(k ? layer.experts[0].row_ends[k - 1] : 0))
              .append("..").append(std::to_string(layer.experts[0].row_ends[k]));
        std::printf("  every expert's %lld hidden rows split:%s\n", static_cast<long long>(c.ffn), rows.c_str());
      }
    }
    std::string bytes;
    for (int n = 0; n < plan.nodes; ++n)
      bytes.append(" node ").append(std::to_string(n)).append(" ").append(std::to_string(plan.node_bytes[static_cast<size_t>(n)] / 1000000)).append(" MB;");
    std::printf("expert weights per node:%s replicas %.1f MB of a %.1f MB budget\n", bytes.c_str(), static_cast<double>(plan.replica_bytes) / 1e6, numa->replicate_budget_mb);
    exit_code = 0;
  });
}

// The README's main job: synthesise a small model, convert it pruned, generate.
void add_demo(CLI::App& app, int& exit_code) {
  auto* cmd = app.add_subcommand("demo", "Synthesise a small MoE model, convert it at 70% sparsity, and generate text with it");
  auto arch = std::make_shared<std::string>("grok-1");
  auto preset = std::make_shared<std::string>("small");
  auto sparsity = std::make_shared<double>(0.7);
  auto prompt = std::make_shared<std::string>("The old train left the station");
  auto tokens = std::make_shared<int>(32);
  auto dir = std::make_shared<std::string>();
  cmd->add_option("--arch", *arch, "grok-1 or mixtral")->check(CLI::IsMember({"grok-1", "mixtral"}))->capture_default_str();
  cmd->add_option("--preset", *preset, "tiny, small, mini")->check(CLI::IsMember({"tiny", "small", "mini"}))->capture_default_str();
  cmd->add_option("--sparsity", *sparsity, "Pruning at conversion")->check(CLI::Range(0.0, 0.99))->capture_default_str();
  cmd->add_option("-p,--prompt", *prompt, "Prompt")->capture_default_str();
  cmd->add_option("-n,--max-tokens", *tokens, "Tokens to generate")->check(CLI::Range(1, 4096))->capture_default_str();
  cmd->add_option("--dir", *dir, "Where to write the checkpoint and model (default: a temporary directory, removed after)");
  cmd->callback([=, &exit_code] {
    namespace fs = std::filesystem;
    const bool temporary = dir->empty();
    const fs::path work = temporary ? fs::temp_directory_path() / ("lacuna-demo-" + std::to_string(getpid())) : fs::path(*dir);
    struct Cleanup {
      fs::path path;
      ~Cleanup() {
        if (!path.empty()) fs::remove_all(path);
      }
    } cleanup{temporary ? work : fs::path()};
    const fs::path hf = work / "checkpoint", model_path = work / "model.lacuna";
    std::printf("1. lacuna synth --arch %s --preset %s %s\n", arch->c_str(), preset->c_str(), hf.c_str());
    synthesize_checkpoint(hf.string(), SynthOptions{.arch = parse_arch(*arch), .preset = *preset});
    std::printf("   %.1f M parameters, random weights, a SentencePiece tokenizer\n\n",
                static_cast<double>(synth_config(parse_arch(*arch), *preset).parameters()) / 1e6);
    std::printf("2. lacuna convert %s %s --sparsity %.2f (format: the planner's choice per tensor)\n", hf.c_str(), model_path.c_str(), *sparsity);
    ConvertOptions o;
    o.sparsity = *sparsity;
    o.prune = *sparsity > 0 ? PruneMethod::magnitude : PruneMethod::none;
    std::map<std::string, int> formats;
    o.log = [&](const std::string& line) {
      std::istringstream in(line);
      std::string name, shape, format;
      in >> name >> shape >> format;
      ++formats[format];
    };
    const ConvertSummary s = convert_checkpoint(hf.string(), model_path.string(), o);
    std::string chosen;
    for (const auto& [f, count] : formats) chosen += (chosen.empty() ? "" : ", ") + std::to_string(count) + " " + f;
    std::printf("   %llu tensors (%s), %.1f MB: %.2fx smaller than dense bf16\n\n", static_cast<unsigned long long>(s.tensors), chosen.c_str(),
                static_cast<double>(s.bytes) / 1e6, static_cast<double>(s.dense_bf16_bytes) / static_cast<double>(s.bytes));
    std::printf("3. lacuna run %s -p \"%s\" -n %d   (greedy; the weights are random, so the text is too)\n", model_path.c_str(), prompt->c_str(),
                *tokens);
    const auto model = Model::open(model_path.string());
    GenerateRequest r;
    r.prompt = model->tokenizer()->encode(*prompt, true);
    r.options.sampling.temperature = 0;
    r.options.max_tokens = *tokens;
    r.options.stop_at_eos = false;
    Forward forward(model);
    GenerateStats stats;
    const auto out = generate(forward, {r}, &stats);
    // The result's text starts with its separating space: it was decoded after the prompt.
    std::printf("   %s%s\n", model->tokenizer()->decode(r.prompt).c_str(), out[0].text.c_str());
    std::printf("   prefill %.1f tokens/s, decode %.1f tokens/s, peak memory %.0f MB\n", static_cast<double>(stats.prompt_tokens) / stats.prefill_seconds,
                static_cast<double>(stats.generated_tokens - 1) / stats.decode_seconds, peak_rss_mb());
    exit_code = 0;
  });
}

}  // namespace

void add_model_commands(CLI::App& app, int& exit_code) {
  add_demo(app, exit_code);
  add_synth(app, exit_code);
  add_convert(app, exit_code);
  add_run(app, exit_code);
  add_logits(app, exit_code);
  add_numa_plan(app, exit_code);
  add_perplexity(app, exit_code);
}

}  // namespace lacuna::cli
