#pragma once
// Bitmap weights expanded back into dense rows, so that a large batch can run
// through oneDNN's dense matmul. From a few dozen tokens per product, oneDNN's
// register-blocked GEMM outruns every sparse kernel on this hardware even after
// paying for the expansion, which reads the compressed weight once and writes
// the dense rows once (docs/benchmarks.md, "Prefill").
#include <cstdint>

#include "sparse/tensor.h"

namespace lacuna {

// Writes rows [row_begin, row_end) of `w` (bitmap, any dtype) as dense
// row-major [row_end - row_begin][cols] elements of its dtype to `out`; the
// rows are split over the OpenMP threads. Int8 row scales are not written
// (they do not change).
void densify_bitmap(const Tensor& w, void* out, uint64_t row_begin, uint64_t row_end);

// The same for bf16 weights, widened to f32: for hosts whose f32 FMAs
// multiply-add faster than VDPBF16PS (bf16_dot_vs_fma() < 1), where
// oneDNN's f32 matmul outruns its bf16 one.
void densify_bitmap_f32(const Tensor& w, float* out, uint64_t row_begin, uint64_t row_end);

// Rows [row_begin, row_end) into `out` (row_begin first) on the calling thread only, with AVX-512
// (VEXPANDPS / VPEXPANDW / VPEXPANDB); needs AVX-512 F, BW and VBMI2.
// Elsewhere densify_bitmap runs sparse/'s unpack_bitmap_rows.
void densify_bitmap_rows_avx512(const Tensor& w, void* out, uint64_t row_begin, uint64_t row_end);
void densify_bitmap_rows_f32_avx512(const Tensor& w, float* out, uint64_t row_begin, uint64_t row_end);

}  // namespace lacuna
