// CSR bf16 weights at small batch, the activations fetched by permutes.
// A row's nonzeros are taken 32 at a time, one VDPBF16PS per token; their
// activations are picked out of the 64-column windows the 32 columns span
// (about 32 / (64 x density) + 1 of them: 6 at 90 %), one VPERMT2W per
// window, each lane taking the window that holds its column.
// Why: the bitmap kernels pay a VPEXPANDW or VPCOMPRESSW (1.6 cycles on
// the Zen 5 host) and more for every 32 columns whatever the sparsity, so
// at 90 % one token ran at 27-41 % of the bandwidth (cold 2048->11264 and
// 5632->2048, `lacuna bench sweep`), bound by their own instructions; here
// a row costs a permute per window of every 32 nonzeros, and gathers
// (the 1x4 avx512f kernel) were slower still on that host.
// Columns are 16-bit lanes, so rows of at most 65536 columns
// (spmm_refusal_reason).
// A token's sum is fixed by its row (its nonzeros in chunks of 32, in
// order, into one accumulator): the same bits in any batch.
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

// NT tokens over every row of the call. The first NW windows of each chunk
// run unrolled, whether or not the chunk reaches them (a window past the
// chunk's last is read again and matches no lane); further ones in a loop.
template <int NW, int NT>
void windows_tile(const SpmmArgs& a, size_t n0) {
  const Tensor& w = *a.w;
  const uint64_t* row_ptr = w.section<uint64_t>(Section::row_ptr);
  const uint16_t* cols = w.section<uint16_t>(Section::col_idx);
  const uint16_t* values = w.section<uint16_t>(Section::values);
  const auto* x = static_cast<const uint16_t*>(a.x) + n0 * a.ldx;
  for (uint64_t r = a.row_begin; r < a.row_end; ++r) {
    __m512 acc[NT];
    unrolled_for<NT>([&](auto t) LACUNA_INLINE_LAMBDA { acc[t] = _mm512_setzero_ps(); });
    const uint64_t end = row_ptr[r + 1];
    for (uint64_t k = row_ptr[r]; k < end; k += 32) {
      // A chunk reads one line of each stream: request the line kValuesAhead on (as the bitmap kernels do).
      kernels::avx512::prefetch_t0(reinterpret_cast<const char*>(cols + k) + kernels::avx512::kValuesAhead);
      kernels::avx512::prefetch_t0(reinterpret_cast<const char*>(values + k) + kernels::avx512::kValuesAhead);
      const auto count = static_cast<unsigned>(std::min<uint64_t>(32, end - k));
      const auto live = static_cast<__mmask32>(_bzhi_u32(~0u, count));
      const __m512i index = _mm512_maskz_loadu_epi16(live, cols + k);
      const __m512i weights = _mm512_maskz_loadu_epi16(live, values + k);
      const uint64_t first = cols[k] / kWindow, last = cols[k + count - 1] / kWindow;
      const __m512i window_of_lane = _mm512_sub_epi16(_mm512_srli_epi16(index, 6), _mm512_set1_epi16(static_cast<short>(first)));
      __m512i picked[NT];
      unrolled_for<NT>([&](auto t) LACUNA_INLINE_LAMBDA { picked[t] = _mm512_setzero_si512(); });
      const auto window = [&](uint64_t j) LACUNA_INLINE_LAMBDA {
        const __mmask32 lanes = _mm512_mask_cmpeq_epi16_mask(live, window_of_lane, _mm512_set1_epi16(static_cast<short>(j)));
        const uint16_t* xw = x + std::min(first + j, last) * kWindow;
        unrolled_for<NT>([&](auto t) LACUNA_INLINE_LAMBDA {
          const uint16_t* xt = xw + t * a.ldx;
          picked[t] = _mm512_or_si512(picked[t], _mm512_maskz_permutex2var_epi16(lanes, _mm512_loadu_si512(xt), index, _mm512_loadu_si512(xt + 32)));
        });
      };
      unrolled_for<NW>([&](auto j) LACUNA_INLINE_LAMBDA { window(j); });
      for (uint64_t j = NW; j <= last - first; ++j) window(j);
      unrolled_for<NT>([&](auto t) LACUNA_INLINE_LAMBDA { acc[t] = _mm512_dpbf16_ps(acc[t], (__m512bh)weights, (__m512bh)picked[t]); });
    }
    unrolled_for<NT>([&](auto t) LACUNA_INLINE_LAMBDA { a.y[(n0 + t) * a.ldy + r] = _mm512_reduce_add_ps(acc[t]); });
  }
}

// The unrolled windows for the weight's density, about its chunks' average
// span: 6 at 90 %, where 6 ran faster than 8 in a throwaway copy (8 beat 6
// at 95 %; 12 there is not measured).
template <int NT>
void windows_tile_for_density(const SpmmArgs& a, size_t n0) {
  const TensorDesc& d = a.w->desc();
  const double density = static_cast<double>(d.nnz) / static_cast<double>(d.rows() * d.cols());
  const double span = csr_windows_per_chunk(density);
  if (span <= 3.5)
    windows_tile<3, NT>(a, n0);
  else if (span <= 6.5)
    windows_tile<6, NT>(a, n0);
  else
    windows_tile<12, NT>(a, n0);
}

}  // namespace

void lacuna_spmm_csr_bf16_ukernel_1x4__avx512bf16(const SpmmArgs& a) {
  kernels::for_token_tiles<kTokenTile>(a.n, [&](auto tile, size_t n0) { windows_tile_for_density<tile>(a, n0); });
}

}  // namespace lacuna
