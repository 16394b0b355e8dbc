// bf16 bitmap weights at large batch: the batch lies across the vector lanes
// and the weights are taken two columns at a time, so one VDPBF16PS does 32
// multiply-adds (twice what a broadcast f32 FMA does), on x stored as
// interleaved column pairs ([in/2][n][2] bf16). Pairs that are zero on both
// sides are skipped, so the work shrinks with the sparsity.
//
// Rows are prepared once for all their token tiles, kRowBlock at a time: each
// row's groups expanded into a buffer, and the list of its live column pairs
// (those holding a nonzero) compressed out of the masks. A tile then walks
// each row's list in one loop: per pair, one broadcast load of the weight
// pair and NV products. Walking each group's live pairs in a loop of its own
// mispredicted that loop's exit once per group (8 pairs on average at 70 %),
// and one set of accumulators made every pair wait for the previous pair's
// products; pairs alternate between two sets here.
//
// The columns are walked in blocks whose activations (the tile's tokens of
// the block's column pairs) take at most kActivationBlockBytes, every row of
// the row block over one column block before the next, so those activations
// stay in L1 for all the rows. Each pair's products load a whole 16-token
// vector of activations per VDPBF16PS, so the loads, not the products, set
// the pace: blocks of 256 KB, in L2, ran 70 % sparse 2048->11264 at 128
// tokens in 17.4 ms, 32 KB blocks in L1 in 9.4 ms (bench-densify --quick,
// docs/benchmarks.md "Column blocks in L1"). Walking each row over all its
// columns read the whole activation panel once per row, from L3 once the
// panel outgrew L2 (5632 columns x 256 tokens: 2.9 MB; "Column blocks").
// The activations come in tiles of kPairTileTokens tokens (ActLayout::
// bf16_pairs), so a block is contiguous whatever the batch: with every
// token of a column pair side by side, a 128-token tile of a 256-token
// batch took every other 512 bytes, half of L1's sets.
// Compiled with -mavx512f -mavx512bw -mavx512vbmi2 -mavx512bf16.
#include <immintrin.h>

#include <algorithm>
#include <bit>
#include <vector>

#include "kernels/spmm-avx512/bitmap-small-n.h"
#include "kernels/spmm-ukernels.h"

namespace lacuna {
namespace {

constexpr size_t kRowBlock = 16;
constexpr int kMaxVectors = 8;  // 128 tokens: 16 accumulators and the weight pair in registers
constexpr size_t kActivationBlockBytes = 32 * 1024;  // of the 48 KB L1 of Zen 4/5 and Sapphire Rapids
constexpr uint64_t kPairVectorBytes = 64;  // the activations of one column pair for one vector of 16 tokens
static_assert(16 * kMaxVectors == kPairTileTokens);
// Column blocks are made of steps of this many groups (64 column pairs);
// each row records where its live pairs of every step begin.
constexpr uint64_t kGroupsPerStep = 4;

uint64_t step_count(const TensorDesc& d) { return (group_count(d) + kGroupsPerStep - 1) / kGroupsPerStep; }

// The steps of one column block for tiles of `vectors` vectors of tokens: as
// many as keep the block's activations within kActivationBlockBytes (one at least).
constexpr uint64_t steps_per_block(uint64_t vectors) {
  return std::max<uint64_t>(1, kActivationBlockBytes / (kGroupsPerStep * 16 * kPairVectorBytes * vectors));
}

// kRowBlock rows ready for their tiles: `pairs[j * row_pairs + i]` is
// weight pair i of row j (two bf16 side by side); row j's live pairs of
// step s are entries [start[j * (steps + 1) + s], start[j * (steps + 1) + s + 1])
// of `live`, in column order.
struct PreparedRows {
  std::vector<uint32_t> pairs, live, start;
  uint64_t row_pairs = 0, steps = 0;

