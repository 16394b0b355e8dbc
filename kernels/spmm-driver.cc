// Runs one kernel over a whole weight: prepares the activations once, then
// splits the rows into blocks holding about the same number of stored bytes
// (a row's cost is its bytes, not its position), which the OpenMP threads take
// in turn.
#include <omp.h>

#include <algorithm>

#include "kernels/common/activations.h"
#include "kernels/spmm.h"
#include "sparse/error.h"

namespace lacuna {
namespace {

// Bytes stored for rows [0, r): values, indices, masks, row pointers.
uint64_t bytes_before_row(const Tensor& w, uint64_t r) {
  const TensorDesc& d = w.desc();
  const uint64_t esize = dtype_size(d.dtype), isize = index_size(d.cols());
  const uint64_t* row_ptr = d.format == Format::dense ? nullptr : w.section<uint64_t>(Section::row_ptr);
  switch (d.format) {
    case Format::dense: return r * d.cols() * esize;
    case Format::csr: return row_ptr[r] * (esize + isize) + r * 8;
    case Format::bitmap: return row_ptr[r] * esize + r * (group_count(d) * bitmap_group_width(d.dtype) / 8 + 8);
    case Format::bsr: {
      const uint64_t block_row = r / d.block_rows;
      return row_ptr[block_row] * (d.block_rows * d.block_cols * esize + isize) + block_row * 8;
    }
  }
  return 0;
}

// The first row of part `t` of `parts`, a multiple of `tile` (or `rows`).
uint64_t split_row(const Tensor& w, uint64_t total, size_t t, size_t parts, uint32_t tile) {
  const uint64_t rows = w.desc().rows();
  if (t == 0) return 0;
  if (t >= parts) return rows;
  const uint64_t target = static_cast<uint64_t>(static_cast<double>(total) * static_cast<double>(t) / static_cast<double>(parts));
  uint64_t lo = 0, hi = rows;  // smallest r with bytes_before_row(r) >= target
  while (lo < hi) {
    const uint64_t mid = (lo + hi) / 2;
    if (bytes_before_row(w, mid) < target)
      lo = mid + 1;
    else
      hi = mid;
  }
  return std::min(rows, lo / tile * tile);
}

// Below this much streamed work a parallel region costs more than it saves.
constexpr uint64_t kParallelMinWork = 256 * 1024;
constexpr size_t kBlocksPerThread = 8;

}  // namespace

void spmm_run(const SpmmUkernel& kernel, const Tensor& w, const float* x, size_t n, float* y) {
  if (n == 0) return;
  if (std::string why = spmm_decline_reason(kernel, w.desc(), n, cpu_info()); !why.empty())
    throw Error(std::string(kernel.name) + " cannot run this product: " + why);
  const uint64_t rows = w.desc().rows(), cols = w.desc().cols();
  const kernels::PreparedActivations xp = kernels::prepare_activations(kernel.act, x, n, cols);
  const SpmmArgs base{&w, xp.data, xp.ld, xp.scale, y, rows, n, 0, rows, xp.sum};
  const uint64_t total = bytes_before_row(w, rows);
  const int threads = total * std::max<uint64_t>(n, 1) < kParallelMinWork ? 1 : omp_get_max_threads();
  if (threads == 1) {
    kernel.fn(base);
    return;
  }
  // More blocks than threads, taken as threads come free: a thread that
  // runs slower (a busy sibling, a preempted vCPU) takes fewer, instead of
  // keeping the others waiting at the end of the region.
  const size_t parts = static_cast<size_t>(threads) * kBlocksPerThread;
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1)
  for (size_t t = 0; t < parts; ++t) {
    SpmmArgs a = base;
    a.row_begin = split_row(w, total, t, parts, kernel.row_tile);
    a.row_end = split_row(w, total, t + 1, parts, kernel.row_tile);
    if (a.row_begin < a.row_end) kernel.fn(a);
  }
}

}  // namespace lacuna
