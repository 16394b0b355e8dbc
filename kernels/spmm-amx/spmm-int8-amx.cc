// int8 weights x s8 activations on AMX tiles (TDPBSSD), for bitmap and dense
// rows at 6 (dense) or 10 (bitmap) to 64 tokens. Compiled with -mamx-tile -mamx-int8 and the AVX-512
// flags of the bitmap expansion; dispatch runs it only where Linux granted
// AMX tile data (cpu-features.cc).
//
// The VNNI tiles (spmm-bitmap-avx512.cc) spend one VPDPBUSD per token on
// each expanded 64-weight group, so a step of 16 tokens costs about 16x one
// token's compute. Here a group of 16 weight rows is one 16 x 64-byte tile
// and one TDPBSSD multiplies it by 16 tokens at once: the cost per group is
// the expansion (as in the VNNI tiles) and a share of a tile instruction
// whatever the token count up to 16.
//
// Layout: tile A is 16 weight rows x 64 columns, expanded from the bitmap
// into a per-thread buffer a strip at a time (row_blocks), or read in place
// from dense rows of whole groups; tile B is the
// activations of 16 tokens over the same 64 columns in AMX's four-byte
// interleave (B[k/4][token*4 + k%4]), packed once per call; tile C is 16
// rows x 16 tokens of int32 sums. Both operands signed: no +128 shift and no
// correction. Integer sums are exact in any order, so every token gets the
// VNNI tiles' integer and the same float steps after it: the same bits.
#include <immintrin.h>

#include <algorithm>
#include <bit>
#include <cstring>
#include <vector>

#include "kernels/common/unrolled-for.h"
#include "kernels/spmm-amx/amx-tiles.h"
#include "kernels/spmm-ukernels.h"

