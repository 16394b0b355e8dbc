#pragma once
// The dense baseline and the planner's dense fallback: y[n, out] = x[n, in] · Wᵀ
// through oneDNN's matmul. The weights are reordered once, at construction,
// into the layout oneDNN prefers (packing at load, as FBGEMM's PackBMatrix);
// that layout does not depend on the batch, so one object serves every n.
#include <cstddef>
#include <memory>
#include <mutex>
#include <vector>

#include "kernels/common/scratch.h"
#include "sparse/tensor.h"

namespace lacuna {

// A batch of activations converted into the source type of oneDNN products
// of one input width and weight dtype (bf16, f32, or s8 with one scale per
// token), zero-padded to the rows the primitive multiplies: converted once,
// it feeds several products over the same tokens (densified_product runs an
// expanded weight as blocks of rows on all threads, one product per block).
struct OnednnSource {
  DType dtype = DType::f32;
  size_t in = 0, n = 0, rows = 0;
  kernels::Scratch bytes;           // rows x in elements of dtype
  std::vector<float> token_scales;  // int8: each token's activation scale
  std::vector<int32_t> token_sums;  // int8: each token's sum of its s8 values
  // The tokens packed for in-place products (OnednnMatmul::Weights): by the
  // first that needs them after prepare, under `packing`, since the products
  // of one source may run on several threads at once.
  mutable kernels::Scratch packed_tokens;
  mutable bool tokens_packed = false;
  mutable std::mutex packing;
};

// Whether oneDNN's own CPU dispatch reaches AMX (its effective ISA, which
// LACUNA_MAX_ISA does not cap): its bf16 and s8 matmuls then run on tiles.
bool onednn_runs_amx();

class OnednnMatmul {
 public:
  // How the weights reach oneDNN: repacked into its preferred layout (a
  // copy, made once), or read in place as our [out][in] rows. As oneDNN's
  // weights, rows read in place are copied into its layout on every call;
  // so bf16 and int8 rows in place are multiplied transposed from 17 tokens
  // (primitives of 32 rows), yᵀ = W · xᵀ, where oneDNN takes the tokens in
  // the layout we pack: the rows are its row-major source, read as they
  // are, the tokens its weights, packed once per prepared source (far fewer
  // bytes; int8 with the compensation its s8 x s8 kernels need), and the
  // result is transposed back (VectorOps::transpose). See
  // docs/benchmarks.md, "Expanded rows as oneDNN's source".
  enum class Weights { packed, in_place };

  // `dense` is a dense f32, bf16 or int8 [out, in] tensor. bf16 runs
  // bf16 x bf16 -> f32 (x rounded to bf16); int8 quantises x on every call
  // with one symmetric scale per token and runs s8 x s8 -> f32.
  explicit OnednnMatmul(const Tensor& dense, Weights weights = Weights::packed);
  ~OnednnMatmul();
  OnednnMatmul(OnednnMatmul&&) noexcept;
  OnednnMatmul& operator=(OnednnMatmul&&) noexcept;

  // Not thread-safe: one caller at a time (oneDNN itself uses all OpenMP
  // threads, or only the caller's inside a parallel region).
  void run(const float* x, size_t n, float* y);
  // The same in two steps. prepare converts x for any product of weights
  // of `dtype` with `in` columns (on all threads); run multiplies it,
  // writing token t's outputs to y + t * ldy (ldy >= the weight's rows).
  // Throws lacuna::Error when `source` was prepared for another width or
  // dtype, or ldy is too small.
  static void prepare(DType dtype, size_t in, const float* x, size_t n, OnednnSource& source);
  void run(const OnednnSource& source, float* y, size_t ldy);
  // In-place objects only: multiply by `dense` (the same shape and dtype)
  // from now on, its int8 row scales included; the caller keeps it alive.
  // Lets one object, and its compiled primitives, serve every weight of a
  // shape that is expanded into a scratch buffer per call. Throws
  // lacuna::Error on a packed object or another shape or dtype.
  void rebind(const Tensor& dense);
  size_t packed_bytes() const;          // oneDNN's copy of the weights (0 when in place)
  // oneDNN's name for the kernel it runs at batch n, with ", transposed"
  // when that batch runs transposed (see Weights).
  std::string implementation(size_t n);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace lacuna
