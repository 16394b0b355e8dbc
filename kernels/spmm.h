#pragma once
// The one operation every weight format serves: y[n, out] = x[n, in] · Wᵀ,
// and the registry of microkernels that implement it. Microkernels see raw
// tensors and activations only; they know nothing of models.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "kernels/cpu-features.h"
#include "sparse/tensor.h"

namespace lacuna {

// How a kernel wants the activations. The driver converts x once per call
// (not once per thread or row block) into this layout.
enum class ActLayout : uint8_t {
  f32,             // x as given: [n][ldx] f32
  f32_padded,      // [n][ld] f32, ld = in rounded up to 64, zero tail (full-vector loads stay in bounds)
  bf16_padded,     // [n][ld] bf16 (round to nearest even), same padding
  s8_padded,       // [n][ld] s8 = round(x / s) with s = max|x_n| / 127 per token, same padding, and each token's sum of them
  f32_transposed,  // [in][ld] f32, ld = n rounded up to 16, zero tail: one token per vector lane
  bf16_pairs,      // [tiles][ceil(in/2)][ld][2] bf16: a column pair of one token per dword lane, the tokens in
                   // tiles of ld = min(n rounded up to 16, kPairTileTokens), zero tail
  bf16_pair_tiles,  // bf16_pairs in tiles of ld = 16 tokens: each 16 column pairs of a tile are one 1 KB AMX tile B
};
// The tokens of one bf16_pairs tile: a kernel's widest register tile, so that
// each tile's activations lie contiguous (their column blocks stay in L1).
inline constexpr size_t kPairTileTokens = 128;
const char* act_layout_name(ActLayout layout);
// The 64-column windows a chunk of 32 CSR nonzeros spans on average at a
// row density `density`: the CSR bf16 windows kernel permutes once per
// window, so it sizes its unrolled windows by this and the planner costs it.
inline double csr_windows_per_chunk(double density) { return 1 + 32 / (64 * std::max(density, 1e-9)); }
// The widest weight row a kernel on s8_padded activations accepts: its int32
// lanes each sum cols / 16 byte products of at most 255 x 128 (VPDPBUSD
// groups four per lane), which stays below 2^31 up to about 1.05 M columns.
inline constexpr uint64_t kS8PaddedMaxColumns = uint64_t{1} << 20;
// How far one activation may move when stored in `layout`, relative to its
// token's largest |x|: 0 for f32 layouts, 2^-9 for bf16, 1/254 for s8.
double act_layout_rounding(ActLayout layout);

struct SpmmArgs {
  const Tensor* w = nullptr;  // [out, in], any format and dtype
  const void* x = nullptr;    // activations in the kernel's ActLayout
  size_t ldx = 0;             // row stride of x, in elements
  const float* x_scale = nullptr;  // s8_padded: the per-token scale s
  float* y = nullptr;  // [n, out], row stride ldy; columns row_begin..row_end-1 are overwritten
  size_t ldy = 0;
  size_t n = 0;
  uint64_t row_begin = 0;  // the output rows (weight rows) to compute
  uint64_t row_end = 0;
  const int32_t* x_sum = nullptr;  // s8_padded: each token's sum of its quantised values
};
using SpmmUkernelFn = void (*)(const SpmmArgs&);

struct SpmmUkernel {
  const char* name;
  Format format;
  DType dtype;
  ActLayout act;
  uint64_t features;  // CpuFeature bits the kernel's instructions need
  size_t min_n;       // the batch from which dispatch prefers it (it computes any batch up to max_n)
  size_t max_n;       // 0: no upper bound
  uint32_t row_tile;  // rows it computes together; row ranges handed to it start at a multiple
  uint16_t block_rows;  // bsr block shape it is written for; 0 = any
  uint16_t block_cols;
  SpmmUkernelFn fn;
};

// Every microkernel, in preference order: the first that accepts a problem wins.
std::span<const SpmmUkernel> spmm_ukernels();

// Why `k` declines the problem, or "" when it accepts it.
std::string spmm_decline_reason(const SpmmUkernel& k, const TensorDesc& w, size_t n, const CpuInfo& cpu);
// Why `k` cannot compute the problem at all, or "": as spmm_decline_reason
// but for min_n, which is where dispatch starts to prefer a kernel (every
// kernel computes any batch from one token to its max_n). A caller that has
// chosen a kernel for a batch may run it on a part of that batch
// (Linear::run_part) and get the whole batch's bits for the part's tokens.
std::string spmm_refusal_reason(const SpmmUkernel& k, const TensorDesc& w, size_t n, const CpuInfo& cpu);

struct SpmmChoice {
  const SpmmUkernel* kernel = nullptr;
  std::vector<std::string> declined;  // "name: reason" for each kernel passed over
  std::string describe(const TensorDesc& w, size_t n) const;
};

// Throws lacuna::Error when no kernel accepts (cannot happen for valid tensors:
// every format x dtype has a scalar kernel).
SpmmChoice choose_spmm(const TensorDesc& w, size_t n, const CpuInfo& cpu = cpu_info());

// Dense int8 weights (an unpruned output projection of an int8 model) run
// the VNNI tiles up to this many tokens, oneDNN's s8 matmul beyond, on the
// weight in place. At one token oneDNN streamed the mini model's 65 MB output
// projection at about two thirds of the bandwidth the sparse kernels reach
// (docs/benchmarks.md, "Dense int8 on the VNNI tiles").
inline constexpr size_t kDenseInt8TileTokens = 64;

// The tile kernel (VNNI, or AMX from its minimum batch) for a dense int8
// weight at n tokens, or null for other weights, for n beyond the tiles, or
// where the CPU lacks them (the broadcast fallback dispatch would give is
// far slower than oneDNN).
const SpmmUkernel* dense_int8_tile_kernel(const TensorDesc& w, size_t n, const CpuInfo& cpu = cpu_info());

// y[n, out] = x[n, in] · Wᵀ with `kernel`: converts x to the kernel's layout,
// then splits the rows over the OpenMP threads by stored bytes (not row
// count), so every thread streams about the same amount of memory.
void spmm_run(const SpmmUkernel& kernel, const Tensor& w, const float* x, size_t n, float* y);

// One product of spmm_run_all.
struct SpmmJob {
  const SpmmUkernel* kernel = nullptr;
  const Tensor* w = nullptr;
  const float* x = nullptr;
  size_t n = 0;
  float* y = nullptr;
};

// Several independent products in one parallel region: each job's rows are
// split as spmm_run splits them, and the threads take the parts of all jobs
// as they come free, so a thread that finishes one product's share goes on
// to the next product instead of waiting at its end. Every output gets the
// bits spmm_run gives it. Throws lacuna::Error, before any product runs,
// when a kernel declines its job.
void spmm_run_all(std::span<const SpmmJob> jobs);

// spmm_run with choose_spmm's kernel. With LACUNA_VERBOSE=1 each distinct
// problem prints its choice and the rejections once, to stderr.
void spmm(const Tensor& w, const float* x, size_t n, float* y);

}  // namespace lacuna
