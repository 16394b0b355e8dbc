#include "engine/runtime/linear.h"

#include <omp.h>

#include <algorithm>
#include <limits>
#include <map>

#include "kernels/densified-product.h"
#include "kernels/instruction-rates.h"
#include "kernels/dense-onednn/onednn-matmul.h"
#include "kernels/planner.h"

namespace lacuna {
namespace {

// The kernel choice among those accepting a format depends on compute rates,
// hardly on bandwidth, so a nominal figure serves instead of a measurement at load.
constexpr double kNominalBandwidth = 30e9;

// From this batch on, a bitmap weight is expanded into dense rows per call and
// run through oneDNN (densified_product). Below, the products are bound by
// reading the weights, which the sparse kernels do faster. Measured with
// bench-densify; since the expansion runs a block of about 1 MB at a time
// per thread, in L2 (docs/benchmarks.md, "Expanded blocks in L2"), on the
// AMD EPYC (Zen 5) host, 2048->11264: int8 expansion beat the VNNI
// kernel from 32 tokens (1.36-1.49 ms against 1.56-1.93 at 32, 0.91-1.15
// against 0.81-0.88 at 16); since oneDNN reads the expanded rows as its
// source (OnednnMatmul, from 17 tokens), from 24: at 50 / 70 / 90 %,
// three runs each, every run's expansion was faster at 24 tokens
// (1.22-2.30 ms against 1.37-3.73) and 28, mixed at 20, slower at 16.
// bf16 is expanded from 16 tokens, though the small-batch kernel is a
// little faster up to 32 (2.20 against 2.49 ms at 16, level at 32 at
// 70 %): below, the planner picks that kernel or the column-pair kernel by
// the batch size, and a float sum's bits follow the kernel, so a
// sequence's logits would change with the batch it runs in (with 32, the C
// API's batch test read a 3.4e-5 relative error between a 39-token
// sequence alone and in a batch in the AddressSanitizer build; 0 with 16).
// Weights of 75 % or more keep the column-pair kernel, which skips pairs
// of zeros: its time follows the pairs holding a weight (51 % of them at
// 70 %, 19 % at 90 %): at 128 tokens 7.72 ms against 7.24 expanded at
// 70 %, 4.00 against 6.98 at 90 %, level near 73 %.
// bf16 depends on the CPU's VDPBF16PS rate, which oneDNN's bf16 matmul is
// made of. Where it does fewer multiply-adds per second than f32 FMAs
// (bf16_dot_vs_fma() < 1: 0.47-0.51 on this project's Intel host), the
// weight is widened to f32 for oneDNN's f32 matmul, which pays for writing
// twice the bytes from 64 tokens: at 50 % it beat the small-batch kernel and
// bf16 expansion from 64 tokens (1.15-1.33x dense at 128-256), at 70 % the
// column-pair kernel from 256 (1.40x dense against 1.00x); at 90 % the
// column-pair kernel stays 2.1-2.2x faster. Those thresholds were measured
// with the whole weight expanded before its product (docs/benchmarks.md,
// "Instruction rates"); that host was not available to measure them again.
// Fixed thresholds rather than the planner's estimate: the planner's
// large-batch rates were measured on another host.
// Where oneDNN runs on AMX (onednn_runs_amx), whatever VDPBF16PS's rate,
// its bf16 matmul runs on tiles: the weight stays bf16 and is expanded from
// 16 tokens at every sparsity. On the Intel (AMX) host, warm 2048->11264 at
// 70 %, 16 / 32 / 64 tokens: expanded bf16 2.28 / 2.00 / 3.17 ms, widened to
// f32 6.16 / 8.64 / 13.19, the small-batch kernel 4.65 / 8.60 / 16.58, the
// column-pair kernel 4.76 / 5.93 / 11.17; at 90 % expanded 2.14 / 1.86 /
// 3.01 against column pairs 2.20 / 3.08 / 4.98 (bench-densify,
// docs/benchmarks.md, "AMX int8 tiles").
// int8 weights where the AMX tiles run (spmm-int8-amx.cc) keep them up to
// two chunks of their 64 tokens: 70 % at 32 / 64 tokens 0.89 / 1.30 ms
// against 1.35 / 1.74 expanded (same run); in chunks, warm 2048->11264 at
// 50 / 70 / 90 %, 96 tokens 2.24 / 1.89 / 1.87 ms against 2.42 / 2.52 /
// 2.23 expanded, 128 tokens 2.56 / 2.27 / 2.29 against 2.78 / 2.54 / 2.49,
// level or slower from 192 (bench-densify --quick, docs/benchmarks.md,
// "AMX int8 tiles in chunks"). A prompt step of the server's mini model
// gives an expert about 64 tokens, half of them more.
// bf16 weights where the AMX bf16 tiles run (spmm-bf16-amx.cc) are never
// expanded: warm 2048->11264 and 5632->2048 (bench-densify) at 50 / 70 /
// 90 %, the tiles took 0.36-0.91x the expanded product's time at every
// batch of 16-256 tokens (2048->11264 at 70 %, 16 / 32 / 64 / 128 / 256
// tokens: 1.17 / 1.38 / 2.11 / 4.03 / 8.57 ms against 2.66 / 2.21 / 3.40 /
// 5.74 / 11.56; docs/benchmarks.md, "AMX bf16 tiles").
constexpr double kSparsityWidenedFrom256Bf16 = 0.65;
constexpr double kSparsestWidenedBf16 = 0.85;
constexpr double kSparsestKeptBf16 = 0.75;

// Batches above this run either one kernel over all tokens or a small-batch
// kernel over chunks of this many tokens, whichever the planner predicts faster
// (csr and bsr weights; bitmap ones are expanded for oneDNN before this size).
constexpr size_t kChunk = 64;

// Whether an expanded weight is widened to f32 (see above).
bool widened(const TensorDesc& d) { return d.dtype == DType::bf16 && f32_outruns_bf16_dot() && !onednn_runs_amx(); }
DType expanded_type(const TensorDesc& d) { return widened(d) ? DType::f32 : d.dtype; }

// Whether this process runs the AMX tiles of `kind` (kAmxInt8 or kAmxBf16).
bool amx_tiles(uint64_t kind) { return (cpu_info().features & (kAmxTile | kind)) == (kAmxTile | kind); }

size_t densify_from(const TensorDesc& d) {
  constexpr size_t kNever = std::numeric_limits<size_t>::max();
  if (d.dtype == DType::int8) return amx_tiles(kAmxInt8) ? 2 * kChunk + 1 : 24;
  if (d.dtype != DType::bf16) return 16;
  if (amx_tiles(kAmxBf16)) return kNever;
  if (onednn_runs_amx()) return 16;
  const double weights = static_cast<double>(d.rows()) * static_cast<double>(d.cols());
  const double sparsity = 1.0 - static_cast<double>(d.nnz) / weights;
  if (widened(d)) return sparsity >= kSparsestWidenedBf16 ? kNever : sparsity >= kSparsityWidenedFrom256Bf16 ? 256 : 64;
  return sparsity >= kSparsestKeptBf16 ? kNever : 16;
}

bool expanded_at(const TensorDesc& d, size_t n) { return d.format == Format::bitmap && n >= densify_from(d); }

}  // namespace

Linear::Linear() : mutex_(std::make_unique<std::mutex>()) {}
Linear::Linear(Tensor weight) : weight_(std::move(weight)), mutex_(std::make_unique<std::mutex>()) {
  if (dense_int8_tile_kernel(weight_.desc(), 1)) {
    dense_int8_kernels_.resize(kDenseInt8TileTokens + 1);
    for (size_t n = 1; n <= kDenseInt8TileTokens; ++n) dense_int8_kernels_[n] = dense_int8_tile_kernel(weight_.desc(), n);
  }
}
Linear::~Linear() = default;
Linear::Linear(Linear&&) noexcept = default;
Linear& Linear::operator=(Linear&&) noexcept = default;

OnednnMatmul& Linear::dense() const {
  if (!dense_)
    dense_ = std::make_unique<OnednnMatmul>(weight_, !dense_int8_kernels_.empty() ? OnednnMatmul::Weights::in_place : OnednnMatmul::Weights::packed);
  return *dense_;
}

Linear::Choice Linear::choice_for(size_t n, bool any_batch) const {
  const int threads = omp_get_max_threads();
  const std::lock_guard lock(*mutex_);
  Choice& c = choices_[{threads, n, any_batch}];
  if (!c.kernel) {
    const TensorDesc& d = weight_.desc();
    const MachineModel machine = MachineModel::for_bandwidth(kNominalBandwidth, threads);
    // The plan's fastest option, or with any_batch its fastest that may run every batch size.
    auto plan = [&](size_t batch) {
      const LinearPlan p = plan_linear(d.dtype, d.rows(), d.cols(), d.nnz, batch, {d.format}, machine);
      const auto allowed = std::find_if(p.considered.begin(), p.considered.end(),
                                        [&](const PlanOption& o) { return !any_batch || !o.kernel || !works_per_token(*o.kernel); });
      return allowed == p.considered.end() ? p.chosen : *allowed;
    };
    const PlanOption whole = plan(n);
    c = {whole.kernel ? whole.kernel : choose_spmm(d, n).kernel, n};
    if (n > kChunk && whole.kernel) {
      const PlanOption part = plan(kChunk);
      const double chunks = static_cast<double>((n + kChunk - 1) / kChunk);
      if (part.kernel && chunks * part.predicted_ms < whole.predicted_ms) c = {part.kernel, kChunk};
    }
    c.densify = expanded_at(d, n);
  }
  return c;
}

bool Linear::reads_weight_in_place(const TensorDesc& d) { return d.format != Format::dense || dense_int8_tile_kernel(d, 1); }

bool Linear::prepare() {
  if (reads_weight_in_place(weight_.desc())) return false;
  const std::lock_guard lock(*mutex_);
  return dense().packed_bytes() > 0;
}

// Invariant: the single-token kernel for every n, over as many tokens as it
// takes at once, chosen among the kernels that may run every batch size:
// the packed bf16 kernel, the one-token choice for very sparse bf16, slowed
// a 16-client server on a 90 % bf16 model to 0.76x (docs/benchmarks.md,
// "Packed activations"). Except that a kernel on s8 activations (VNNI) may give way
// to n's own choice where that is one too (AMX), or to the weight expanded
// for oneDNN: all sum the same quantised activations exactly in integers and
// then take the same float steps (OnednnMatmul::run), so a token gets the
// same bits either way.
Linear::Choice Linear::choice_under(BatchPolicy policy, size_t n) const {
  Choice c = choice_for(policy == BatchPolicy::invariant ? 1 : n, policy == BatchPolicy::invariant);
  if (policy == BatchPolicy::fastest) return c;
  if (c.kernel->act == ActLayout::s8_padded) {
    if (const SpmmUkernel* batch = choice_for(n).kernel; batch->act == ActLayout::s8_padded) c.kernel = batch;
    c.densify = expanded_at(weight_.desc(), n);
  }
  c.tokens = c.kernel->max_n ? std::min(n, c.kernel->max_n) : n;
  return c;
}

const SpmmUkernel* Linear::single_kernel(size_t n, BatchPolicy policy) const {
  if (n == 0) return nullptr;
  if (weight_.desc().format == Format::dense) return dense_int8_kernel(n);
  const Choice c = choice_under(policy, n);
  return !c.densify && c.tokens >= n ? c.kernel : nullptr;
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
    // The tiles (VNNI, AMX) and oneDNN's s8 product give the same bits (see
    // below), so the invariant policy takes any of them.
    if (dense_int8_kernel(n)) return spmm_run(*dense_int8_kernel(end - begin), weight_, xp, end - begin, yp);
    const std::lock_guard lock(*mutex_);
    if (policy == BatchPolicy::invariant && weight_.desc().dtype != DType::int8) return run_dense_in_chunks(xp, end - begin, yp);
    return dense().run(xp, end - begin, yp);
  }
  const Choice c = choice_under(policy, n);
  if (c.densify) return densified_product(weight_, expanded_type(weight_.desc()), xp, end - begin, yp);
  for (size_t at = 0; at < n; at += c.tokens) {
    const size_t count = std::min(c.tokens, n - at), from = std::max(at, begin), to = std::min(at + count, end);
    if (from >= to) continue;
    // A shorter last chunk gets its own choice under the policy (invariant:
    // the same kernel, or another on s8 activations, with the same bits). A
    // part of a chunk runs on the whole chunk's kernel, which gives each
    // token the bits the whole chunk would (spmm_refusal_reason), except a
    // part too small for that kernel to be worth it on s8 activations (AMX
    // int8 below its min_n): its own choice there gives the same bits.
    const size_t tokens = to - from;
    const SpmmUkernel* kernel = count == c.tokens ? c.kernel : choice_under(policy, count).kernel;
    if (tokens < kernel->min_n && kernel->act == ActLayout::s8_padded) kernel = choice_under(policy, tokens).kernel;
    spmm_run(*kernel, weight_, x + from * cols(), tokens, y + from * rows());
  }
}

