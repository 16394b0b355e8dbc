#pragma once
// Converts f32 activations [n][in] into the layout a kernel asks for
// (spmm.h: ActLayout), in a buffer reused across calls on the same thread.
#include <cstddef>
#include <cstdint>

#include "kernels/spmm.h"

namespace lacuna::kernels {

struct PreparedActivations {
  const void* data = nullptr;
  size_t ld = 0;                  // row stride in elements
  const float* scale = nullptr;   // s8_padded: per-token scale
  const int32_t* sum = nullptr;   // s8_padded: per-token sum of the quantised values
};

// The result points into thread-local storage, valid until the next call on this thread.
PreparedActivations prepare_activations(ActLayout layout, const float* x, size_t n, size_t in);

}  // namespace lacuna::kernels
