#pragma once
// Sixteen stored weights from `values` starting at element `first`, as f32
// (int8 before its row scale), and sixteen column indices (u16 or u32) as
// dwords; lanes outside `m` read nothing and are zero.
// For files compiled with -mavx512f -mavx512bw -mavx512vl.
#include <immintrin.h>

#include <cstdint>

#include "sparse/dtype.h"

namespace lacuna::kernels::avx512 {

template <DType D>
inline __m512 load_f32x16(const void* values, uint64_t first, __mmask16 m) {
  if constexpr (D == DType::f32) {
    return _mm512_maskz_loadu_ps(m, static_cast<const float*>(values) + first);
  } else if constexpr (D == DType::bf16) {
    const __m256i h = _mm256_maskz_loadu_epi16(m, static_cast<const uint16_t*>(values) + first);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  } else {
    const __m128i b = _mm_maskz_loadu_epi8(m, static_cast<const int8_t*>(values) + first);
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(b));
  }
}

template <class Index>
inline __m512i load_indices_x16(const Index* p, __mmask16 m) {
  if constexpr (sizeof(Index) == 2)
    return _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, p));
  else
    return _mm512_maskz_loadu_epi32(m, p);
}

}  // namespace lacuna::kernels::avx512
