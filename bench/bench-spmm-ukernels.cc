// One Google Benchmark per microkernel of kernels/spmm-ukernels.inc, at a few
// batch sizes and sparsities, on a warm 4096x4096 weight: the kernel's compute
// speed. Memory-bound behaviour is `lacuna bench sweep`'s job (cold weights).
#include <benchmark/benchmark.h>

#include <random>

#include "bench/common/weights.h"
#include "kernels/spmm.h"

namespace lacuna::bench {
namespace {

constexpr size_t kRows = 4096, kCols = 4096;

void run_ukernel(benchmark::State& state, const SpmmUkernel* k) {
  const size_t n = static_cast<size_t>(state.range(0));
  const double sparsity = static_cast<double>(state.range(1)) / 100.0;
  if (std::string why = cpu_info().why_unavailable(k->features); !why.empty()) {
    state.SkipWithError(why.c_str());
    return;
  }
  const Tensor w = random_weight(k->format, k->dtype, kRows, kCols, sparsity, 7);
  std::vector<float> x(n * kCols), y(n * kRows);
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> u(-1, 1);
  for (float& v : x) v = u(rng);
  for (auto _ : state) {
    spmm_run(*k, w, x.data(), n, y.data());
    benchmark::DoNotOptimize(y.data());
  }
  state.counters["bytes/s"] = benchmark::Counter(static_cast<double>(w.payload_bytes()), benchmark::Counter::kIsIterationInvariantRate);
  state.counters["dense_flop/s"] = benchmark::Counter(2.0 * kRows * kCols * static_cast<double>(n), benchmark::Counter::kIsIterationInvariantRate);
}

const bool registered = [] {
  for (const SpmmUkernel& k : spmm_ukernels()) {
    auto* b = benchmark::RegisterBenchmark(k.name, run_ukernel, &k);
    for (int64_t n : {1, 4, 16, 64})
      if (static_cast<size_t>(n) >= k.min_n && (k.max_n == 0 || static_cast<size_t>(n) <= k.max_n))
        for (int64_t pct : {50, 90}) b->Args({n, pct});
    b->ArgNames({"n", "sparsity%"})->Unit(benchmark::kMicrosecond);
  }
  return true;
}();

}  // namespace
}  // namespace lacuna::bench

BENCHMARK_MAIN();
