// bf16 bitmap, CSR and csr8 weights at large batch: the batch lies across the vector lanes
// and the weights are taken two columns at a time, so one VDPBF16PS does 32
// multiply-adds (twice what a broadcast f32 FMA does), on x stored as
// interleaved column pairs ([in/2][n][2] bf16). Pairs that are zero on both
// sides are skipped, so the work shrinks with the sparsity.
//
// Rows are prepared once for all their token tiles, kRowBlock at a time: each
// row's groups expanded into a buffer, and the list of its live column pairs
// (those holding a nonzero) compressed out of the masks; a CSR row writes
// only its live pairs and lists them from its column indices (a csr8 row
// from its columns decoded first: byte offset plus block start). A tile then walks
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

#include "kernels/common/row-walk.h"
#include "kernels/spmm-avx512/bitmap-small-n.h"
#include "kernels/spmm-avx512/load-f32x16.h"
#include "kernels/spmm-ukernels.h"

namespace lacuna {
namespace {

constexpr size_t kRowBlock = 16;
constexpr int kMaxVectors = 8;  // 128 tokens: 16 accumulators and the weight pair in registers
constexpr size_t kActivationBlockBytes = 32 * 1024;  // of the 48 KB L1 of Zen 4/5 and Sapphire Rapids
constexpr uint64_t kPairVectorBytes = 64;  // the activations of one column pair for one vector of 16 tokens
static_assert(16 * kMaxVectors == kPairTileTokens);
// Column blocks are made of steps of this many groups (64 column pairs).
constexpr uint64_t kGroupsPerStep = 4;
constexpr uint64_t kPairsPerStep = kGroupsPerStep * 16;

uint64_t step_count(const TensorDesc& d) { return (group_count(d) + kGroupsPerStep - 1) / kGroupsPerStep; }

// The steps of one column block for tiles of `vectors` vectors of tokens: as
// many as keep the block's activations within kActivationBlockBytes (one at least).
constexpr uint64_t steps_per_block(uint64_t vectors) {
  return std::max<uint64_t>(1, kActivationBlockBytes / (kGroupsPerStep * 16 * kPairVectorBytes * vectors));
}

// kRowBlock rows ready for their tiles: row j's live pairs are entries
// [start[j * (steps + 1)], start[j * (steps + 1) + steps]) of `live`, in
// column order; for bitmap rows, those of step s begin at start[j * (steps
// + 1) + s] (CSR rows leave the steps between unwritten: their tiles find a
// block's end as they walk it, see pairs_run). The weight pair (two bf16
// side by side) of entry e is, for bitmap rows, pairs[j * row_pairs +
// live[e]] (every pair of the row expanded); for CSR and csr8 rows (`compact`),
// pairs[e].
struct PreparedRows {
  std::vector<uint32_t> pairs, live, start;
  std::vector<uint32_t> columns;  // csr8 rows' columns, decoded for their listing
  uint64_t row_pairs = 0, steps = 0;
  bool compact = false;

  void prepare(const SpmmArgs& a, uint64_t r0, size_t rows) {
    const Tensor& w = *a.w;
    row_pairs = group_count(w.desc()) * 16;
    steps = step_count(w.desc());
    if (pairs.size() < rows * row_pairs + 16) pairs.resize(rows * row_pairs + 16);  // CSR rows store 16 at a time, keep their live ones
    if (live.size() < rows * row_pairs + 16) live.resize(rows * row_pairs + 16);  // each group stores 16 indices, keeps its live ones
    start.resize(rows * (steps + 1));
    compact = w.desc().format != Format::bitmap;
    if (w.desc().format == Format::csr8) {
      decode_csr8(w, r0, rows);
      prepare_csr(w, r0, rows, columns.data(), w.section<uint64_t>(Section::row_ptr)[r0]);
    } else if (compact) {
      kernels::with_index_type(w, [&]<class Index>(Index*) { prepare_csr(w, r0, rows, w.section<Index>(Section::col_idx), 0); });
    } else {
      prepare_bitmap(w, r0, rows);
    }
  }

