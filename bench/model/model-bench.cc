#include "bench/model/model-bench.h"

#include <omp.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "bench/common/bandwidth.h"
#include "bench/common/stats.h"
#include "bench/model/greedy-decoder.h"
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
  std::string output_dtype;
  size_t batch = 0;
  std::string phase;  // decode, prefill
  double tokens_per_s = 0;
  double speedup = 0;
  double peak_rss_mb = 0;
  double pct_bandwidth_limit = 0;  // decode only
  double byte_ratio = 0;           // dense bf16's weight bytes per decoded token / this model's
};

struct Measured : PairedSpeed {
  double peak_rss_mb = 0;
  double file_mb = 0;
  double bytes_per_token = 0;
};

// One model ready to time: decode steps of a batch, and whole-prompt prefills.
// The model is read into memory at open (prefault), as a server would, so no
// timed step waits on a page fault.
class Runner {
 public:
  Runner(const std::string& path, const ModelBenchOptions& o)
      : model_(Model::open(path, OpenOptions{.verify_checksums = false, .prefault = true})),
        decoder_(model_),
        o_(o),
        prompt_(bench_prompt(static_cast<size_t>(std::max(o.prompt_tokens, 72)), model_->config().vocab)) {}
  const Model& model() const { return *model_; }

  // `batch` sequences with an 8-token prompt each, then one untimed step.
  void start_decode(size_t batch) { decoder_.start(batch, o_.decode_steps, prompt_); }
  // Seconds for one greedy decode step of every sequence.
  double decode_step() { return decoder_.step(); }
  // Seconds for the whole prompt in one step.
  double prefill() {
    KvCache cache(model_->config(), o_.prompt_tokens);
    std::vector<float> logits(model_->config().vocab);
    const SequenceStep step{&cache, std::span(prompt_).first(static_cast<size_t>(o_.prompt_tokens)), logits.data(), false};
    const auto t0 = Clock::now();
    decoder_.forward().step({&step, 1});
    return seconds(t0, Clock::now());
  }

 private:
  std::shared_ptr<const Model> model_;
  GreedyDecoder decoder_;
  const ModelBenchOptions& o_;
  std::vector<int32_t> prompt_;
};

// The model alone, for its memory: open, a prompt, a few decode steps.
Measured measure_alone(const std::string& path, const ModelBenchOptions& o) {
  Runner model(path, o);
  Measured m;
  m.file_mb = static_cast<double>(model.model().file().file_bytes()) / 1e6;
  m.bytes_per_token = static_cast<double>(model.model().decode_bytes_per_token());
  model.prefill();
  model.start_decode(o.batches.back());
  model.decode_step();
  m.peak_rss_mb = peak_rss_mb();
  return m;
}

std::string join(const std::vector<size_t>& v) {
  std::string s;
  for (size_t x : v) {
    if (!s.empty()) s += ',';
    s += std::to_string(x);
  }
  return s;
}

// Every measurement runs in a fresh process (this program's `bench
// model-point`), so a configuration's peak RSS is its own, not the
// conversion's or an earlier model's.
nlohmann::json run_child(const std::string& path, const std::string& baseline, const ModelBenchOptions& o) {
  std::string cmd = fs::read_symlink("/proc/self/exe").string();  // this same binary
  for (const std::string& part : {std::string(" bench model-point '"), path, std::string("' --batch "), join(o.batches), std::string(" --prompt "),
                                  std::to_string(o.prompt_tokens), std::string(" --decode-steps "), std::to_string(o.decode_steps),
                                  std::string(" --repetitions "), std::to_string(o.repetitions)})
    cmd += part;
  if (!baseline.empty()) cmd += " --baseline '" + baseline + "'";
  std::FILE* p = popen(cmd.c_str(), "r");
  if (!p) throw Error("cannot run " + cmd);
  std::string out;
  char buf[4096];
  while (size_t got = std::fread(buf, 1, sizeof buf, p)) out.append(buf, got);
  if (pclose(p) != 0 || out.find('{') == std::string::npos) throw Error("bench model-point failed: " + cmd + "\n" + out);
  return nlohmann::json::parse(out.substr(out.rfind('{')));
}

