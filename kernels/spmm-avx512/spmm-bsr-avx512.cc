// BSR with 16x1 blocks at small batch: one block is 16 consecutive output rows
// of one column, i.e. one vector. Each block costs one load, one conversion
// and one FMA per token against the broadcast activation, and the 16 outputs
// are stored as one vector. Compiled with -mavx512f -mavx512bw -mavx512vl.
#include <immintrin.h>

#include <algorithm>

#include "kernels/common/row-walk.h"
#include "kernels/common/token-tiles.h"
#include "kernels/spmm-avx512/load-f32x16.h"
#include "kernels/spmm-ukernels.h"

namespace lacuna {
namespace {

constexpr uint64_t kBlock = 16;

template <DType D, class Index, int NT>
inline void block_row(const SpmmArgs& a, uint64_t bi, size_t n0) {
  const Tensor& w = *a.w;
  const uint64_t* row_ptr = w.section<uint64_t>(Section::row_ptr);
  const Index* cols = w.section<Index>(Section::col_idx);
  const void* values = w.section<std::byte>(Section::values);
  const float* x = static_cast<const float*>(a.x) + n0 * a.ldx;
  __m512 acc[NT];
  for (int j = 0; j < NT; ++j) acc[j] = _mm512_setzero_ps();
  for (uint64_t k = row_ptr[bi]; k < row_ptr[bi + 1]; ++k) {
    const __m512 wv = kernels::avx512::load_f32x16<D>(values, k * kBlock, 0xffff);
    const uint64_t c = cols[k];
    for (int j = 0; j < NT; ++j) acc[j] = _mm512_fmadd_ps(wv, _mm512_set1_ps(x[j * a.ldx + c]), acc[j]);
  }
  // Lanes are rows r0..r0+15; store only those inside the matrix and this call's range.
  const uint64_t r0 = bi * kBlock, lo = std::max(r0, a.row_begin), hi = std::min(r0 + kBlock, a.row_end);
  const __mmask16 lanes = static_cast<__mmask16>(((1u << (hi - r0)) - 1) & ~((1u << (lo - r0)) - 1));
  __m512 scale = _mm512_set1_ps(1.0f);
  if constexpr (D == DType::int8) scale = _mm512_maskz_loadu_ps(lanes, w.section<float>(Section::scales) + r0);
  for (int j = 0; j < NT; ++j) _mm512_mask_storeu_ps(a.y + (n0 + j) * a.ldy + r0, lanes, _mm512_mul_ps(acc[j], scale));
}

template <DType D>
void spmm_bsr_any_index(const SpmmArgs& a) {
  kernels::with_index_type(*a.w, [&]<class Index>(Index*) {
    for (uint64_t bi = a.row_begin / kBlock; bi * kBlock < a.row_end; ++bi)
      kernels::for_token_tiles<4>(a.n, [&](auto tile, size_t n0) { block_row<D, Index, tile>(a, bi, n0); });
  });
}

}  // namespace

void lacuna_spmm_bsr_f32_ukernel_16x4__avx512f(const SpmmArgs& a) { spmm_bsr_any_index<DType::f32>(a); }
void lacuna_spmm_bsr_bf16_ukernel_16x4__avx512f(const SpmmArgs& a) { spmm_bsr_any_index<DType::bf16>(a); }
void lacuna_spmm_bsr_int8_ukernel_16x4__avx512f(const SpmmArgs& a) { spmm_bsr_any_index<DType::int8>(a); }

}  // namespace lacuna
