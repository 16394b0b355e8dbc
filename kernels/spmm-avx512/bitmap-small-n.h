#pragma once
// Bitmap-blocked weights at small batch (decode): the product is bound by
// memory, so the kernel must stream the compressed weights at full bandwidth.
// Each group of one weight row is one 64-byte load at the row's value pointer
// expanded in a register by the group's mask (VPEXPAND*, register form: the
// memory form is microcoded and slow), then one dot-product instruction per
// token. R rows are walked together so R independent pointer chains (load ->
// popcount -> advance) are in flight; NT tokens share each expanded group.
//
// Included only by files compiled with the ISA flags their Traits need.
#include <immintrin.h>

#include <bit>

#include "kernels/spmm.h"

namespace lacuna::kernels::avx512 {

// A 64-byte load the compiler may not fold into the instruction that uses it:
// GCC turns load + VPEXPAND into the memory form of VPEXPAND, which is
// microcoded and several times slower than load + register-form expand.
template <class V>
inline V load_unfolded(const void* p) {
  V v;
  static_assert(sizeof(V) == 64);
  __asm__("vmovdqu64 %1, %0" : "=v"(v) : "m"(*static_cast<const char(*)[64]>(p)));
  return v;
}

// Traits: Value (stored element), Mask, XElem (activation element), kWidth
// (weights per group), Acc, WVec, XVec, zero(), expand(m, p), load_x(p),
// dot(acc, w, x), kRowSum and row_sum(acc, w) (for zero-point compensation),
// finish(acc, row_sum, row_scale, x_scale) -> float.
template <class K, int R, int NT>
inline void bitmap_tile(const SpmmArgs& a, uint64_t r0, size_t n0) {
  const Tensor& w = *a.w;
  const uint64_t groups = group_count(w.desc());
  const auto* masks = w.section<typename K::Mask>(Section::masks) + r0 * groups;
  const uint64_t* row_ptr = w.section<uint64_t>(Section::row_ptr);
  const auto* values = w.section<typename K::Value>(Section::values);
  const auto* x = static_cast<const typename K::XElem*>(a.x) + n0 * a.ldx;
  const typename K::Value* p[R];
  typename K::Acc acc[R][NT];
  typename K::Acc sums[R];
  for (int i = 0; i < R; ++i) {
    p[i] = values + row_ptr[r0 + i];
    sums[i] = K::zero();
    for (int j = 0; j < NT; ++j) acc[i][j] = K::zero();
  }
  for (uint64_t g = 0; g < groups; ++g) {
    typename K::XVec xv[NT];
    for (int j = 0; j < NT; ++j) xv[j] = K::load_x(x + j * a.ldx + g * K::kWidth);
    for (int i = 0; i < R; ++i) {
      const typename K::Mask m = masks[i * groups + g];
      const typename K::WVec wv = K::expand(m, p[i]);
      p[i] += std::popcount(m);
      if constexpr (K::kRowSum) sums[i] = K::row_sum(sums[i], wv);
      for (int j = 0; j < NT; ++j) acc[i][j] = K::dot(acc[i][j], wv, xv[j]);
    }
  }
  const float* scales = w.desc().dtype == DType::int8 ? w.section<float>(Section::scales) : nullptr;
  for (int i = 0; i < R; ++i)
    for (int j = 0; j < NT; ++j)
      a.y[(n0 + j) * a.ldy + r0 + i] =
          K::finish(acc[i][j], sums[i], scales ? scales[r0 + i] : 1.0f, a.x_scale ? a.x_scale[n0 + j] : 1.0f);
}

// Runs tile<R, NT> for the last `rest` (< NTMAX) tokens.
template <class K, int R, int NT>
inline void bitmap_rest(const SpmmArgs& a, uint64_t r0, size_t n0, size_t rest) {
  if constexpr (NT >= 1) {
    if (rest == NT)
      bitmap_tile<K, R, NT>(a, r0, n0);
    else
      bitmap_rest<K, R, NT - 1>(a, r0, n0, rest);
  }
}

template <class K, int R, int NTMAX>
inline void bitmap_rows(const SpmmArgs& a, uint64_t r0) {
  size_t n0 = 0;
  for (; n0 + NTMAX <= a.n; n0 += NTMAX) bitmap_tile<K, R, NTMAX>(a, r0, n0);
  if (n0 < a.n) bitmap_rest<K, R, NTMAX - 1>(a, r0, n0, a.n - n0);
}

template <class K, int R, int NTMAX>
void bitmap_small_n(const SpmmArgs& a) {
  uint64_t r = a.row_begin;
  for (; r + R <= a.row_end; r += R) bitmap_rows<K, R, NTMAX>(a, r);
  for (; r < a.row_end; ++r) bitmap_rows<K, 1, NTMAX>(a, r);
}

}  // namespace lacuna::kernels::avx512
