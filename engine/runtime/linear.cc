#include "engine/runtime/linear.h"

#include <omp.h>

#include <algorithm>
#include <limits>
#include <map>
#include <tuple>
#include <vector>

#include "kernels/densify.h"
#include "kernels/dense-onednn/onednn-matmul.h"
#include "kernels/planner.h"

namespace lacuna {
namespace {

// The kernel choice among those accepting a format depends on compute rates,
// hardly on bandwidth, so a nominal figure serves instead of a measurement at load.
constexpr double kNominalBandwidth = 30e9;

// From this batch on, a bitmap weight is expanded into dense rows per call and
// run through oneDNN. Measured with bench-densify (docs/benchmarks.md,
// "Prefill", "Against expansion for oneDNN" and "Live-pair lists"): for
// int8 the VNNI kernel still wins at 16 tokens, and loses 1.2-3.9x from 32,
// on both hosts measured. Below, the products are bound by reading the
// weights, which the sparse kernels do faster. bf16 weights of 65 % sparsity
// or more are never expanded: their column-pair kernel skips pairs of zeros,
// and on this project's Intel host it ran 1.0-1.8x faster than expanding at
// 70 % from 16 to 256 tokens, 1.3-2.6x at 90 % (the whole 70 % model
// prefilled 12-27 % faster). On the AMD host measured earlier, expanding was
// 1.5-2.6x faster than the previous column-pair kernel at 70 %, and would
// likely still win there. A fixed threshold rather than the planner's
// estimate: the planner's large-batch rates were measured on another host.
constexpr double kSparsestExpandedBf16 = 0.65;

size_t densify_from(const TensorDesc& d) {
  if (d.dtype == DType::int8) return 32;
  const double weights = static_cast<double>(d.rows()) * static_cast<double>(d.cols());
  const bool sparsest = d.dtype == DType::bf16 && 1.0 - static_cast<double>(d.nnz) / weights >= kSparsestExpandedBf16;
  return sparsest ? std::numeric_limits<size_t>::max() : 16;
}

// The calling thread's buffer for a bitmap weight expanded into dense rows,
// and its oneDNN products reading that buffer in place, one per shape and
// dtype. Per thread, not per weight: a buffer holds one weight at a time, and
// every weight of a shape shares one product's compiled primitives and
// batch buffers (one product per weight held ~700 MB of those after a
// 512-token prefill of the mini model).
class DensifyScratch {
 public:
  static DensifyScratch& of_this_thread() {
    thread_local DensifyScratch s;
    return s;
  }
  // `w` expanded into the buffer, as a dense tensor (int8 scales included).
  Tensor expand(const Tensor& w) {
    TensorDesc dd = w.desc();
    dd.format = Format::dense;
    dd.nnz = 0;
    const PayloadLayout layout = payload_layout(dd);
    if (buffer_.size() < layout.total_bytes) buffer_.resize(layout.total_bytes);
    densify_bitmap(w, buffer_.data());
    if (dd.dtype == DType::int8)
      std::copy_n(w.section<float>(Section::scales), dd.rows(), reinterpret_cast<float*>(buffer_.data() + layout[Section::scales].offset));
    return Tensor::wrap(dd, buffer_.data(), nullptr);
  }
  OnednnMatmul& product(const Tensor& dense) {
    const TensorDesc& d = dense.desc();
    auto& p = products_[{d.rows(), d.cols(), d.dtype}];
    if (!p) p = std::make_unique<OnednnMatmul>(dense, OnednnMatmul::Weights::in_place);
    p->rebind(dense);
    return *p;
  }

