// bf16 bitmap weights x bf16 activations on AMX tiles (TDPBF16PS), from 16
// tokens on. The structure of the int8 tiles (spmm-int8-amx.cc, and
// amx-tiles.h for what they share): tile A is 16 weight rows x one group of
// 32 bf16 columns, expanded from the bitmap a strip at a time; tile B is 16
// tokens' activations over the group's 16 column pairs, which is the
// bf16_pairs layout (B[k/2][token*2 + k%2]) read in place; tile C is 16 rows
// x 16 tokens of f32 sums.
// Beyond 64 tokens (four accumulator tiles) the token tiles go in passes
// over each expanded strip, each pass's sums stored after a strip and
// loaded before the next. Float sums follow the tiles' order, which no
// other kernel shares, so a token's bits depend on the batch it runs in:
// the runtime's batch-invariant policy never picks this kernel (Linear).
// Compiled with -mamx-tile -mamx-bf16 and the AVX-512 flags of the bitmap
// expansion; dispatch runs it only where Linux granted AMX tile data.
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <vector>

#include "kernels/common/unrolled-for.h"
#include "kernels/spmm-amx/amx-tiles.h"
#include "kernels/spmm-ukernels.h"

namespace lacuna {
namespace {

using kernels::unrolled_for;
using namespace kernels::avx512;
using namespace kernels::amx;

struct Bf16Rows {
  using Mask = uint32_t;
  using Value = uint16_t;
  static constexpr bool kDense = false;
  static constexpr int kWidth = kGroupBytes / 2;
  static __m512i expand(const Mask* mask, const Value* p) { return fresh_expand_epi16(mask, load_unfolded<__m512i>(p)); }
};
using K = Bf16Rows;

// C += A x B, bf16 pairs, f32 sums.
template <int C, int A, int B>
inline void tile_dpbf16ps() {
  __asm__ volatile("tdpbf16ps %%tmm%c2, %%tmm%c1, %%tmm%c0" : : "i"(C), "i"(A), "i"(B));
}

// The activations as B tiles: token tile t's tile for group g. Token tiles
// come in blocks of `block_tiles` (ld = 16 x block_tiles tokens to a row of
// four-byte lanes, group g's 16 rows at g x 16 x ld), blocks `block` dwords
// apart. A group whose rows run past the activations' end (rows not a whole
// number of groups) is read from `tail`, the same rows zero-padded.
struct ActivationTiles {
  const uint32_t* data = nullptr;
  uint64_t ld = 0, block = 0, block_tiles = 1;
  const uint32_t* tail = nullptr;
  uint64_t tail_group = std::numeric_limits<uint64_t>::max();