  void prepare(const SpmmArgs& a, uint64_t r0, size_t rows) {
    const Tensor& w = *a.w;
    const uint64_t groups = group_count(w.desc());
    row_pairs = groups * 16;
    steps = step_count(w.desc());
    if (pairs.size() < rows * row_pairs) pairs.resize(rows * row_pairs);
    if (live.size() < rows * row_pairs + 16) live.resize(rows * row_pairs + 16);  // each group stores 16 indices, keeps its live ones
    start.resize(rows * (steps + 1));
    const __m512i group_pair_index = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
    const uint64_t* row_ptr = w.section<uint64_t>(Section::row_ptr);
    // Local pointers: stores through the vectors' own data() made the
    // compiler reload them, from the thread_local object, after every store
    // (with a VZEROUPPER and a spill of the expanded group each time).
    uint32_t* const live_out = live.data();
    uint32_t* const pairs_out = pairs.data();
    uint32_t* const start_out = start.data();
    size_t count = 0;
    for (size_t j = 0; j < rows; ++j) {
      const uint32_t* masks = w.section<uint32_t>(Section::masks) + (r0 + j) * groups;
      const uint16_t* p = w.section<uint16_t>(Section::values) + row_ptr[r0 + j];
      uint32_t* row_start = start_out + j * (steps + 1);
      uint32_t* row_pair = pairs_out + j * row_pairs;
      for (uint64_t g = 0; g < groups; ++g) {
        if (g % kGroupsPerStep == 0) row_start[g / kGroupsPerStep] = static_cast<uint32_t>(count);
        const uint32_t m = kernels::avx512::load_mask(masks + g);
        _mm512_storeu_si512(row_pair + g * 16, kernels::avx512::fresh_expand_epi16(m, kernels::avx512::load_unfolded<__m512i>(p)));
        p += std::popcount(m);
        // Bit k of `pairs_live` is set when column pair k of the group holds a nonzero.
        const auto pairs_live = static_cast<__mmask16>(_pext_u32(m | (m >> 1), 0x55555555u));
        const __m512i index = _mm512_add_epi32(group_pair_index, _mm512_set1_epi32(static_cast<int>(g * 16)));
        _mm512_storeu_si512(live_out + count, _mm512_maskz_compress_epi32(pairs_live, index));
        count += static_cast<size_t>(std::popcount(static_cast<uint32_t>(pairs_live)));
      }
      row_start[steps] = static_cast<uint32_t>(count);
    }
  }
};

// Adds the products of row j's live pairs [begin, end) to the NV vectors at
// `acc` (or sets them, if `first`).
template <int NV>
inline void pairs_run(const uint32_t* x, size_t ldx, const PreparedRows& rows, size_t j, size_t begin, size_t end, float* acc, bool first) {
  const uint32_t* row_pair = rows.pairs.data() + j * rows.row_pairs;
  __m512 even[NV], odd[NV];
  LACUNA_UNROLL for (int v = 0; v < NV; ++v) {
    even[v] = first ? _mm512_setzero_ps() : _mm512_load_ps(acc + 16 * v);
    odd[v] = _mm512_setzero_ps();
  }
  auto pair = [&](uint32_t i, __m512* sum) {
    const __m512bh wv = (__m512bh)_mm512_set1_epi32(static_cast<int>(row_pair[i]));
    const uint32_t* xp = x + i * ldx;
    LACUNA_UNROLL for (int v = 0; v < NV; ++v) sum[v] = _mm512_dpbf16_ps(sum[v], wv, (__m512bh)_mm512_loadu_si512(xp + 16 * v));
  };
  const uint32_t* live = rows.live.data();
  size_t i = begin;
  for (; i + 2 <= end; i += 2) {
    pair(live[i], even);
    pair(live[i + 1], odd);
  }
  if (i < end) pair(live[i], even);
  LACUNA_UNROLL for (int v = 0; v < NV; ++v) _mm512_store_ps(acc + 16 * v, _mm512_add_ps(even[v], odd[v]));
}

template <int NV>
void pairs_tile(const SpmmArgs& a, uint64_t r0, size_t n0, const PreparedRows& rows, size_t row_count) {
  // One dword = a column pair of one token; the tile starting at n0 is tile n0 / ldx of the layout.
  const uint64_t column_pairs = (a.w->desc().cols() + 1) / 2;
  const uint32_t* x = static_cast<const uint32_t*>(a.x) + n0 / a.ldx * column_pairs * a.ldx;
  constexpr uint64_t block_steps = steps_per_block(NV);
  alignas(64) float acc[kRowBlock][16 * NV];
  for (uint64_t s = 0; s < rows.steps; s += block_steps) {
    const uint64_t s_end = std::min(rows.steps, s + block_steps);
    for (size_t j = 0; j < row_count; ++j) {
      const uint32_t* start = rows.start.data() + j * (rows.steps + 1);
      pairs_run<NV>(x, a.ldx, rows, j, start[s], start[s_end], acc[j], s == 0);
    }
  }
  const size_t valid = std::min<size_t>(16 * NV, a.n - n0);
  for (size_t l = 0; l < valid; ++l)
    for (size_t j = 0; j < row_count; ++j) a.y[(n0 + l) * a.ldy + r0 + j] = acc[j][l];
}

}  // namespace

void lacuna_spmm_bitmap_bf16_ukernel_1x128__avx512bf16(const SpmmArgs& a) {
  thread_local PreparedRows rows;
  // Rows are blocked only when a row's columns need more than one column
  // block: otherwise one row at a time keeps its expanded pairs in L1.
  const uint64_t widest_tile = std::min<uint64_t>(kMaxVectors, (a.n + 15) / 16);
  const size_t row_block = step_count(a.w->desc()) > steps_per_block(widest_tile) ? kRowBlock : 1;
  for (uint64_t r0 = a.row_begin; r0 < a.row_end; r0 += row_block) {
    const size_t row_count = static_cast<size_t>(std::min<uint64_t>(row_block, a.row_end - r0));
    rows.prepare(a, r0, row_count);
    kernels::for_vector_tiles<kMaxVectors>(a.n, [&](auto nv, size_t n0) { pairs_tile<nv>(a, r0, n0, rows, row_count); });
  }
}

}  // namespace lacuna
