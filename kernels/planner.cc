#include "kernels/planner.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "kernels/spmm-ukernels.h"

namespace lacuna {
namespace {

std::string kernel_tag(const SpmmUkernel& k) {
  const std::string name = k.name;
  const size_t at = name.rfind("_ukernel");
  if (at == std::string::npos) return name;
  const size_t tag = name.find_first_not_of('_', at + 8);
  return tag == std::string::npos ? name : name.substr(tag);
}

// The chunks of up to 32 nonzeros the csr8 bf16 windows kernel takes from
// a 256-column block at density `density`: the first whatever the count (the
// kernel runs it unconditionally), then E[ceil(c / 32) - 1] more for c
// binomial, the sum over m of P(c > 32 m), normal.
double csr8_chunks_per_block(double density) {
  const double columns = static_cast<double>(kCsr8BlockColumns), mean = columns * density;
  const double spread = std::sqrt(2 * columns * density * (1 - density));
  double chunks = 1;
  for (double m = 32; m < columns; m += 32) chunks += spread > 0 ? 0.5 * std::erfc((m + 0.5 - mean) / spread) : (mean > m ? 1 : 0);
  return chunks;
}

// Streaming and computing overlap only partly in cold runs.
double cost_ms(double memory_s, double compute_s) {
  return 1e3 * (std::max(memory_s, compute_s) + 0.5 * std::min(memory_s, compute_s));
}

}  // namespace

MachineModel MachineModel::for_bandwidth(double bytes_per_s, int threads) {
  MachineModel m;
  m.bandwidth = bytes_per_s;
  m.threads = std::max(threads, 1);
  // Measured on an AMD EPYC (Zen 4) with `lacuna bench sweep`, 6144->32768, cold
  // weights, and divided down to one core (docs/benchmarks.md).
  m.bitmap_row_group = 1.6e-9;
  m.bitmap_row_group_token = 0.4e-9;
  m.bitmap_widen_row_group = 1.2e-9;
  // AMX int8: `lacuna bench sweep`, cold 2048->5632 at 70 % on the Intel
  // Xeon (AMX) host, 0.46 ms at 16 tokens and 0.54 at 32 on two threads
  // (docs/benchmarks.md, "AMX int8 tiles").
  m.amx_row_group = 4.0e-9;
  m.amx_tile_row_group = 1.0e-9;
  // AMX bf16 (32-column groups, so twice the groups of a row): the same
  // sweep at 16 tokens, 0.84-0.94 ms (this predicts 0.83), and 128 tokens
  // 2.45-2.52 ms (2.1); from 7 tokens it beat the VDPBF16PS tiles at 50, 70
  // and 90 % (docs/benchmarks.md, "AMX bf16 tiles").
  m.amx_bf16_row_group = 2.9e-9;
  // bf16 with packed activations: `bench-spmm-ukernels`, warm 4096x4096 on
  // the Intel Xeon (AMX) host, two threads: 283 / 564 us at 90 / 50 % and one
  // token, 1035 / 2033 at four (docs/benchmarks.md, "Packed activations").
  m.packed_row_group_token = 0.8e-9;
  m.packed_nonzero_token = 0.084e-9;
  m.csr_nonzero_token = 0.5e-9;
  // CSR bf16 windows and column pairs: `lacuna bench sweep --shapes
  // '2048->11264,5632->2048' --sparsity 0.9 --formats csr --dtypes bf16
  // --working-set-gib 0` on the AMD EPYC (Zen 5) host, two threads: 0.211 /
  // 0.103 ms at one token (0.9 ns a window), 0.098 / 0.059 ms more a token
  // up to four (0.42 / 0.53 ns); at 128 tokens the CSR pairs took as long
  // as bitmap's (5.0-5.2 / 3.4-3.6 ms against 4.9-5.1 / 3.6), so listing a
  // nonzero costs what expanding its share of a group does at 90 % (2.9 ns
  // a group of 3.2 nonzeros) (docs/benchmarks.md, "CSR windows").
  m.csr_window = 0.9e-9;
  m.csr_window_token = 0.45e-9;
  m.csr_pair_nonzero = 0.9e-9;
  // csr8 bf16 windows, a block's first chunk outside the chunk loop: cold
  // `lacuna bench sweep --formats csr,csr8,bitmap` on the Zen 5 host, two
  // threads, one token at 90 %: 0.223 ms against CSR's 0.276 (2048->11264)
  // and 0.150 against 0.155 (5632->2048); at 95 % 0.208 against 0.245 and
  // 0.130 against 0.134: 3.5 ns a chunk (docs/benchmarks.md, "A block's
  // first chunk"). Further tokens cost what CSR's windows do, four per
  // chunk (0.476 ms at four tokens, 2048->11264 at 90 %: 0.42 ns each).
  m.csr8_chunk = 3.5e-9;
  m.pair_tile = 0.55e-9;
  m.pair_group = 2.9e-9;
  m.broadcast_tile = 0.8e-9;
  m.broadcast_bitmap_walk = 2.7e-9;
  m.broadcast_index_walk = 0.3e-9;
  m.scalar_weight_token = 3.0e-9;
  m.portable_slowdown = 4.0;
  m.onednn_bf16_flop = 1.0 / 190e9;
  m.onednn_int8_op = 1.0 / 350e9;
  m.onednn_bf16_bandwidth_share = 0.95;
  m.onednn_int8_bandwidth_share = 0.45;
  return m;
}

bool works_per_token(const SpmmUkernel& k) { return k.fn == &lacuna_spmm_bitmap_bf16_ukernel_1x8__avx512vbmi2; }

uint64_t stored_bytes(Format format, DType dtype, uint64_t rows, uint64_t cols, uint64_t nonzeros) {
  TensorDesc d = TensorDesc::matrix(format, dtype, rows, cols);
  if (format != Format::dense) d.nnz = nonzeros;
  if (format == Format::bsr) d.nnz = 0;  // unknown without the pattern; not planned here
  return payload_layout(d).total_bytes;
}

std::string PlanOption::describe() const {
  if (onednn) return std::string("onednn dense ") + dtype_name(onednn_dtype);
  return std::string(format_name(format)) + " " + (kernel ? kernel_tag(*kernel) : "?");
}

std::string LinearPlan::why() const {
  std::string s;
  char buf[64];
  for (const PlanOption& o : considered) {
    std::snprintf(buf, sizeof buf, "%.3g ms", o.predicted_ms);
    s += (s.empty() ? "" : " < ") + o.describe() + " " + buf;
  }
  return s;
}

LinearPlan plan_linear(DType dtype, uint64_t rows, uint64_t cols, uint64_t nonzeros, size_t n, const std::vector<Format>& formats,
                       const MachineModel& m, const CpuInfo& cpu) {
  LinearPlan plan;
  const double threads = m.threads, nn = static_cast<double>(n), tiles = static_cast<double>((n + 15) / 16);
  const double density = static_cast<double>(nonzeros) / static_cast<double>(rows * cols);
  // A kernel's option: its stored bytes against its modelled work.
  auto kernel_option = [&](Format f, const SpmmUkernel& k) {
    PlanOption o;
    o.format = f;
    o.bytes = stored_bytes(f, dtype, rows, cols, nonzeros);
    o.kernel = &k;
    const TensorDesc desc = TensorDesc::matrix(f, dtype, rows, cols);
    double compute = 0;
    if (k.features == 0) {  // the scalar reference: visits every stored weight once per token
      compute = static_cast<double>(f == Format::dense ? rows * cols : nonzeros) * nn * m.scalar_weight_token;
    } else if (k.features & kAmxTile) {  // every group expanded once, then one tile product per 16 tokens
      const double expand = dtype == DType::bf16 ? m.amx_bf16_row_group : m.amx_row_group;
      compute = static_cast<double>(rows * group_count(desc)) * (expand + tiles * m.amx_tile_row_group);
    } else if (k.fn == &lacuna_spmm_csr_bf16_ukernel_1x4__avx512bf16) {
      // Every 32 nonzeros of a row (and its last, partial chunk) take one
      // permute per 64-column window they span, per token.
      const double chunks = static_cast<double>(nonzeros) / 32 + static_cast<double>(rows) / 2;
      const double windows = std::min(csr_windows_per_chunk(density), static_cast<double>(cols) / 64 + 1);
      compute = nonzeros ? chunks * windows * (m.csr_window + (nn - 1) * m.csr_window_token) : 0;
    } else if (k.fn == &lacuna_spmm_csr8_bf16_ukernel_1x4__avx512bf16) {
      // Every chunk of a block takes one permute per 64-column window, four, per token.
      const double chunks = static_cast<double>(rows * csr8_block_count(desc)) * csr8_chunks_per_block(density);
      compute = nonzeros ? chunks * (m.csr8_chunk + 4 * (nn - 1) * m.csr_window_token) : 0;
    } else if (works_per_token(k)) {
      // Every token packs every group of every row; the dot products follow the nonzeros.
      compute = (static_cast<double>(rows * group_count(desc)) * m.packed_row_group_token +
                 static_cast<double>(nonzeros) * m.packed_nonzero_token) *
                nn;
    } else switch (k.act) {
      case ActLayout::bf16_padded:
      case ActLayout::s8_padded:
      case ActLayout::f32_padded: {
        // The int8 weight-only kernel (bf16 activations) widens each group
        // once per row at any batch: one token tile, or rows expanded once
        // for all tiles. Re-expanding per token tile, which the f32 and
        // portable kernels still do, is not modelled. Dense int8 rows walk
        // the same tiles (a load in place of an expand: counted the same).
        // Each further token costs a dot product per 32 weights, but VNNI's
        // (s8 activations) multiplies 64 bytes in one instruction: at 32
        // weights the model put the 1x16 VNNI tiles at 2-3x their measured
        // time beyond one token, and `bench sweep`'s auto took oneDNN's
        // dense bf16 at 8-64 tokens where they ran 1.3-2.4x faster
        // (docs/benchmarks.md, "The planner's VNNI tokens").
        const bool widens = k.act == ActLayout::bf16_padded && dtype == DType::int8;
        const double weights_per_dot = k.act == ActLayout::s8_padded ? 64.0 : 32.0;
        compute = static_cast<double>(rows * group_count(desc)) *
                  (m.bitmap_row_group + (widens ? m.bitmap_widen_row_group : 0) +
                   (nn - 1) * m.bitmap_row_group_token * bitmap_group_width(dtype) / weights_per_dot) *
                  ((k.features & kAvx512F) ? 1.0 : m.portable_slowdown);
        break;
      }
      case ActLayout::f32:
        compute = static_cast<double>(nonzeros) * nn * m.csr_nonzero_token;
        break;
      case ActLayout::bf16_pair_tiles:  // only the AMX tiles, modelled above
      case ActLayout::bf16_pairs: {
        const double live_pairs = static_cast<double>(rows * cols) / 2 * (1 - (1 - density) * (1 - density));
        // Each row's live pairs are listed once, for all its token tiles: a
        // bitmap row's groups expanded, a CSR or csr8 row's nonzeros walked.
        const double listing = f != Format::bitmap ? static_cast<double>(nonzeros) * m.csr_pair_nonzero
                                                : static_cast<double>(rows * group_count(desc)) * m.pair_group;
        compute = live_pairs * m.pair_tile * tiles + listing;
        break;
      }
      case ActLayout::f32_transposed: {
        const double walk = f == Format::bitmap ? m.broadcast_bitmap_walk : m.broadcast_index_walk;
        compute = static_cast<double>(f == Format::dense ? rows * cols : nonzeros) * tiles * (m.broadcast_tile + walk);
        break;
      }
    }
    o.predicted_ms = cost_ms(static_cast<double>(o.bytes) / m.bandwidth, compute / threads);
    return o;
  };
  for (Format f : formats) {
    if (f == Format::dense && dtype != DType::f32) {
      // oneDNN's dense matmul in the weight's dtype and, for int8 weights, also
      // in bf16 on a dequantised copy: oneDNN's s8 GEMM is slow at mid batch
      // sizes, and the planner must never be slower than dense bf16.
      for (DType run : dtype == DType::int8 ? std::vector<DType>{DType::int8, DType::bf16} : std::vector<DType>{DType::bf16}) {
        PlanOption d;
        d.onednn = true;
        d.onednn_dtype = run;
        d.bytes = stored_bytes(Format::dense, run, rows, cols, nonzeros);
        const double ops = 2.0 * static_cast<double>(rows * cols) * nn;
        const bool int8 = run == DType::int8;
        const double share = int8 ? m.onednn_int8_bandwidth_share : m.onednn_bf16_bandwidth_share;
        // oneDNN's bf16 kernels overlap memory and compute (the larger of the
        // two counts); its s8 GEMM (gemm:jit) measured as their sum. Since
        // OnednnMatmul stopped asking for runtime output scales, oneDNN runs
        // s8 on its VNNI brgemm, which the s8 figures understate: cold
        // 2048->11264 on the Zen 5 host streamed 38-40 GB/s at one token and
        // reached 1.97x the bf16 rate at 128 (docs/benchmarks.md, "oneDNN's
        // s8 in the planner"). Not refitted yet: with the measured s8 share
        // and overlap, the model's VNNI tiles (slower in it than measured)
        // lost to oneDNN at 1-4 tokens on 70 % int8, where they ran 1.7-2.4x
        // faster.
        const double memory = static_cast<double>(d.bytes) / (m.bandwidth * share);
        const double compute = ops * (int8 ? m.onednn_int8_op : m.onednn_bf16_flop) / threads;
        d.predicted_ms = 1e3 * (int8 ? memory + compute : std::max(memory, compute));
        plan.considered.push_back(d);
      }
      // Where the runtime takes the tiles instead (VNNI, or AMX from its minimum batch; kDenseInt8TileTokens).
      if (const SpmmUkernel* tiles_kernel = dense_int8_tile_kernel(TensorDesc::matrix(f, dtype, rows, cols), n, cpu))
        plan.considered.push_back(kernel_option(f, *tiles_kernel));
      continue;
    }
    if (f == Format::bsr) continue;  // block-sparse needs the block pattern; chosen at conversion, not here
    const TensorDesc desc = TensorDesc::matrix(f, dtype, rows, cols);
    for (const SpmmUkernel& k : spmm_ukernels())
      if (spmm_decline_reason(k, desc, n, cpu).empty()) plan.considered.push_back(kernel_option(f, k));
  }
  std::stable_sort(plan.considered.begin(), plan.considered.end(),
                   [](const PlanOption& a, const PlanOption& b) { return a.predicted_ms < b.predicted_ms; });
  if (!plan.considered.empty()) plan.chosen = plan.considered.front();
  return plan;
}

}  // namespace lacuna
