// Compiled with -mavx512f -mavx512bw -mavx512vbmi2; densify_bitmap calls it
// only where those features are usable.
#include <immintrin.h>

#include <algorithm>
#include <bit>

#include "kernels/densify.h"
#include "kernels/spmm-avx512/bitmap-small-n.h"
#include "sparse/element.h"
#include "sparse/error.h"

namespace lacuna {
namespace {

using kernels::avx512::load_mask;
using kernels::avx512::load_unfolded;

// One group: the 64 bytes at the value pointer expanded by the mask, stored
// whole, or only its first `tail` elements in a row's last, partial group.
template <class T>
void store_group(T* dst, BitmapMask<T> m, const T* p, uint64_t tail, uint64_t width) {
  const __m512i v = load_unfolded<__m512i>(p);
  if constexpr (sizeof(T) == 4) {
    const __m512 e = kernels::avx512::fresh_expand_ps(static_cast<uint16_t>(m), _mm512_castsi512_ps(v));
    tail == width ? _mm512_storeu_ps(dst, e) : _mm512_mask_storeu_ps(dst, static_cast<__mmask16>((1u << tail) - 1), e);
  } else if constexpr (sizeof(T) == 2) {
    const __m512i e = kernels::avx512::fresh_expand_epi16(m, v);
    tail == width ? _mm512_storeu_si512(dst, e) : _mm512_mask_storeu_epi16(dst, static_cast<__mmask32>((1u << tail) - 1), e);
  } else {
    const __m512i e = kernels::avx512::fresh_expand_epi8(m, v);
    tail == width ? _mm512_storeu_si512(dst, e) : _mm512_mask_storeu_epi8(dst, (uint64_t{1} << tail) - 1, e);
  }
}

}  // namespace

void densify_bitmap_rows_f32_avx512(const Tensor& w, float* out, uint64_t row_begin, uint64_t row_end) {
  const TensorDesc& d = w.desc();
  if (d.dtype != DType::bf16) throw Error("densify_bitmap_rows_f32_avx512 needs bf16 weights");
  const uint64_t cols = d.cols(), groups = group_count(d);
  const uint64_t* row_ptr = w.section<uint64_t>(Section::row_ptr);
  const auto* masks = w.section<uint32_t>(Section::masks);
  const auto* values = w.section<uint16_t>(Section::values);
  // bf16 is the upper half of an f32: widen each half of the expanded group and shift it up.
  const auto widen = [](__m256i half) { return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(half), 16)); };
  for (uint64_t r = row_begin; r < row_end; ++r) {
    float* row = out + (r - row_begin) * cols;
    const uint16_t* p = values + row_ptr[r];
    for (uint64_t g = 0; g < groups; ++g) {
      const uint32_t m = load_mask(masks + r * groups + g);
      const __m512i e = kernels::avx512::fresh_expand_epi16(m, load_unfolded<__m512i>(p));
      p += std::popcount(m);
      const __m512 lo = widen(_mm512_castsi512_si256(e)), hi = widen(_mm512_extracti64x4_epi64(e, 1));
      const uint64_t tail = std::min<uint64_t>(32, cols - g * 32);
      float* dst = row + g * 32;
      if (tail == 32) {
        _mm512_storeu_ps(dst, lo);
        _mm512_storeu_ps(dst + 16, hi);
      } else {
        _mm512_mask_storeu_ps(dst, static_cast<__mmask16>((1u << std::min<uint64_t>(tail, 16)) - 1), lo);
        if (tail > 16) _mm512_mask_storeu_ps(dst + 16, static_cast<__mmask16>((1u << (tail - 16)) - 1), hi);
      }
    }
  }
}

void densify_bitmap_rows_avx512(const Tensor& w, void* out, uint64_t row_begin, uint64_t row_end) {
  const TensorDesc& d = w.desc();
  const uint64_t cols = d.cols(), width = bitmap_group_width(d.dtype), groups = group_count(d);
  const uint64_t last = cols - (groups - 1) * width;  // columns in the last group
  const uint64_t* row_ptr = w.section<uint64_t>(Section::row_ptr);
  visit_dtype(d.dtype, [&]<class E>(E) {
    using T = typename E::type;
    using M = BitmapMask<T>;
    const M* masks = w.section<M>(Section::masks);
    const T* values = w.section<T>(Section::values);
    for (uint64_t r = row_begin; r < row_end; ++r) {
      T* row = static_cast<T*>(out) + (r - row_begin) * cols;
      const T* p = values + row_ptr[r];
      for (uint64_t g = 0; g < groups; ++g) {
        const M m = load_mask(masks + r * groups + g);
        store_group<T>(row + g * width, m, p, g + 1 == groups ? last : width, width);
        p += std::popcount(m);
      }
    }
  });
}

}  // namespace lacuna
