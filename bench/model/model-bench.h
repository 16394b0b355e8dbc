#pragma once
// `lacuna bench model`: the whole model at decode (batch 1, 8, 32) and
// prefill, for sparsities x dtypes, against the engine's own dense bf16
// (oneDNN) path measured in the same run.
#include <string>
#include <vector>

namespace lacuna::bench {

struct ModelBenchOptions {
  std::string arch = "mixtral";
  std::string preset = "mini";
  std::string work_dir;  // where checkpoints and converted models go (default: a fresh dir under /tmp)
  std::vector<double> sparsities = {0, 0.5, 0.7, 0.9};
  std::vector<std::string> dtypes = {"bf16", "int8"};
  std::string output_dtype;  // of the models' output projection (ConvertOptions::output_dtype); empty: each model's dtype
  std::vector<size_t> batches = {1, 8, 32};
  int prompt_tokens = 512;
  int decode_steps = 9;  // timed decode steps per batch size (after one warm-up step)
  int repetitions = 3;   // prefill runs
  // Paired measurements of each model, each in a fresh process; the figures
  // are their medians (median_of_rounds).
  int rounds = 1;
  std::string csv_path;
};

int run_model_bench(const ModelBenchOptions& o);

// Speed of a model against a baseline measured in the same process, step
// for step alternated (this host's bandwidth drifts between minutes): decode
// at each of o.batches (o.decode_steps timed steps after a warm-up step) and
// prefill of o.prompt_tokens (o.repetitions runs). Ratios are medians of
// per-pair ratios, > 1 when the model is faster.
struct PairedSpeed {
  std::vector<double> decode_tps, decode_ratio;  // per batch size
  double prefill_tps = 0, prefill_ratio = 0;
};
PairedSpeed measure_paired(const std::string& model_path, const std::string& baseline_path, const ModelBenchOptions& o);

// Each figure's median over `rounds` (each a measure_paired in its own
// process, all with the same batch sizes). Alternating steps cancels the
// drift of the host's bandwidth, not a difference between the two copies
// in memory: on a virtual machine the same weights loaded twice in one
// process read 0.87x-1.36x of themselves (docs/benchmarks.md, "Back on the
// AMD EPYC host"), which only fresh processes average out.
PairedSpeed median_of_rounds(const std::vector<PairedSpeed>& rounds);

// What run_model_bench runs in a child process, printed as one JSON line:
// with a baseline, the model's speed alternated step by step with the
// baseline's; without, the model alone, for its peak RSS.
int run_model_point(const std::string& model_path, const std::string& baseline_path, const ModelBenchOptions& o);

}  // namespace lacuna::bench
