#pragma once
// Benchmark weights: random, initialised, pruned to a sparsity, stored in a
// format; and enough distinct copies of them that a run reads from memory,
// not from the (large) last-level cache.
#include <cstdint>
#include <vector>

#include "sparse/convert.h"

namespace lacuna::bench {

// Unstructured random sparsity (each weight kept with probability 1 - s);
// bsr gets block-pruned weights with its own block shape.
Tensor random_weight(Format format, DType dtype, size_t rows, size_t cols, double sparsity, uint64_t seed, BlockShape block = {16, 1});

// Copies of `t`, each in its own memory, until their payloads add up to at
// least `min_bytes` (and at least `min_count` tensors). The copies sit in the
// engine's weight memory (sparse/weight-memory.h: 2 MiB pages where the
// kernel gives them), as a loaded model's tensors and oneDNN's packed dense
// weights do: in malloc's 4 KiB pages the sparse candidates of a sweep read
// against a dense baseline in huge pages.
std::vector<Tensor> cold_copies(const Tensor& t, uint64_t min_bytes, size_t min_count);

}  // namespace lacuna::bench
