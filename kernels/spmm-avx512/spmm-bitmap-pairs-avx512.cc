// bf16 bitmap weights at large batch: the batch lies across the vector lanes
// and the weights are taken two columns at a time, so one VDPBF16PS does 32
// multiply-adds (twice what a broadcast f32 FMA does). Each group is expanded
// once into a register; then every column pair holding a nonzero is
// broadcast as one dword and multiplied into 16 * NV tokens of x, stored as
// interleaved column pairs ([in/2][n][2] bf16). Pairs that are zero on both
// sides are skipped, so the work shrinks with the sparsity.
// Compiled with -mavx512f -mavx512bw -mavx512vbmi2 -mavx512bf16.
#include <immintrin.h>

#include <algorithm>
#include <bit>

#include "kernels/spmm-avx512/bitmap-small-n.h"
#include "kernels/spmm-ukernels.h"

namespace lacuna {
namespace {

template <int NV>
inline void pairs_row(const SpmmArgs& a, uint64_t r, size_t n0) {
  const Tensor& w = *a.w;
  const uint64_t groups = group_count(w.desc());
  const uint32_t* masks = w.section<uint32_t>(Section::masks) + r * groups;
  const uint16_t* p = w.section<uint16_t>(Section::values) + w.section<uint64_t>(Section::row_ptr)[r];
  const uint32_t* x = static_cast<const uint32_t*>(a.x) + n0;  // one dword = a column pair of one token
  __m512 acc[NV];
  LACUNA_UNROLL for (int j = 0; j < NV; ++j) acc[j] = _mm512_setzero_ps();
  for (uint64_t g = 0; g < groups; ++g) {
    const uint32_t m = kernels::avx512::load_mask(masks + g);
    if (!m) continue;
    const __m512i pairs = kernels::avx512::fresh_expand_epi16(m, kernels::avx512::load_unfolded<__m512i>(p));
    p += std::popcount(m);
    // Bit k of `live` is set when column pair k of the group holds a nonzero.
    for (uint32_t live = _pext_u32(m | (m >> 1), 0x55555555u); live; live &= live - 1) {
      const uint32_t k = static_cast<uint32_t>(std::countr_zero(live));
      // Broadcast in registers: storing the group and reloading one dword stalls on store forwarding.
      const __m512bh wv = (__m512bh)_mm512_permutexvar_epi32(_mm512_set1_epi32(static_cast<int>(k)), pairs);
      const uint32_t* xp = x + (g * 16 + k) * a.ldx;
      LACUNA_UNROLL for (int j = 0; j < NV; ++j) acc[j] = _mm512_dpbf16_ps(acc[j], wv, (__m512bh)_mm512_loadu_si512(xp + 16 * j));
    }
  }
  alignas(64) float out[16 * NV];
  LACUNA_UNROLL for (int j = 0; j < NV; ++j) _mm512_store_ps(out + 16 * j, acc[j]);
  const size_t valid = std::min<size_t>(16 * NV, a.n - n0);
  for (size_t l = 0; l < valid; ++l) a.y[(n0 + l) * a.ldy + r] = out[l];
}

}  // namespace

void lacuna_spmm_bitmap_bf16_ukernel_1x64__avx512bf16(const SpmmArgs& a) {
  for (uint64_t r = a.row_begin; r < a.row_end; ++r)
    kernels::for_vector_tiles<4>(a.n, [&](auto nv, size_t n0) { pairs_row<nv>(a, r, n0); });
}

}  // namespace lacuna
