#pragma once
// Converts f32 activations [n][in] into the layout a kernel asks for
// (spmm.h: ActLayout), in a buffer reused across calls on the same thread.
#include <cstddef>
#include <cstdint>

#include "kernels/common/scratch.h"
#include "kernels/spmm.h"

namespace lacuna::kernels {

struct PreparedActivations {
  const void* data = nullptr;
  size_t ld = 0;                  // row stride in elements
  const float* scale = nullptr;   // s8_padded: per-token scale
  const int32_t* sum = nullptr;   // s8_padded: per-token sum of the quantised values
};

// Where converted activations are kept: reused across calls, grown to the largest.
struct ActivationBuffers {
  Scratch values, scales, sums;
};

// The result points into `into`, valid until its next use.
PreparedActivations prepare_activations(ActLayout layout, const float* x, size_t n, size_t in, ActivationBuffers& into);
// The same in the calling thread's own buffers, valid until the next call on this thread.
PreparedActivations prepare_activations(ActLayout layout, const float* x, size_t n, size_t in);

}  // namespace lacuna::kernels
