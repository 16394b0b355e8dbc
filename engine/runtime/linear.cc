#include "engine/runtime/linear.h"

#include <omp.h>

#include <algorithm>
#include <limits>
#include <map>
#include <tuple>
#include <vector>

#include "kernels/densify.h"
#include "kernels/instruction-rates.h"
#include "kernels/dense-onednn/onednn-matmul.h"
#include "kernels/planner.h"

namespace lacuna {
namespace {

// The kernel choice among those accepting a format depends on compute rates,
// hardly on bandwidth, so a nominal figure serves instead of a measurement at load.
constexpr double kNominalBandwidth = 30e9;

// From this batch on, a bitmap weight is expanded into dense rows per call and
// run through oneDNN. Measured with bench-densify (docs/benchmarks.md,
// "Prefill", "Against expansion for oneDNN", "Live-pair lists",
// "Instruction rates" and "Token tiles over blocks of rows"): for int8 the
// VNNI kernel wins up to 32 tokens (2048->11264 at 70 %: 3.5-3.7 ms against
// 5.2) and is level with expansion at 64; it lost from 32 while its tiles
// walked the rows one at a time. Below, the products are bound by reading
// the weights, which the sparse kernels do faster.
// bf16 depends on the CPU's VDPBF16PS rate, which oneDNN's bf16 matmul is
// made of. Where it does fewer multiply-adds per second than f32 FMAs
// (bf16_dot_vs_fma() < 1: 0.47-0.51 on this project's Intel host), the
// weight is widened to f32 for oneDNN's f32 matmul, which pays for writing
// twice the bytes from 64 tokens: at 50 % it beat the small-batch kernel and
// bf16 expansion from 64 tokens (1.15-1.33x dense at 128-256), at 70 % the
// column-pair kernel from 256 (1.40x dense against 1.00x); at 90 % the
// column-pair kernel stays 2.1-2.2x faster. Elsewhere (the AMD hosts),
// expansion in bf16 from 16 tokens, except for weights of 65 % or more,
// which the column-pair kernel skips pairs of zeros in: its time follows
// the pairs holding a weight (51 % of them at 70 %, 19 % at 90 %). On the
// Zen 5 host, once that kernel's column blocks fit in L1, a 512-token
// prefill of the mini model read 0.78x and 0.81x dense at 70 % expanded,
// 0.89x and 0.90x with the column pairs (docs/benchmarks.md, "Column
// blocks in L1"); at 50 % the kernel is 1.3x slower than expansion. Fixed
// thresholds rather than the planner's estimate: the planner's large-batch
// rates were measured on another host.
constexpr double kSparsityWidenedFrom256Bf16 = 0.65;
constexpr double kSparsestWidenedBf16 = 0.85;
constexpr double kSparsestKeptBf16 = 0.65;

// Whether an expanded weight is widened to f32 (see above).
bool widened(const TensorDesc& d) { return d.dtype == DType::bf16 && f32_outruns_bf16_dot(); }

size_t densify_from(const TensorDesc& d) {
  constexpr size_t kNever = std::numeric_limits<size_t>::max();
  if (d.dtype == DType::int8) return 64;
  if (d.dtype != DType::bf16) return 16;
  const double weights = static_cast<double>(d.rows()) * static_cast<double>(d.cols());
  const double sparsity = 1.0 - static_cast<double>(d.nnz) / weights;
  if (widened(d)) return sparsity >= kSparsestWidenedBf16 ? kNever : sparsity >= kSparsityWidenedFrom256Bf16 ? 256 : 64;
  return sparsity >= kSparsestKeptBf16 ? kNever : 16;
}

bool expanded_at(const TensorDesc& d, size_t n) { return d.format == Format::bitmap && n >= densify_from(d); }

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
  // Rows [r0, r1) of `w` expanded into the buffer, as a dense tensor (int8
  // scales included); bf16 widened to f32 where `widened` says so (the
  // products are then more exact, the activations not rounded to bf16).
  Tensor expand(const Tensor& w, uint64_t r0, uint64_t r1) {
    const bool widen = widened(w.desc());
    const TensorDesc dd = TensorDesc::matrix(Format::dense, widen ? DType::f32 : w.desc().dtype, r1 - r0, w.desc().cols());
    const PayloadLayout layout = payload_layout(dd);
    if (buffer_.size() < layout.total_bytes) buffer_.resize(layout.total_bytes);
    if (widen)
      densify_bitmap_f32(w, reinterpret_cast<float*>(buffer_.data()), r0, r1);
    else
      densify_bitmap(w, buffer_.data(), r0, r1);
    if (dd.dtype == DType::int8)
      std::copy_n(w.section<float>(Section::scales) + r0, dd.rows(), reinterpret_cast<float*>(buffer_.data() + layout[Section::scales].offset));
    return Tensor::wrap(dd, buffer_.data(), nullptr);
  }
  // A block's outputs, [n][block rows], before they go to their columns of y.
  float* block_output(size_t floats) {
    if (block_output_.size() < floats) block_output_.resize(floats);
    return block_output_.data();
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
  std::vector<float> block_output_;
  std::map<std::tuple<uint64_t, uint64_t, DType>, std::unique_ptr<OnednnMatmul>> products_;
};

}  // namespace

Linear::Linear() : mutex_(std::make_unique<std::mutex>()) {}
Linear::Linear(Tensor weight)
    : weight_(std::move(weight)), mutex_(std::make_unique<std::mutex>()), dense_int8_kernel_(dense_int8_tile_kernel(weight_.desc())) {}
Linear::~Linear() = default;
Linear::Linear(Linear&&) noexcept = default;
Linear& Linear::operator=(Linear&&) noexcept = default;

OnednnMatmul& Linear::dense() const {
  if (!dense_)
    dense_ = std::make_unique<OnednnMatmul>(weight_, dense_int8_kernel_ ? OnednnMatmul::Weights::in_place : OnednnMatmul::Weights::packed);
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
    c.densify = expanded_at(d, n);
  }
  return c;
}

