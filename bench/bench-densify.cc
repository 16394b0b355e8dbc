// Large batches on bitmap weights: the fastest sparse kernel against the
// weight expanded into dense rows and run through oneDNN in place, with
// oneDNN on its own packed dense copy as the baseline, in the same run.
// Warm weights: at these batch sizes the products are bound by compute.
//   bench-densify [--quick]
#include <omp.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include "bench/common/stats.h"
#include "bench/common/weights.h"
#include "kernels/dense-onednn/onednn-matmul.h"
#include "kernels/densify.h"
#include "kernels/spmm.h"
#include "sparse/convert.h"

namespace {

using namespace lacuna;
using bench::median;

template <class F>
double median_ms(F&& f, int runs) {
  f();
  std::vector<double> t;
  for (int r = 0; r < runs; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    t.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  return median(t);
}

}  // namespace

int main(int argc, char** argv) {
  const bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
  const int runs = quick ? 3 : 9;
  std::printf("machine: %s, %d threads, isa %s\n", cpu_info().brand.c_str(), omp_get_max_threads(), isa_level_name(cpu_info().level()));
  std::printf("warm weights; medians of %d runs; x: oneDNN on its packed dense copy (the baseline) over the other two\n\n", runs);
  std::printf("%-12s %-5s %5s %5s %10s %14s %10s %8s %8s  %s\n", "shape", "dtype", "sp", "n", "sparse_ms", "densify+dnn_ms", "dense_ms", "sparse", "densify",
              "sparse kernel");
  struct Shape {
    size_t in, out;
  };
  const std::vector<Shape> shapes = quick ? std::vector<Shape>{{2048, 11264}} : std::vector<Shape>{{2048, 11264}, {5632, 2048}};
  for (const Shape& s : shapes)
    for (DType dtype : {DType::bf16, DType::int8})
      for (double sparsity : {0.7, 0.9}) {
        const Tensor w = bench::random_weight(Format::bitmap, dtype, s.out, s.in, sparsity, 1);
        const Tensor dense = unpack(w);
        OnednnMatmul packed(dense);
        OnednnMatmul in_place(dense, OnednnMatmul::Weights::in_place);
        // Starts as a copy of the dense weight, so that its int8 scales are in place.
        std::vector<std::byte> scratch(dense.data(), dense.data() + dense.payload_bytes());
        const Tensor expanded_weight = Tensor::wrap(dense.desc(), scratch.data(), nullptr);
        std::mt19937 rng(2);
        std::uniform_real_distribution<float> u(-1, 1);
        for (size_t n : {16, 32, 64, 128, 256}) {
          std::vector<float> x(n * s.in), y(n * s.out);
          for (float& v : x) v = u(rng);
          const SpmmChoice k = choose_spmm(w.desc(), n);
          const double sparse = median_ms([&] { spmm_run(*k.kernel, w, x.data(), n, y.data()); }, runs);
          const double expanded = median_ms(
              [&] {
                densify_bitmap(w, scratch.data());
                in_place.rebind(expanded_weight);
                in_place.run(x.data(), n, y.data());
              },
              runs);
          const double base = median_ms([&] { packed.run(x.data(), n, y.data()); }, runs);
          char shape[32];
          std::snprintf(shape, sizeof shape, "%zu->%zu", s.in, s.out);
          std::printf("%-12s %-5s %4.0f%% %5zu %10.3f %14.3f %10.3f %7.2fx %7.2fx  %s\n", shape, dtype_name(dtype), 100 * sparsity, n, sparse, expanded,
                      base, base / sparse, base / expanded, k.kernel->name);
          std::fflush(stdout);
        }
      }
}
