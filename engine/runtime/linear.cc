#include "engine/runtime/linear.h"

#include <omp.h>

#include "kernels/dense-onednn/onednn-matmul.h"
#include "kernels/planner.h"

namespace lacuna {
namespace {

// The kernel choice among those accepting a format depends on compute rates,
// hardly on bandwidth, so a nominal figure serves instead of a measurement at load.
constexpr double kNominalBandwidth = 30e9;

}  // namespace

Linear::Linear() = default;
Linear::Linear(Tensor weight) : weight_(std::move(weight)) {}
Linear::~Linear() = default;
Linear::Linear(Linear&&) noexcept = default;
Linear& Linear::operator=(Linear&&) noexcept = default;

OnednnMatmul& Linear::dense() const {
  if (!dense_) dense_ = std::make_unique<OnednnMatmul>(weight_);
  return *dense_;
}

const SpmmUkernel& Linear::kernel_for(size_t n) const {
  if (n >= by_batch_.size()) by_batch_.resize(n + 1, nullptr);
  if (!by_batch_[n]) {
    const TensorDesc& d = weight_.desc();
    const LinearPlan plan = plan_linear(d.dtype, d.rows(), d.cols(), d.nnz, n, {d.format},
                                        MachineModel::for_bandwidth(kNominalBandwidth, omp_get_max_threads()));
    by_batch_[n] = plan.chosen.kernel ? plan.chosen.kernel : choose_spmm(d, n).kernel;
  }
  return *by_batch_[n];
}

void Linear::run(const float* x, size_t n, float* y) const {
  if (n == 0) return;
  if (weight_.desc().format == Format::dense)
    dense().run(x, n, y);
  else
    spmm_run(kernel_for(n), weight_, x, n, y);
}

std::string Linear::describe(size_t n) const {
  if (weight_.desc().format == Format::dense) return std::string("onednn dense ") + dtype_name(weight_.desc().dtype);
  return kernel_for(n).name;
}

}  // namespace lacuna
