// Compiled with -mavx512f -mavx512bw -mavx512vbmi2; densify_bitmap calls it
// only where those features are usable.
#include <immintrin.h>

#include <bit>

#include "kernels/densify.h"
#include "kernels/spmm-avx512/bitmap-small-n.h"
#include "sparse/element.h"

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
      T* row = static_cast<T*>(out) + r * cols;
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
