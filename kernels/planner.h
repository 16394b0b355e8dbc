#pragma once
// Chooses, per weight and batch size, between Lacuna's sparse kernel for the
// stored format and oneDNN's dense matmul, from a cost model of this machine:
// a product costs the larger of its memory time (bytes / bandwidth) and its
// compute time (work / the kernel's measured rate).
#include <cstddef>
#include <string>

#include "kernels/spmm.h"
#include "sparse/stats.h"

namespace lacuna {

struct MachineModel {
  double bandwidth = 0;            // bytes/s, all threads
  double onednn_bf16_flops = 0;    // oneDNN dense bf16, compute-bound rate, all threads
  double onednn_int8_ops = 0;      // oneDNN dense s8, compute-bound rate
  double bitmap_groups_per_s = 0;  // small-batch bitmap kernels: (group x token) steps per second
  double broadcast_fmas_per_s = 0; // large-batch kernels: (nonzero x 16 tokens) vector FMAs per second
  // Rates measured with `lacuna bench sweep` on this class of machine (docs/benchmarks.md),
  // scaled by the thread count, with the memory bandwidth measured in the run.
  static MachineModel for_bandwidth(double bytes_per_s);
};

struct LinearPlan {
  bool use_dense = false;               // oneDNN dense is predicted faster
  const SpmmUkernel* kernel = nullptr;  // the sparse kernel otherwise
  double sparse_ms = 0, dense_ms = 0;   // the predictions
  std::string describe() const;         // "bitmap 4x4__avx512bf16" or "onednn dense"
};

LinearPlan plan_linear(const TensorDesc& w, const TensorStats& stats, size_t n, const MachineModel& model);

// Predicted time of one kernel / of oneDNN dense, in ms.
double predict_sparse_ms(const SpmmUkernel& k, const TensorDesc& w, const TensorStats& stats, size_t n, const MachineModel& model);
double predict_dense_ms(const TensorDesc& w, size_t n, const MachineModel& model);

}  // namespace lacuna
