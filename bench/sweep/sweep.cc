#include "bench/sweep/sweep.h"

#include <omp.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <functional>
#include <map>
#include <random>

#include "bench/common/bandwidth.h"
#include "bench/common/plot.h"
#include "bench/common/stats.h"
#include "bench/common/weights.h"
#include "kernels/dense-onednn/onednn-matmul.h"
#include "kernels/planner.h"
#include "kernels/spmm.h"
#include "sparse/stats.h"

namespace lacuna::bench {
namespace {

struct Point {
  SweepShape shape;
  size_t batch;
  double sparsity;
  std::string format, dtype, kernel;
  double median_ms, dense_ms, speedup, pct_bandwidth, gflops;
  std::string planner;
};

std::string isa_of(const std::string& kernel) {
  const size_t at = kernel.rfind("__");
  return at == std::string::npos ? "onednn" : kernel.substr(at + 2);
}

// Runs the baseline and each candidate in turn, each on its next cold copy,
// until the time budget (per candidate) and the repetition floor are met.
// Interleaving makes them all see the same machine: on a shared host the
// memory bandwidth drifts by tens of percent between seconds, so only figures
// measured side by side are worth quoting. Measured one after another, the
// first format of a sweep read 1.1-1.4x slower than the second, whichever it
// was (70 % 2048->11264, one token, bitmap and csr8 each way round). The
// candidates take turns at going first after the baseline. A speedup is the
// median of the per-round ratios, which a burst of noise during a few runs
// of one side cannot move.
struct Paired {
  double ms, baseline_ms, speedup;
};

template <class Baseline>
std::vector<Paired> time_interleaved(const SweepOptions& o, const std::vector<std::function<void(size_t)>>& candidates, Baseline&& baseline) {
  const size_t count = candidates.size();
  for (const auto& candidate : candidates) candidate(0);  // first touch of code paths and scratch buffers
  baseline(0);
  std::vector<std::vector<double>> c_ms(count), ratio(count);
  std::vector<double> b_ms;
  double spent = 0;
  auto timed = [](auto&& run, size_t i) {
    const auto start = std::chrono::steady_clock::now();
    run(i);
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  };
  for (size_t i = 1; spent < o.seconds_per_point * static_cast<double>(count) || b_ms.size() < static_cast<size_t>(o.min_repetitions); ++i) {
    const double b = timed(baseline, i);
    b_ms.push_back(b * 1e3);
    spent += b;
    for (size_t turn = 0; turn < count; ++turn) {
      const size_t k = (i + turn) % count;
      const double c = timed(candidates[k], i);
      c_ms[k].push_back(c * 1e3);
      ratio[k].push_back(b / c);
      spent += c;
    }
    if (b_ms.size() >= 400) break;
  }
  std::vector<Paired> out;
  for (size_t k = 0; k < count; ++k) out.push_back({median(c_ms[k]), median(b_ms), median(ratio[k])});
  return out;
}

std::vector<float> random_x(size_t n, size_t in) {
  std::mt19937 rng(static_cast<unsigned>(n * 7 + in));
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<float> x(n * in);
  for (float& v : x) v = u(rng);
  return x;
}

void write_csv(const std::string& path, const std::vector<Point>& points) {
  std::ofstream f(path);
  f << "shape,batch,sparsity,format,dtype,isa,kernel,median_ms,dense_bf16_ms,speedup_vs_dense,pct_bandwidth,gflops,planner_choice\n";
  for (const Point& p : points)
    f << p.shape.in << "->" << p.shape.out << ',' << p.batch << ',' << p.sparsity << ',' << p.format << ',' << p.dtype << ',' << isa_of(p.kernel)
      << ',' << p.kernel << ',' << p.median_ms << ',' << p.dense_ms << ',' << p.speedup << ',' << p.pct_bandwidth << ',' << p.gflops << ','
      << p.planner << '\n';
}

}  // namespace

int run_sweep(const SweepOptions& o) {
  const CpuInfo& cpu = cpu_info();
  std::printf("machine: %s, %d threads, isa %s%s\n", cpu.brand.c_str(), omp_get_max_threads(), isa_level_name(cpu.level()),
              cpu.capped_by_env ? " (LACUNA_MAX_ISA)" : "");
  const Bandwidth bw = measure_read_bandwidth(std::max<uint64_t>(o.working_set_bytes, uint64_t{1} << 30), 5);
  std::printf("memory read bandwidth: %.1f GB/s (median of 5 reads of %.1f GiB, %d threads)\n", bw.bytes_per_s / 1e9,
              static_cast<double>(bw.buffer_bytes) / (1 << 30), bw.threads);
  std::printf("weights: %s, working set >= %.1f GiB of distinct matrices per point; %.2f s and >= %d runs per point;\n"
              "times are medians, vs_dense the median ratio of runs alternated with oneDNN dense bf16\n\n",
              o.working_set_bytes ? "cold" : "warm", static_cast<double>(o.working_set_bytes) / (1 << 30), o.seconds_per_point,
              o.min_repetitions);
  const MachineModel model = MachineModel::for_bandwidth(bw.bytes_per_s, omp_get_max_threads());
  std::vector<Point> points;
  std::printf("%-12s %5s %8s %-7s %-5s %-10s %9s %9s %8s %5s %8s  %s\n", "shape", "batch", "sparsity", "format", "dtype", "isa", "median_ms",
              "dense_ms", "vs_dense", "%bw", "GFLOP/s", "planner");
  auto report = [&](const Point& p) {
    std::printf("%5zu->%-5zu %5zu %7.0f%% %-7s %-5s %-10s %9.3f %9.3f %7.2fx %4.0f%% %8.1f  %s\n", p.shape.in, p.shape.out, p.batch,
                100 * p.sparsity, p.format.c_str(), p.dtype.c_str(), isa_of(p.kernel).c_str(), p.median_ms, p.dense_ms, p.speedup,
                p.pct_bandwidth, p.gflops, p.planner.c_str());
    std::fflush(stdout);
    points.push_back(p);
  };
  for (const SweepShape& shape : o.shapes) {
    const double flop = 2.0 * static_cast<double>(shape.in * shape.out);
    // The baseline: oneDNN dense bf16, weights packed once into its preferred layout.
    std::vector<OnednnMatmul> dense, dense_int8;
    for (const Tensor& t : cold_copies(random_weight(Format::dense, DType::bf16, shape.out, shape.in, 0.0, 1), o.working_set_bytes, 1))
      dense.emplace_back(t);
    for (DType dtype : o.dtypes)
      for (double s : o.sparsities) {
        struct Candidate {
          Format format;
          TensorStats stats;
          std::vector<Tensor> copies;
        };
        std::vector<Candidate> candidates;
        for (Format f : o.formats) {
          const Tensor w = random_weight(f, dtype, shape.out, shape.in, s, 1000 + static_cast<uint64_t>(s * 100));
          candidates.push_back({f, tensor_stats(w), cold_copies(w, o.working_set_bytes, 1)});
        }
        for (size_t n : o.batches) {
          const auto x = random_x(n, shape.in);
          std::vector<float> y(n * shape.out), y_dense(n * shape.out);
          auto baseline = [&](size_t i) { dense[i % dense.size()].run(x.data(), n, y_dense.data()); };
          // Rows measured together: each `run` interleaved with the others and
          // timed against the baseline, `bytes` of weights streamed per product.
          struct Row {
            std::string format, kernel;
            uint64_t bytes;
            double sparsity;
            std::function<void(size_t)> run;
          };
          auto measure = [&](const std::vector<Row>& rows) {
            std::vector<std::function<void(size_t)>> runs;
            for (const Row& r : rows) runs.push_back(r.run);
            const std::vector<Paired> times = time_interleaved(o, runs, baseline);
            std::vector<Point> out;
            for (size_t k = 0; k < rows.size(); ++k) {
              const Row& r = rows[k];
              const Paired& t = times[k];
              out.push_back(Point{shape, n, r.sparsity, r.format, dtype_name(dtype), r.kernel, t.ms, t.baseline_ms, t.speedup,
                                  100.0 * static_cast<double>(r.bytes) / (t.ms * 1e-3) / bw.bytes_per_s,
                                  flop * static_cast<double>(n) / (t.ms * 1e-3) / 1e9, ""});
            }
            return out;
          };
          auto sparse_row = [&](const Candidate& c, const SpmmUkernel& k) {
            return Row{format_name(c.format), k.name, c.stats.payload_bytes, c.stats.sparsity(),
                       [&c, &k, &x, &y, n](size_t i) { spmm_run(k, c.copies[i % c.copies.size()], x.data(), n, y.data()); }};
          };
          std::vector<Row> rows;
          for (const Candidate& c : candidates) rows.push_back(sparse_row(c, *choose_spmm(c.copies[0].desc(), n).kernel));
          std::vector<Point> measured = measure(rows);
          // The planner picks among the measured formats and oneDNN dense in this dtype.
          std::vector<Format> options{Format::dense};
          for (const Candidate& c : candidates)
            if (c.format != Format::dense) options.push_back(c.format);
          const uint64_t nonzeros = candidates.empty() ? 0 : candidates[0].stats.nonzeros;
          const LinearPlan plan = plan_linear(dtype, shape.out, shape.in, nonzeros, n, options, model);
          for (Point& p : measured) {
            p.planner = plan.chosen.describe();
            report(p);
          }
          Point chosen{};
          if (!plan.chosen.onednn) {
            bool found = false;
            for (const Point& p : measured)
              if (p.format == format_name(plan.chosen.format) && p.kernel == plan.chosen.kernel->name) chosen = p, found = true;
            if (!found) {
              const Candidate* c = nullptr;
              for (const Candidate& cand : candidates)
                if (cand.format == plan.chosen.format) c = &cand;
              if (!c) {
                std::printf("%5zu->%-5zu %5zu  planner chose %s, which this sweep does not measure\n", shape.in, shape.out, n,
                            plan.chosen.describe().c_str());
                continue;
              }
              chosen = measure({sparse_row(*c, *plan.chosen.kernel)})[0];
            }
          } else if (plan.chosen.onednn_dtype == DType::bf16) {
            // Timed against itself, the candidate runs a different copy than the baseline
            // just before it, or it would find part of that copy still cached.
            chosen = measure({{"dense", dense[0].implementation(n), plan.chosen.bytes, 0.0,
                               [&](size_t i) { dense[(i + dense.size() / 2) % dense.size()].run(x.data(), n, y.data()); }}})[0];
          } else {
            if (dense_int8.empty())
              for (const Tensor& t : cold_copies(random_weight(Format::dense, DType::int8, shape.out, shape.in, 0.0, 2), o.working_set_bytes, 1))
                dense_int8.emplace_back(t);
            chosen = measure({{"dense", dense_int8[0].implementation(n), plan.chosen.bytes, 0.0,
                               [&](size_t i) { dense_int8[i % dense_int8.size()].run(x.data(), n, y.data()); }}})[0];
          }
          // The row is the weight's (its dtype and sparsity); what ran is in the kernel and planner columns.
          chosen.sparsity = candidates.empty() ? s : candidates[0].stats.sparsity();
          chosen.format = "auto";
          chosen.planner = plan.why();
          report(chosen);
        }
      }
  }
  if (!o.csv_path.empty()) {
    write_csv(o.csv_path, points);
    std::printf("\nwrote %s\n", o.csv_path.c_str());
  }
  if (!o.png_path.empty()) {
    if (o.csv_path.empty()) {
      std::fprintf(stderr, "lacuna: --png needs --csv\n");
      return 1;
    }
    plot("plot-sweep.py", o.csv_path, o.png_path);
  }
  return 0;
}

}  // namespace lacuna::bench
