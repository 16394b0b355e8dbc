#include "kernels/densify.h"

#include <omp.h>

#include "kernels/cpu-features.h"
#include "sparse/convert.h"
#include "sparse/error.h"

namespace lacuna {

void densify_bitmap(const Tensor& w, void* out) {
  if (w.desc().format != Format::bitmap) throw Error("densify_bitmap needs a bitmap tensor");
  constexpr uint64_t kAvx512 = kAvx512F | kAvx512Bw | kAvx512Vbmi2;
  const bool vector = (cpu_info().features & kAvx512) == kAvx512;
  const uint64_t rows = w.desc().rows();
#pragma omp parallel
  {
    const auto t = static_cast<uint64_t>(omp_get_thread_num()), parts = static_cast<uint64_t>(omp_get_num_threads());
    const uint64_t begin = rows * t / parts, end = rows * (t + 1) / parts;
    if (vector)
      densify_bitmap_rows_avx512(w, out, begin, end);
    else
      unpack_bitmap_rows(w, out, begin, end);
  }
}

}  // namespace lacuna