Measured measure(const std::string& path, const std::string& baseline, const ModelBenchOptions& o) {
  const nlohmann::json alone = run_child(path, "", o);
  std::vector<PairedSpeed> rounds;
  for (int r = 0; r < o.rounds; ++r) {
    const nlohmann::json paired = run_child(path, baseline, o);
    rounds.push_back({.decode_tps = paired.at("decode_tps").get<std::vector<double>>(),
                      .decode_ratio = paired.at("decode_ratio").get<std::vector<double>>(),
                      .prefill_tps = paired.at("prefill_tps").get<double>(),
                      .prefill_ratio = paired.at("prefill_ratio").get<double>()});
  }
  Measured m;
  static_cast<PairedSpeed&>(m) = median_of_rounds(rounds);
  m.peak_rss_mb = alone.at("peak_rss_mb").get<double>();
  m.file_mb = alone.at("file_mb").get<double>();
  m.bytes_per_token = alone.at("bytes_per_token").get<double>();
  return m;
}

}  // namespace

PairedSpeed median_of_rounds(const std::vector<PairedSpeed>& rounds) {
  if (rounds.empty()) throw Error("median_of_rounds: no rounds");
  const size_t batches = rounds.front().decode_tps.size();
  auto each = [&](auto figure) {
    std::vector<double> v;
    for (const PairedSpeed& r : rounds) v.push_back(figure(r));
    return median(std::move(v));
  };
  for (const PairedSpeed& r : rounds)
    if (r.decode_tps.size() != batches || r.decode_ratio.size() != batches) throw Error("median_of_rounds: rounds of different batch sizes");
  PairedSpeed m;
  for (size_t b = 0; b < batches; ++b) {
    m.decode_tps.push_back(each([b](const PairedSpeed& r) { return r.decode_tps[b]; }));
    m.decode_ratio.push_back(each([b](const PairedSpeed& r) { return r.decode_ratio[b]; }));
  }
  m.prefill_tps = each([](const PairedSpeed& r) { return r.prefill_tps; });
  m.prefill_ratio = each([](const PairedSpeed& r) { return r.prefill_ratio; });
  return m;
}

PairedSpeed measure_paired(const std::string& path, const std::string& baseline_path, const ModelBenchOptions& o) {
  Runner model(path, o), base(baseline_path, o);
  PairedSpeed m;
  for (size_t batch : o.batches) {
    model.start_decode(batch);
    base.start_decode(batch);
    std::vector<double> t, ratio;
    for (int s = 0; s < o.decode_steps; ++s) {
      const double b = base.decode_step(), x = model.decode_step();
      t.push_back(x);
      ratio.push_back(b / x);
    }
    m.decode_tps.push_back(static_cast<double>(batch) / median(t));
    m.decode_ratio.push_back(median(ratio));
  }
  // Untimed: each model's first prompt also creates its oneDNN primitives.
  base.prefill();
  model.prefill();
  std::vector<double> t, ratio;
  for (int r = 0; r < o.repetitions; ++r) {
    const double b = base.prefill(), x = model.prefill();
    t.push_back(x);
    ratio.push_back(b / x);
  }
  m.prefill_tps = o.prompt_tokens / median(t);
  m.prefill_ratio = median(ratio);
  return m;
}

