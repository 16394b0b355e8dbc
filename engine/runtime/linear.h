#pragma once
// One weight of a model and how to multiply by it: y[n, rows] = x[n, cols] · Wᵀ.
// Sparse weights run Lacuna's kernels, the planner choosing the kernel per
// batch size; dense weights run oneDNN's matmul (packed once, on first use).
#include <cstddef>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>
#include <vector>

#include "kernels/spmm.h"
#include "sparse/tensor.h"

namespace lacuna {

class OnednnMatmul;

// How a product over n tokens picks its kernel: the fastest for n, or the
// same kernel whatever n is, so that a token's result does not depend on
// which other tokens share the step (a server's answers must not depend on
// its load; different kernels sum in different orders).
enum class BatchPolicy { fastest, invariant };

class Linear {
 public:
  Linear();
  explicit Linear(Tensor weight);
  ~Linear();
  Linear(Linear&&) noexcept;
  Linear& operator=(Linear&&) noexcept;

  // Dense weights: packs them for oneDNN now (at load) rather than on the
  // first product. Returns true when a packed copy now holds the weights.
  bool prepare();
  // Whether products read the weight itself (sparse formats, and dense int8
  // where the VNNI kernel runs) rather than a copy packed for oneDNN.
  static bool reads_weight_in_place(const TensorDesc& d);
  // Thread-safe: many forward passes (contexts of the C API) may share one
  // model. Sparse products run concurrently; a dense weight's oneDNN product
  // holds per-weight buffers, so its callers take turns.
  void run(const float* x, size_t n, float* y, BatchPolicy policy = BatchPolicy::fastest) const;
  // Tokens [begin, end) of the product over n tokens (x and y hold all n),
  // each computed exactly as run() over all n computes it: the same kernel,
  // the same chunks. Lets several NUMA nodes share one expert's tokens.
  void run_part(const float* x, size_t n, size_t begin, size_t end, float* y, BatchPolicy policy = BatchPolicy::fastest) const;
  // The kernel when run() over n tokens is one spmm_run of it over the whole
  // weight and all n tokens, null otherwise (oneDNN, chunks of the batch):
  // such products may share one parallel region (spmm_run_all).
  const SpmmUkernel* single_kernel(size_t n, BatchPolicy policy = BatchPolicy::fastest) const;
  const Tensor& weight() const { return weight_; }
  uint64_t rows() const { return weight_.desc().rows(); }
  uint64_t cols() const { return weight_.desc().cols(); }
  // What runs at batch n: "onednn dense bf16" or the kernel's name.
  std::string describe(size_t n) const;
  // Bytes a product streams (the stored payload).
  uint64_t bytes() const { return weight_.payload_bytes(); }

 private:
  struct Choice {
    const SpmmUkernel* kernel = nullptr;
    size_t tokens = 0;      // tokens per call: n, or fewer when chunks of the batch run faster
    bool densify = false;   // expand the bitmap weight into dense rows and run oneDNN instead
  };
  // The planner's choice at n; with `any_batch`, among the kernels that may
  // run every batch size (not works_per_token), for the invariant policy.
  Choice choice_for(size_t n, bool any_batch = false) const;
  Choice choice_under(BatchPolicy policy, size_t n) const;  // choice_for as `policy` adjusts it
  OnednnMatmul& dense() const;
  void run_dense_in_chunks(const float* x, size_t n, float* y) const;
  static constexpr size_t kInvariantDenseRows = 16;

  Tensor weight_;
  // Guards dense_ (created on first use, run one caller at a time), its
  // padded rows and choices_; held in a pointer so that Linear stays movable.
  std::unique_ptr<std::mutex> mutex_;
  mutable std::unique_ptr<OnednnMatmul> dense_;
  // The invariant policy's whole chunks for oneDNN's float products (run_part).
  mutable std::vector<float> padded_x_, padded_y_;
  // The planner's choice per (threads, n, any_batch), filled on first use: contexts
  // with different thread counts share the weight and may choose differently.
  mutable std::map<std::tuple<int, size_t, bool>, Choice> choices_;
  // Dense int8 weights: the tile kernel that runs them at n tokens, index n
  // (VNNI, AMX from its minimum batch), up to kDenseInt8TileTokens; empty for
  // other weights, or where the CPU lacks the tiles. Looked up once.
  std::vector<const SpmmUkernel*> dense_int8_kernels_;
  const SpmmUkernel* dense_int8_kernel(size_t n) const { return n < dense_int8_kernels_.size() ? dense_int8_kernels_[n] : nullptr; }
};

}  // namespace lacuna
