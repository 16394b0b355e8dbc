#pragma once
// The one operation every weight format serves: y[n, out] = x[n, in] · Wᵀ,
// and the registry of microkernels that implement it. Microkernels see raw
// tensors and activations only; they know nothing of models.
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "kernels/cpu-features.h"
#include "sparse/tensor.h"

namespace lacuna {

struct SpmmArgs {
  const Tensor* w = nullptr;  // [out, in], any format and dtype
  const float* x = nullptr;   // [n, in], row stride ldx
  size_t ldx = 0;
  float* y = nullptr;  // [n, out], row stride ldy; columns row_begin..row_end-1 are overwritten
  size_t ldy = 0;
  size_t n = 0;
  uint64_t row_begin = 0;  // the output rows (weight rows) to compute
  uint64_t row_end = 0;
};
using SpmmUkernelFn = void (*)(const SpmmArgs&);

struct SpmmUkernel {
  const char* name;
  Format format;
  DType dtype;
  uint64_t features;  // CpuFeature bits the kernel's instructions need
  size_t min_n;       // batch sizes it is written for
  size_t max_n;       // 0: no upper bound
  SpmmUkernelFn fn;
};

// Every microkernel, in preference order: the first that accepts a problem wins.
std::span<const SpmmUkernel> spmm_ukernels();

// Why `k` declines the problem, or "" when it accepts it.
std::string spmm_decline_reason(const SpmmUkernel& k, const TensorDesc& w, size_t n, const CpuInfo& cpu);

struct SpmmChoice {
  const SpmmUkernel* kernel = nullptr;
  std::vector<std::string> declined;  // "name: reason" for each kernel passed over
  std::string describe(const TensorDesc& w, size_t n) const;
};

// Throws lacuna::Error when no kernel accepts (cannot happen for valid tensors:
// every format x dtype has a scalar kernel).
SpmmChoice choose_spmm(const TensorDesc& w, size_t n, const CpuInfo& cpu = cpu_info());

// y = x · Wᵀ over all rows with the chosen kernel. With LACUNA_VERBOSE=1 each
// distinct problem prints its choice and the rejections once, to stderr.
void spmm(const Tensor& w, const float* x, size_t n, float* y);

}  // namespace lacuna
