#pragma once
// Bitmap-blocked weights at small batch (decode): the product is bound by
// memory, so the kernel must stream the compressed weights at full bandwidth.
// Each group of one weight row is one 64-byte load at the row's value pointer
// expanded in a register by the group's mask (VPEXPAND*, register form: the
// memory form is microcoded and slow), then one dot-product instruction per
// token; NT tokens share each expanded group.
// Dense rows (traits with kDense) walk the same tiles as a bitmap whose bits
// are all set: each group is one plain load, the row's last one masked.
//
// Included only by files compiled with the ISA flags their Traits need.
#include <immintrin.h>

#include <algorithm>
#include <bit>
#include <cstring>
#include <utility>
#include <vector>

#include "kernels/common/token-tiles.h"
#include "kernels/common/unrolled-for.h"
#include "kernels/spmm.h"

namespace lacuna::kernels::avx512 {

// A 64-byte load the compiler may not fold into the instruction that uses it:
// GCC turns load + VPEXPAND into the memory form of VPEXPAND, which is
// microcoded and several times slower than load + register-form expand.
// kBytes 32: the 32 bytes at p in the register's low half, the high half
// zero (a 256-bit load clears it).
template <class V, size_t kBytes = 64>
inline V load_unfolded(const void* p) {
  V v;
  static_assert(sizeof(V) == 64 && (kBytes == 64 || kBytes == 32));
  if constexpr (kBytes == 64)
    __asm__("vmovdqu64 %1, %0" : "=v"(v) : "m"(*static_cast<const char(*)[64]>(p)));
  else
    __asm__("vmovdqu64 %1, %t0" : "=v"(v) : "m"(*static_cast<const char(*)[32]>(p)));
  return v;
}

// Register tiles must stay in registers: every loop over rows or tokens is
// unrolled so that no accumulator is indexed at run time (GCC otherwise keeps
// the tile in memory and stores it on every group).
#define LACUNA_UNROLL _Pragma("GCC unroll 16")

// A mask read into a general register (for its popcount, or for the expand
// below where KMOV k, reg measured faster; see fresh_expand_*).
template <class M>
inline M load_mask(const M* p) {
  M m;
  if constexpr (sizeof(M) == 8)
    __asm__("movq %1, %0" : "=r"(m) : "m"(*p));
  else if constexpr (sizeof(M) == 4)
    __asm__("movl %1, %0" : "=r"(m) : "m"(*p));
  else
    __asm__("movw %1, %0" : "=r"(m) : "m"(*p));
  return m;
}

// VPEXPAND* into a register just zeroed with an idiom. On Zen 4 the
// zero-masked form still waits for its old destination, so when the compiler
// reuses one register every expand of the loop joins one dependency chain
// (measured: 2x slower); a fresh zero breaks the chain.
// The mask comes from a general register, or straight from memory (KMOV k,
// mem). Which is faster depends on the kernel: from memory, one-token bf16
// ran 3-6 % faster and int8 VNNI 11-14 %, int8 weight-only 4-9 % slower
// (docs/benchmarks.md, "Masks from memory"); each traits says which with
// kMaskFromMemory, and expand_group below passes the mask that way.
#define LACUNA_FRESH_EXPAND(name, insn, kmov, mask_type, vec_type)                                           \
  inline vec_type name(mask_type m, vec_type v) {                                                            \
    vec_type dst;                                                                                            \
    __asm__("vpxord %0, %0, %0\n\t" insn " %2, %0%{%1%}" : "=&v"(dst) : "Yk"(m), "v"(v));                  \
    return dst;                                                                                              \
  }                                                                                                          \
  inline vec_type name(const mask_type* m, vec_type v) {                                                     \
    vec_type dst;                                                                                            \
    mask_type k;                                                                                             \
    __asm__(kmov " %2, %1\n\tvpxord %0, %0, %0\n\t" insn " %3, %0%{%1%}" : "=&v"(dst), "=&Yk"(k) : "m"(*m), "v"(v)); \
    return dst;                                                                                              \
  }
LACUNA_FRESH_EXPAND(fresh_expand_epi8, "vpexpandb", "kmovq", uint64_t, __m512i)
LACUNA_FRESH_EXPAND(fresh_expand_epi16, "vpexpandw", "kmovd", uint32_t, __m512i)
LACUNA_FRESH_EXPAND(fresh_expand_ps, "vexpandps", "kmovw", uint16_t, __m512)
// The inverse move, VPCOMPRESSW in its register form (the memory form is
// microcoded too), for the kernel that packs activations instead of
// expanding weights (spmm-bitmap-bf16-packed-avx512.cc).
LACUNA_FRESH_EXPAND(fresh_compress_epi16, "vpcompressw", "kmovd", uint32_t, __m512i)
#undef LACUNA_FRESH_EXPAND

// Traits: Value (stored element), Mask, XElem (activation element), kWidth
// (weights per group), Acc, WVec, XVec, Loaded (the register a group's
// values are loaded into), zero(), add(a, b), expand(mask or mask pointer,
// loaded values), kMaskFromMemory, kHalfLoads (see HalfLoads), load_x(p),
// dot(acc, w, x), optionally dot_from_memory(acc, w, p) (see dot_at),
// finish(acc, row_scale, args, token) -> float, kTokenTile (tokens per
// register tile), narrower_tile(tokens) (the next tile tried when a tile's
// activations do not fit the L1 size), splits(tokens), kRowTile (rows per
// tile: 1, or at most kRowTile, with row_tile(tokens) the rows of a tile
// of that many tokens), rows_in_one_pass(tokens) (rows of a one-pass tile,
// see bitmap_row_tile; more than 1 only where sums do not depend on their
// order), kExpandOnce (see small_n_product).
//
// One row at a time, each (row, token) summing its groups into
// K::splits(NT) accumulators (group g into g % splits, added pairwise at the
// end). The kernel used to walk four rows together, one accumulator each, to
// hide the dot product's latency; but four rows are eight short streams (four
// value rows, four mask rows) that the hardware prefetcher does not follow,
// and on this host the cold batch-1 product ran 1.7-2.4x slower than one row
// with split accumulators, which reads two sequential streams per thread.
// K::kTokenTile tokens share each expanded group: as many as the registers
// hold beside the expanded group, an activation vector and the traits' own
// constants (6 for f32, bf16 and int8 weight-only, 24 accumulators). A
// server's step, whose experts see a few tokens each, then expands each group
// once or twice instead of two or three times (docs/benchmarks.md, "Six-token
// tiles"). Two accumulators per token would fit 8 tokens but slowed batch
// 1 by 5-10 % (the dot product's latency shows).
// Float sums depend on their order, so the float traits keep four splits at
// every tile size: a token's sum is the same bits whatever batch it is
// computed in. Integer sums do not (int8 VNNI), so its traits trade splits
// for tokens as the tile grows (see Int8 in spmm-bitmap-avx512.cc).

// The splits of a (row, token) added pairwise: ((a0 + a1) + (a2 + a3)) for four.
template <class K, int Begin, int Count>
inline typename K::Acc sum_splits(const typename K::Acc* acc) {
  if constexpr (Count == 1)
    return acc[Begin];
  else
    return K::add(sum_splits<K, Begin, Count / 2>(acc), sum_splits<K, Begin + Count / 2, Count - Count / 2>(acc));
}

// A group's values for the expand: 64 bytes from the row's value pointer,
// or with half loads (HalfLoads below) 32 when they hold the group's values.
// The pointer moves on by each group's count, so a 64-byte load from it
// nearly always spans two cache lines and costs two loads; 32 bytes span
// two about half the time (docs/benchmarks.md, "Half loads").
template <class K>
inline typename K::Loaded load_group_values(typename K::Mask loaded, const typename K::Value* p) {
  if constexpr (K::kHalfLoads) {
    if (__builtin_expect(static_cast<size_t>(std::popcount(loaded)) * sizeof(typename K::Value) <= 32, 1))
      return load_unfolded<typename K::Loaded, 32>(p);
  }
  return load_unfolded<typename K::Loaded>(p);
}

// Expands the group at `mask` whose word is already in a general register
// (`loaded`, read for the popcount anyway): the expand takes the word from
// there, or from memory when the traits ask for it. A traits reading from
// memory without half loads leaves `loaded` unused, so a caller that loaded
// it only for this call costs nothing.
template <class K>
inline typename K::WVec expand_group(const typename K::Mask* mask, typename K::Mask loaded, const typename K::Value* p) {
  const typename K::Loaded values = load_group_values<K>(loaded, p);
  if constexpr (K::kMaskFromMemory)
    return K::expand(mask, values);
  else
    return K::expand(loaded, values);
}

// Traits with half loads: the same kernel reading each group's values with
// 32-byte loads where they fit (load_group_values), and with 64 where not, a
// branch on the group's count. Worth it where few groups hold more than
// half a vector of values, so the branch is rarely mispredicted: tensors of
// density at most K::kHalfLoadDensity (small_n_product_with_half_loads_where_sparse).
// The bits are the same, the expand reading only the values the mask asks for.
template <class K>
struct HalfLoads : K {
  static constexpr bool kHalfLoads = true;
};

// A token's activations times the expanded group, read from memory by the
// dot product itself where the traits can (dot_at), one instruction fewer a
// token and group.
template <class K>
inline typename K::Acc dot_at(typename K::Acc acc, const typename K::WVec& w, const typename K::XElem* x) {
  if constexpr (requires { K::dot_from_memory(acc, w, x); })
    return K::dot_from_memory(acc, w, x);
  else
    return K::dot(acc, w, K::load_x(x));
}

// Expands the group at `mask` from the row's value pointer `p` and moves `p`
// past the group's values: one step of a row walk.
template <class K>
inline typename K::WVec expand_and_advance(const typename K::Mask* mask, const typename K::Value*& p) {
  const typename K::Mask m = load_mask(mask);
  const typename K::WVec wv = expand_group<K>(mask, m, p);
  p += std::popcount(m);
  return wv;
}

// One group as a tile expands it. A struct, since a vector of bare SIMD
// types would drop their alignment attribute.
template <class K>
struct ExpandedGroup {
  typename K::WVec w;
};

// Rows of expanded groups lie this many groups apart: one more than a row
// holds, since rows a power of two apart (4096 f32 columns: 16 KB) put the
// tile's row streams into the same L1 sets, beside activation rows with the
// same stride (f32 tiles at 16 tokens ran 1.6-1.9x the time of expanding in
// place, 1.2-1.4x with the extra group).
inline uint64_t expanded_row_stride(uint64_t groups) { return groups + 1; }

// What every tile of one call reads, worked out once per call rather than
// per tile (group_count, a division by the group width, and the section
// lookups were 2 % of a 16-client int8 serving profile's samples).
template <class K>
struct WeightRows {
  using Mask = typename K::Mask;
  explicit WeightRows(const SpmmArgs& args)
      : a(args),
        cols(args.w->desc().cols()),
        groups(group_count(args.w->desc())),
        masks(K::kDense ? nullptr : args.w->section<Mask>(Section::masks)),
        row_ptr(K::kDense ? nullptr : args.w->section<uint64_t>(Section::row_ptr)),
        values(args.w->section<typename K::Value>(Section::values)),
        scales(args.w->desc().dtype == DType::int8 ? args.w->section<float>(Section::scales) : nullptr),
        last_group(cols % K::kWidth ? static_cast<Mask>((uint64_t{1} << (cols % K::kWidth)) - 1) : kAllColumns) {}
  float row_scale(uint64_t r) const { return scales ? scales[r] : 1.0f; }
  const Mask* row_masks(uint64_t r) const { return masks + r * groups; }
  const typename K::Value* row_values(uint64_t r) const { return K::kDense ? values + r * cols : values + row_ptr[r]; }
  // Dense rows: which columns of group g the row holds (all but in its last group).
  Mask dense_columns(uint64_t g) const { return g + 1 < groups ? kAllColumns : last_group; }
  static constexpr Mask kAllColumns = static_cast<Mask>(~Mask{0});

