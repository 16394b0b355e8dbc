// bf16 bitmap weights x bf16 activations on AMX tiles (TDPBF16PS), from 7
// tokens on. The structure of the int8 tiles (spmm-int8-amx.cc, and
// amx-tiles.h for what they share): tile A is 16 weight rows x one group of
// 32 bf16 columns, expanded from the bitmap a strip at a time; tile B is 16
// tokens' activations over the group's 16 column pairs (B[k/2][token*2 +
// k%2]), read in place from ActLayout::bf16_pair_tiles, where each is 1 KB
// of consecutive lines; tile C is 16 rows x 16 tokens of f32 sums.
// A pass multiplies an expanded strip by four token tiles; more tokens take
// more passes over it, each pass's sums stored after a strip and loaded
// before the next. Each token's sum is made the same way in any batch
// (kPassTiles), so a part of a batch gets the whole batch's bits
// (Linear::run_part); they are not the VDPBF16PS tiles' bits, so the
// runtime's batch-invariant policy, which runs every batch on the
// single-token kernel, never picks this one.
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

// The activations (ActLayout::bf16_pair_tiles) as B tiles: token tile t's
// column pairs at `data` + t x `tile_dwords`, 16 dwords (its 16 tokens) a
// pair, so group g's B tile is the 1 KB at 256 x g dwords from there. A
// group whose pairs run past the activations' end (rows not a whole number
// of groups) is read from `tail`: each token tile's pairs of that group,
// zero-padded to 16 (garbage times a pruned weight's zero could be NaN).
struct ActivationTiles {
  static constexpr uint64_t kStride = 4 * kTileTokens;                 // bytes from one pair to the next
  static constexpr uint64_t kGroupDwords = kTileRows * kTileTokens;  // one B tile
  const uint32_t* data = nullptr;
  uint64_t tile_dwords = 0;
  const uint32_t* tail = nullptr;
  uint64_t tail_group = std::numeric_limits<uint64_t>::max();

  // Token tile t's B tile of group 0, and of the tail group.
  const uint32_t* at(uint64_t tile) const { return data + tile * tile_dwords; }
  const uint32_t* tail_at(uint64_t tile) const { return tail + tile * kGroupDwords; }
};

ActivationTiles activation_tiles(const SpmmArgs& a, uint64_t groups, std::vector<Line>& tail_buffer) {
  const uint64_t pairs = (a.w->desc().cols() + 1) / 2, tiles = (a.n + kTileTokens - 1) / kTileTokens;
  ActivationTiles t{static_cast<const uint32_t*>(a.x), pairs * kTileTokens};
  const uint64_t whole = pairs / kTileRows;
  if (whole < groups) {
    tail_buffer.assign((tiles * ActivationTiles::kGroupDwords * 4 + sizeof(Line) - 1) / sizeof(Line), Line{});
    auto* tail = reinterpret_cast<uint32_t*>(tail_buffer.data());
    for (uint64_t tile = 0; tile < tiles; ++tile)
      std::memcpy(tail + tile * ActivationTiles::kGroupDwords, t.at(tile) + whole * ActivationTiles::kGroupDwords,
                  (pairs - whole * kTileRows) * kTileTokens * 4);
    t.tail = tail;
    t.tail_group = whole;
  }
  return t;
}

// A pass multiplies a strip by up to four token tiles, each summing every
// group in order into one accumulator tile: a token's sum is made the same
// way in any batch. Splitting the groups over two accumulators when fewer
// tiles run (as the int8 tiles do) would change a token's bits with the
// batch; one accumulator at one token tile measured 3-5 % slower than four
// (cold 2048->5632 at 70 %, 16 tokens: 0.89-0.92 against 0.83-0.88 ms).
constexpr int kPassTiles = kAccumulators;

// One pass's accumulator tiles in memory: between strips when a block of
// rows has more token tiles than one pass holds, and at the block's end
// (its sums, read into y).
struct PassSums {
  alignas(64) float tiles[kAccumulators][kTileRows][kTileTokens];
};

// One strip (groups g0 .. g1 - 1 of a block of 16 rows, rows kStripStride
// apart in `strip`) times token tiles first_tile .. first_tile + Tiles - 1.
template <int Tiles>
void multiply_strip(const ActivationTiles& x, uint64_t first_tile, uint64_t g0, uint64_t g1, const int8_t* strip) {
  // Two groups a turn: A and B alternate between their two tiles.
  constexpr int kUnroll = 2;
  // Each token tile's B tile of group 0, worked out once per strip, not at every load.
  const uint32_t* b_first[Tiles];
  const uint32_t* b_tail[Tiles];
  for (int t = 0; t < Tiles; ++t) {
    b_first[t] = x.at(first_tile + static_cast<uint64_t>(t));
    b_tail[t] = x.tail ? x.tail_at(first_tile + static_cast<uint64_t>(t)) : nullptr;
  }
  const uint64_t tail_group = x.tail_group;
  auto group = [&](uint64_t g, auto turn) LACUNA_INLINE_LAMBDA {
    constexpr int kTurn = decltype(turn)::value, kA = kFirstA + kTurn % 2;
    tile_load<kA>(strip + (g - g0) * kGroupBytes, kStripStride);
    const bool tail = g == tail_group;
    unrolled_for<Tiles>([&](auto t) LACUNA_INLINE_LAMBDA {
      constexpr int kT = decltype(t)::value, kB = kFirstB + (kT + kTurn) % 2;
      tile_load<kB>(tail ? b_tail[kT] : b_first[kT] + g * ActivationTiles::kGroupDwords, ActivationTiles::kStride);
      tile_dpbf16ps<kT, kA, kB>();
    });
  };
  uint64_t g = g0;
  for (; g + kUnroll <= g1; g += kUnroll) unrolled_for<kUnroll>([&](auto turn) LACUNA_INLINE_LAMBDA { group(g + turn, turn); });
  unrolled_for<kUnroll - 1>([&](auto turn) LACUNA_INLINE_LAMBDA {
    if (g + turn < g1) group(g + turn, turn);
  });
}