 private:
  void prepare_bitmap(const Tensor& w, uint64_t r0, size_t rows) {
    const uint64_t groups = group_count(w.desc());
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

  // CSR rows list their live pairs from their column indices, 16 nonzeros
  // at a time: a pair's odd column joins its even one when both are stored,
  // and the pair is kept once, with its weights, in `pairs` as in `live`.
  // A scalar walk, one nonzero at a time, took 5 ns a nonzero (its next
  // step waited for the load of the previous column, or mispredicted
  // whether that column was odd); this took 1.1-1.2 in a throwaway copy.
  // The column of nonzero k is cols[k - first].
  template <class Index>
  void prepare_csr(const Tensor& w, uint64_t r0, size_t rows, const Index* cols, uint64_t first) {
    const uint64_t* row_ptr = w.section<uint64_t>(Section::row_ptr);
    const uint16_t* values = w.section<uint16_t>(Section::values);
    uint32_t* const live_out = live.data();
    uint32_t* const pairs_out = pairs.data();
    size_t count = 0;
    for (size_t j = 0; j < rows; ++j) {
      start[j * (steps + 1)] = static_cast<uint32_t>(count);
      const uint64_t begin = row_ptr[r0 + j], end = row_ptr[r0 + j + 1];
      for (uint64_t k = begin; k < end; k += 16) {
        const auto here = static_cast<__mmask16>(_bzhi_u32(0xffff, static_cast<unsigned>(std::min<uint64_t>(16, end - k))));
        // Lanes whose next nonzero is in the row (the last lane's may be the next 16's first).
        const auto ahead = static_cast<__mmask16>(_bzhi_u32(0xffff, static_cast<unsigned>(std::min<uint64_t>(16, end - k - 1))));
        const Index* at = cols + (k - first);
        const __m512i column = kernels::avx512::load_indices_x16(at, here);
        // Each lane's previous column; the row's first nonzero gets its own, which never joins.
        const __m512i previous = k == begin ? _mm512_mask_mov_epi32(kernels::avx512::load_indices_x16(at - 1, static_cast<__mmask16>(here & ~1u)), 1, column)
                                            : kernels::avx512::load_indices_x16(at - 1, here);
        const __m512i next = kernels::avx512::load_indices_x16(at + 1, ahead);
        const __m512i one = _mm512_set1_epi32(1);
        const __mmask16 odd = _mm512_test_epi32_mask(column, one);
        const __mmask16 second = odd & _mm512_cmpeq_epi32_mask(_mm512_add_epi32(previous, one), column);
        const __mmask16 joined = ahead & static_cast<__mmask16>(~odd) & _mm512_cmpeq_epi32_mask(next, _mm512_add_epi32(column, one));
        const __m512i value = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(here, values + k));
        const __m512i next_value = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(joined, values + k + 1));
        const __m512i both = _mm512_or_si512(_mm512_sllv_epi32(value, _mm512_slli_epi32(_mm512_and_si512(column, one), 4)),
                                             _mm512_slli_epi32(next_value, 16));
        const auto kept = static_cast<__mmask16>(here & ~second);
        const __m512i pair = _mm512_maskz_compress_epi32(kept, _mm512_srli_epi32(column, 1));
        _mm512_storeu_si512(live_out + count, pair);
        _mm512_storeu_si512(pairs_out + count, _mm512_maskz_compress_epi32(kept, both));
        const auto added = static_cast<unsigned>(std::popcount(static_cast<unsigned>(kept)));
        count += added;
      }
      start[j * (steps + 1) + steps] = static_cast<uint32_t>(count);
    }
  }

  // csr8 rows' columns as CSR stores them: each block's byte offsets plus
  // the block's first column, 16 at a time.
  void decode_csr8(const Tensor& w, uint64_t r0, size_t rows) {
    const uint64_t blocks = csr8_block_count(w.desc());
    const uint64_t* row_ptr = w.section<uint64_t>(Section::row_ptr);
    const uint16_t* counts = w.section<uint16_t>(Section::block_counts) + r0 * blocks;
    const uint8_t* offsets = w.section<uint8_t>(Section::col_idx);
    const uint64_t first = row_ptr[r0];
    if (columns.size() < row_ptr[r0 + rows] - first) columns.resize(row_ptr[r0 + rows] - first);
    uint32_t* const out = columns.data();
    uint64_t k = first;
    for (uint64_t i = 0; i < rows * blocks; ++i) {
      const unsigned count = counts[i];
      const __m512i block_start = _mm512_set1_epi32(static_cast<int>(i % blocks * kCsr8BlockColumns));
      for (unsigned s = 0; s < count; s += 16) {
        const auto lanes = static_cast<__mmask16>(_bzhi_u32(0xffff, std::min(16u, count - s)));
        const __m512i offset = _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(lanes, offsets + k + s));
        _mm512_mask_storeu_epi32(out + (k + s - first), lanes, _mm512_add_epi32(offset, block_start));
      }
      k += count;
    }
  }
};