  const SpmmArgs& a;
  uint64_t cols, groups;
  const Mask* masks;
  const uint64_t* row_ptr;
  const typename K::Value* values;
  const float* scales;
  Mask last_group;
};

// Expands rows r0 .. r0 + rows - 1 into `out` (rows expanded_row_stride apart), each group
// exactly as a tile expands it, for the tiles of further tokens over the
// same rows to read instead of expanding again (see small_n_product).
template <class K>
void expand_rows(const WeightRows<K>& b, uint64_t r0, int rows, ExpandedGroup<K>* out) {
  for (int i = 0; i < rows; ++i) {
    const auto* masks = b.row_masks(r0 + i);
    const typename K::Value* p = b.row_values(r0 + i);
    for (uint64_t g = 0; g < b.groups; ++g) out[i * expanded_row_stride(b.groups) + g].w = expand_and_advance<K>(masks + g, p);
  }
}

// Every prefetch of the kernels, in asm: as _mm_prefetch calls, GCC 12
// deleted request_ahead's from the tiles once their lambdas were always
// inlined (as it had deleted NextRowPrefetch's).
inline void prefetch_t0(const void* p) { __asm__ volatile("prefetcht0 %0" : : "m"(*static_cast<const char*>(p))); }
inline void prefetch_t1(const void* p) { __asm__ volatile("prefetcht1 %0" : : "m"(*static_cast<const char*>(p))); }

// Pulls rows of a bitmap tensor towards the core, a few cache lines at a
// time: their values and their masks are two contiguous ranges. A tile of
// NR rows walks 2 x NR streams with strides, which the hardware prefetcher
// does not follow, so it pulls in the next tile's rows while it computes,
// spread over its groups (all at once, the prefetches fill the miss
// buffers and stall the tile); tiles over expanded rows pull in the next
// block's bitmap the same way.
template <class K>
class RowPrefetch {
 public:
  RowPrefetch(const WeightRows<K>& b, uint64_t begin, uint64_t end) {
    values_ = reinterpret_cast<const char*>(b.row_values(begin));
    values_end_ = reinterpret_cast<const char*>(b.row_values(end));
    if constexpr (!K::kDense) {
      masks_ = reinterpret_cast<const char*>(b.row_masks(begin));
      masks_end_ = reinterpret_cast<const char*>(b.row_masks(end));
    }
  }
  // Values take about five lines for each line of masks at 70 % sparsity.
  void step() {
    for (int i = 0; i < 2 && values_ < values_end_; ++i, values_ += 64) prefetch_t0(values_);
    if (masks_ < masks_end_) {
      prefetch_t0(masks_);
      masks_ += 64;
    }
  }
  void all() {
    while (values_ < values_end_ || masks_ < masks_end_) step();
  }