// A block of 16 rows goes in strips of kStripGroups groups (17 KB, in L1):
// each strip's rows are expanded into `strip` and multiplied by every token
// tile before the next strip is expanded. Strips of 32 groups, halving the
// passes' stores and loads of their sums, measured no faster at 128 and 256
// tokens.
void row_blocks(const WeightRows<K>& b, const ActivationTiles& x, int8_t* strip, std::vector<PassSums>& pass_buffer) {
  const SpmmArgs& a = b.a;
  const uint64_t tiles = (a.n + kTileTokens - 1) / kTileTokens;
  const uint64_t passes = (tiles + kPassTiles - 1) / kPassTiles;
  pass_buffer.resize(passes);
  PassSums* const pass_sums = pass_buffer.data();
  for (uint64_t r0 = a.row_begin; r0 < a.row_end; r0 += kTileRows) {
    const int rows = static_cast<int>(std::min<uint64_t>(kTileRows, a.row_end - r0));
    RowCursor<K> cursor[kTileRows];
    for (int i = 0; i < rows; ++i) cursor[i] = {b.row_masks(r0 + i), b.row_values(r0 + i)};
    if (rows < kTileRows) std::memset(strip + rows * kStripStride, 0, (kTileRows - rows) * kStripStride);
    for (uint64_t g0 = 0; g0 < b.groups; g0 += kStripGroups) {
      const uint64_t g1 = std::min(b.groups, g0 + kStripGroups);
      for (int i = 0; i < rows; ++i) expand_strip(b, cursor[i], g0, g1, strip + i * kStripStride);
      const bool last = g1 == b.groups;
      for (uint64_t p = 0; p < passes; ++p) {
        const auto pass = [&](auto pass_tiles) {
          constexpr int kTiles = decltype(pass_tiles)::value;
          PassSums& sums = pass_sums[p];
          // One pass keeps its sums in the tiles from strip to strip.
          if (g0 == 0)
            unrolled_for<kTiles>([&](auto c) LACUNA_INLINE_LAMBDA { tile_zero<decltype(c)::value>(); });
          else if (passes > 1)
            unrolled_for<kTiles>([&](auto c) LACUNA_INLINE_LAMBDA { tile_load<decltype(c)::value>(sums.tiles[decltype(c)::value], kTileTokens * 4); });
          multiply_strip<kTiles>(x, p * kPassTiles, g0, g1, strip);
          if (passes > 1 || last)
            unrolled_for<kTiles>([&](auto c) LACUNA_INLINE_LAMBDA { tile_store<decltype(c)::value>(sums.tiles[decltype(c)::value], kTileTokens * 4); });
        };
        switch (std::min<uint64_t>(kPassTiles, tiles - p * kPassTiles)) {
          case 1: pass(std::integral_constant<int, 1>{}); break;
          case 2: pass(std::integral_constant<int, 2>{}); break;
          case 3: pass(std::integral_constant<int, 3>{}); break;
          default: pass(std::integral_constant<int, 4>{}); break;
        }
      }
    }
    // A token's 16 rows are one vector of y: a column of its C tile.
    const auto row_mask = static_cast<__mmask16>((1u << rows) - 1);
    for (uint64_t tile = 0; tile < tiles; ++tile) {
      __m512 columns[kTileTokens];
      transpose_16x16(pass_sums[tile / kPassTiles].tiles[tile % kPassTiles], columns);
      const size_t n0 = tile * kTileTokens, tokens = std::min<size_t>(kTileTokens, a.n - n0);
      for (size_t j = 0; j < tokens; ++j) _mm512_mask_storeu_ps(a.y + (n0 + j) * a.ldy + r0, row_mask, columns[j]);
    }
  }
}

// Each block of rows reads every token's activations, so the tokens go in
// chunks whose activations stay in L2 (2 MB here); the rows are expanded
// again for each chunk.
constexpr uint64_t kChunkActivationBytes = uint64_t{1} << 20;

}  // namespace

void lacuna_spmm_bitmap_bf16_ukernel_16x64__amx(const SpmmArgs& a) {
  thread_local std::vector<Line> strip(kStripBytes / sizeof(Line)), tail;
  thread_local std::vector<PassSums> pass_sums;
  const uint64_t tile_dwords = (a.w->desc().cols() + 1) / 2 * kTileTokens;
  const size_t chunk = kTileTokens * std::max<size_t>(1, kChunkActivationBytes / (4 * tile_dwords));
  const TileSession session(kTileTokens);
  for (size_t n0 = 0; n0 < a.n; n0 += chunk) {
    SpmmArgs part = a;
    part.x = static_cast<const uint32_t*>(a.x) + n0 / kTileTokens * tile_dwords;
    part.n = std::min(chunk, a.n - n0);
    part.y = a.y + n0 * a.ldy;
    const WeightRows<K> b(part);
    row_blocks(b, activation_tiles(part, b.groups, tail), reinterpret_cast<int8_t*>(strip.data()), pass_sums);
  }
}

}  // namespace lacuna
