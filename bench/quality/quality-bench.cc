#include "bench/quality/quality-bench.h"

#include <omp.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>

#include "bench/model/model-bench.h"
#include "bench/common/plot.h"
#include "engine/model/convert.h"
#include "engine/model/model.h"
#include "engine/runtime/calibration.h"
#include "engine/runtime/perplexity.h"
#include "engine/runtime/text-file.h"
#include "kernels/cpu-features.h"
#include "sparse/error.h"

namespace lacuna::bench {
namespace {

namespace fs = std::filesystem;

struct Point {
  std::string prune;  // none, magnitude, wanda
  double sparsity = 0;
  std::string dtype;
  double perplexity = 0;
  double decode_tps = 0, speedup = 0;  // batch 1, against the dense bf16 model
  double file_mb = 0;
  size_t magnitude_fallbacks = 0;
};

}  // namespace

int run_quality_bench(const QualityBenchOptions& o) {
  const std::string text_path = o.text_path.empty() ? o.model_dir + "/heldout.txt" : o.text_path;
  const std::string calib_path = o.calib_path.empty() ? o.model_dir + "/calibration.txt" : o.calib_path;
  std::vector<PruneMethod> prunes;
  for (const std::string& p : o.prunes) {
    const auto method = parse_prune_method(p);
    if (!method || *method == PruneMethod::none) throw Error("unknown pruning method '" + p + "' (magnitude, wanda)");
    prunes.push_back(*method);
  }
  std::vector<DType> dtypes;
  for (const std::string& d : o.dtypes) {
    const auto t = parse_dtype(d);
    if (!t) throw Error("unknown dtype '" + d + "'");
    dtypes.push_back(*t);
  }
  const std::string text = read_text_file(text_path, "the held-out text");
  std::vector<int32_t> ids;  // the held-out text's tokens: every point has the checkpoint's tokenizer
  const fs::path work = o.work_dir.empty() ? fs::temp_directory_path() / ("lacuna-bench-quality-" + std::to_string(getpid())) : fs::path(o.work_dir);
  fs::create_directories(work);

  const CpuInfo& cpu = cpu_info();
  std::printf("machine: %s, %d threads, isa %s\n", cpu.brand.c_str(), omp_get_max_threads(), isa_level_name(cpu.level()));
  std::printf("model: %s; held-out text %s (ctx %lld, stride %lld); decode: batch 1, median of %d steps, against dense bf16 (oneDNN)\n"
              "alternated step by step in this process\n",
              o.model_dir.c_str(), text_path.c_str(), static_cast<long long>(o.ctx), static_cast<long long>(o.stride), o.decode_steps);

  Calibration calibration;
  if (std::find(prunes.begin(), prunes.end(), PruneMethod::wanda) != prunes.end()) {
    CalibrationOptions c;
    c.tokens = o.calib_tokens;
    c.scratch_path = (work / "calibration-dense.lacuna").string();
    calibration = calibrate_checkpoint(o.model_dir, read_text_file(calib_path, "the calibration text"), c);
    std::printf("wanda calibration: the first %lld tokens of %s through the dense bf16 model\n", static_cast<long long>(calibration.tokens),
                calib_path.c_str());
  }

  const fs::path baseline = work / "dense-bf16.lacuna", point_path = work / "point.lacuna";
  ConvertOptions dense;
  dense.format = Format::dense;
  convert_checkpoint(o.model_dir, baseline.string(), dense);
  ModelBenchOptions speed;
  speed.batches = {1};
  speed.decode_steps = o.decode_steps;
  speed.prompt_tokens = 16;
  speed.repetitions = 1;

  std::printf("\n%-10s %8s %-5s %12s %10s %12s %9s %9s\n", "prune", "sparsity", "dtype", "perplexity", "vs dense", "decode tok/s", "speedup", "file MB");
  std::vector<Point> points;
  double dense_perplexity = 0;
  for (DType dtype : dtypes)
    for (double sparsity : o.sparsities)
      for (PruneMethod prune : sparsity > 0 ? prunes : std::vector<PruneMethod>{PruneMethod::none}) {
        ConvertOptions c;
        c.sparsity = sparsity;
        c.prune = prune;
        c.dtype = dtype;
        if (prune == PruneMethod::wanda) c.input_norms = calibration.input_norms;
        const ConvertSummary summary = convert_checkpoint(o.model_dir, point_path.string(), c);
        Point p{prune_method_name(prune), sparsity, dtype_name(dtype)};
        p.magnitude_fallbacks = summary.magnitude_fallbacks.size();
        {
          const auto model = Model::open(point_path.string());
          if (ids.empty()) {
            if (!model->tokenizer()) throw Error(o.model_dir + " has no tokenizer.model: perplexity needs one to read text");
            ids = model->tokenizer()->encode(text, true);
          }
          Forward forward(model);
          const int64_t window = std::min(o.ctx, model->config().max_context);
          p.perplexity = perplexity(forward, ids, window, std::min(o.stride, window)).perplexity;
          p.file_mb = static_cast<double>(model->file().file_bytes()) / 1e6;
        }
        const PairedSpeed s = measure_paired(point_path.string(), baseline.string(), speed);
        p.decode_tps = s.decode_tps[0];
        p.speedup = s.decode_ratio[0];
        if (points.empty() && sparsity == 0 && dtype == DType::bf16) dense_perplexity = p.perplexity;
        char vs_dense[32] = "";
        if (dense_perplexity > 0) std::snprintf(vs_dense, sizeof vs_dense, "%.3fx", p.perplexity / dense_perplexity);
        std::printf("%-10s %7.0f%% %-5s %12.4f %10s %12.1f %8.2fx %9.2f", p.prune.c_str(), 100 * sparsity, p.dtype.c_str(), p.perplexity, vs_dense,
                    p.decode_tps, p.speedup, p.file_mb);
        if (p.magnitude_fallbacks) std::printf(" (%zu weights by magnitude: no calibration token)", p.magnitude_fallbacks);
        std::printf("\n");
        std::fflush(stdout);
        points.push_back(p);
      }
  fs::remove(point_path);
  fs::remove(baseline);
  if (o.work_dir.empty()) fs::remove_all(work);

  if (!o.csv_path.empty()) {
    std::ofstream f(o.csv_path);
    f << "prune,sparsity,dtype,perplexity,perplexity_vs_dense_bf16,decode_tokens_per_s,speedup_vs_dense_bf16,file_mb,magnitude_fallbacks\n";
    for (const Point& p : points)
      f << p.prune << ',' << p.sparsity << ',' << p.dtype << ',' << p.perplexity << ',' << (dense_perplexity > 0 ? p.perplexity / dense_perplexity : 0)
        << ',' << p.decode_tps << ',' << p.speedup << ',' << p.file_mb << ',' << p.magnitude_fallbacks << '\n';
    if (!f) throw Error(o.csv_path + ": cannot write");
    std::printf("\nwrote %s\n", o.csv_path.c_str());
  }
  if (!o.png_path.empty()) {
    if (o.csv_path.empty()) throw Error("--png needs --csv");
    plot("plot-quality.py", o.csv_path, o.png_path);
  }
  return 0;
}

}  // namespace lacuna::bench