 private:
  const char *values_ = nullptr, *values_end_ = nullptr, *masks_ = nullptr, *masks_end_ = nullptr;
};

// A one-row tile reading the bitmap as it goes requests the lines of its
// two streams well before it needs them, at every group: values 2.5 KB and
// masks 1 KB ahead, about 130 groups at 70 % sparsity (the rows of a tensor
// follow one another in both streams, so this runs on into the next rows).
// With the hardware prefetcher alone, the cold one-token int8 product
// streamed at about 70 % of oneDNN's dense bandwidth (3.2-3.6x dense bf16
// at 70 %, a byte ratio of 4.7x); with these 4.6-5.0x, and 2-4 tokens
// 3.4-4.5x -> 4.1-5.0x (docs/benchmarks.md, "Both streams requested
// ahead"). An earlier try, one value line 2 KB ahead and no masks, had been
// no better than none ("The prefetch that was not there").
inline constexpr int kValuesAhead = 2560, kMasksAhead = 1024;

// Bitmap tiles (not dense rows) that take their groups in turns of several
// also request each stream a second time, further ahead and into L2 only
// (PREFETCHT1): the values every second group, the masks once a turn. The near
// requests then mostly find their lines in L2, so each holds an L1 miss buffer
// for an L2 hit instead of a trip to memory, and more of the stream is in
// flight at once. On the Zen 5 host, cold one-token products on two threads,
// the requests on and off in alternate passes of one process, time off over
// time on: 70 % int8 2048->11264 1.04-1.09, 5632->2048 0.90-1.06, 70 % bf16
// 1.05-1.31; without half loads 50 % bf16 1.14-1.22, 50 % int8 1.04-1.12;
// whole-model decode at 70 % 1-2 % faster at the median, the 50 % bf16 model
// 1.29-1.37x -> 1.44-1.51x dense. 4 and 12 KB did about as well; 20 KB less
// for int8. Dense rows gained nothing (0.96-1.03). Not for csr8, which
// requests at every chunk: there the extra requests cost 2-9 %
// (docs/benchmarks.md, "Requests into L2 further ahead").
inline constexpr int kValuesAheadL2 = 8192, kMasksAheadL2 = 4096;

template <class K>
inline void request_ahead(const typename K::Mask* mask, const typename K::Value* p) {
  prefetch_t0(reinterpret_cast<const char*>(p) + kValuesAhead);
  if constexpr (!K::kDense) prefetch_t0(reinterpret_cast<const char*>(mask) + kMasksAhead);
}

// The same for the group at `split` of a tile's turn of kSplits groups.
// Traits with half loads (at most 32 bytes of values a group; at 70 %
// sparsity about 19, beside 8 bytes of masks for int8 and 4 for bf16)
// request the values every second group and the masks every fourth, where a
// request at every group mostly named a line already asked for: on the
// Intel host, cold 70 % int8 products at 1-8 tokens took 2-4 % less time,
// warm 1-6 % (docs/benchmarks.md, "Fewer requests ahead").
template <class K, int kSplits, int kSplit>
inline void request_ahead_in_turn(const typename K::Mask* mask, const typename K::Value* p) {
  if constexpr (!K::kHalfLoads || kSplits == 1) {
    request_ahead<K>(mask, p);
  } else {
    if constexpr (kSplit % 2 == 0) prefetch_t0(reinterpret_cast<const char*>(p) + kValuesAhead);
    if constexpr (kSplit == 0) prefetch_t0(reinterpret_cast<const char*>(mask) + kMasksAhead);
  }
  if constexpr (!K::kDense && kSplits > 1) {
    if constexpr (kSplit % 2 == 1) prefetch_t1(reinterpret_cast<const char*>(p) + kValuesAheadL2);
    if constexpr (kSplit == kSplits / 2) prefetch_t1(reinterpret_cast<const char*>(mask) + kMasksAheadL2);
  }
}

// The groups of the row tile at r (NR rows, NT tokens of activations at x)
// summed into `acc`, K::splits(NR * NT) accumulators a (row, token). With
// kExpanded the tile reads its rows' groups from `expanded` (expand_rows)
// and steps `next_block` on, otherwise it expands them from the bitmap (or
// loads them, dense rows), requesting its streams ahead.
// NR rows in one pass (traits whose sums do not depend on their order, see
// rows_in_one_pass): each token's activation vector is loaded once for the
// NR rows, and the tile keeps as many registers as a one-row tile of NR *
// NT tokens.
template <class K, int NR, int NT, bool kExpanded>
[[gnu::always_inline]] inline void walk_row_tile(const WeightRows<K>& b, uint64_t r, const typename K::XElem* x, RowPrefetch<K>& next_block,
                                                 const ExpandedGroup<K>* expanded, typename K::Acc (&acc)[NR][NT][K::splits(NR * NT)]) {
  const SpmmArgs& a = b.a;
  const uint64_t groups = b.groups;
  const typename K::Mask* masks[NR];
  const typename K::Value* p[NR];
  unrolled_for<NR>([&](auto i) LACUNA_INLINE_LAMBDA {
    masks[i] = K::kDense ? nullptr : b.row_masks(r + i);
    p[i] = b.row_values(r + i);
  });
  constexpr int kSplits = K::splits(NR * NT);
  unrolled_for<NR>([&](auto i) LACUNA_INLINE_LAMBDA {
    unrolled_for<NT>([&](auto j) LACUNA_INLINE_LAMBDA { unrolled_for<kSplits>([&](auto s) LACUNA_INLINE_LAMBDA { acc[i][j][s] = K::zero(); }); });
  });
  // `split`, `i` and `j` are compile-time indices: a run-time one would move the tile to memory.
  auto group = [&](uint64_t g, auto split) LACUNA_INLINE_LAMBDA {
    typename K::WVec wv[NR];
    if constexpr (kExpanded) {
      next_block.step();
      unrolled_for<NR>([&](auto i) LACUNA_INLINE_LAMBDA { wv[i] = expanded[i * expanded_row_stride(groups) + g].w; });
    } else if constexpr (K::kDense) {
      static_assert(NR == 1, "dense rows go one at a time");
      request_ahead<K>(nullptr, p[0] + g * K::kWidth);
      wv[0] = K::load_dense(b.dense_columns(g), p[0] + g * K::kWidth);
    } else {
      // Each row's streams: together they request the lines the tile reads, as far ahead.
      unrolled_for<NR>([&](auto i) LACUNA_INLINE_LAMBDA {
        request_ahead_in_turn<K, kSplits, decltype(split)::value>(masks[i] + g, p[i]);
        wv[i] = expand_and_advance<K>(masks[i] + g, p[i]);
      });
    }
    unrolled_for<NT>([&](auto j) LACUNA_INLINE_LAMBDA {
      const typename K::XElem* xj = x + j * a.ldx + g * K::kWidth;
      if constexpr (NR == 1) {
        acc[0][j][split] = dot_at<K>(acc[0][j][split], wv[0], xj);
      } else {
        const typename K::XVec xv = K::load_x(xj);
        unrolled_for<NR>([&](auto i) LACUNA_INLINE_LAMBDA { acc[i][j][split] = K::dot(acc[i][j][split], wv[i], xv); });
      }
    });
  };
  uint64_t g = 0;
  for (; g + kSplits <= groups; g += kSplits) unrolled_for<kSplits>([&](auto split) LACUNA_INLINE_LAMBDA { group(g + split, split); });
  unrolled_for<kSplits - 1>([&](auto split) LACUNA_INLINE_LAMBDA {
    if (g < groups) group(g++, split);
  });
}

// Each tile is a function of its own: inlined into small_n_product, the
// one-token tile's loop got worse registers and ran 25 % slower.
template <class K, int NR, int NT, bool kExpanded>
[[gnu::noinline]] void bitmap_row_tile(const WeightRows<K>& b, uint64_t r, size_t n0, RowPrefetch<K>& next_block, const ExpandedGroup<K>* expanded) {
  const SpmmArgs& a = b.a;
  constexpr int kSplits = K::splits(NR * NT);
  typename K::Acc acc[NR][NT][kSplits];
  walk_row_tile<K, NR, NT, kExpanded>(b, r, static_cast<const typename K::XElem*>(a.x) + n0 * a.ldx, next_block, expanded, acc);
  unrolled_for<NR>([&](auto i) LACUNA_INLINE_LAMBDA {
    const float row_scale = b.row_scale(r + i);
    unrolled_for<NT>([&](auto j) LACUNA_INLINE_LAMBDA {
      a.y[(n0 + j) * a.ldy + r + i] = K::finish(sum_splits<K, 0, kSplits>(acc[i][j]), row_scale, a, n0 + j);
    });
  });
}

// One token over rows r_begin .. r_end, one row at a time, each row's sums
// finished (K::finish: the sum over the lanes, the scales) after the next
// row's groups rather than straight after its own. The finish is a chain of
// dependent steps (for int8 about 20 instructions, widened to int64) that
// waited on the row's last dot products: with the tile above called once
// a row, warm one-token products of 2048-column rows spent about a quarter
// of their time there. Deferred, warm 2048->11264 took 16-23 % less time
// in int8 at 70 and 90 %, 2 and 11 % in bf16 (docs/benchmarks.md, "Each
// row's sums finished after the next row's groups"). The same arithmetic,
// so the same bits. Tiles of several tokens keep one call a row: a row
// loop around them made GCC spill their accumulators.
template <class K>
[[gnu::noinline]] void bitmap_one_token_rows(const WeightRows<K>& b, uint64_t r_begin, uint64_t r_end, size_t n0, RowPrefetch<K>& next_block) {
  const SpmmArgs& a = b.a;
  const auto* x = static_cast<const typename K::XElem*>(a.x) + n0 * a.ldx;
  constexpr int kSplits = K::splits(1);
  typename K::Acc pending = K::zero();
  const auto finish = [&](uint64_t r) LACUNA_INLINE_LAMBDA { a.y[n0 * a.ldy + r] = K::finish(pending, b.row_scale(r), a, n0); };
  for (uint64_t r = r_begin; r < r_end; ++r) {
    typename K::Acc acc[1][1][kSplits];
    walk_row_tile<K, 1, 1, false>(b, r, x, next_block, nullptr, acc);
    if (r > r_begin) finish(r - 1);
    pending = sum_splits<K, 0, kSplits>(acc[0][0]);
  }
  if (r_begin < r_end) finish(r_end - 1);
}

// How far a row's values advance over groups g .. g+3: the popcount of their four masks.
template <class M>
inline uint64_t popcount4(const M* m) {
  uint64_t words[sizeof(M) / 2];
  std::memcpy(words, m, sizeof words);
  uint64_t count = 0;
  for (uint64_t word : words) count += static_cast<uint64_t>(std::popcount(word));
  return count;
}

// NR rows x NT tokens (NT >= 2): every activation vector loaded serves NR
// rows, where the one-row tile loads it for each row. Each (row, token) keeps
// the one-row tile's arithmetic: group g goes into accumulator g % 4, in
// group order, and the four are added pairwise at the end; only the order in
// which the independent accumulators are filled changes (one split at a time,
// so the tile needs NR x NT registers, not 4 x NR x NT). A token's sum is
// therefore the same bits as in the one-row tile, at every batch size. Not
// used for one token: NR rows are 2 x NR streams the hardware prefetcher
// follows worse than two, and one token is bound by memory, not by loads.
template <class K, int NR, int NT, bool kExpanded>
[[gnu::noinline]] void bitmap_rows_tile(const WeightRows<K>& b, uint64_t r0, size_t n0, RowPrefetch<K>& prefetch,
                                        const ExpandedGroup<K>* expanded) {
  const SpmmArgs& a = b.a;
  const uint64_t groups = b.groups;
  const auto* x = static_cast<const typename K::XElem*>(a.x) + n0 * a.ldx;
  const typename K::Mask* masks[NR];
  LACUNA_UNROLL for (int i = 0; i < NR; ++i) masks[i] = b.row_masks(r0 + i);
  constexpr int kSplits = K::splits(NT);
  static_assert(kSplits == 4, "a split's value pointers move four groups at a time (popcount4)");
  typename K::Acc part[kSplits][NR][NT];
  for (uint64_t split = 0; split < kSplits; ++split) {
    const typename K::Value* p[NR];
    if constexpr (!kExpanded) {
      LACUNA_UNROLL for (int i = 0; i < NR; ++i) {
        p[i] = b.row_values(r0 + i);
        for (uint64_t g = 0; g < split && g < groups; ++g) p[i] += std::popcount(masks[i][g]);
      }
    }
    typename K::Acc acc[NR][NT];
    LACUNA_UNROLL for (int i = 0; i < NR; ++i) LACUNA_UNROLL for (int j = 0; j < NT; ++j) acc[i][j] = K::zero();
    // `advance` is a compile-time flag: only the split's last group does not
    // move the value pointers on (its masks may end the tensor).
    auto group = [&](uint64_t g, auto advance) {
      prefetch.step();
      typename K::WVec wv[NR];
      LACUNA_UNROLL for (int i = 0; i < NR; ++i) {
        if constexpr (kExpanded) {
          wv[i] = expanded[i * expanded_row_stride(groups) + g].w;
        } else {
          wv[i] = expand_group<K>(masks[i] + g, load_mask(masks[i] + g), p[i]);
          if constexpr (advance) p[i] += popcount4(masks[i] + g);
        }
      }
      LACUNA_UNROLL for (int j = 0; j < NT; ++j) {
        const typename K::XVec xv = K::load_x(x + j * a.ldx + g * K::kWidth);
        LACUNA_UNROLL for (int i = 0; i < NR; ++i) acc[i][j] = K::dot(acc[i][j], wv[i], xv);
      }
    };
    uint64_t g = split;
    for (; g + kSplits < groups; g += kSplits) group(g, std::true_type{});
    if (g < groups) group(g, std::false_type{});
    LACUNA_UNROLL for (int i = 0; i < NR; ++i) LACUNA_UNROLL for (int j = 0; j < NT; ++j) part[split][i][j] = acc[i][j];
  }
  LACUNA_UNROLL for (int i = 0; i < NR; ++i) {
    const uint64_t r = r0 + i;
    const float row_scale = b.row_scale(r);
    LACUNA_UNROLL for (int j = 0; j < NT; ++j) {
      const typename K::Acc splits[kSplits] = {part[0][i][j], part[1][i][j], part[2][i][j], part[3][i][j]};
      a.y[(n0 + j) * a.ldy + r] = K::finish(sum_splits<K, 0, kSplits>(splits), row_scale, a, n0 + j);
    }
  }
}

// One token: one row at a time (bound by memory). More: K::row_tile(NT)
// rows at once in tiles of up to K::kTokenTile tokens (fewer for wide
// activations, see with_token_tile), the rest of the rows one at a time;
// every (row, token) gets the same bits either way.
// More tokens than one tile holds: every tile over the same rows would expand
// the same groups again (mask load, KMOV, expand, popcount: 2-3 cycles a
// group, most of a small tile's time), so where the traits say kExpandOnce
// the rows are expanded once into a per-thread buffer and the tiles read it.
// The tiles compute the same instructions on the same expanded vectors, so
// the bits do not change. Warm 4096x4096, 16 / 64 tokens, two noisy runs:
// bf16 0.87-0.98x / 0.78-0.93x the time, int8 VNNI 0.93-0.97x / 0.73-0.90x,
// int8 weight-only (whose widening is then done once) 0.69-0.74x /
// 0.61-0.67x; f32 1.2-1.4x at 16, so f32 expands in place
// (docs/benchmarks.md, "Rows expanded once").
// A tile reads one vector of each of its tokens' activation rows per group,
// so it walks NT whole rows of activations for every weight row; beyond the
// L1 cache (48 KB here) they come from L2 at every weight row. int8 VNNI,
// cold 2048->5632 at 12 and 16 tokens: 16-token tiles (34 KB of
// activations) took 0.79-0.83x the time of four-token ones; 5632->2048 (90
// KB) 1.03-1.16x. An int8 tile narrows (K::narrower_tile; bf16 tiles do
// not), down to 4 tokens, until its rows fit in the L1 size: a limit of 36
// KB left 5632-column rows (5.6 KB a token) at 4-token tiles, so 5-8
// tokens went to rows expanded once and two tiles, and on an AMD EPYC
// (Zen 5) host 5632->2048 at 70 % took 0.39-0.45 ms there against
// 0.19-0.34 ms with one 5-8-token tile (45 KB; docs/benchmarks.md, "Token
// tiles up to the L1 size").
inline constexpr size_t kTileActivationBytes = size_t{48} << 10;

template <class K, int NT, class F>
inline void with_token_tile(size_t row_bytes, F&& f) {
  constexpr int kNarrower = K::narrower_tile(NT);
  if constexpr (kNarrower < 4)
    f(std::integral_constant<int, NT>{});
  else if (NT * row_bytes <= kTileActivationBytes)
    f(std::integral_constant<int, NT>{});
  else
    with_token_tile<K, kNarrower>(row_bytes, f);
}

// More tokens than one tile: the rows go in blocks of about this many bytes
// of expanded groups, and each tile passes over a whole block before the
// next tile starts, so a tile's activation rows stay in L1 while the block's
// weights come from L2. Row by row, every tile of a 64-token batch read its
// 16 activation rows from L2 again at every weight row.
inline constexpr size_t kRowBlockBytes = size_t{128} << 10;

template <class K>
uint64_t row_block(uint64_t groups) {
  const uint64_t rows = kRowBlockBytes / (expanded_row_stride(groups) * sizeof(ExpandedGroup<K>));
  return std::max<uint64_t>(K::kRowTile, rows / K::kRowTile * K::kRowTile);
}

template <class K>
void small_n_product(const SpmmArgs& a) {
  thread_local std::vector<ExpandedGroup<K>> expanded;
  const WeightRows<K> b(a);
  with_token_tile<K, K::kTokenTile>(a.ldx * sizeof(typename K::XElem), [&](auto max_tile) {
    const bool one_tile = a.n <= static_cast<size_t>(max_tile);
    const uint64_t stride = expanded_row_stride(b.groups);
    const uint64_t block = one_tile ? a.row_end - a.row_begin : row_block<K>(b.groups);
    const auto run = [&](auto kept) {
      if constexpr (kept) expanded.resize(block * stride);
      for (uint64_t begin = a.row_begin; begin < a.row_end; begin += block) {
        const uint64_t end = std::min(begin + block, a.row_end);
        if constexpr (kept) expand_rows<K>(b, begin, static_cast<int>(end - begin), expanded.data());
        // Row r's expanded groups, when the rows were expanded.
        const auto groups_of = [&](uint64_t r) { return kept ? expanded.data() + (r - begin) * stride : nullptr; };
        // Expanded rows: the tiles are bound by compute, so they pull in the
        // next block's bitmap for its expansion (which otherwise waits on
        // memory). Otherwise each row tile requests its own rows ahead
        // (one row: request_ahead; several: RowPrefetch of the next tile).
        RowPrefetch<K> ahead(b, end, kept ? std::min(end + block, a.row_end) : end);
        uint64_t r = begin;
        if constexpr (K::kRowTile > 1) {
          if (a.n >= 2) {
            for_balanced_token_tiles<max_tile>(a.n, [&](auto tile, size_t n0) {
              constexpr int kRows = K::row_tile(tile);
              const uint64_t tiled_end = begin + (end - begin) / kRows * kRows;
              if constexpr (kept) {
                for (uint64_t q = begin; q < tiled_end; q += kRows) bitmap_rows_tile<K, kRows, tile, kept>(b, q, n0, ahead, groups_of(q));
              } else {
                RowPrefetch<K>(b, begin, std::min(begin + kRows, end)).all();
                for (uint64_t q = begin; q < tiled_end; q += kRows) {
                  RowPrefetch<K> next(b, std::min(q + kRows, end), std::min(q + 2 * kRows, end));
                  bitmap_rows_tile<K, kRows, tile, kept>(b, q, n0, next, nullptr);
                }
              }
              // The rows left over go one at a time through the same tile
              // (a one-row tile of this many tokens would not fit the registers).
              for (uint64_t q = tiled_end; q < end; ++q) {
                RowPrefetch<K> next(b, std::min(q + 1, end), std::min(q + 2, end));
                bitmap_rows_tile<K, 1, tile, kept>(b, q, n0, kept ? ahead : next, groups_of(q));
              }
            });
            r = end;
          }
        }
        if (r < end)
          for_token_tiles<max_tile>(a.n, [&](auto tile, size_t n0) {
            constexpr int kRows = K::rows_in_one_pass(tile);
            uint64_t q = r;
            if constexpr (tile == 1 && kRows == 1 && !kept) {
              bitmap_one_token_rows<K>(b, q, end, n0, ahead);
            } else {
              for (; q + kRows <= end; q += kRows) bitmap_row_tile<K, kRows, tile, kept>(b, q, n0, ahead, groups_of(q));
              for (; q < end; ++q) bitmap_row_tile<K, 1, tile, kept>(b, q, n0, ahead, groups_of(q));
            }
          });
      }
    };
    if constexpr (K::kExpandOnce) {
      if (!one_tile) return run(std::true_type{});
    }
    run(std::false_type{});
  });
}

// The product with half loads (HalfLoads) for tensors of density at most
// K::kHalfLoadDensity, without for denser ones.
template <class K>
void small_n_product_with_half_loads_where_sparse(const SpmmArgs& a) {
  const TensorDesc& d = a.w->desc();
  if (static_cast<double>(d.nnz) <= K::kHalfLoadDensity * static_cast<double>(d.elements()))
    small_n_product<HalfLoads<K>>(a);
  else
    small_n_product<K>(a);
}

}  // namespace lacuna::kernels::avx512
