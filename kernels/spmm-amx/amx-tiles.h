#pragma once
// What the AMX kernels share (spmm-int8-amx.cc, spmm-bf16-amx.cc): the tile
// layout, the tile instructions, the per-call tile configuration, and the
// expansion of a strip of bitmap groups into tile A's buffer.
// Included only by files compiled with -mamx-tile and the AVX-512 flags of
// the bitmap expansion.
#include <immintrin.h>

#include <bit>
#include <cstdint>

#include "kernels/spmm-avx512/bitmap-small-n.h"

namespace lacuna::kernels::amx {

inline constexpr int kTileRows = 16;    // weight rows of tile A, output rows of tile C
inline constexpr int kTileTokens = 16;  // tokens of tiles B and C
inline constexpr int kGroupBytes = 64;  // columns of tile A: one bitmap group (64 int8 or 32 bf16)
// Tiles 0-3 accumulate; A alternates between tiles 4 and 5 and B between 6
// and 7 from one load to the next, so a load need not wait for the product
// still reading the tile it would overwrite.
inline constexpr int kAccumulators = 4, kFirstA = 4, kFirstB = 6;
// Groups per strip (row_blocks) and the strip's row stride: one group more
// than a row holds, so that its rows do not share L1 sets.
inline constexpr uint64_t kStripGroups = 16;
inline constexpr uint64_t kStripStride = (kStripGroups + 1) * kGroupBytes, kStripBytes = kTileRows * kStripStride;

// The tile instructions with the tile numbers as template arguments: GCC's
// _tile_* macros paste their argument's spelling into the assembly, so they
// take only literal numbers. Loads and stores name memory as clobbered: the
// compiler must not move the buffer's ordinary stores past a tile load that
// reads them.
template <int T>
inline void tile_zero() {
  __asm__ volatile("tilezero %%tmm%c0" : : "i"(T));
}
template <int T>
inline void tile_load(const void* base, uint64_t stride) {
  __asm__ volatile("tileloadd (%0,%1,1), %%tmm%c2" : : "r"(base), "r"(stride), "i"(T) : "memory");
}
template <int T>
inline void tile_store(void* base, uint64_t stride) {
  __asm__ volatile("tilestored %%tmm%c2, (%0,%1,1)" : : "r"(base), "r"(stride), "i"(T) : "memory");
}

// C += A x B, signed bytes, int32 sums.
template <int C, int A, int B>
inline void tile_dpbssd() {
  __asm__ volatile("tdpbssd %%tmm%c2, %%tmm%c1, %%tmm%c0" : : "i"(C), "i"(A), "i"(B));
}
// C += A x B, bf16 pairs, f32 sums.
template <int C, int A, int B>
inline void tile_dpbf16ps() {
  __asm__ volatile("tdpbf16ps %%tmm%c2, %%tmm%c1, %%tmm%c0" : : "i"(C), "i"(A), "i"(B));
}

// One cache line, for buffers that tiles and aligned vector stores read and write.
struct alignas(64) Line {
  int8_t bytes[64];
};

struct alignas(64) TileConfig {
  uint8_t palette = 1;
  uint8_t start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t bytes_per_row[16] = {};
  uint8_t rows[16] = {};
};

// Every tile has 16 rows. A holds 64 bytes a row; B and C hold 4 bytes for
// each token of a token tile (`tile_tokens`). Row blocks short of 16 rows
// are padded with zeros. Released at the end of each call, so a thread
// holds no tile state between products.
class TileSession {
 public:
  explicit TileSession(int tile_tokens) {
    TileConfig config;
    for (int t = 0; t < 8; ++t) {
      config.bytes_per_row[t] = static_cast<uint16_t>(t == kFirstA || t == kFirstA + 1 ? kGroupBytes : 4 * tile_tokens);
      config.rows[t] = kTileRows;
    }
    // In asm with the whole configuration as its operand: through
    // _tile_loadconfig, GCC 12 saw no read of the rows and widths and dropped
    // their stores once the constructor was inlined into a caller (only the
    // zeroing and the palette were left, so the first tile instruction
    // raised SIGILL).
    __asm__ volatile("ldtilecfg %0" : : "m"(config));
  }
  ~TileSession() { _tile_release(); }
  TileSession(const TileSession&) = delete;
  TileSession& operator=(const TileSession&) = delete;
};

// The columns of a 16 x 16 matrix held as 16 row vectors: columns[j][i] =
// rows[i][j]. A C tile's column is one token's 16 rows, which are one
// vector of y. Written row by row from the stored tile (16 strided loads
// and 16 scalar stores a token, each behind a branch on the block's row
// count), y had about a tenth of the bf16 kernel's samples at 128 tokens;
// by columns the cold 2048->5632 product at 128 tokens took 2.38-2.44 ms
// against 2.42-2.53 (the int8 tiles: docs/benchmarks.md, "The int8 tiles'
// sums by columns").
inline void transpose_16x16(__m512 (&rows)[kTileRows], __m512 (&columns)[kTileTokens]) {
  static_assert(kTileRows == 16 && kTileTokens == 16);
  __m512 t[16];
  __m512* r = rows;
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 16; i += 4) {
    r[i] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t[i]), _mm512_castps_pd(t[i + 2])));
    r[i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t[i]), _mm512_castps_pd(t[i + 2])));
    r[i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t[i + 1]), _mm512_castps_pd(t[i + 3])));
    r[i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t[i + 1]), _mm512_castps_pd(t[i + 3])));
  }
  for (int i = 0; i < 16; i += 8)
    for (int k = 0; k < 4; ++k) {
      t[i + k] = _mm512_shuffle_f32x4(r[i + k], r[i + k + 4], 0x88);
      t[i + k + 4] = _mm512_shuffle_f32x4(r[i + k], r[i + k + 4], 0xdd);
    }
  for (int k = 0; k < 8; ++k) {
    columns[k] = _mm512_shuffle_f32x4(t[k], t[k + 8], 0x88);
    columns[k + 8] = _mm512_shuffle_f32x4(t[k], t[k + 8], 0xdd);
  }
}

