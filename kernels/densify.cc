#include "kernels/densify.h"

#include <omp.h>

#include <algorithm>
#include <cstddef>
#include <string>

#include "kernels/common/row-walk.h"
#include "kernels/cpu-features.h"
#include "sparse/convert.h"
#include "sparse/error.h"

namespace lacuna {

namespace {

bool avx512_expand() {
  constexpr uint64_t kAvx512 = kAvx512F | kAvx512Bw | kAvx512Vbmi2;
  return (cpu_info().features & kAvx512) == kAvx512;
}

// body(begin, end) on each OpenMP thread, for its share of rows [row_begin, row_end).
template <class Rows>
void split_rows(uint64_t row_begin, uint64_t row_end, Rows&& body) {
  const uint64_t rows = row_end - row_begin;
#pragma omp parallel
  {
    const auto t = static_cast<uint64_t>(omp_get_thread_num()), parts = static_cast<uint64_t>(omp_get_num_threads());
    body(row_begin + rows * t / parts, row_begin + rows * (t + 1) / parts);
  }
}

void check_rows(const Tensor& w, uint64_t row_begin, uint64_t row_end) {
  if (row_begin > row_end || row_end > w.desc().rows())
    throw Error("rows " + std::to_string(row_begin) + ".." + std::to_string(row_end) + " are outside the weight's " + std::to_string(w.desc().rows()));
}

}  // namespace

void densify_bitmap(const Tensor& w, void* out, uint64_t row_begin, uint64_t row_end) {
  if (w.desc().format != Format::bitmap) throw Error("densify_bitmap needs a bitmap tensor");
  check_rows(w, row_begin, row_end);
  const bool vector = avx512_expand();
  const uint64_t row_bytes = w.desc().cols() * dtype_size(w.desc().dtype);
  split_rows(row_begin, row_end, [&](uint64_t begin, uint64_t end) {
    void* part = static_cast<std::byte*>(out) + (begin - row_begin) * row_bytes;
    if (vector)
      densify_bitmap_rows_avx512(w, part, begin, end);
    else
      unpack_bitmap_rows(w, part, begin, end);
  });
}

void densify_bitmap_f32(const Tensor& w, float* out, uint64_t row_begin, uint64_t row_end) {
  const TensorDesc& d = w.desc();
  if (d.format != Format::bitmap || d.dtype != DType::bf16) throw Error("densify_bitmap_f32 needs a bf16 bitmap tensor");
  check_rows(w, row_begin, row_end);
  const bool vector = avx512_expand();
  const uint64_t cols = d.cols();
  split_rows(row_begin, row_end, [&](uint64_t begin, uint64_t end) {
    float* part = out + (begin - row_begin) * cols;
    if (vector) return densify_bitmap_rows_f32_avx512(w, part, begin, end);
    kernels::with_index_type(w, [&]<class Index>(Index*) {
      for (uint64_t r = begin; r < end; ++r) {
        float* row = part + (r - begin) * cols;
        std::fill(row, row + cols, 0.0f);
        kernels::for_each_in_row<Format::bitmap, DType::bf16, Index>(w, r, [&](uint64_t c, float v) { row[c] = v; });
      }
    });
  });
}

}  // namespace lacuna
