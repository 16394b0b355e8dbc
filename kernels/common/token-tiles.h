#pragma once
// Splits a batch of n tokens into register tiles: body(tile, n0) with tile a
// std::integral_constant<int, NT>, NTMAX tokens at a time, then one tile of the
// remainder, so every tile size is a compile-time constant in the kernel.
#include <cstddef>
#include <type_traits>

namespace lacuna::kernels {

template <int NT, class Body>
inline void token_tile_rest(size_t rest, size_t n0, Body& body) {
  if constexpr (NT >= 1) {
    if (rest == NT)
      body(std::integral_constant<int, NT>{}, n0);
    else
      token_tile_rest<NT - 1>(rest, n0, body);
  }
}

template <int NTMAX, class Body>
inline void for_token_tiles(size_t n, Body&& body) {
  size_t n0 = 0;
  for (; n0 + NTMAX <= n; n0 += NTMAX) body(std::integral_constant<int, NTMAX>{}, n0);
  if (n0 < n) token_tile_rest<NTMAX - 1>(n - n0, n0, body);
}

// n tokens in as few tiles of at most NTMAX as possible, of sizes differing
// by at most one (7 tokens at NTMAX 6: 4 + 3, not 6 + 1), so that no tile
// is left with one token to pay for a whole pass over the weights.
template <int NTMAX, class Body>
inline void for_balanced_token_tiles(size_t n, Body&& body) {
  const size_t tiles = (n + NTMAX - 1) / NTMAX;
  for (size_t t = 0, n0 = 0; t < tiles; ++t) {
    const size_t size = n / tiles + (t < n % tiles ? 1 : 0);
    token_tile_rest<NTMAX>(size, n0, body);
    n0 += size;
  }
}

// The same for kernels whose tiles are 16-token vectors: tiles of NVMAX
// vectors, then one tile of as many vectors as the rest needs (its last
// lanes are padding the kernel must not store).
template <int NVMAX, class Body>
inline void for_vector_tiles(size_t n, Body&& body) {
  size_t n0 = 0;
  for (; n0 + 16 * NVMAX <= n; n0 += 16 * NVMAX) body(std::integral_constant<int, NVMAX>{}, n0);
  if (n0 < n) token_tile_rest<NVMAX - 1>((n - n0 + 15) / 16, n0, body);
}

}  // namespace lacuna::kernels