namespace lacuna {
namespace {

using kernels::unrolled_for;
using namespace kernels::avx512;
using namespace kernels::amx;

// A tile's int32 sums of |w x| <= 128 x 127 stay exact over 2^17 columns;
// wider rows are summed in chunks of that many (a whole number of strips),
// each chunk's sums added in int64.
constexpr uint64_t kChunkGroups = (uint64_t{1} << 17) / kGroupBytes;
constexpr int kMaxTokenTiles = 4;
static_assert(kChunkGroups % kStripGroups == 0);

template <bool Dense>
struct Int8Rows {
  using Mask = uint64_t;
  using Value = int8_t;
  static constexpr bool kDense = Dense;
  static constexpr int kWidth = kGroupBytes;
  static __m512i expand(const Mask* mask, const Value* p) { return fresh_expand_epi8(mask, load_unfolded<__m512i>(p)); }
};

// The activations of token tile `tile`, group g, in tile B's layout: row k/4
// holds each of the tile's `tile_tokens` tokens' four columns k..k+3 (tokens
// past n are zeros). A group of 16 tokens is a 16 x 16 matrix of four-byte
// columns, so B is its transpose. Every call packs every group (each block
// of rows reads them all); packed by a gather per row of B, cold products
// of 40-64 tokens took 2-10 % longer (docs/benchmarks.md, "The int8 tiles'
// sums by columns").
void pack_activations(const SpmmArgs& a, uint64_t groups, int tiles, int tile_tokens, uint32_t* out) {
  const auto* x = static_cast<const int8_t*>(a.x);
  const uint64_t tile_dwords = static_cast<uint64_t>(kTileRows) * static_cast<uint64_t>(tile_tokens);
  const auto b_row = static_cast<__mmask16>((1u << tile_tokens) - 1);
  for (int tile = 0; tile < tiles; ++tile) {
    const size_t n0 = static_cast<size_t>(tile) * kTileTokens;
    const size_t tokens = std::min<size_t>(kTileTokens, a.n - n0);
    const int8_t* tile_x = x + n0 * a.ldx;
    for (uint64_t g = 0; g < groups; ++g) {
      __m512 columns[kTileTokens], b[kTileRows];
      for (size_t j = 0; j < kTileTokens; ++j)
        columns[j] = j < tokens ? _mm512_castsi512_ps(_mm512_loadu_si512(tile_x + j * a.ldx + g * kGroupBytes)) : _mm512_setzero_ps();
      transpose_16x16(columns, b);
      uint32_t* dst = out + (static_cast<uint64_t>(tile) * groups + g) * tile_dwords;
      for (int k4 = 0; k4 < kTileRows; ++k4) _mm512_mask_storeu_epi32(dst + k4 * tile_tokens, b_row, _mm512_castps_si512(b[k4]));
    }
  }
}

// Tiles 0-3 accumulate: token tile t's sums of the groups g with
// g % Splits == s in tile t x Splits + s. One tile per token tile made each
// TDPBSSD wait for the one before it (its latency, several times its
// throughput); integer sums split over groups add up to the same total.
// A block of 16 rows goes in strips of kStripGroups groups: each strip's rows
// are expanded into `strip` (kStripStride apart, 17 KB, which stays in L1)
// and multiplied before the next strip is expanded. Whole rows expanded
// first (66 KB at 4096 columns, beyond L1) ran about 5 % slower; expanding
// a strip ahead into a second buffer, so that no tile load read lines just
// stored, 10 % slower (warm 4096x4096, one token).
template <int Tiles, class K>
void row_blocks(const WeightRows<K>& b, const uint32_t* packed, int tile_tokens, int8_t* strip) {
  constexpr int kSplits = kAccumulators / Tiles;
  // A group a turn per split, and at least two, so that A and B alternate between their two tiles.
  constexpr int kUnroll = kSplits < 2 ? 2 : kSplits;
  const SpmmArgs& a = b.a;
  alignas(64) int32_t sums[Tiles * kSplits][kTileRows][kTileTokens] = {};  // columns past tile_tokens stay 0
  int64_t totals[Tiles][kTileRows][kTileTokens];
  const uint64_t b_bytes = 4 * static_cast<uint64_t>(tile_tokens);       // a row of tile B
  const uint64_t b_dwords = kTileRows * static_cast<uint64_t>(tile_tokens);  // uint32s of one tile B in `packed`
  const uint64_t tile_stride = b.groups * b_dwords;                      // uint32s between token tiles of `packed`
  auto zero_accumulators = [] { unrolled_for<Tiles * kSplits>([&](auto c) LACUNA_INLINE_LAMBDA { tile_zero<decltype(c)::value>(); }); };
  auto store_accumulators = [&] {
    unrolled_for<Tiles * kSplits>([&](auto c) LACUNA_INLINE_LAMBDA { tile_store<decltype(c)::value>(sums[decltype(c)::value], kTileTokens * 4); });
  };
  auto add_accumulators = [&] {
    store_accumulators();
    for (int c = 0; c < Tiles * kSplits; ++c)
      for (int i = 0; i < kTileRows; ++i)
        for (int j = 0; j < kTileTokens; ++j) totals[c / kSplits][i][j] += sums[c][i][j];
  };
  // Rows of one chunk (all but the widest) need no int64 totals: their
  // splits cover the chunk's columns once, so their sum fits int32 as each
  // split's does. Each token tile's splits are then added as vectors and
  // written a token at a time from the columns of the sum. The int64 totals,
  // a scalar loop over rows and tokens and the packing of B together took
  // a third of a 16-token 2048->2048 product; without the first two, cold
  // products of 16-64 tokens took 7-10 % less time (docs/benchmarks.md,
  // "The int8 tiles' sums by columns"). The float steps are the same, so
  // the bits are too.
  const bool one_chunk = b.groups <= kChunkGroups;
  auto write_one_chunk = [&](uint64_t r0, int rows) {
    const auto row_mask = static_cast<__mmask16>((1u << rows) - 1);
    const __m512 row_scales = _mm512_maskz_loadu_ps(row_mask, b.scales + r0);
    for (int t = 0; t < Tiles; ++t) {
      __m512 dots[kTileRows], columns[kTileTokens];
      for (int i = 0; i < kTileRows; ++i) {
        __m512i sum = _mm512_load_si512(sums[t * kSplits][i]);
        for (int split = 1; split < kSplits; ++split) sum = _mm512_add_epi32(sum, _mm512_load_si512(sums[t * kSplits + split][i]));
        dots[i] = _mm512_castsi512_ps(sum);
      }
      transpose_16x16(dots, columns);
      const size_t n0 = static_cast<size_t>(t) * kTileTokens, tokens = std::min<size_t>(kTileTokens, a.n - n0);
      for (size_t j = 0; j < tokens; ++j) {
        const __m512 y = _mm512_mul_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_castps_si512(columns[j])), row_scales), _mm512_set1_ps(a.x_scale[n0 + j]));
        _mm512_mask_storeu_ps(a.y + (n0 + j) * a.ldy + r0, row_mask, y);
      }
    }
  };
  auto group = [&](uint64_t g, const int8_t* weights, uint64_t weight_stride, auto turn) LACUNA_INLINE_LAMBDA {
    constexpr int kTurn = decltype(turn)::value, kA = kFirstA + kTurn % 2;
    tile_load<kA>(weights, weight_stride);
    unrolled_for<Tiles>([&](auto t) LACUNA_INLINE_LAMBDA {
      constexpr int kT = decltype(t)::value, kB = kFirstB + (kT + kTurn) % 2;
      tile_load<kB>(packed + kT * tile_stride + g * b_dwords, b_bytes);
      tile_dpbssd<kT * kSplits + kTurn % kSplits, kA, kB>();
    });
  };
  for (uint64_t r0 = a.row_begin; r0 < a.row_end; r0 += kTileRows) {
    const int rows = static_cast<int>(std::min<uint64_t>(kTileRows, a.row_end - r0));
    RowCursor<K> cursor[kTileRows];
    for (int i = 0; i < rows; ++i) cursor[i] = {K::kDense ? nullptr : b.row_masks(r0 + i), b.row_values(r0 + i)};
    if (rows < kTileRows) std::memset(strip + rows * kStripStride, 0, (kTileRows - rows) * kStripStride);
    if (!one_chunk) std::memset(totals, 0, sizeof totals);
    zero_accumulators();
    // Dense rows of whole groups are read by the tile loads in place: copied
    // first, one token took 1.5x the time (warm 4096x4096, 1.13 against 0.74 ms).
    const bool in_place = K::kDense && b.cols % kGroupBytes == 0 && rows == kTileRows;
    const int8_t* first_row = in_place ? b.row_values(r0) : strip;
    const uint64_t row_stride = in_place ? b.cols : kStripStride;
    for (uint64_t g0 = 0; g0 < b.groups; g0 += kStripGroups) {
      const uint64_t g1 = std::min(b.groups, g0 + kStripGroups);
      if (!in_place)
        for (int i = 0; i < rows; ++i) expand_strip(b, cursor[i], g0, g1, strip + i * kStripStride);
      // Group g's 64 columns of the block's first row.
      const auto at = [&](uint64_t g) { return first_row + (in_place ? g : g - g0) * kGroupBytes; };
      uint64_t g = g0;
      for (; g + kUnroll <= g1; g += kUnroll)
        unrolled_for<kUnroll>([&](auto turn) LACUNA_INLINE_LAMBDA { group(g + turn, at(g + turn), row_stride, turn); });
      unrolled_for<kUnroll - 1>([&](auto turn) LACUNA_INLINE_LAMBDA {
        if (g + turn < g1) group(g + turn, at(g + turn), row_stride, turn);
      });
      if (one_chunk) {
        if (g1 == b.groups) store_accumulators();
      } else if (g1 == b.groups || g1 % kChunkGroups == 0) {
        add_accumulators();
        if (g1 < b.groups) zero_accumulators();
      }
    }
    if (one_chunk) {
      write_one_chunk(r0, rows);
      continue;
    }
    // Token by token: the rows of one token are one cache line of y, where
    // row by row each store went to another token's line, ldy apart (at
    // 4096 rows all in one L1 set).
    float row_scales[kTileRows];
    for (int i = 0; i < rows; ++i) row_scales[i] = b.row_scale(r0 + static_cast<uint64_t>(i));
    for (size_t token = 0; token < a.n; ++token) {
      const int64_t(&dots)[kTileRows][kTileTokens] = totals[token / kTileTokens];
      float* y = a.y + token * a.ldy + r0;
      for (int i = 0; i < rows; ++i) y[i] = static_cast<float>(dots[i][token % kTileTokens]) * row_scales[i] * a.x_scale[token];
    }
  }
}

