#include "kernels/densify.h"

#include <omp.h>

#include <bit>
#include <cstring>

#include "kernels/cpu-features.h"
#include "sparse/element.h"
#include "sparse/error.h"

namespace lacuna {

void densify_bitmap_rows_portable(const Tensor& w, void* out, uint64_t row_begin, uint64_t row_end) {
  const TensorDesc& d = w.desc();
  const uint64_t cols = d.cols(), width = bitmap_group_width(d.dtype), groups = group_count(d);
  const uint64_t* row_ptr = w.section<uint64_t>(Section::row_ptr);
  visit_dtype(d.dtype, [&]<class E>(E) {
    using T = typename E::type;
    using M = BitmapMask<T>;
    const M* masks = w.section<M>(Section::masks);
    const T* values = w.section<T>(Section::values);
    for (uint64_t r = row_begin; r < row_end; ++r) {
      T* row = static_cast<T*>(out) + r * cols;
      std::memset(static_cast<void*>(row), 0, cols * sizeof(T));
      uint64_t k = row_ptr[r];
      for (uint64_t g = 0; g < groups; ++g)
        for (M m = masks[r * groups + g]; m; m &= m - 1) row[g * width + std::countr_zero(m)] = values[k++];
    }
  });
}

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
      densify_bitmap_rows_portable(w, out, begin, end);
  }
}

}  // namespace lacuna