int run_model_point(const std::string& path, const std::string& baseline, const ModelBenchOptions& o) {
  Measured m;
  if (baseline.empty())
    m = measure_alone(path, o);
  else
    static_cast<PairedSpeed&>(m) = measure_paired(path, baseline, o);
  std::printf("%s\n", nlohmann::json{{"decode_tps", m.decode_tps},
                                     {"decode_ratio", m.decode_ratio},
                                     {"prefill_tps", m.prefill_tps},
                                     {"prefill_ratio", m.prefill_ratio},
                                     {"peak_rss_mb", m.peak_rss_mb},
                                     {"file_mb", m.file_mb},
                                     {"bytes_per_token", m.bytes_per_token}}
                          .dump()
                          .c_str());
  return 0;
}

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
  std::printf("model: %s %s; prompt %d tokens; %d timed decode steps per batch size (median); %d prefill runs (median)\n"
              "vs dense: the median ratio of steps alternated with the dense bf16 model in one process%s; %% bw limit: decode tokens/s\n"
              "against the bandwidth above / weight bytes read per token (attention, top-k experts, output); byte ratio: dense bf16's\n"
              "weight bytes per token / this model's, the batch-1 decode ratio if both streamed their weights equally fast; peak MB:\n"
              "the model alone in its own process\n\n",
              o.arch.c_str(), o.preset.c_str(), o.prompt_tokens, o.decode_steps, o.repetitions,
              o.rounds > 1 ? (", then the median over " + std::to_string(o.rounds) + " such processes (tokens/s too)").c_str() : "");

  auto convert = [&](double sparsity, const std::string& dtype, bool dense) {
    const fs::path out = work / (dense ? "dense-bf16.lacuna" : "model.lacuna");
    ConvertOptions c;
    c.sparsity = sparsity;
    c.prune = sparsity > 0 ? PruneMethod::magnitude : PruneMethod::none;
    c.dtype = *parse_dtype(dtype);
    if (dense)
      c.format = Format::dense;
    else if (!o.output_dtype.empty())
      c.output_dtype = *parse_dtype(o.output_dtype);
    convert_checkpoint(hf.string(), out.string(), c);
    return out.string();
  };

  std::vector<Row> rows;
  std::printf("%-28s %5s %-8s %12s %9s %10s %10s %9s %12s\n", "model", "batch", "phase", "tokens/s", "vs dense", "% bw limit", "byte ratio", "peak MB",
              "file MB");
  double dense_bytes_per_token = 0;  // the baseline's, reported first
  auto report = [&](const std::string& label, double sparsity, const std::string& dtype, const std::string& output_dtype, const Measured& m) {
    if (dense_bytes_per_token == 0) dense_bytes_per_token = m.bytes_per_token;
    const double byte_ratio = dense_bytes_per_token / m.bytes_per_token;
    char ratio_text[16];
    std::snprintf(ratio_text, sizeof ratio_text, "%.2fx", byte_ratio);
    for (size_t i = 0; i < o.batches.size(); ++i) {
      const double limit = bw.bytes_per_s / m.bytes_per_token;  // tokens/s if only weight streaming counted, batch 1
      const bool alone = o.batches[i] == 1;
      const double pct = alone ? 100.0 * m.decode_tps[i] / limit : 0;
      rows.push_back({label, sparsity, dtype, output_dtype, o.batches[i], "decode", m.decode_tps[i], m.decode_ratio[i], m.peak_rss_mb, pct, byte_ratio});
      std::printf("%-28s %5zu %-8s %12.2f %8.2fx %9s %10s %9.0f %12.0f\n", label.c_str(), o.batches[i], "decode", m.decode_tps[i], m.decode_ratio[i],
                  alone ? (std::to_string(static_cast<int>(pct + 0.5)) + "%").c_str() : "", alone ? ratio_text : "", m.peak_rss_mb, m.file_mb);
    }
    rows.push_back({label, sparsity, dtype, output_dtype, 1, "prefill", m.prefill_tps, m.prefill_ratio, m.peak_rss_mb, 0, byte_ratio});
    std::printf("%-28s %5d %-8s %12.2f %8.2fx %9s %10s %9.0f %12.0f\n", label.c_str(), 1, "prefill", m.prefill_tps, m.prefill_ratio, "", "",
                m.peak_rss_mb, m.file_mb);
    std::fflush(stdout);
  };

  // The baseline against itself first: its ratios show how far this host's
  // noise moves a ratio measured by alternating steps.
  const std::string baseline = convert(0, "bf16", true);
  report("dense bf16 (oneDNN)", 0, "bf16", "bf16", measure(baseline, baseline, o));
  for (double s : o.sparsities)
    for (const std::string& dtype : o.dtypes) {
      const std::string output_dtype = o.output_dtype.empty() ? dtype : o.output_dtype;
      char label[64];
      std::snprintf(label, sizeof label, "%.0f%% %s auto%s", 100 * s, dtype.c_str(), output_dtype == dtype ? "" : (" (output " + output_dtype + ")").c_str());
      report(label, s, dtype, output_dtype, measure(convert(s, dtype, false), baseline, o));
    }
  fs::remove(work / "model.lacuna");
  fs::remove(baseline);

  if (!o.csv_path.empty()) {
    std::ofstream f(o.csv_path);
    f << "model,sparsity,dtype,batch,phase,tokens_per_s,speedup_vs_dense,peak_rss_mb,pct_bandwidth_limit,byte_ratio_vs_dense,label,output_dtype\n";
    for (const Row& r : rows)
      f << o.arch << '-' << o.preset << ',' << r.sparsity << ',' << r.dtype << ',' << r.batch << ',' << r.phase << ',' << r.tokens_per_s << ','
        << r.speedup << ',' << r.peak_rss_mb << ',' << r.pct_bandwidth_limit << ',' << r.byte_ratio << ',' << r.label << ',' << r.output_dtype << '\n';
    if (!f) throw Error(o.csv_path + ": cannot write");
    std::printf("\nwrote %s\n", o.csv_path.c_str());
  }
  return 0;
}

}  // namespace lacuna::bench
