#pragma once
// Loops over a register tile (accumulators held in vector registers),
// unrolled with compile-time indices.
#include <utility>

// The tile's lambdas, and unrolled_for's, are always inlined: GCC's early
// scalar replacement of the accumulator array runs before ordinary inlining,
// and while a lambda still held the array's address the array stayed in
// memory. GCC 12 then kept the accumulators of int8 tiles of 2-8 tokens in
// registers but also stored them to the stack at every group (12 stores per
// four groups at 4 tokens); without the stores, cold 70 % int8 products ran
// 4-25 % faster at 4-8 tokens (docs/benchmarks.md, "Accumulators off the
// stack"). Unroll pragmas come too late for the same reason: attention's
// 16-row score tile, unrolled by pragma, was loaded and stored at every FMA.
#define LACUNA_INLINE_LAMBDA __attribute__((always_inline))

namespace lacuna::kernels {

// f(0), f(1), ..., f(N - 1), each index a std::integral_constant, so a tile
// indexed by it is indexed by constants.
template <int N, class F>
[[gnu::always_inline]] inline void unrolled_for(F&& f) {
  [&]<int... I>(std::integer_sequence<int, I...>) LACUNA_INLINE_LAMBDA { (f(std::integral_constant<int, I>{}), ...); }(std::make_integer_sequence<int, N>{});
}

}  // namespace lacuna::kernels