// Adds the products of row j's live pairs from entry `begin` up to `end`
// to the NV vectors at `acc` (or sets them, if `first`); CSR rows
// (Compact) also stop at their first pair at or past `limit`, the column
// block's end. Returns the entry it stopped at. Recording every step's
// start while listing CSR rows took 40 % of the listing's samples (a
// 500-token prompt of the 90 % CSR mini model, `perf annotate`); bitmap
// rows record them for free, and the extra test in this loop made their
// products 4-9 % slower (`lacuna bench sweep`, 128 tokens, 90 %).
template <int NV, bool Compact>
inline size_t pairs_run(const uint32_t* x, size_t ldx, const PreparedRows& rows, size_t j, size_t begin, size_t end, uint64_t limit, float* acc,
                        bool first) {
  const uint32_t* row_pair = rows.pairs.data() + (Compact ? 0 : j * rows.row_pairs);
  __m512 even[NV], odd[NV];
  LACUNA_UNROLL for (int v = 0; v < NV; ++v) {
    even[v] = first ? _mm512_setzero_ps() : _mm512_load_ps(acc + 16 * v);
    odd[v] = _mm512_setzero_ps();
  }
  const uint32_t* live = rows.live.data();
  auto pair = [&](size_t e, __m512* sum) {
    const uint32_t i = live[e];
    const __m512bh wv = (__m512bh)_mm512_set1_epi32(static_cast<int>(row_pair[Compact ? e : i]));
    const uint32_t* xp = x + i * ldx;
    LACUNA_UNROLL for (int v = 0; v < NV; ++v) sum[v] = _mm512_dpbf16_ps(sum[v], wv, (__m512bh)_mm512_loadu_si512(xp + 16 * v));
  };
  size_t e = begin;
  for (; e + 2 <= end && (!Compact || live[e + 1] < limit); e += 2) {
    pair(e, even);
    pair(e + 1, odd);
  }
  if (e < end && (!Compact || live[e] < limit)) pair(e++, even);
  LACUNA_UNROLL for (int v = 0; v < NV; ++v) _mm512_store_ps(acc + 16 * v, _mm512_add_ps(even[v], odd[v]));
  return e;
}

template <int NV, bool Compact>
void pairs_tile(const SpmmArgs& a, uint64_t r0, size_t n0, const PreparedRows& rows, size_t row_count) {
  // One dword = a column pair of one token; the tile starting at n0 is tile n0 / ldx of the layout.
  const uint64_t column_pairs = (a.w->desc().cols() + 1) / 2;
  const uint32_t* x = static_cast<const uint32_t*>(a.x) + n0 / a.ldx * column_pairs * a.ldx;
  constexpr uint64_t block_steps = steps_per_block(NV);
  alignas(64) float acc[kRowBlock][16 * NV];
  size_t next[kRowBlock];  // CSR: each row's first entry not yet walked
  for (size_t j = 0; j < row_count; ++j) next[j] = rows.start[j * (rows.steps + 1)];
  for (uint64_t s = 0; s < rows.steps; s += block_steps) {
    const uint64_t s_end = std::min(rows.steps, s + block_steps);
    for (size_t j = 0; j < row_count; ++j) {
      const uint32_t* start = rows.start.data() + j * (rows.steps + 1);
      if constexpr (Compact)
        next[j] = pairs_run<NV, true>(x, a.ldx, rows, j, next[j], start[rows.steps], s_end * kPairsPerStep, acc[j], s == 0);
      else
        pairs_run<NV, false>(x, a.ldx, rows, j, start[s], start[s_end], 0, acc[j], s == 0);
    }
  }
  const size_t valid = std::min<size_t>(16 * NV, a.n - n0);
  for (size_t l = 0; l < valid; ++l)
    for (size_t j = 0; j < row_count; ++j) a.y[(n0 + l) * a.ldy + r0 + j] = acc[j][l];
}

void spmm_pairs(const SpmmArgs& a) {
  thread_local PreparedRows rows;
  // Rows are blocked only when a row's columns need more than one column
  // block: otherwise one row at a time keeps its expanded pairs in L1.
  const uint64_t widest_tile = std::min<uint64_t>(kMaxVectors, (a.n + 15) / 16);
  const size_t row_block = step_count(a.w->desc()) > steps_per_block(widest_tile) ? kRowBlock : 1;
  for (uint64_t r0 = a.row_begin; r0 < a.row_end; r0 += row_block) {
    const size_t row_count = static_cast<size_t>(std::min<uint64_t>(row_block, a.row_end - r0));
    rows.prepare(a, r0, row_count);
    kernels::for_vector_tiles<kMaxVectors>(a.n, [&](auto nv, size_t n0) {
      if (rows.compact)
        pairs_tile<nv, true>(a, r0, n0, rows, row_count);
      else
        pairs_tile<nv, false>(a, r0, n0, rows, row_count);
    });
  }
}

}  // namespace

void lacuna_spmm_bitmap_bf16_ukernel_1x128__avx512bf16(const SpmmArgs& a) { spmm_pairs(a); }
void lacuna_spmm_csr_bf16_ukernel_1x128__avx512bf16(const SpmmArgs& a) { spmm_pairs(a); }
void lacuna_spmm_csr8_bf16_ukernel_1x128__avx512bf16(const SpmmArgs& a) { spmm_pairs(a); }

}  // namespace lacuna
