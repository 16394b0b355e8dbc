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

// One bf16 group widened to f32 (bf16 is the upper half of an f32): each
// half of the expanded group zero-extended and shifted up, stored whole, or
// only its first `tail` elements in a row's last, partial group.
void store_group_widened(float* dst, uint32_t m, const uint16_t* p, uint64_t tail, uint64_t width) {
  const __m512i e = kernels::avx512::fresh_expand_epi16(m, load_unfolded<__m512i>(p));
  const auto widen = [](__m256i half) { return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(half), 16)); };
  const __m512 lo = widen(_mm512_castsi512_si256(e)), hi = widen(_mm512_extracti64x4_epi64(e, 1));
  if (tail == width) {
    _mm512_storeu_ps(dst, lo);
    _mm512_storeu_ps(dst + 16, hi);
    return;
  }
  _mm512_mask_storeu_ps(dst, static_cast<__mmask16>((1u << std::min<uint64_t>(tail, 16)) - 1), lo);
  if (tail > 16) _mm512_mask_storeu_ps(dst + 16, static_cast<__mmask16>((1u << (tail - 16)) - 1), hi);
}

// Rows [row_begin, row_end) of `w` (values of type T) into `out`, row_begin
// first, each group written by store(dst, mask, values, tail, width): the
// row walk both expansions share. Both streams are requested ahead as the
// one-token tiles request them (values every second group, masks every
// eighth): with the hardware prefetcher alone, a cold 70 % bf16 2048->11264
// expansion on one thread took 8.1 cycles a group against 4.5 from cache;
// with the requests, cold on one thread, 1.8-1.9x as fast, and 1.15-2.5x
// over the mini model's shapes at 50 and 70 %, bf16 and int8
// (docs/benchmarks.md, "The expansion's streams requested ahead").
template <class T, class Out, class Store>
void densify_rows(const Tensor& w, Out* out, uint64_t row_begin, uint64_t row_end, Store&& store) {
  using M = BitmapMask<T>;
  const TensorDesc& d = w.desc();
  const uint64_t cols = d.cols(), width = bitmap_group_width(d.dtype), groups = group_count(d);
  const uint64_t last = cols - (groups - 1) * width;  // columns in the last group
  const uint64_t* row_ptr = w.section<uint64_t>(Section::row_ptr);
  const M* masks = w.section<M>(Section::masks);
  const T* values = w.section<T>(Section::values);
  for (uint64_t r = row_begin; r < row_end; ++r) {
    Out* row = out + (r - row_begin) * cols;
    const T* p = values + row_ptr[r];
    for (uint64_t g = 0; g < groups; ++g) {
      if (g % 2 == 0) kernels::avx512::prefetch_t0(reinterpret_cast<const char*>(p) + kernels::avx512::kValuesAhead);
      if (g % 8 == 0) kernels::avx512::prefetch_t0(reinterpret_cast<const char*>(masks + r * groups + g) + kernels::avx512::kMasksAhead);
      const M m = load_mask(masks + r * groups + g);
      store(row + g * width, m, p, g + 1 == groups ? last : width, width);
      p += std::popcount(m);
    }
  }
}

}  // namespace

void densify_bitmap_rows_f32_avx512(const Tensor& w, float* out, uint64_t row_begin, uint64_t row_end) {
  if (w.desc().dtype != DType::bf16) throw Error("densify_bitmap_rows_f32_avx512 needs bf16 weights");
  densify_rows<uint16_t>(w, out, row_begin, row_end, store_group_widened);
}

void densify_bitmap_rows_avx512(const Tensor& w, void* out, uint64_t row_begin, uint64_t row_end) {
  visit_dtype(w.desc().dtype, [&]<class E>(E) {
    using T = typename E::type;
    densify_rows<T>(w, static_cast<T*>(out), row_begin, row_end, store_group<T>);
  });
}

}  // namespace lacuna
