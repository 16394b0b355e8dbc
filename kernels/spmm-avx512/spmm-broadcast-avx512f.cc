// Large-batch kernels for every format x dtype: the batch lies across the
// vector lanes (x transposed, [in][n]), and every stored weight is broadcast
// and multiplied into 16 * NV tokens at once. Work is proportional to the
// nonzeros, so it skips what pruning removed; the index walk is amortised
// over NV vector FMAs. Compiled with -mavx512f.
#include <immintrin.h>

#include "kernels/common/row-walk.h"
#include "kernels/common/token-tiles.h"
#include "kernels/spmm-ukernels.h"

namespace lacuna {
namespace {

template <Format F, DType D, class Index, int NV>
inline void broadcast_row(const SpmmArgs& a, uint64_t r, size_t n0, float scale) {
  const float* xt = static_cast<const float*>(a.x) + n0;
  __m512 acc[NV];
  for (int j = 0; j < NV; ++j) acc[j] = _mm512_setzero_ps();
  kernels::for_each_in_row<F, D, Index>(*a.w, r, [&](uint64_t c, float v) {
    const __m512 wv = _mm512_set1_ps(v);
    const float* xc = xt + c * a.ldx;
    for (int j = 0; j < NV; ++j) acc[j] = _mm512_fmadd_ps(wv, _mm512_loadu_ps(xc + 16 * j), acc[j]);
  });
  alignas(64) float out[16 * NV];
  for (int j = 0; j < NV; ++j) _mm512_store_ps(out + 16 * j, _mm512_mul_ps(acc[j], _mm512_set1_ps(scale)));
  const size_t valid = std::min<size_t>(16 * NV, a.n - n0);
  for (size_t l = 0; l < valid; ++l) a.y[(n0 + l) * a.ldy + r] = out[l];
}

template <Format F, DType D>
void spmm_broadcast(const SpmmArgs& a) {
  const float* scales = D == DType::int8 ? a.w->section<float>(Section::scales) : nullptr;
  kernels::with_index_type(*a.w, [&]<class Index>(Index*) {
    for (uint64_t r = a.row_begin; r < a.row_end; ++r) {
      const float scale = scales ? scales[r] : 1.0f;
      kernels::for_vector_tiles<4>(a.n, [&](auto nv, size_t n0) { broadcast_row<F, D, Index, nv>(a, r, n0, scale); });
    }
  });
}

}  // namespace

#define LACUNA_BROADCAST(format, dtype) \
  void lacuna_spmm_##format##_##dtype##_ukernel_1x64__avx512f(const SpmmArgs& a) { spmm_broadcast<Format::format, DType::dtype>(a); }
LACUNA_BROADCAST(dense, f32)
LACUNA_BROADCAST(dense, bf16)
LACUNA_BROADCAST(dense, int8)
LACUNA_BROADCAST(csr, f32)
LACUNA_BROADCAST(csr, bf16)
LACUNA_BROADCAST(csr, int8)
LACUNA_BROADCAST(csr8, f32)
LACUNA_BROADCAST(csr8, bf16)
LACUNA_BROADCAST(csr8, int8)
LACUNA_BROADCAST(bitmap, f32)
LACUNA_BROADCAST(bitmap, bf16)
LACUNA_BROADCAST(bitmap, int8)
LACUNA_BROADCAST(bsr, f32)
LACUNA_BROADCAST(bsr, bf16)
LACUNA_BROADCAST(bsr, int8)
#undef LACUNA_BROADCAST

}  // namespace lacuna