 private:
  std::vector<std::byte> buffer_;
  std::map<std::tuple<uint64_t, uint64_t, DType>, std::unique_ptr<OnednnMatmul>> products_;
};

}  // namespace

Linear::Linear() : mutex_(std::make_unique<std::mutex>()) {}
Linear::Linear(Tensor weight) : weight_(std::move(weight)), mutex_(std::make_unique<std::mutex>()) {}
Linear::~Linear() = default;
Linear::Linear(Linear&&) noexcept = default;
Linear& Linear::operator=(Linear&&) noexcept = default;

OnednnMatmul& Linear::dense() const {
  if (!dense_) dense_ = std::make_unique<OnednnMatmul>(weight_);
  return *dense_;
}

// Batches above this run either one kernel over all tokens or a small-batch
// kernel over chunks of this many tokens, whichever the planner predicts faster
// (csr and bsr weights; bitmap ones are expanded for oneDNN before this size).
constexpr size_t kChunk = 64;

Linear::Choice Linear::choice_for(size_t n) const {
  const int threads = omp_get_max_threads();
  const std::lock_guard lock(*mutex_);
  Choice& c = choices_[{threads, n}];
  if (!c.kernel) {
    const TensorDesc& d = weight_.desc();
    const MachineModel machine = MachineModel::for_bandwidth(kNominalBandwidth, threads);
    auto plan = [&](size_t batch) { return plan_linear(d.dtype, d.rows(), d.cols(), d.nnz, batch, {d.format}, machine); };
    const LinearPlan whole = plan(n);
    c = {whole.chosen.kernel ? whole.chosen.kernel : choose_spmm(d, n).kernel, n};
    if (n > kChunk && whole.chosen.kernel) {
      const LinearPlan part = plan(kChunk);
      const double chunks = static_cast<double>((n + kChunk - 1) / kChunk);
      if (part.chosen.kernel && chunks * part.chosen.predicted_ms < whole.chosen.predicted_ms) c = {part.chosen.kernel, kChunk};
    }
    if (d.format == Format::bitmap && n >= densify_from(d)) c.densify = true;
  }
  return c;
}

void Linear::run_densified(const float* x, size_t n, float* y) const {
  DensifyScratch& scratch = DensifyScratch::of_this_thread();
  const Tensor dense = scratch.expand(weight_);
  scratch.product(dense).run(x, n, y);
}

bool Linear::prepare() {
  if (weight_.desc().format != Format::dense) return false;
  const std::lock_guard lock(*mutex_);
  return dense().packed_bytes() > 0;
}

void Linear::run(const float* x, size_t n, float* y, BatchPolicy policy) const { run_part(x, n, 0, n, y, policy); }

void Linear::run_part(const float* x, size_t n, size_t begin, size_t end, float* y, BatchPolicy policy) const {
  end = std::min(end, n);
  if (begin >= end) return;
  // oneDNN computes each token's row of the product alone: a part is the
  // product over the part's tokens.
  const float* xp = x + begin * cols();
  float* yp = y + begin * rows();
  if (weight_.desc().format == Format::dense) {
    const std::lock_guard lock(*mutex_);
    return dense().run(xp, end - begin, yp);
  }
  // Invariant: the single-token kernel for every n, over as many tokens as it takes at once.
  Choice c = choice_for(policy == BatchPolicy::invariant ? 1 : n);
  if (c.densify) return run_densified(xp, end - begin, yp);
  if (policy == BatchPolicy::invariant) c.tokens = c.kernel->max_n ? std::min(n, c.kernel->max_n) : n;
  for (size_t at = 0; at < n; at += c.tokens) {
    const size_t count = std::min(c.tokens, n - at), from = std::max(at, begin), to = std::min(at + count, end);
    if (from >= to) continue;
    // A shorter last chunk gets its own choice (a kernel may not accept it),
    // unless the kernel must stay the same (the single-token one takes any count).
    const SpmmUkernel& kernel = count == c.tokens || policy == BatchPolicy::invariant ? *c.kernel : *choice_for(count).kernel;
    spmm_run(kernel, weight_, x + from * cols(), to - from, y + from * rows());
  }
}

std::string Linear::describe(size_t n) const {
  if (weight_.desc().format == Format::dense) return std::string("onednn dense ") + dtype_name(weight_.desc().dtype);
  const Choice c = choice_for(n);
  if (c.densify) return std::string("onednn dense ") + dtype_name(weight_.desc().dtype) + " on the weight expanded per call";
  return c.tokens < n ? std::string(c.kernel->name) + " in chunks of " + std::to_string(c.tokens) + " tokens" : c.kernel->name;
}

}  // namespace lacuna