// The same from a stored tile.
inline void transpose_16x16(const float (&m)[kTileRows][kTileTokens], __m512 (&columns)[kTileTokens]) {
  __m512 rows[kTileRows];
  for (int i = 0; i < kTileRows; ++i) rows[i] = _mm512_load_ps(m[i]);
  transpose_16x16(rows, columns);
}

// Where one weight row's walk has reached: its next group's mask and values.
template <class K>
struct RowCursor {
  const typename K::Mask* mask;
  const typename K::Value* values;
};

// Groups g0 .. g1 - 1 of one weight row, expanded (or, dense, copied with
// the last group's columns past the row's end zeroed) into `out`. K::expand
// (mask pointer, values) expands one group.
template <class K>
void expand_strip(const avx512::WeightRows<K>& b, RowCursor<K>& row, uint64_t g0, uint64_t g1, int8_t* out) {
  const typename K::Value* p = row.values;
  if constexpr (K::kDense) {
    for (uint64_t g = g0; g < g1; ++g, out += kGroupBytes) {
      avx512::request_ahead<K>(nullptr, p + g * kGroupBytes);
      _mm512_store_si512(out, _mm512_maskz_loadu_epi8(b.dense_columns(g), p + g * kGroupBytes));
    }
  } else {
    const typename K::Mask* masks = row.mask;
    for (uint64_t g = g0; g < g1; ++g, ++masks, out += kGroupBytes) {
      avx512::request_ahead<K>(masks, p);
      // The mask in a general register for the popcount, and from memory for
      // the expand, as the VNNI tiles take it (kMaskFromMemory): 2-6 % faster here.
      const typename K::Mask m = avx512::load_mask(masks);
      _mm512_store_si512(out, K::expand(masks, p));
      p += std::popcount(m);
    }
    row = {masks, p};
  }
}

}  // namespace lacuna::kernels::amx
