#pragma once
// Chooses how to run y = x · Wᵀ for one weight at one batch size: which
// storage format (dense, bitmap, csr) and which kernel, or oneDNN's dense
// matmul, from a cost model of the machine. A product costs the larger of its
// memory time (bytes / bandwidth) and its compute time (work / the kernel
// family's rate), plus half the smaller of the two: measured cold runs
// overlap streaming and computing only partly. The rates are per core and were measured on this project's
// build machine with `lacuna bench sweep` (see docs/benchmarks.md); the
// bandwidth is measured on the machine that runs.
#include <cstddef>
#include <string>
#include <vector>

#include "kernels/spmm.h"

namespace lacuna {

struct MachineModel {
  double bandwidth = 0;  // bytes/s, all threads, as a cold matmul sees it
  int threads = 1;
  // Per-core costs in seconds.
  double bitmap_row_group = 0;      // small batch, one row x one group, first token
  double bitmap_row_group_token = 0;  // each further token, per dot-product instruction (32 weights; 64 for VNNI)
  double bitmap_widen_row_group = 0;  // int8 weight-only: widening one row x group to bf16, once per row
  double amx_row_group = 0;          // AMX int8: one row x group expanded into the tiles' buffer, once per row
  double amx_bf16_row_group = 0;     // AMX bf16: the same for one row x group of 32 bf16 columns
  double amx_tile_row_group = 0;     // AMX: one row x group's share of a 16-token tile product (1/16 of a TDPBSSD or TDPBF16PS and its B load)
  double packed_row_group_token = 0;  // bf16 packed activations: one row x group x token (compress and store)
  double packed_nonzero_token = 0;    // the same kernel: one stored weight x one token (its share of a dot product)
  double csr_nonzero_token = 0;     // small batch, one stored weight x one token
  double csr_window = 0;            // CSR bf16 windows: one 64-column window of a 32-nonzero chunk, first token
  double csr_window_token = 0;      // the same, each further token
  double csr_pair_nonzero = 0;      // large batch bf16, CSR: one stored weight, once per row (list the live pairs)
  double csr8_chunk = 0;            // csr8 bf16 windows: one chunk of a 256-column block (four windows), first token
  double pair_tile = 0;             // large batch bf16: one live column pair x 16 tokens
  double pair_group = 0;            // large batch bf16: one row x one group, once per row (expand, list the live pairs)
  double broadcast_tile = 0;        // large batch, other dtypes: one weight x 16 tokens
  double broadcast_bitmap_walk = 0; // finding one weight in a bitmap row (bit scan), once per 16-token tile
  double broadcast_index_walk = 0;  // finding one weight in a csr/bsr/dense row
  double scalar_weight_token = 0;   // the scalar reference kernels: one stored weight x one token
  double portable_slowdown = 0;     // the xsimd (AVX2) kernels against the AVX-512 bitmap rate
  double onednn_bf16_flop = 0;      // oneDNN dense bf16 at large batch, per flop
  double onednn_int8_op = 0;        // oneDNN dense s8, per op
  double onednn_bf16_bandwidth_share = 0;  // the fraction of the bandwidth oneDNN streams at batch 1
  double onednn_int8_bandwidth_share = 0;

  static MachineModel for_bandwidth(double bytes_per_s, int threads);
};

// One way to run the product.
struct PlanOption {
  Format format = Format::dense;
  bool onednn = false;                  // oneDNN dense (format is dense)
  DType onednn_dtype = DType::bf16;     // what oneDNN runs in (bf16 for int8 weights means a dequantised bf16 copy)
  const SpmmUkernel* kernel = nullptr;  // Lacuna's kernel otherwise
  uint64_t bytes = 0;                   // weight bytes read per product
  double predicted_ms = 0;
  std::string describe() const;  // "bitmap 4x6__avx512bf16", "onednn dense bf16"
};

struct LinearPlan {
  PlanOption chosen;
  std::vector<PlanOption> considered;  // every format x accepting kernel, and oneDNN; fastest first
  std::string why() const;             // "bitmap 4x6__avx512bf16 1.9 ms < csr 2.5 ms < onednn dense 12.6 ms"
};

// The options for a [rows, cols] weight of `dtype` with `nonzeros` stored
// values, at batch n, restricted to `formats` (oneDNN counts as dense).
LinearPlan plan_linear(DType dtype, uint64_t rows, uint64_t cols, uint64_t nonzeros, size_t n, const std::vector<Format>& formats,
                       const MachineModel& model, const CpuInfo& cpu = cpu_info());

// Whether a kernel does all its work again for each token of a batch (the
// bf16 kernel packing each token's activations): fastest for one token of
// very sparse weights, slower than the kernels sharing work across tokens
// from about two. A batch-invariant run, which keeps one kernel at every
// batch size, leaves such kernels out.
bool works_per_token(const SpmmUkernel& k);

// Bytes a format stores for such a weight (what a batch-1 product streams).
uint64_t stored_bytes(Format format, DType dtype, uint64_t rows, uint64_t cols, uint64_t nonzeros);

}  // namespace lacuna
