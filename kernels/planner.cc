#include "kernels/planner.h"

#include <omp.h>

#include <algorithm>

namespace lacuna {

MachineModel MachineModel::for_bandwidth(double bytes_per_s) {
  const double threads = omp_get_max_threads();
  MachineModel m;
  m.bandwidth = bytes_per_s;
  m.onednn_bf16_flops = 100e9 * threads;
  m.onednn_int8_ops = 150e9 * threads;
  m.bitmap_groups_per_s = 0.6e9 * threads;
  m.broadcast_fmas_per_s = 1.0e9 * threads;
  return m;
}

double predict_dense_ms(const TensorDesc& w, size_t n, const MachineModel& m) {
  const double weights = static_cast<double>(w.elements());
  const double bytes = weights * (w.dtype == DType::int8 ? 1.0 : 2.0);
  const double ops = 2.0 * weights * static_cast<double>(n);
  const double rate = w.dtype == DType::int8 ? m.onednn_int8_ops : m.onednn_bf16_flops;
  return 1e3 * std::max(bytes / m.bandwidth, ops / rate);
}

double predict_sparse_ms(const SpmmUkernel& k, const TensorDesc& w, const TensorStats& stats, size_t n, const MachineModel& m) {
  const double memory = static_cast<double>(stats.payload_bytes) / m.bandwidth;
  double compute = 0;
  if (k.act == ActLayout::f32_transposed || k.act == ActLayout::f32) {
    compute = static_cast<double>(stats.nonzeros) * static_cast<double>((n + 15) / 16) / m.broadcast_fmas_per_s;
  } else {
    compute = static_cast<double>(w.rows() * group_count(w)) * static_cast<double>(n) / m.bitmap_groups_per_s;
  }
  return 1e3 * std::max(memory, compute);
}

LinearPlan plan_linear(const TensorDesc& w, const TensorStats& stats, size_t n, const MachineModel& m) {
  LinearPlan p;
  p.kernel = choose_spmm(w, n).kernel;
  p.sparse_ms = predict_sparse_ms(*p.kernel, w, stats, n, m);
  p.dense_ms = predict_dense_ms(w, n, m);
  p.use_dense = p.dense_ms < p.sparse_ms;
  return p;
}

std::string LinearPlan::describe() const {
  if (use_dense) return "onednn dense";
  const std::string name = kernel->name;
  return std::string(format_name(kernel->format)) + " " + name.substr(name.rfind("_ukernel_") + 9);
}

}  // namespace lacuna
