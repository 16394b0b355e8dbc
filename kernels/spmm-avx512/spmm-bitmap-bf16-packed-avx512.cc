// Bitmap bf16 weights at small batch, the activations packed instead of the
// weights expanded. For each group, VPCOMPRESSW keeps the token's
// activations at the group's set bits, stored back to back in a per-thread
// buffer; the row's stored values, already back to back, then meet them in
// one VDPBF16PS per 32 nonzeros instead of one per 32 columns.
// Why: the expanding kernel (bitmap-small-n.h) pays an expand and a
// VDPBF16PS (two cycles each on the Intel AMX host) for every 32 columns
// whatever the sparsity, so at 90 % one token ran at 40-66 % of the
// bandwidth (cold 2048->11264 and 5632->2048, `lacuna bench sweep`), bound
// by its own instructions; here a group costs a compress and a store per
// token, and the dot products shrink with the nonzeros: 1.2-1.5x faster
// (docs/benchmarks.md, "Packed activations"). Each token packs for itself,
// so from about two tokens the expanding tiles are faster, and the
// server's batch-invariant policy leaves this kernel out (works_per_token).
// A token's sum is fixed by its row: the row's nonzeros in 32-value chunks,
// chunk c into accumulator c % 4, added pairwise; the same bits in any batch.
#include "kernels/spmm-avx512/bitmap-small-n.h"
#include "kernels/spmm-ukernels.h"

namespace lacuna {
namespace {

using kernels::for_token_tiles;
using kernels::unrolled_for;
using kernels::avx512::WeightRows;

// What WeightRows needs to know of bitmap bf16 weights.
struct Bf16Weights {
  using Value = uint16_t;
  using Mask = uint32_t;
  static constexpr int kWidth = 32;
  static constexpr bool kDense = false;
};
using Rows = WeightRows<Bf16Weights>;

inline __m512 dot(__m512 acc, __mmask32 live, const uint16_t* w, const uint16_t* x) {
  return _mm512_dpbf16_ps(acc, (__m512bh)_mm512_maskz_loadu_epi16(live, w), (__m512bh)_mm512_maskz_loadu_epi16(live, x));
}

inline constexpr int kTokenTile = 8;

// The streams are requested ahead (as bitmap-small-n.h's request_ahead) once
// every four groups, two lines of values and one of masks: enough for four
// groups up to 50 % density, where the expanding kernel requests two lines
// at every group.
inline constexpr int kPrefetchGroups = 4;
inline void request_ahead(const uint32_t* masks, const uint16_t* values) {
  const auto* v = reinterpret_cast<const char*>(values) + kernels::avx512::kValuesAhead;
  kernels::avx512::prefetch_t0(v);
  kernels::avx512::prefetch_t0(v + 64);
  kernels::avx512::prefetch_t0(reinterpret_cast<const char*>(masks) + kernels::avx512::kMasksAhead);
}

// NT tokens over every row of the call; `packed` holds NT rows of `stride`.
template <int NT>
void packed_tile(const Rows& b, size_t n0, uint16_t* packed, size_t stride) {
  const SpmmArgs& a = b.a;
  const auto* x = static_cast<const uint16_t*>(a.x) + n0 * a.ldx;
  for (uint64_t r = a.row_begin; r < a.row_end; ++r) {
    const uint32_t* masks = b.row_masks(r);
    const uint16_t* values = b.row_values(r);
    size_t live = 0;
    const auto group = [&](uint64_t g) LACUNA_INLINE_LAMBDA {
      const uint32_t m = kernels::avx512::load_mask(masks + g);
      unrolled_for<NT>([&](auto j) LACUNA_INLINE_LAMBDA {
        const __m512i xg = _mm512_loadu_si512(x + j * a.ldx + g * Bf16Weights::kWidth);
        _mm512_storeu_si512(packed + j * stride + live, kernels::avx512::fresh_compress_epi16(m, xg));
      });
      live += static_cast<size_t>(std::popcount(m));
    };
    uint64_t g = 0;
    for (; g + kPrefetchGroups <= b.groups; g += kPrefetchGroups) {
      request_ahead(masks + g, values + live);
      unrolled_for<kPrefetchGroups>([&](auto i) LACUNA_INLINE_LAMBDA { group(g + i); });
    }
    for (; g < b.groups; ++g) group(g);
    unrolled_for<NT>([&](auto j) LACUNA_INLINE_LAMBDA {
      const uint16_t* xs = packed + j * stride;
      __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
      size_t i = 0;
      for (; i + 128 <= live; i += 128)
        unrolled_for<4>([&](auto s) LACUNA_INLINE_LAMBDA { acc[s] = dot(acc[s], ~__mmask32{0}, values + i + 32 * s, xs + i + 32 * s); });
      // At most four chunks are left, the last one partial.
      unrolled_for<4>([&](auto s) LACUNA_INLINE_LAMBDA {
        if (i < live) {
          const size_t rest = std::min<size_t>(32, live - i);
          acc[s] = dot(acc[s], static_cast<__mmask32>(_bzhi_u32(~0u, static_cast<unsigned>(rest))), values + i, xs + i);
          i += 32;
        }
      });
      const __m512 sum = _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3]));
      a.y[(n0 + j) * a.ldy + r] = _mm512_reduce_add_ps(sum);
    });
  }
}

}  // namespace

void lacuna_spmm_bitmap_bf16_ukernel_1x8__avx512vbmi2(const SpmmArgs& a) {
  const Rows b(a);
  // A row packs to at most its column count; 32 more for the last group's full-vector store.
  const size_t stride = b.cols + Bf16Weights::kWidth;
  thread_local std::vector<uint16_t> packed;
  packed.resize(kTokenTile * stride);
  for_token_tiles<kTokenTile>(a.n, [&](auto tile, size_t n0) { packed_tile<tile>(b, n0, packed.data(), stride); });
}

}  // namespace lacuna
