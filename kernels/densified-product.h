#pragma once
// A bitmap weight's product at large batch through oneDNN's dense matmul:
// the weight is expanded back into dense rows a block at a time, and each
// block multiplied as soon as it is expanded, by the thread that expanded it.
#include <cstddef>

#include "sparse/tensor.h"

namespace lacuna {

// y[n][rows] = x[n][cols] · Wᵀ for a bitmap weight `w` expanded into dense
// rows of `expanded_type` (w's own dtype, or f32 for bf16: oneDNN's f32
// matmul, on hosts whose f32 FMAs outrun VDPBF16PS). The rows go in blocks
// of about 1 MB of expanded weights, taken by the OpenMP threads as they
// come free; each thread expands its block into its own buffer and
// multiplies it there, so the expanded rows stay in its L2 cache.
// Each thread keeps its buffer and one oneDNN product per block shape.
// Thread-safe across callers; throws lacuna::Error for a weight that is not
// bitmap or an expanded_type other than w's dtype or f32.
void densified_product(const Tensor& w, DType expanded_type, const float* x, size_t n, float* y);

}  // namespace lacuna
