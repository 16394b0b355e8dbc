// Large batches on bitmap weights: the sparse kernel dispatch picks for the
// batch, the small-batch kernel (dispatch's pick for one token, which takes
// up to its max_n tokens and is what the server runs at every size) and the
// 64-token pick in chunks of its max_n where the batch exceeds it (the AMX
// int8 tiles), against the weight expanded into dense rows block by block
// and run through oneDNN (densified_product, as the engine runs it), for
// bf16 also expanded into f32 rows for oneDNN's f32 matmul, with oneDNN on
// its own packed dense copy as the baseline, in the same run.
// Warm weights: at these batch sizes the products are bound by compute.
//   bench-densify [--quick]
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include "bench/common/stats.h"
#include "bench/common/weights.h"
#include "kernels/dense-onednn/onednn-matmul.h"
#include "kernels/densified-product.h"
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
  std::printf("warm weights; medians of %d runs; x: oneDNN on its packed dense copy (the baseline) over each of the others\n\n", runs);
  std::printf("%-12s %-5s %5s %5s %10s %10s %10s %14s %14s %10s %8s %8s %8s %8s %8s  %s\n", "shape", "dtype", "sp", "n", "sparse_ms", "small_ms",
              "chunks_ms", "densify+dnn_ms", "to_f32+dnn_ms", "dense_ms", "sparse", "small", "chunks", "densify", "to_f32",
              "sparse kernel / small-batch kernel / chunked kernel");
  struct Shape {
    size_t in, out;
  };
  const std::vector<Shape> shapes = quick ? std::vector<Shape>{{2048, 11264}} : std::vector<Shape>{{2048, 11264}, {5632, 2048}};
  for (const Shape& s : shapes)
    for (DType dtype : {DType::bf16, DType::int8})
      for (double sparsity : {0.5, 0.7, 0.9}) {
        const Tensor w = bench::random_weight(Format::bitmap, dtype, s.out, s.in, sparsity, 1);
        const Tensor dense = unpack(w);
        OnednnMatmul packed(dense);
        const bool bf16 = dtype == DType::bf16;
        std::mt19937 rng(2);
        std::uniform_real_distribution<float> u(-1, 1);
        const SpmmUkernel& small_kernel = *choose_spmm(w.desc(), 1).kernel;
        const SpmmUkernel& chunk_kernel = *choose_spmm(w.desc(), 64).kernel;
        for (size_t n : {16, 32, 64, 96, 128, 192, 256}) {
          std::vector<float> x(n * s.in), y(n * s.out);
          for (float& v : x) v = u(rng);
          const SpmmChoice k = choose_spmm(w.desc(), n);
          const double sparse = median_ms([&] { spmm_run(*k.kernel, w, x.data(), n, y.data()); }, runs);
          const bool small_fits = !small_kernel.max_n || n <= small_kernel.max_n;
          const double small = small_fits ? median_ms([&] { spmm_run(small_kernel, w, x.data(), n, y.data()); }, runs) : 0;
          const size_t chunk = chunk_kernel.max_n;
          const bool chunked = chunk && n > chunk;
          const double chunks = chunked ? median_ms(
                                              [&] {
                                                for (size_t at = 0; at < n; at += chunk)
                                                  spmm_run(chunk_kernel, w, &x[at * s.in], std::min(chunk, n - at), &y[at * s.out]);
                                              },
                                              runs)
                                        : 0;
          const double expanded = median_ms([&] { densified_product(w, dtype, x.data(), n, y.data()); }, runs);
          const double to_f32 = bf16 ? median_ms([&] { densified_product(w, DType::f32, x.data(), n, y.data()); }, runs) : 0;
          const double base = median_ms([&] { packed.run(x.data(), n, y.data()); }, runs);
          char shape[32];
          std::snprintf(shape, sizeof shape, "%zu->%zu", s.in, s.out);
          char small_ms[16] = "-", small_x[16] = "-";
          if (small_fits) {
            std::snprintf(small_ms, sizeof small_ms, "%.3f", small);
            std::snprintf(small_x, sizeof small_x, "%.2fx", base / small);
          }
          char chunks_ms[16] = "-", chunks_x[16] = "-";
          if (chunked) {
            std::snprintf(chunks_ms, sizeof chunks_ms, "%.3f", chunks);
            std::snprintf(chunks_x, sizeof chunks_x, "%.2fx", base / chunks);
          }
          char to_f32_ms[16] = "-", to_f32_x[16] = "-";
          if (bf16) {
            std::snprintf(to_f32_ms, sizeof to_f32_ms, "%.3f", to_f32);
            std::snprintf(to_f32_x, sizeof to_f32_x, "%.2fx", base / to_f32);
          }
          std::printf("%-12s %-5s %4.0f%% %5zu %10.3f %10s %10s %14.3f %14s %10.3f %7.2fx %8s %8s %7.2fx %8s  %s / %s / %s\n", shape, dtype_name(dtype),
                      100 * sparsity, n, sparse, small_ms, chunks_ms, expanded, to_f32_ms, base, base / sparse, small_x, chunks_x, base / expanded, to_f32_x,
                      k.kernel->name, small_kernel.name, chunk_kernel.name);
          std::fflush(stdout);
        }
      }
}