// oneDNN's float rows change with the batch: on the AMX host its bf16
// primitives for 1, 2-4, 5 and more, and over 100 rows sum in other orders
// (a dense bf16 model's server answers changed with its load). One
// primitive gives every row of its block the same sums wherever it sits and
// whatever the others hold, so the invariant policy runs whole chunks of
// kInvariantDenseRows rows, the last padded with zeros (tested on this host:
// Scheduler.InvariantProductsDoNotDependOnTheBatch). One token at a time
// would have read the weight once per token: a 16-client prompt step of the
// dense mini model took 10.9 s against 1.2. Its s8 product sums integers,
// exact in any order. Called with mutex_ held.
void Linear::run_dense_in_chunks(const float* x, size_t n, float* y) const {
  const size_t in = cols(), out = rows();
  padded_x_.resize(kInvariantDenseRows * in);
  padded_y_.resize(kInvariantDenseRows * out);
  for (size_t at = 0; at < n; at += kInvariantDenseRows) {
    const size_t count = std::min(kInvariantDenseRows, n - at);
    if (count == kInvariantDenseRows) {
      dense().run(x + at * in, count, y + at * out);
      continue;
    }
    std::copy_n(x + at * in, count * in, padded_x_.begin());
    std::fill(padded_x_.begin() + static_cast<std::ptrdiff_t>(count * in), padded_x_.end(), 0.0f);
    dense().run(padded_x_.data(), kInvariantDenseRows, padded_y_.data());
    std::copy_n(padded_y_.begin(), count * out, y + at * out);
  }
}

std::string Linear::describe(size_t n) const {
  if (const SpmmUkernel* tiles = dense_int8_kernel(n)) return tiles->name;
  if (weight_.desc().format == Format::dense) return std::string("onednn dense ") + dtype_name(weight_.desc().dtype);
  const Choice c = choice_for(n);
  if (c.densify) return std::string("onednn dense ") + dtype_name(expanded_type(weight_.desc())) + " on the weight expanded per call";
  return c.tokens < n ? std::string(c.kernel->name) + " in chunks of " + std::to_string(c.tokens) + " tokens" : c.kernel->name;
}

}  // namespace lacuna
