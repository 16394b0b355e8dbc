// Bitmap-blocked small-batch kernels for every dtype; see bitmap-small-n.h.
// Compiled with -mavx512f -mavx512bw -mavx512vbmi2 -mavx512bf16 -mavx512vnni;
// dispatch runs each only where its CpuFeature bits are usable.
#include "kernels/spmm-avx512/bitmap-small-n.h"
#include "kernels/spmm-ukernels.h"

namespace lacuna {
namespace {

using kernels::avx512::small_n_product;
using kernels::avx512::small_n_product_with_half_loads_where_sparse;

// What the f32-accumulating traits share: no zero point, a plain sum, always
// in four splits (a float sum's bits depend on its order; see bitmap-small-n.h).
struct FloatAccumulator {
  using Acc = __m512;
  // 4 rows x 6 tokens, or 2 x 7-10 for bf16 (each (row, token) one register per split).
  static constexpr int kTokenTile = 6;
  static constexpr int kRowTile = 4;
  static constexpr int row_tile(int tokens) { return tokens <= 6 ? 4 : 2; }
  static constexpr int narrower_tile(int) { return 0; }  // never narrowed: see Bf16
  static constexpr int splits(int) { return 4; }
  static constexpr int rows_in_one_pass(int) { return 1; }
  static constexpr bool kDense = false;
  static constexpr bool kHalfLoads = false;
  static Acc zero() { return _mm512_setzero_ps(); }
  static Acc add(Acc a, Acc b) { return _mm512_add_ps(a, b); }
  static float finish(Acc acc, float row_scale, const SpmmArgs&, size_t) { return _mm512_reduce_add_ps(acc) * row_scale; }
};

// f32 weights x f32 activations: VEXPANDPS + VFMADD231PS.
struct F32 : FloatAccumulator {
  using Value = float;
  using Mask = uint16_t;
  using XElem = float;
  static constexpr int kWidth = 16;
  using WVec = __m512;
  using XVec = __m512;
  using Loaded = __m512;
  static constexpr bool kMaskFromMemory = false;
  static constexpr bool kExpandOnce = false;  // measured slower: see bitmap_small_n
  template <class MaskSource>
  static WVec expand(MaskSource m, Loaded values) {
    return kernels::avx512::fresh_expand_ps(m, values);
  }
  static XVec load_x(const XElem* p) { return _mm512_loadu_ps(p); }
  static Acc dot(Acc acc, WVec w, XVec x) { return _mm512_fmadd_ps(w, x, acc); }
};

// bf16 weights x bf16 activations, f32 accumulation: VPEXPANDW + VDPBF16PS.
// Up to 10 tokens in one tile of two rows: with tiles of at most 6, 7-10
// tokens went to rows expanded once and two tiles, and cold 2048->5632 at
// 50 % took 0.73-0.84 ms against 0.34-0.40 at 6; with one two-row tile
// 0.46-0.65 ms. 11-12 tokens ran no faster in one tile of 2 x 12 than in
// two of 4 x 6 (0.94-0.98 against 0.87-0.92 ms), so they stay split
// (docs/benchmarks.md, "bf16 tiles of 7-10 tokens"). Wide rows keep the
// whole tile, their activations read from L2 (narrower_tile): 5632->2048
// at 7-10 tokens took 0.62-0.89 ms in one tile, 0.81-1.07 ms in tiles of
// 6 over rows expanded once.
struct Bf16 : FloatAccumulator {
  static constexpr int kTokenTile = 10;
  using Value = uint16_t;
  using Mask = uint32_t;
  using XElem = uint16_t;
  static constexpr int kWidth = 32;
  using WVec = __m512i;
  using XVec = __m512i;
  using Loaded = __m512i;
  static constexpr bool kMaskFromMemory = true;
  static constexpr bool kExpandOnce = true;
  // Half loads (16 values in 32 bytes) up to 32 % density: 0.5 % of 32-weight
  // groups hold more than 16 values at 30 %, 2.7 % at 35 %, 9 % at 40 %. On
  // the AMD EPYC (Zen 5) host, one token, 30 % dense: 2.7 against 3.5
  // cycles a group warm, cold 2048->11264 and 5632->2048 1.37-1.47x ->
  // 1.58-1.66x dense; at 40 % the mispredicted branch made it 5.5 cycles
  // (docs/benchmarks.md, "Half loads for bf16").
  static constexpr double kHalfLoadDensity = 0.32;
  template <class MaskSource>
  static WVec expand(MaskSource m, Loaded values) {
    return kernels::avx512::fresh_expand_epi16(m, values);
  }
  static XVec load_x(const XElem* p) { return _mm512_loadu_si512(p); }
  static Acc dot(Acc acc, WVec w, XVec x) { return _mm512_dpbf16_ps(acc, (__m512bh)w, (__m512bh)x); }
};

// int8 weights x s8 activations (x quantised per token), int32 accumulation:
// VPEXPANDB + VPDPBUSD. VPDPBUSD multiplies unsigned by signed bytes, so the
// expanded weights are moved to unsigned by flipping their sign bits (w + 128;
// a pruned weight becomes 128 too) and the activations stay signed; the
// excess, 128 x the token's sum of its activations over every column, is the
// same for every row and is taken off once at the end. The row's own weight
// sum, one more VPDPBUSD per group when the activations carried the +128,
// is no longer needed: one-token products ran 15-17 % faster.
// Integer sums are exact in any order, so a tile of many tokens gives each
// one accumulator and still gets every token's single-token bits: 16 tokens
// share each expanded group (16 accumulators; 2 per token from 5 to 8
// tokens, 4 up to 4, enough independent sums to hide VPDPBUSD's latency).
// With four splits at every size the tile stopped at 4 tokens, and a
// server's experts, which see 1-15 tokens each at 16 clients, ran 2-4 tiles
// over every row, each loading every group again.
// From 4 to 8 tokens two rows go through the tile in one pass
// (rows_in_one_pass), each token's activations loaded once for both: the
// tile is bound by its loads there (eight VPDPBUSD took 4.6 cycles a group
// on registers, 7.0 with their activations loaded). Cold 2048->11264 at 70
// %, 4 / 6 / 8 tokens: 0.48 / 0.59 / 0.70 ms -> 0.44-0.46 / 0.53-0.54 /
// 0.63-0.64 ms; 2-3 tokens were no faster, three rows slower
// (docs/benchmarks.md, "Two rows in one pass"). The row tiles of the float
// traits (kRowTile) walk their rows once per split, which for int8 was
// slower than one row (GCC spilled that tile).
struct Int8 {
  using Value = int8_t;
  using Mask = uint64_t;
  using XElem = int8_t;
  static constexpr int kWidth = 64;
  using Acc = __m512i;
  using WVec = __m512i;
  using XVec = __m512i;
  static constexpr int kTokenTile = 16;
  static constexpr int narrower_tile(int tokens) { return tokens / 2; }
  static constexpr int splits(int tokens) { return tokens <= 4 ? 4 : tokens <= 8 ? 2 : 1; }
  static constexpr int kRowTile = 1;
  static constexpr int rows_in_one_pass(int tokens) { return tokens >= 4 && tokens <= 8 ? 2 : 1; }
  static constexpr bool kDense = false;
  static constexpr bool kHalfLoads = false;
  static Acc zero() { return _mm512_setzero_si512(); }
  static Acc add(Acc a, Acc b) { return _mm512_add_epi32(a, b); }
  using Loaded = __m512i;
  static constexpr bool kMaskFromMemory = true;
  static constexpr bool kExpandOnce = true;
  // Half loads (32 values in 32 bytes) up to 35 % density, where 0.5 % of
  // 64-weight groups hold more than 32 values (docs/benchmarks.md, "Half loads").
  static constexpr double kHalfLoadDensity = 0.35;
  template <class MaskSource>
  static WVec expand(MaskSource m, Loaded values) {
    return _mm512_xor_si512(kernels::avx512::fresh_expand_epi8(m, values), _mm512_set1_epi8(-128));
  }
  static XVec load_x(const XElem* p) { return _mm512_loadu_si512(p); }
  // In asm: with the intrinsic, GCC 12 copied all 16 accumulators of the
  // 16-token tile to other registers and back on every group.
  static Acc dot(Acc acc, WVec w, XVec x) {
    __asm__("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(w), "v"(x));
    return acc;
  }
  // The activations as VPDPBUSD's memory operand (dot_at).
  static Acc dot_from_memory(Acc acc, WVec w, const XElem* x) {
    __asm__("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(w), "m"(*reinterpret_cast<const char(*)[64]>(x)));
    return acc;
  }
  static float finish(Acc acc, float row_scale, const SpmmArgs& a, size_t token) {
    // A lane fits int32 (wider rows are declined: kS8PaddedMaxColumns); the
    // total over the lanes may not, so it is added in int64.
    const __m512i wide = _mm512_add_epi64(_mm512_cvtepi32_epi64(_mm512_castsi512_si256(acc)),
                                          _mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64(acc, 1)));
    const int64_t dot = _mm512_reduce_add_epi64(wide) - int64_t{128} * a.x_sum[token];
    return static_cast<float>(dot) * row_scale * a.x_scale[token];
  }
};

// Dense int8 rows x s8 activations: the VNNI tiles with each group one
// plain load, for unpruned int8 weights (an output projection) at small
// batch. The columns past a row's end are loaded as zeros, which the sign
// flip makes 128, against activations padded with zeros, as a pruned weight
// of a bitmap row.
struct DenseInt8 : Int8 {
  static constexpr bool kDense = true;
  static constexpr int rows_in_one_pass(int) { return 1; }
  static constexpr bool kExpandOnce = false;  // a plain load costs no more than reading an expanded copy
  static WVec load_dense(Mask columns, const Value* p) { return _mm512_xor_si512(_mm512_maskz_loadu_epi8(columns, p), _mm512_set1_epi8(-128)); }
};

// int8 weights x bf16 activations (weight-only quantisation: the activations
// keep bf16 precision), f32 accumulation: VPEXPANDB, then each 16 weights
// widened to f32 and packed to bf16 (exact: |w| <= 127 needs 7 mantissa bits)
// for VDPBF16PS. The widening is per group, shared by every token of the
// tile, and by every tile when the rows are expanded once (kExpandOnce).
struct Int8WeightOnly : FloatAccumulator {
  using Value = int8_t;
  using Mask = uint64_t;
  using XElem = uint16_t;
  static constexpr int kWidth = 64;
  struct WVec {
    __m512i lo, hi;
  };
  using XVec = WVec;
  static constexpr int kRowTile = 1;  // two rows measured slower at 4 tokens (an expanded group takes two registers)
  static __m512 quarter(__m512i w, int q) {
    switch (q) {
      case 0: return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm512_castsi512_si128(w)));
      case 1: return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm512_extracti32x4_epi32(w, 1)));
      case 2: return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm512_extracti32x4_epi32(w, 2)));
      default: return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm512_extracti32x4_epi32(w, 3)));
    }
  }
  using Loaded = __m512i;
  static constexpr bool kMaskFromMemory = false;
  static constexpr bool kExpandOnce = true;
  template <class MaskSource>
  static WVec expand(MaskSource m, Loaded values) {
    const __m512i w = kernels::avx512::fresh_expand_epi8(m, values);
    // _mm512_cvtne2ps_pbh(a, b) puts b in the low half: weights stay in column order.
    return {(__m512i)_mm512_cvtne2ps_pbh(quarter(w, 1), quarter(w, 0)), (__m512i)_mm512_cvtne2ps_pbh(quarter(w, 3), quarter(w, 2))};
  }
  static XVec load_x(const XElem* p) { return {_mm512_loadu_si512(p), _mm512_loadu_si512(p + 32)}; }
  static Acc dot(Acc acc, WVec w, XVec x) {
    return _mm512_dpbf16_ps(_mm512_dpbf16_ps(acc, (__m512bh)w.lo, (__m512bh)x.lo), (__m512bh)w.hi, (__m512bh)x.hi);
  }
};

}  // namespace

void lacuna_spmm_bitmap_f32_ukernel_4x6__avx512f(const SpmmArgs& a) { small_n_product<F32>(a); }
void lacuna_spmm_bitmap_bf16_ukernel_4x6__avx512bf16(const SpmmArgs& a) { small_n_product_with_half_loads_where_sparse<Bf16>(a); }
void lacuna_spmm_bitmap_int8_ukernel_1x16__avx512vnni(const SpmmArgs& a) { small_n_product_with_half_loads_where_sparse<Int8>(a); }
void lacuna_spmm_bitmap_int8_ukernel_1x6__avx512bf16(const SpmmArgs& a) { small_n_product<Int8WeightOnly>(a); }
void lacuna_spmm_dense_int8_ukernel_1x16__avx512vnni(const SpmmArgs& a) { small_n_product<DenseInt8>(a); }

}  // namespace lacuna
