// `lacuna bench sweep` (bench/sweep) and `lacuna bench model` (bench/model).
#include <omp.h>

#include <sstream>

#include "bench/model/model-bench.h"
#include "bench/numa/numa-bench.h"
#include "bench/quality/quality-bench.h"
#include "bench/serve/serve-bench.h"
#include "bench/sweep/sweep.h"
#include "engine/cli/commands.h"
#include "sparse/error.h"

namespace lacuna::cli {
namespace {

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream in(s);
  for (std::string item; std::getline(in, item, ',');)
    if (!item.empty()) out.push_back(item);
  return out;
}

// "grok" = Grok-1's four linear shapes; else "IN->OUT" or "INxOUT" items.
std::vector<bench::SweepShape> parse_shapes(const std::string& s) {
  if (s == "grok") return {{6144, 32768}, {32768, 6144}, {6144, 6144}, {6144, 1024}};
  std::vector<bench::SweepShape> shapes;
  for (const std::string& item : split(s)) {
    const size_t arrow = item.find("->"), cross = item.find('x');
    const size_t at = arrow != std::string::npos ? arrow : cross;
    const size_t skip = arrow != std::string::npos ? 2 : 1;
    const auto number = [](const std::string& digits) -> size_t {
      if (digits.empty() || digits.size() > 7 || digits.find_first_not_of("0123456789") != std::string::npos) return 0;
      return std::stoul(digits);
    };
    const size_t in = at == std::string::npos ? 0 : number(item.substr(0, at));
    const size_t out = at == std::string::npos ? 0 : number(item.substr(at + skip));
    if (in == 0 || out == 0 || in > (1u << 20) || out > (1u << 20))
      throw Error("bad shape '" + item + "': expected IN->OUT or INxOUT with sizes 1..1048576, e.g. 6144->32768");
    shapes.push_back({in, out});
  }
  return shapes;
}

}  // namespace