template <bool Dense>
void amx_product(const SpmmArgs& a) {
  using K = Int8Rows<Dense>;
  const WeightRows<K> b(a);
  const int tiles = static_cast<int>((a.n + kTileTokens - 1) / kTileTokens);
  // One token tile holds just the batch: its B tiles, read from L2 once per
  // block of rows, were 16 tokens wide whatever the batch, and at 1-4
  // tokens those loads cost more than the products.
  const int tile_tokens = tiles == 1 ? static_cast<int>(a.n) : kTileTokens;
  thread_local std::vector<Line> strip(kStripBytes / sizeof(Line)), packed;
  const size_t packed_bytes = static_cast<size_t>(tiles) * b.groups * kTileRows * static_cast<size_t>(tile_tokens) * 4;
  packed.resize((packed_bytes + sizeof(Line) - 1) / sizeof(Line));
  auto* packed_x = reinterpret_cast<uint32_t*>(packed.data());
  pack_activations(a, b.groups, tiles, tile_tokens, packed_x);
  auto* strip_rows = reinterpret_cast<int8_t*>(strip.data());
  const TileSession session(tile_tokens);
  switch (tiles) {
    case 1: return row_blocks<1>(b, packed_x, tile_tokens, strip_rows);
    case 2: return row_blocks<2>(b, packed_x, tile_tokens, strip_rows);
    case 3: return row_blocks<3>(b, packed_x, tile_tokens, strip_rows);
    default: return row_blocks<kMaxTokenTiles>(b, packed_x, tile_tokens, strip_rows);
  }
}

}  // namespace

void lacuna_spmm_bitmap_int8_ukernel_16x64__amx(const SpmmArgs& a) { amx_product<false>(a); }
void lacuna_spmm_dense_int8_ukernel_16x64__amx(const SpmmArgs& a) { amx_product<true>(a); }

}  // namespace lacuna
