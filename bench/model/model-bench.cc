#include "bench/model/model-bench.h"

#include <omp.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "bench/common/bandwidth.h"
#include "bench/common/stats.h"
#include "engine/model/convert.h"
#include "engine/model/model.h"
#include "engine/model/synth.h"
#include "engine/runtime/forward.h"
#include "kernels/cpu-features.h"
#include "sparse/error.h"

namespace lacuna::bench {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

double seconds(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double>(b - a).count(); }

// Peak RSS since the last reset (Linux: writing 5 to clear_refs resets VmHWM).
void reset_peak_rss() { std::ofstream("/proc/self/clear_refs") << "5"; }
double peak_rss_mb() {
  std::ifstream f("/proc/self/status");
  for (std::string line; std::getline(f, line);)
    if (line.rfind("VmHWM:", 0) == 0) return std::stod(line.substr(6)) / 1024.0;
  return 0;
}

struct Row {
  std::string label;  // "dense bf16 (oneDNN)" or "70% int8"
  double sparsity = 0;
  std::string dtype;
  size_t batch = 0;
  std::string phase;  // decode, prefill
  double tokens_per_s = 0;
  double speedup = 0;
  double peak_rss_mb = 0;
  double pct_bandwidth_limit = 0;  // decode only
};

struct Measured {
  std::vector<double> decode_tps;  // per batch size
  double prefill_tps = 0;
  double peak_rss_mb = 0;
  double file_mb = 0;
  double bytes_per_token = 0;
};

// Decode: `batch` sequences, each with a short prompt, then timed steps of one
// token each; tokens/s from the median step.
Measured measure(const std::string& path, const ModelBenchOptions& o) {
  reset_peak_rss();
  Measured m;
  const auto model = Model::open(path, OpenOptions{.verify_checksums = false});
  m.file_mb = static_cast<double>(model->file().file_bytes()) / 1e6;
  m.bytes_per_token = static_cast<double>(model->decode_bytes_per_token());
  Forward forward(model);
  const ModelConfig& c = model->config();
  std::vector<int32_t> prompt(static_cast<size_t>(o.prompt_tokens));
  for (size_t i = 0; i < prompt.size(); ++i) prompt[i] = static_cast<int32_t>((i * 7919 + 13) % static_cast<size_t>(c.vocab));
  for (size_t batch : o.batches) {
    std::vector<KvCache> caches;
    for (size_t b = 0; b < batch; ++b) caches.emplace_back(c, 8 + o.decode_steps + 1);
    std::vector<float> logits(batch * c.vocab);
    std::vector<int32_t> tokens(batch);
    std::vector<SequenceStep> steps;
    for (size_t b = 0; b < batch; ++b) steps.push_back({&caches[b], std::span(prompt).subspan(b % 64, 8), &logits[b * c.vocab], false});
    forward.step(steps);
    std::vector<double> times;
    for (int s = 0; s <= o.decode_steps; ++s) {
      steps.clear();
      for (size_t b = 0; b < batch; ++b) {
        tokens[b] = static_cast<int32_t>(std::max_element(&logits[b * c.vocab], &logits[(b + 1) * c.vocab]) - &logits[b * c.vocab]);
        steps.push_back({&caches[b], std::span(&tokens[b], 1), &logits[b * c.vocab], false});
      }
      const auto t0 = Clock::now();
      forward.step(steps);
      if (s > 0) times.push_back(seconds(t0, Clock::now()));  // the first step warms up
    }
    m.decode_tps.push_back(static_cast<double>(batch) / median(times));
  }
  std::vector<double> prefill;
  for (int r = 0; r < o.repetitions; ++r) {
    KvCache cache(c, o.prompt_tokens);
    std::vector<float> logits(c.vocab);
    const SequenceStep step{&cache, prompt, logits.data(), false};
    const auto t0 = Clock::now();
    forward.step({&step, 1});
    prefill.push_back(seconds(t0, Clock::now()));
  }
  m.prefill_tps = o.prompt_tokens / median(prefill);
  m.peak_rss_mb = peak_rss_mb();
  return m;
}

}  // namespace

