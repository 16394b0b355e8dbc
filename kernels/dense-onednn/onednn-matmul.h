#pragma once
// The dense baseline and the planner's dense fallback: y[n, out] = x[n, in] · Wᵀ
// through oneDNN's matmul. The weights are reordered once, at construction,
// into the layout oneDNN prefers (packing at load, as FBGEMM's PackBMatrix);
// that layout does not depend on the batch, so one object serves every n.
#include <cstddef>
#include <memory>

#include "sparse/tensor.h"

namespace lacuna {

class OnednnMatmul {
 public:
  // How the weights reach oneDNN: repacked into its preferred layout (a
  // copy), or read in place as our [out][in] rows (no copy, slower).
  enum class Weights { packed, in_place };

  // `dense` is a dense f32, bf16 or int8 [out, in] tensor. bf16 runs
  // bf16 x bf16 -> f32 (x rounded to bf16); int8 quantises x on every call
  // with one symmetric scale per token and runs s8 x s8 -> f32.
  explicit OnednnMatmul(const Tensor& dense, Weights weights = Weights::packed);
  ~OnednnMatmul();
  OnednnMatmul(OnednnMatmul&&) noexcept;
  OnednnMatmul& operator=(OnednnMatmul&&) noexcept;

  // Not thread-safe: one caller at a time (oneDNN itself uses all OpenMP threads).
  void run(const float* x, size_t n, float* y);
  // In-place objects only: multiply by `dense` (the same shape and dtype)
  // from now on, its int8 row scales included; the caller keeps it alive.
  // Lets one object, and its compiled primitives, serve every weight of a
  // shape that is expanded into a scratch buffer per call. Throws
  // lacuna::Error on a packed object or another shape or dtype.
  void rebind(const Tensor& dense);
  size_t packed_bytes() const;          // oneDNN's copy of the weights (0 when in place)
  std::string implementation(size_t n);  // oneDNN's name for the kernel it runs at batch n

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace lacuna
