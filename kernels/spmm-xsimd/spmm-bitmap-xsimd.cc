// Portable bitmap kernels written with xsimd, for x86-64 CPUs without AVX-512
// (built for AVX2 + FMA here; any xsimd target compiles from the same code).
// Without a register expand instruction each group is first decompressed into
// a small f32 buffer by walking its mask, then multiplied with vector FMAs.
#include <bit>
#include <xsimd/xsimd.hpp>

#include "kernels/common/row-walk.h"
#include "kernels/common/token-tiles.h"
#include "kernels/spmm-ukernels.h"

namespace lacuna {
namespace {

using Batch = xsimd::batch<float>;

// One row for NT tokens (the row stays in cache for the next token tile).
template <DType D, int NT>
void bitmap_row(const SpmmArgs& a, uint64_t r, size_t n0) {
  using E = Element<D>;
  using T = typename E::type;
  using M = BitmapMask<T>;
  constexpr size_t kWidth = 64 / sizeof(T);
  static_assert(kWidth % Batch::size == 0);
  const Tensor& w = *a.w;
  const uint64_t groups = group_count(w.desc());
  const M* masks = w.section<M>(Section::masks);
  const uint64_t* row_ptr = w.section<uint64_t>(Section::row_ptr);
  const T* values = w.section<T>(Section::values);
  const float* scales = D == DType::int8 ? w.section<float>(Section::scales) : nullptr;
  const float* x = static_cast<const float*>(a.x) + n0 * a.ldx;
  alignas(64) float dense[kWidth];
  {
    Batch acc[NT];
    for (int j = 0; j < NT; ++j) acc[j] = Batch(0.0f);
    const T* p = values + row_ptr[r];
    for (uint64_t g = 0; g < groups; ++g) {
      const M m = masks[r * groups + g];
      if (!m) continue;
      std::fill(dense, dense + kWidth, 0.0f);
      for (M bits = m; bits; bits &= bits - 1) dense[std::countr_zero(bits)] = E::to_f32(*p++);
      for (size_t c = 0; c < kWidth; c += Batch::size) {
        const Batch wv = Batch::load_aligned(dense + c);
        for (int j = 0; j < NT; ++j) acc[j] = xsimd::fma(wv, Batch::load_unaligned(x + j * a.ldx + g * kWidth + c), acc[j]);
      }
    }
    const float scale = scales ? scales[r] : 1.0f;
    for (int j = 0; j < NT; ++j) a.y[(n0 + j) * a.ldy + r] = xsimd::hadd(acc[j]) * scale;
  }
}

template <DType D>
void spmm_bitmap(const SpmmArgs& a) {
  for (uint64_t r = a.row_begin; r < a.row_end; ++r)
    kernels::for_token_tiles<4>(a.n, [&](auto tile, size_t n0) { bitmap_row<D, tile>(a, r, n0); });
}

}  // namespace

void lacuna_spmm_bitmap_f32_ukernel_1x4__xsimd_avx2(const SpmmArgs& a) { spmm_bitmap<DType::f32>(a); }
void lacuna_spmm_bitmap_bf16_ukernel_1x4__xsimd_avx2(const SpmmArgs& a) { spmm_bitmap<DType::bf16>(a); }
void lacuna_spmm_bitmap_int8_ukernel_1x4__xsimd_avx2(const SpmmArgs& a) { spmm_bitmap<DType::int8>(a); }

}  // namespace lacuna