int run_model_bench(const ModelBenchOptions& o) {
  const CpuInfo& cpu = cpu_info();
  const fs::path work = o.work_dir.empty() ? fs::temp_directory_path() / ("lacuna-bench-model-" + std::to_string(getpid())) : fs::path(o.work_dir);
  fs::create_directories(work);
  std::printf("machine: %s, %d threads, isa %s\n", cpu.brand.c_str(), omp_get_max_threads(), isa_level_name(cpu.level()));
  const Bandwidth bw = measure_read_bandwidth(size_t{2} << 30, 5);
  std::printf("memory read bandwidth: %.1f GB/s (median of 5 reads of 2 GiB)\n", bw.bytes_per_s / 1e9);

  const fs::path hf = work / ("hf-" + o.arch + "-" + o.preset);
  if (!fs::exists(hf / "config.json")) {
    std::printf("synthesising %s %s in %s ...\n", o.arch.c_str(), o.preset.c_str(), hf.c_str());
    synthesize_checkpoint(hf.string(), SynthOptions{.arch = parse_arch(o.arch), .preset = o.preset, .seed = 1});
  }
  std::printf("model: %s %s; prompt %d tokens; %d timed decode steps per batch size (median); %d prefill runs (median)\n\n", o.arch.c_str(),
              o.preset.c_str(), o.prompt_tokens, o.decode_steps, o.repetitions);

  auto convert = [&](double sparsity, const std::string& dtype, bool dense) {
    const fs::path out = work / "model.lacuna";
    ConvertOptions c;
    c.sparsity = sparsity;
    c.prune = sparsity > 0 ? PruneMethod::magnitude : PruneMethod::none;
    c.dtype = *parse_dtype(dtype);
    if (dense) c.format = Format::dense;
    convert_checkpoint(hf.string(), out.string(), c);
    return out.string();
  };

  std::vector<Row> rows;
  std::printf("%-22s %5s %-8s %12s %9s %10s %9s %12s\n", "model", "batch", "phase", "tokens/s", "vs dense", "% bw limit", "peak MB", "file MB");
  auto report = [&](const std::string& label, double sparsity, const std::string& dtype, const Measured& m, const Measured& base) {
    for (size_t i = 0; i < o.batches.size(); ++i) {
      const double limit = bw.bytes_per_s / m.bytes_per_token;  // tokens/s if only weight streaming counted, batch 1
      const double pct = o.batches[i] == 1 ? 100.0 * m.decode_tps[i] / limit : 0;
      rows.push_back({label, sparsity, dtype, o.batches[i], "decode", m.decode_tps[i], m.decode_tps[i] / base.decode_tps[i], m.peak_rss_mb, pct});
      std::printf("%-22s %5zu %-8s %12.2f %8.2fx %9s %9.0f %12.0f\n", label.c_str(), o.batches[i], "decode", m.decode_tps[i],
                  m.decode_tps[i] / base.decode_tps[i], o.batches[i] == 1 ? (std::to_string(static_cast<int>(pct + 0.5)) + "%").c_str() : "",
                  m.peak_rss_mb, m.file_mb);
    }
    rows.push_back({label, sparsity, dtype, 1, "prefill", m.prefill_tps, m.prefill_tps / base.prefill_tps, m.peak_rss_mb, 0});
    std::printf("%-22s %5d %-8s %12.2f %8.2fx %9s %9.0f %12.0f\n", label.c_str(), 1, "prefill", m.prefill_tps, m.prefill_tps / base.prefill_tps, "",
                m.peak_rss_mb, m.file_mb);
    std::fflush(stdout);
  };

  const Measured dense = measure(convert(0, "bf16", true), o);
  report("dense bf16 (oneDNN)", 0, "bf16", dense, dense);
  for (double s : o.sparsities)
    for (const std::string& dtype : o.dtypes) {
      char label[64];
      std::snprintf(label, sizeof label, "%.0f%% %s auto", 100 * s, dtype.c_str());
      report(label, s, dtype, measure(convert(s, dtype, false), o), dense);
    }
  fs::remove(work / "model.lacuna");

  if (!o.csv_path.empty()) {
    std::ofstream f(o.csv_path);
    f << "model,sparsity,dtype,batch,phase,tokens_per_s,speedup_vs_dense,peak_rss_mb,pct_bandwidth_limit,label\n";
    for (const Row& r : rows)
      f << o.arch << '-' << o.preset << ',' << r.sparsity << ',' << r.dtype << ',' << r.batch << ',' << r.phase << ',' << r.tokens_per_s << ','
        << r.speedup << ',' << r.peak_rss_mb << ',' << r.pct_bandwidth_limit << ',' << r.label << '\n';
    if (!f) throw Error(o.csv_path + ": cannot write");
    std::printf("\nwrote %s\n", o.csv_path.c_str());
  }
  return 0;
}

}  // namespace lacuna::bench
