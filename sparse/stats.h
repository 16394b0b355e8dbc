#pragma once
// What a stored tensor costs: element count, zeros, bytes.
#include <cstdint>

#include "sparse/tensor.h"

namespace lacuna {

struct TensorStats {
  uint64_t elements = 0;
  uint64_t nonzeros = 0;       // elements whose value is not zero
  uint64_t payload_bytes = 0;  // bytes the tensor occupies, index arrays and padding included
  double sparsity() const { return elements ? 1.0 - static_cast<double>(nonzeros) / static_cast<double>(elements) : 0.0; }
  double bytes_per_weight() const { return elements ? static_cast<double>(payload_bytes) / static_cast<double>(elements) : 0.0; }
  // Compression against the same matrix stored dense in bf16.
  double ratio_vs_dense_bf16() const { return payload_bytes ? 2.0 * static_cast<double>(elements) / static_cast<double>(payload_bytes) : 0.0; }
};

TensorStats tensor_stats(const Tensor& t);

}  // namespace lacuna