// An expanded weight runs in blocks of rows of about this many bytes, so the
// scratch buffer stays small: a whole 2048 x 11264 weight widened to f32 is
// 92 MB (the 50 % mini model's 512-token prefill peaked at 3201 MB blocked,
// 3264 MB not; its speed did not measurably change).
constexpr uint64_t kExpandedBlockBytes = uint64_t{16} << 20;

void Linear::run_densified(const float* x, size_t n, float* y) const {
  DensifyScratch& scratch = DensifyScratch::of_this_thread();
  const TensorDesc& d = weight_.desc();
  const uint64_t rows = d.rows();
  const uint64_t row_bytes = d.cols() * dtype_size(widened(d) ? DType::f32 : d.dtype);
  const uint64_t blocks = std::max<uint64_t>(1, (rows * row_bytes + kExpandedBlockBytes - 1) / kExpandedBlockBytes);
  // Equal blocks of a multiple of 16 rows: few distinct shapes, so few oneDNN products.
  const uint64_t block_rows = std::min(rows, ((rows + blocks - 1) / blocks + 15) / 16 * 16);
  if (block_rows == rows) {
    const Tensor dense = scratch.expand(weight_, 0, rows);
    return scratch.product(dense).run(x, n, y);
  }
  float* out = scratch.block_output(n * block_rows);
  for (uint64_t r0 = 0; r0 < rows; r0 += block_rows) {
    const uint64_t r1 = std::min(rows, r0 + block_rows), width = r1 - r0;
    const Tensor dense = scratch.expand(weight_, r0, r1);
    scratch.product(dense).run(x, n, out);
#pragma omp parallel for if (n > 1)
    for (size_t t = 0; t < n; ++t) std::copy_n(out + t * width, width, y + t * rows + r0);
  }
}

bool Linear::reads_weight_in_place(const TensorDesc& d) { return d.format != Format::dense || dense_int8_tile_kernel(d); }

bool Linear::prepare() {
  if (reads_weight_in_place(weight_.desc())) return false;
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
    // The VNNI tiles and oneDNN's s8 product give the same bits (see below),
    // so the invariant policy takes either.
    const SpmmUkernel* kernel = dense_int8_kernel_;
    if (kernel && n <= kDenseInt8TileTokens) {
      const size_t chunk = kernel->max_n ? kernel->max_n : end - begin;
      for (size_t at = begin; at < end; at += chunk) spmm_run(*kernel, weight_, x + at * cols(), std::min(chunk, end - at), y + at * rows());
      return;
    }
    const std::lock_guard lock(*mutex_);
    return dense().run(xp, end - begin, yp);
  }
  // Invariant: the single-token kernel for every n, over as many tokens as it
  // takes at once. Except that the VNNI kernels (s8 activations) may give way
  // to the weight expanded for oneDNN: both sum the same quantised
  // activations exactly in integers and then take the same float steps
  // (OnednnMatmul::run), so a token gets the same bits either way.
  Choice c = choice_for(policy == BatchPolicy::invariant ? 1 : n);
  if (policy == BatchPolicy::invariant && c.kernel->act == ActLayout::s8_padded) c.densify = expanded_at(weight_.desc(), n);
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
  if (dense_int8_kernel_ && n <= kDenseInt8TileTokens) return dense_int8_kernel_->name;
  if (weight_.desc().format == Format::dense) return std::string("onednn dense ") + dtype_name(weight_.desc().dtype);
  const Choice c = choice_for(n);
  if (c.densify) return std::string("onednn dense ") + dtype_name(widened(weight_.desc()) ? DType::f32 : weight_.desc().dtype) + " on the weight expanded per call";
  return c.tokens < n ? std::string(c.kernel->name) + " in chunks of " + std::to_string(c.tokens) + " tokens" : c.kernel->name;
}

}  // namespace lacuna
