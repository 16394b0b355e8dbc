#pragma once
// The dense baseline and the planner's dense fallback: y[n, out] = x[n, in] · Wᵀ
// through oneDNN's matmul, with the weights reordered once into the layout
// oneDNN prefers for this batch size (packing at load, as FBGEMM's PackBMatrix).
#include <cstddef>
#include <memory>

#include "sparse/tensor.h"

namespace lacuna {

class OnednnMatmul {
 public:
  // `dense` is a dense f32, bf16 or int8 [out, in] tensor; `n` the batch size
  // the primitive is built for. bf16 runs bf16 x bf16 -> f32 (x rounded to
  // bf16); int8 quantises x per call (one symmetric scale) and runs s8 x s8.
  OnednnMatmul(const Tensor& dense, size_t n);
  ~OnednnMatmul();
  OnednnMatmul(OnednnMatmul&&) noexcept;
  OnednnMatmul& operator=(OnednnMatmul&&) noexcept;

  void run(const float* x, float* y);
  size_t batch() const;
  size_t packed_bytes() const;  // size of oneDNN's copy of the weights
  const char* implementation() const;  // oneDNN's name for the kernel it chose

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace lacuna
