// bf16 bitmap weights at large batch: the batch lies across the vector lanes
// and the weights are taken two columns at a time, so one VDPBF16PS does 32
// multiply-adds (twice what a broadcast f32 FMA does), on x stored as
// interleaved column pairs ([in/2][n][2] bf16). Pairs that are zero on both
// sides are skipped, so the work shrinks with the sparsity.
//
// Each row is prepared once for all its token tiles: its groups expanded
// into a buffer, and the list of its live column pairs (those holding a
// nonzero) compressed out of the masks. A tile then walks that list in one
// loop: per pair, one broadcast load of the weight pair and NV products.
// Walking each group's live pairs in a loop of its own mispredicted that
// loop's exit once per group (8 pairs on average at 70 %), and one set of
// accumulators made every pair wait for the previous pair's products; pairs
// alternate between two sets here.
// Compiled with -mavx512f -mavx512bw -mavx512vbmi2 -mavx512bf16.
#include <immintrin.h>

#include <algorithm>
#include <bit>
#include <vector>

#include "kernels/spmm-avx512/bitmap-small-n.h"
#include "kernels/spmm-ukernels.h"

namespace lacuna {
namespace {

// A row ready for its tiles: `pairs[i]` is weight pair i of the row (two
// bf16 side by side), and `live` lists the pairs holding a nonzero, in
// column order.
struct PreparedRow {
  std::vector<uint32_t> pairs;
  std::vector<uint32_t> live;  // 16 spare entries: each group stores 16 indices and keeps only its live ones
  size_t live_count = 0;

  void prepare(const SpmmArgs& a, uint64_t r) {
    const Tensor& w = *a.w;
    const uint64_t groups = group_count(w.desc());
    const uint32_t* masks = w.section<uint32_t>(Section::masks) + r * groups;
    const uint16_t* p = w.section<uint16_t>(Section::values) + w.section<uint64_t>(Section::row_ptr)[r];
    if (pairs.size() < groups * 16) pairs.resize(groups * 16);
    if (live.size() < groups * 16 + 16) live.resize(groups * 16 + 16);
    const __m512i group_pair_index = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
    live_count = 0;
    for (uint64_t g = 0; g < groups; ++g) {
      const uint32_t m = kernels::avx512::load_mask(masks + g);
      _mm512_storeu_si512(pairs.data() + g * 16, kernels::avx512::fresh_expand_epi16(m, kernels::avx512::load_unfolded<__m512i>(p)));
      p += std::popcount(m);
      // Bit k of `pairs_live` is set when column pair k of the group holds a nonzero.
      const auto pairs_live = static_cast<__mmask16>(_pext_u32(m | (m >> 1), 0x55555555u));
      const __m512i index = _mm512_add_epi32(group_pair_index, _mm512_set1_epi32(static_cast<int>(g * 16)));
      _mm512_storeu_si512(live.data() + live_count, _mm512_maskz_compress_epi32(pairs_live, index));
      live_count += static_cast<size_t>(std::popcount(static_cast<uint32_t>(pairs_live)));
    }
  }
};

template <int NV>
inline void pairs_row(const SpmmArgs& a, uint64_t r, size_t n0, const PreparedRow& row) {
  const uint32_t* x = static_cast<const uint32_t*>(a.x) + n0;  // one dword = a column pair of one token
  __m512 even[NV], odd[NV];
  LACUNA_UNROLL for (int j = 0; j < NV; ++j) even[j] = odd[j] = _mm512_setzero_ps();
  auto pair = [&](uint32_t i, __m512* acc) {
    const __m512bh wv = (__m512bh)_mm512_set1_epi32(static_cast<int>(row.pairs[i]));
    const uint32_t* xp = x + i * a.ldx;
    LACUNA_UNROLL for (int j = 0; j < NV; ++j) acc[j] = _mm512_dpbf16_ps(acc[j], wv, (__m512bh)_mm512_loadu_si512(xp + 16 * j));
  };
  const uint32_t* live = row.live.data();
  size_t i = 0;
  for (; i + 2 <= row.live_count; i += 2) {
    pair(live[i], even);
    pair(live[i + 1], odd);
  }
  if (i < row.live_count) pair(live[i], even);
  alignas(64) float out[16 * NV];
  LACUNA_UNROLL for (int j = 0; j < NV; ++j) _mm512_store_ps(out + 16 * j, _mm512_add_ps(even[j], odd[j]));
  const size_t valid = std::min<size_t>(16 * NV, a.n - n0);
  for (size_t l = 0; l < valid; ++l) a.y[(n0 + l) * a.ldy + r] = out[l];
}

}  // namespace

void lacuna_spmm_bitmap_bf16_ukernel_1x64__avx512bf16(const SpmmArgs& a) {
  thread_local PreparedRow row;
  for (uint64_t r = a.row_begin; r < a.row_end; ++r) {
    row.prepare(a, r);
    kernels::for_vector_tiles<4>(a.n, [&](auto nv, size_t n0) { pairs_row<nv>(a, r, n0, row); });
  }
}

}  // namespace lacuna
