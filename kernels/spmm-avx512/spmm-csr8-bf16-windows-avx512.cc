// csr8 bf16 weights at small batch. A row is taken one 256-column block at
// a time (up to 32 of its nonzeros per chunk, one VDPBF16PS per token); the
// activations are picked out of the block's four 64-column windows, one
// VPERMT2W per window, each lane taking the window its byte offset's top two
// bits name.
// Against the CSR windows kernel (spmm-csr-bf16-windows-avx512.cc) a chunk
// needs no span worked out: its windows are its block's, always four (fewer
// in a row's last block when narrower), so no window loop to mispredict and
// no clamp on the last window; and a nonzero is 3 bytes, not 4. In a throwaway
// copy on the Zen 5 host, 90 % 2048->11264 over a 2 GB working set on one
// thread: 36.6 ns a row against the CSR windows kernel's 50.7.
// A token's sum is fixed by its row (its blocks' chunks in order, into one
// accumulator): the same bits in any batch.
// Compiled with the bitmap kernels' flags (kernels/CMakeLists.txt): F, BW, VL, VBMI2, BF16, VNNI, BMI2.
#include <immintrin.h>

#include <algorithm>

#include "kernels/common/token-tiles.h"
#include "kernels/common/unrolled-for.h"
#include "kernels/spmm-avx512/bitmap-small-n.h"
#include "kernels/spmm-ukernels.h"

