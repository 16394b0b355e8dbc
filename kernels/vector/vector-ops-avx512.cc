#include <immintrin.h>

#include <xsimd/xsimd.hpp>

#include "kernels/vector/vector-ops-isa.h"

namespace lacuna::kernels {
namespace {
#include "kernels/vector/vector-ops.inc"

// A 16 x 16 tile transposed in registers: four perfect shuffles of its 256
// elements (each moves the top bit of the row number to the bottom of the
// lane number), one VPERMT2PS per output vector each.
inline void transpose_16x16(__m512 (&v)[16]) {
  const __m512i low_halves = _mm512_set_epi32(23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
  const __m512i high_halves = _mm512_set_epi32(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8);
  unrolled_for<4>([&](auto) LACUNA_INLINE_LAMBDA {
    __m512 w[16];
    unrolled_for<8>([&](auto i) LACUNA_INLINE_LAMBDA {
      w[2 * i] = _mm512_permutex2var_ps(v[i], low_halves, v[i + 8]);
      w[2 * i + 1] = _mm512_permutex2var_ps(v[i], high_halves, v[i + 8]);
    });
    unrolled_for<16>([&](auto i) LACUNA_INLINE_LAMBDA { v[i] = w[i]; });
  });
}

// transpose a 16 x 16 tile at a time, the edges masked. The tiles
// of 16 columns go down all the rows before the next 16 columns, so each of
// the 16 output rows they write is written in order: tile row by tile row,
// every tile wrote 16 rows far apart, and the result's transpose in a 70 %
// bf16 prefill took about twice the samples.
void transpose_tiles(const float* in, size_t ld_in, size_t rows, size_t cols, float* out, size_t ld_out) {
  for (size_t c0 = 0; c0 < cols; c0 += 16) {
    const __mmask16 col_lanes = first_lanes(cols - c0);
    for (size_t r0 = 0; r0 < rows; r0 += 16) {
      const __mmask16 row_lanes = first_lanes(rows - r0);
      __m512 v[16];
      unrolled_for<16>([&](auto i) LACUNA_INLINE_LAMBDA {
        v[i] = r0 + i < rows ? _mm512_maskz_loadu_ps(col_lanes, in + (r0 + i) * ld_in + c0) : _mm512_setzero_ps();
      });
      transpose_16x16(v);
      unrolled_for<16>([&](auto j) LACUNA_INLINE_LAMBDA {
        if (c0 + j >= cols) return;
        _mm512_mask_storeu_ps(out + (c0 + j) * ld_out + r0, row_lanes, v[j]);
      });
    }
  }
}

}  // namespace

const VectorOps vector_ops_avx512{"avx512",         &dot,     &axpy,           &dot_rows, &weighted_row_sum, &dot_rows_f16, &weighted_row_sum_f16, &quantize_s8,
                                  &gated_activation, &softmax, &argmax, &dequantize_row, &to_bf16, &to_f16, &transpose_tiles};

}  // namespace lacuna::kernels