void add_bench_command(CLI::App& app, int& exit_code) {
  auto* bench = app.add_subcommand("bench", "Benchmarks");
  bench->require_subcommand(1);
  auto* sweep = bench->add_subcommand("sweep", "Speed of sparse products vs oneDNN dense bf16 over sparsity, batch, format and dtype");
  auto o = std::make_shared<bench::SweepOptions>();
  auto shapes = std::make_shared<std::string>("6144->32768");
  auto formats = std::make_shared<std::string>("bitmap,csr");
  auto dtypes = std::make_shared<std::string>("bf16,int8");
  auto gib = std::make_shared<double>(2.0);
  auto threads = std::make_shared<int>(0);
  sweep->add_option("--shapes", *shapes, "IN->OUT list, or 'grok' for Grok-1's four linear shapes")->capture_default_str();
  sweep->add_option("--sparsity", o->sparsities, "Sparsities in [0, 1]")->delimiter(',')->check(CLI::Range(0.0, 1.0))->capture_default_str();
  sweep->add_option("--batch", o->batches, "Batch sizes")->delimiter(',')->check(CLI::Range(size_t{1}, size_t{4096}))->capture_default_str();
  sweep->add_option("--formats", *formats, "Formats: dense,csr,csr8,bitmap,bsr")->capture_default_str();
  sweep->add_option("--dtypes", *dtypes, "Weight dtypes: f32,bf16,int8")->capture_default_str();
  sweep->add_option("--working-set-gib", *gib, "Distinct weights cycled per point (0 = warm cache)")->check(CLI::Range(0.0, 16.0))->capture_default_str();
  sweep->add_option("--seconds", o->seconds_per_point, "Time budget per point")->check(CLI::Range(0.01, 60.0))->capture_default_str();
  sweep->add_option("--threads", *threads, "Threads (default: all)")->check(CLI::Range(0, 1024));
  sweep->add_option("--csv", o->csv_path, "Write one CSV row per point");
  sweep->add_option("--png", o->png_path, "Plot speedup vs sparsity (needs --csv)");
  sweep->callback([=, &exit_code] {
    o->shapes = parse_shapes(*shapes);
    o->formats.clear();
    for (const auto& f : split(*formats)) {
      auto parsed = parse_format(f);
      if (!parsed) throw Error("unknown format '" + f + "'");
      o->formats.push_back(*parsed);
    }
    o->dtypes.clear();
    for (const auto& t : split(*dtypes)) {
      auto parsed = parse_dtype(t);
      if (!parsed) throw Error("unknown dtype '" + t + "'");
      o->dtypes.push_back(*parsed);
    }
    o->working_set_bytes = static_cast<uint64_t>(*gib * (1u << 30));
    if (*threads > 0) omp_set_num_threads(*threads);
    exit_code = bench::run_sweep(*o);
  });

  auto* model = bench->add_subcommand("model", "Whole-model decode and prefill speed vs the engine's dense bf16 (oneDNN) path");
  auto m = std::make_shared<bench::ModelBenchOptions>();
  auto model_dtypes = std::make_shared<std::string>("bf16,int8");
  auto model_threads = std::make_shared<int>(0);
  model->add_option("--arch", m->arch, "grok-1 or mixtral")->check(CLI::IsMember({"grok-1", "mixtral"}))->capture_default_str();
  model->add_option("--preset", m->preset, "tiny, mini, grok-1-layer")->check(CLI::IsMember({"tiny", "mini", "grok-1-layer"}))->capture_default_str();
  model->add_option("--work-dir", m->work_dir, "Where the checkpoint and converted models go (reused: the checkpoint is made once)");
  model->add_option("--sparsity", m->sparsities, "Sparsities")->delimiter(',')->check(CLI::Range(0.0, 0.99))->capture_default_str();
  model->add_option("--dtypes", *model_dtypes, "Weight dtypes: bf16,int8,f32")->capture_default_str();
  model->add_option("--output-dtype", m->output_dtype, "Dtype of the models' output projection (convert --output-dtype): bf16, int8, f32; default each model's")
      ->check(CLI::IsMember({"f32", "bf16", "int8"}));
  model->add_option("--batch", m->batches, "Decode batch sizes")->delimiter(',')->check(CLI::Range(size_t{1}, size_t{256}))->capture_default_str();
  model->add_option("--prompt", m->prompt_tokens, "Prefill prompt length")->check(CLI::Range(16, 8192))->capture_default_str();
  model->add_option("--decode-steps", m->decode_steps, "Timed decode steps per batch size")->check(CLI::Range(1, 1000))->capture_default_str();
  model->add_option("--repetitions", m->repetitions, "Prefill runs")->check(CLI::Range(1, 100))->capture_default_str();
  model->add_option("--rounds", m->rounds, "Paired measurements of each model, each in a fresh process; the figures are their medians")
      ->check(CLI::Range(1, 20))
      ->capture_default_str();
  model->add_option("--threads", *model_threads, "Threads (default: all)")->check(CLI::Range(0, 1024));
  model->add_option("--csv", m->csv_path, "Write one CSV row per point");
  model->callback([=, &exit_code] {
    m->dtypes = split(*model_dtypes);
    for (const auto& t : m->dtypes)
      if (!parse_dtype(t)) throw Error("unknown dtype '" + t + "'");
    if (*model_threads > 0) omp_set_num_threads(*model_threads);
    exit_code = bench::run_model_bench(*m);
  });

  auto* quality = bench->add_subcommand("quality", "Held-out perplexity and decode speed over sparsity, pruning method and dtype");
  auto q = std::make_shared<bench::QualityBenchOptions>();
  auto prunes = std::make_shared<std::string>("magnitude,wanda"), quality_dtypes = std::make_shared<std::string>("bf16,int8");
  quality->add_option("MODEL_DIR", q->model_dir, "A Hugging Face checkpoint with tokenizer.model")->required();
  quality->add_option("--sparsity", q->sparsities, "Sparsities (0: the unpruned model)")->delimiter(',')->check(CLI::Range(0.0, 0.99))->capture_default_str();
  quality->add_option("--prune", *prunes, "Pruning methods: magnitude,wanda")->capture_default_str();
  quality->add_option("--dtype", *quality_dtypes, "Weight dtypes: f32,bf16,int8")->capture_default_str();
  quality->add_option("--text", q->text_path, "Held-out text (default MODEL_DIR/heldout.txt)");
  quality->add_option("--calib", q->calib_path, "Wanda's calibration text (default MODEL_DIR/calibration.txt)");
  quality->add_option("--calib-tokens", q->calib_tokens, "Calibration tokens")->check(CLI::Range(int64_t{1}, int64_t{1} << 30))->capture_default_str();
  quality->add_option("--ctx", q->ctx, "Perplexity window")->check(CLI::Range(int64_t{2}, int64_t{1} << 20))->capture_default_str();
  quality->add_option("--stride", q->stride, "Perplexity stride")->check(CLI::Range(int64_t{1}, int64_t{1} << 20))->capture_default_str();
  quality->add_option("--decode-steps", q->decode_steps, "Timed decode steps per point")->check(CLI::Range(1, 10000))->capture_default_str();
  quality->add_option("--work-dir", q->work_dir, "Where the converted models go (default: a fresh dir under /tmp)");
  quality->add_option("--csv", q->csv_path, "Write one CSV row per point");
  quality->add_option("--png", q->png_path, "Plot perplexity and speedup vs sparsity (needs --csv)");
  quality->callback([=, &exit_code] {
    q->prunes = split(*prunes);
    q->dtypes = split(*quality_dtypes);
    exit_code = bench::run_quality_bench(*q);
  });

  auto* serve = bench->add_subcommand("serve", "Load test of lacuna serve on loopback: throughput and latency at 1, 4, 16, 64 clients");
  auto sv = std::make_shared<bench::ServeBenchOptions>();
  serve->add_option("MODELS", sv->models, "One or more .lacuna models")->required();
  serve->add_option("--concurrency", sv->concurrency, "Concurrent clients per level")->delimiter(',')->check(CLI::Range(1, 1024))->capture_default_str();
  serve->add_option("--prompt-tokens", sv->prompt_tokens, "Prompt length")->check(CLI::Range(2, 8192))->capture_default_str();
  serve->add_option("--max-tokens", sv->max_tokens, "Tokens generated per request")->check(CLI::Range(1, 8192))->capture_default_str();
  serve->add_option("--prompts", sv->prompts, "Distinct prompts, used in turn")->check(CLI::Range(1, 1024))->capture_default_str();
  serve->add_option("--requests", sv->requests, "Requests per level (0: 4 per client, at least 8)")->check(CLI::Range(0, 1 << 20))->capture_default_str();
  serve->add_option("--max-seconds", sv->max_seconds, "Time limit per level")->check(CLI::Range(1.0, 86400.0))->capture_default_str();
  serve->add_option("--step-tokens", sv->step_tokens, "The server's prompt tokens per forward step")->check(CLI::Range(1, 65536))->capture_default_str();
  serve->add_flag("!--no-prefix-reuse", sv->reuse_prefixes, "Every prompt evaluated whole, as if each were new (the server's --no-prefix-reuse)");
  add_kv_type_option(serve, sv->kv_type);
  add_gather_option(serve, sv->gather);
  serve->add_option("--rounds", sv->rounds, "Run every level this many times in turn; ratios are the median of each round's")
      ->check(CLI::Range(1, 100))
      ->capture_default_str();
  serve->add_option("--csv", sv->csv_path, "Write one CSV row per level and round");
  serve->callback([=, &exit_code] { exit_code = bench::run_serve_bench(*sv); });

  auto* numa = bench->add_subcommand("numa", "Decode with the experts placed by each NUMA policy against --numa none, alternated in one process");
  auto nb = std::make_shared<bench::NumaBenchOptions>();
  numa->add_option("MODEL", nb->model_path, "A .lacuna model")->required();
  numa->add_option("--policies", nb->policies, "Policies to time against none")
      ->delimiter(',')
      ->check(CLI::IsMember({"interleave", "experts", "slices", "auto"}))
      ->capture_default_str();
  numa->add_option("--batch", nb->batches, "Decode batch sizes")->delimiter(',')->check(CLI::Range(size_t{1}, size_t{256}))->capture_default_str();
  numa->add_option("--decode-steps", nb->decode_steps, "Timed decode steps per batch size and policy")->check(CLI::Range(1, 1000))->capture_default_str();
  numa->add_option("--numa-replicate-budget", nb->replicate_budget_mb, "MB for extra copies of hot experts")->check(CLI::NonNegativeNumber)->capture_default_str();
  numa->add_option("--csv", nb->csv_path, "Write one CSV row per policy and batch size");
  numa->callback([=, &exit_code] { exit_code = bench::run_numa_bench(*nb); });

  auto* point = bench->add_subcommand("model-point", "One configuration of `bench model`, printed as JSON (run by `bench model` in a child process)");
  point->group("");  // internal: hidden from --help
  auto p = std::make_shared<bench::ModelBenchOptions>();
  auto point_model = std::make_shared<std::string>(), point_baseline = std::make_shared<std::string>();
  point->add_option("MODEL", *point_model, "A .lacuna model")->required();
  point->add_option("--baseline", *point_baseline, "Time against this model, step by step alternated");
  point->add_option("--batch", p->batches, "Decode batch sizes")->delimiter(',')->check(CLI::Range(size_t{1}, size_t{256}));
  point->add_option("--prompt", p->prompt_tokens, "Prefill prompt length")->check(CLI::Range(16, 8192));
  point->add_option("--decode-steps", p->decode_steps, "Timed decode steps")->check(CLI::Range(1, 1000));
  point->add_option("--repetitions", p->repetitions, "Prefill runs")->check(CLI::Range(1, 100));
  point->callback([=, &exit_code] { exit_code = bench::run_model_point(*point_model, *point_baseline, *p); });
}

}  // namespace lacuna::cli