namespace lacuna {
namespace {

using kernels::unrolled_for;

constexpr int kTokenTile = 4;
constexpr uint64_t kWindow = 64;  // the bf16 activations one VPERMT2W selects from (two registers)
constexpr int kWindowsPerBlock = static_cast<int>(kCsr8BlockColumns / kWindow);

// Adds the products of one block's `count` nonzeros (from entry k) for NT
// tokens; `xb` is the block's first activation of the tile's first token.
// The first chunk runs whatever the count (an empty block's lanes are all
// masked off) and a loop takes the rest, which at 90 % and 95 % a block
// seldom has. With every chunk in the loop, one token took 1.3-1.6x as long
// (same-process A/B on one core of the Zen 5 host, warm: 108 against 75 ns
// a 5632-column row at 90 %, 101 against 64 at 95 %; docs/benchmarks.md,
// "A block's first chunk").
template <int NW, int NT>
[[gnu::always_inline]] inline void block_product(const uint8_t* offsets, const uint16_t* values, uint64_t k, unsigned count, const uint16_t* xb, size_t ldx,
                          __m512 (&acc)[NT]) {
  auto chunk = [&](unsigned s) LACUNA_INLINE_LAMBDA {
    // A chunk reads a line of values and half a line of offsets: request them as far ahead as the other bitmap kernels do.
    kernels::avx512::prefetch_t0(reinterpret_cast<const char*>(values + k + s) + kernels::avx512::kValuesAhead);
    kernels::avx512::prefetch_t0(reinterpret_cast<const char*>(offsets + k + s) + kernels::avx512::kValuesAhead / 2);
    const auto live = static_cast<__mmask32>(_bzhi_u32(~0u, std::min(32u, count - s)));
    const __m512i offset = _mm512_cvtepu8_epi16(_mm256_maskz_loadu_epi8(live, offsets + k + s));
    const __m512i weights = _mm512_maskz_loadu_epi16(live, values + k + s);
    // A lane's window is its offset's top two bits: permute every window
    // (dead lanes zeroed), then pick by bit 6 and bit 7. Against a compare
    // for each window's lanes and an OR of masked permutes, 7-10 % less time
    // a row at 90 % and 95 % for one token, 3-7 % for four (docs/benchmarks.md,
    // "Picking a lane's window by its bits").
    const __mmask32 odd_window = NW > 1 ? _mm512_test_epi16_mask(offset, _mm512_set1_epi16(64)) : 0;
    const __mmask32 upper_half = NW > 2 ? _mm512_test_epi16_mask(offset, _mm512_set1_epi16(128)) : 0;
    unrolled_for<NT>([&](auto t) LACUNA_INLINE_LAMBDA {
      const uint16_t* xt = xb + t * ldx;
      __m512i window[NW];
      unrolled_for<NW>([&](auto i) LACUNA_INLINE_LAMBDA {
        const uint16_t* xw = xt + i * kWindow;
        window[i] = _mm512_maskz_permutex2var_epi16(live, _mm512_loadu_si512(xw), offset, _mm512_loadu_si512(xw + 32));
      });
      __m512i picked = window[0];
      if constexpr (NW > 1) picked = _mm512_mask_blend_epi16(odd_window, window[0], window[1]);
      if constexpr (NW == 3) picked = _mm512_mask_blend_epi16(upper_half, picked, window[2]);
      if constexpr (NW == 4) picked = _mm512_mask_blend_epi16(upper_half, picked, _mm512_mask_blend_epi16(odd_window, window[2], window[3]));
      acc[t] = _mm512_dpbf16_ps(acc[t], (__m512bh)weights, (__m512bh)picked);
    });
  };
  chunk(0);
  for (unsigned s = 32; s < count; s += 32) chunk(s);
}

// A row's last block when it is narrower than 256 columns, of 1 to 4
// windows (activation rows are padded to 64 columns only; 193-255 columns
// take all four, as a whole block). Out of line:
// inlined, its copies of the block product made GCC 12 spill the 4-token
// tile of the main loop to the stack (4 tokens of 90 % 2048->5632 then ran
// 1.5x slower than the CSR windows kernel; level after).
template <int NT>
[[gnu::noinline]] void narrow_block_product(uint64_t columns, const uint8_t* offsets, const uint16_t* values, uint64_t k, unsigned count,
                                            const uint16_t* xb, size_t ldx, __m512 (&acc)[NT]) {
  switch ((columns + kWindow - 1) / kWindow) {
    case 1: block_product<1, NT>(offsets, values, k, count, xb, ldx, acc); break;
    case 2: block_product<2, NT>(offsets, values, k, count, xb, ldx, acc); break;
    case 3: block_product<3, NT>(offsets, values, k, count, xb, ldx, acc); break;
    default: block_product<kWindowsPerBlock, NT>(offsets, values, k, count, xb, ldx, acc); break;
  }
}

// NT tokens over every row of the call.
template <int NT>
void csr8_tile(const SpmmArgs& a, size_t n0) {
  const Tensor& w = *a.w;
  const uint64_t cols = w.desc().cols(), blocks = csr8_block_count(w.desc());
  const uint64_t full_blocks = cols / kCsr8BlockColumns, narrow_columns = cols % kCsr8BlockColumns;
  const uint64_t* row_ptr = w.section<uint64_t>(Section::row_ptr);
  const uint16_t* counts = w.section<uint16_t>(Section::block_counts);
  const uint8_t* offsets = w.section<uint8_t>(Section::col_idx);
  const uint16_t* values = w.section<uint16_t>(Section::values);
  const auto* x = static_cast<const uint16_t*>(a.x) + n0 * a.ldx;
  for (uint64_t r = a.row_begin; r < a.row_end; ++r) {
    __m512 acc[NT];
    unrolled_for<NT>([&](auto t) LACUNA_INLINE_LAMBDA { acc[t] = _mm512_setzero_ps(); });
    const uint16_t* row_counts = counts + r * blocks;
    uint64_t k = row_ptr[r];
    for (uint64_t b = 0; b < full_blocks; ++b) {
      block_product<kWindowsPerBlock, NT>(offsets, values, k, row_counts[b], x + b * kCsr8BlockColumns, a.ldx, acc);
      k += row_counts[b];
    }
    if (narrow_columns)
      narrow_block_product<NT>(narrow_columns, offsets, values, k, row_counts[full_blocks], x + full_blocks * kCsr8BlockColumns, a.ldx, acc);
    unrolled_for<NT>([&](auto t) LACUNA_INLINE_LAMBDA { a.y[(n0 + t) * a.ldy + r] = _mm512_reduce_add_ps(acc[t]); });
  }
}

}  // namespace

void lacuna_spmm_csr8_bf16_ukernel_1x4__avx512bf16(const SpmmArgs& a) {
  kernels::for_token_tiles<kTokenTile>(a.n, [&](auto tile, size_t n0) { csr8_tile<tile>(a, n0); });
}

}  // namespace lacuna