  // Token tile t's B tile of group 0 (of the tail group: tail_at).
  const uint32_t* at(uint64_t tile) const { return data + tile / block_tiles * block + tile % block_tiles * kTileTokens; }
  const uint32_t* tail_at(uint64_t tile) const { return tail + tile / block_tiles * kTileRows * ld + tile % block_tiles * kTileTokens; }
  uint64_t group_dwords() const { return kTileRows * ld; }
  uint64_t stride() const { return 4 * ld; }
};

// The bf16_pairs layout is tile B's: blocks of ld tokens (a multiple
// of 16), row c of a block holding column pair c of each of its tokens.
ActivationTiles bf16_pair_tiles(const SpmmArgs& a, uint64_t groups, std::vector<Line>& tail_buffer) {
  const uint64_t pairs = (a.w->desc().cols() + 1) / 2;
  ActivationTiles t{static_cast<const uint32_t*>(a.x), a.ldx, pairs * a.ldx, a.ldx / kTileTokens};
  const uint64_t whole = pairs / kTileRows;
  if (whole < groups) {
    const uint64_t blocks = (a.n + a.ldx - 1) / a.ldx, rows = pairs - whole * kTileRows, block_dwords = kTileRows * a.ldx;
    tail_buffer.assign((blocks * block_dwords * 4 + sizeof(Line) - 1) / sizeof(Line), Line{});
    auto* tail = reinterpret_cast<uint32_t*>(tail_buffer.data());
    for (uint64_t block = 0; block < blocks; ++block)
      std::memcpy(tail + block * block_dwords, t.data + block * t.block + whole * kTileRows * a.ldx, rows * a.ldx * 4);
    t.tail = tail;
    t.tail_group = whole;
  }
  return t;
}

// Tiles 0-3 accumulate: in a pass of Tiles token tiles, token tile t's sums
// of the groups g with g % Splits == s in tile t x Splits + s. One tile per
// token tile made each product wait for the one before it (its latency,
// several times its throughput).
template <int Tiles>
constexpr int splits() {
  return kAccumulators / Tiles;
}

// One pass's accumulator tiles in memory: between strips when a block of
// rows has more token tiles than one pass holds, and at the block's end.
struct PassSums {
  alignas(64) float tiles[kAccumulators][kTileRows][kTileTokens];
};
// One token tile's sums over a block of rows, its splits added.
struct TileTotals {
  alignas(64) float dots[kTileRows][kTileTokens];
};

// One strip (groups g0 .. g1 - 1 of a block of 16 rows, rows kStripStride
// apart in `strip`) times token tiles first_tile .. first_tile + Tiles - 1.
template <int Tiles>
void multiply_strip(const ActivationTiles& x, uint64_t first_tile, uint64_t g0, uint64_t g1, const int8_t* strip) {
  constexpr int kSplits = splits<Tiles>();
  // A group a turn per split, and at least two, so that A and B alternate between their two tiles.
  constexpr int kUnroll = kSplits < 2 ? 2 : kSplits;
  // Each token tile's B tile of group 0, worked out once per strip, not at every load.
  const uint32_t* b_first[Tiles];
  const uint32_t* b_tail[Tiles];
  for (int t = 0; t < Tiles; ++t) {
    b_first[t] = x.at(first_tile + static_cast<uint64_t>(t));
    b_tail[t] = x.tail ? x.tail_at(first_tile + static_cast<uint64_t>(t)) : nullptr;
  }
  const uint64_t group_dwords = x.group_dwords(), b_stride = x.stride(), tail_group = x.tail_group;
  auto group = [&](uint64_t g, auto turn) LACUNA_INLINE_LAMBDA {
    constexpr int kTurn = decltype(turn)::value, kA = kFirstA + kTurn % 2;
    tile_load<kA>(strip + (g - g0) * kGroupBytes, kStripStride);
    const bool tail = g == tail_group;
    unrolled_for<Tiles>([&](auto t) LACUNA_INLINE_LAMBDA {
      constexpr int kT = decltype(t)::value, kB = kFirstB + (kT + kTurn) % 2;
      tile_load<kB>(tail ? b_tail[kT] : b_first[kT] + g * group_dwords, b_stride);
      tile_dpbf16ps<kT * kSplits + kTurn % kSplits, kA, kB>();
    });
  };
  uint64_t g = g0;
  for (; g + kUnroll <= g1; g += kUnroll) unrolled_for<kUnroll>([&](auto turn) LACUNA_INLINE_LAMBDA { group(g + turn, turn); });
  unrolled_for<kUnroll - 1>([&](auto turn) LACUNA_INLINE_LAMBDA {
    if (g + turn < g1) group(g + turn, turn);
  });
}

// Calls f(std::integral_constant<int, Tiles>) for a pass of `tiles` token tiles (1-4).
template <class F>
void with_pass_tiles(uint64_t tiles, F&& f) {
  switch (tiles) {
    case 1: return f(std::integral_constant<int, 1>{});
    case 2: return f(std::integral_constant<int, 2>{});
    case 3: return f(std::integral_constant<int, 3>{});
    default: return f(std::integral_constant<int, kAccumulators>{});
  }
}

// A block of 16 rows goes in strips of kStripGroups groups: each strip's
// rows are expanded into `strip` (17 KB, in L1) and multiplied by every
// token tile, in passes of up to four, before the next strip is expanded.
void row_blocks(const WeightRows<K>& b, const ActivationTiles& x, int8_t* strip, std::vector<PassSums>& pass_buffer,
                std::vector<TileTotals>& totals_buffer) {
  const SpmmArgs& a = b.a;
  const uint64_t tiles = (a.n + kTileTokens - 1) / kTileTokens;
  const uint64_t passes = (tiles + kAccumulators - 1) / kAccumulators;
  pass_buffer.resize(passes);
  totals_buffer.resize(tiles);
  PassSums* const pass_sums = pass_buffer.data();
  TileTotals* const totals = totals_buffer.data();
  for (uint64_t r0 = a.row_begin; r0 < a.row_end; r0 += kTileRows) {
    const int rows = static_cast<int>(std::min<uint64_t>(kTileRows, a.row_end - r0));
    RowCursor<K> cursor[kTileRows];
    for (int i = 0; i < rows; ++i) cursor[i] = {b.row_masks(r0 + i), b.row_values(r0 + i)};
    if (rows < kTileRows) std::memset(strip + rows * kStripStride, 0, (kTileRows - rows) * kStripStride);
    std::memset(static_cast<void*>(totals), 0, tiles * sizeof(TileTotals));
    for (uint64_t g0 = 0; g0 < b.groups; g0 += kStripGroups) {
      const uint64_t g1 = std::min(b.groups, g0 + kStripGroups);
      for (int i = 0; i < rows; ++i) expand_strip(b, cursor[i], g0, g1, strip + i * kStripStride);
      const bool last = g1 == b.groups;
      for (uint64_t p = 0; p < passes; ++p) {
        with_pass_tiles(std::min<uint64_t>(kAccumulators, tiles - p * kAccumulators), [&](auto pass_tiles) {
          constexpr int kTiles = decltype(pass_tiles)::value, kSplits = splits<kTiles>();
          PassSums& sums = pass_sums[p];
          // One pass keeps its sums in the tiles from strip to strip.
          if (g0 == 0)
            unrolled_for<kTiles * kSplits>([&](auto c) LACUNA_INLINE_LAMBDA { tile_zero<decltype(c)::value>(); });
          else if (passes > 1)
            unrolled_for<kTiles * kSplits>([&](auto c) LACUNA_INLINE_LAMBDA { tile_load<decltype(c)::value>(sums.tiles[decltype(c)::value], kTileTokens * 4); });
          multiply_strip<kTiles>(x, p * kAccumulators, g0, g1, strip);
          if (passes > 1 || last)
            unrolled_for<kTiles * kSplits>([&](auto c) LACUNA_INLINE_LAMBDA { tile_store<decltype(c)::value>(sums.tiles[decltype(c)::value], kTileTokens * 4); });
          if (!last) return;
          for (int c = 0; c < kTiles * kSplits; ++c) {
            auto& dots = totals[p * kAccumulators + static_cast<uint64_t>(c / kSplits)].dots;
            for (int i = 0; i < kTileRows; ++i)
              for (int j = 0; j < kTileTokens; ++j) dots[i][j] += sums.tiles[c][i][j];
          }
        });
      }
    }
    // Token by token: the rows of one token are one cache line of y.
    for (size_t token = 0; token < a.n; ++token) {
      float* y = a.y + token * a.ldy + r0;
      const auto& dots = totals[token / kTileTokens].dots;
      for (int i = 0; i < rows; ++i) y[i] = dots[i][token % kTileTokens];
    }
  }
}

}  // namespace

void lacuna_spmm_bitmap_bf16_ukernel_16x64__amx(const SpmmArgs& a) {
  const WeightRows<K> b(a);
  thread_local std::vector<Line> strip(kStripBytes / sizeof(Line)), tail;
  thread_local std::vector<PassSums> pass_sums;
  thread_local std::vector<TileTotals> totals;
  const ActivationTiles x = bf16_pair_tiles(a, b.groups, tail);
  const TileSession session(kTileTokens);
  row_blocks(b, x, reinterpret_cast<int8_t*>(strip.data()), pass_sums, totals);
}

}  // namespace lacuna
