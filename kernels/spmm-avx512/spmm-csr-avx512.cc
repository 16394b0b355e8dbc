// CSR at small batch: 16 stored weights at a time, their activations fetched
// with one VGATHERDPS per token. Costs per nonzero, not per group, so it wins
// over bitmap where groups are nearly empty (very high sparsity).
// Compiled with -mavx512f -mavx512bw -mavx512vl.
#include <immintrin.h>

#include "kernels/common/row-walk.h"
#include "kernels/common/token-tiles.h"
#include "kernels/spmm-avx512/load-f32x16.h"
#include "kernels/spmm-ukernels.h"

namespace lacuna {
namespace {

// One row for NT tokens; the row's indices and values stay in L1 for the
// next token tile, so the weight is streamed from memory once per call.
template <DType D, class Index, int NT>
inline void csr_row(const SpmmArgs& a, uint64_t r, size_t n0) {
  const Tensor& w = *a.w;
  const uint64_t* row_ptr = w.section<uint64_t>(Section::row_ptr);
  const Index* cols = w.section<Index>(Section::col_idx);
  const void* values = w.section<std::byte>(Section::values);
  const float* scales = D == DType::int8 ? w.section<float>(Section::scales) : nullptr;
  const float* x = static_cast<const float*>(a.x) + n0 * a.ldx;
  {
    __m512 acc[NT];
    for (int j = 0; j < NT; ++j) acc[j] = _mm512_setzero_ps();
    const uint64_t end = row_ptr[r + 1];
    for (uint64_t k = row_ptr[r]; k < end; k += 16) {
      const __mmask16 m = end - k >= 16 ? __mmask16(0xffff) : static_cast<__mmask16>((1u << (end - k)) - 1);
      const __m512i idx = kernels::avx512::load_indices_x16(cols + k, m);
      const __m512 wv = kernels::avx512::load_f32x16<D>(values, k, m);
      for (int j = 0; j < NT; ++j)
        acc[j] = _mm512_fmadd_ps(wv, _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, idx, x + j * a.ldx, 4), acc[j]);
    }
    const float scale = scales ? scales[r] : 1.0f;
    for (int j = 0; j < NT; ++j) a.y[(n0 + j) * a.ldy + r] = _mm512_reduce_add_ps(acc[j]) * scale;
  }
}

template <DType D>
void spmm_csr_any_index(const SpmmArgs& a) {
  kernels::with_index_type(*a.w, [&]<class Index>(Index*) {
    for (uint64_t r = a.row_begin; r < a.row_end; ++r)
      kernels::for_token_tiles<4>(a.n, [&](auto tile, size_t n0) { csr_row<D, Index, tile>(a, r, n0); });
  });
}

}  // namespace

void lacuna_spmm_csr_f32_ukernel_1x4__avx512f(const SpmmArgs& a) { spmm_csr_any_index<DType::f32>(a); }
void lacuna_spmm_csr_bf16_ukernel_1x4__avx512f(const SpmmArgs& a) { spmm_csr_any_index<DType::bf16>(a); }
void lacuna_spmm_csr_int8_ukernel_1x4__avx512f(const SpmmArgs& a) { spmm_csr_any_index<DType::int8>(a); }

}  // namespace lacuna
