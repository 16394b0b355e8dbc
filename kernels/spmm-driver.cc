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

// Bytes stored for rows [0, r): values, indices, masks, row pointers. The
// format's constants are worked out once per product, since the searches
// for the blocks' first rows evaluate it a few hundred times.
class RowBytes {
 public:
  explicit RowBytes(const Tensor& w) {
    const TensorDesc& d = w.desc();
    const uint64_t esize = dtype_size(d.dtype), isize = index_size(d.cols());
    switch (d.format) {
      case Format::dense: per_row_ = d.cols() * esize; return;
      case Format::csr: per_value_ = esize + isize; break;
      case Format::bitmap:
        per_value_ = esize;
        per_row_ = group_count(d) * bitmap_group_width(d.dtype) / 8 + 8;
        break;
      case Format::bsr:
        per_value_ = d.block_rows * d.block_cols * esize + isize;
        block_rows_ = d.block_rows;
        break;
    }
    row_ptr_ = w.section<uint64_t>(Section::row_ptr);
  }
  uint64_t operator()(uint64_t r) const {
    if (!row_ptr_) return r * per_row_;
    const uint64_t i = block_rows_ == 1 ? r : r / block_rows_;  // BSR counts per block row
    return row_ptr_[i] * per_value_ + i * per_row_;
  }

 private:
  const uint64_t* row_ptr_ = nullptr;  // none for dense
  uint64_t per_value_ = 0, per_row_ = 8, block_rows_ = 1;
};

// The first row of part `t` of `parts`, a multiple of `tile` (or `rows`).
uint64_t split_row(const RowBytes& bytes_before_row, uint64_t rows, uint64_t total, size_t t, size_t parts, uint32_t tile) {
  if (t == 0) return 0;
  if (t >= parts) return rows;
  const uint64_t target = static_cast<uint64_t>(static_cast<double>(total) * static_cast<double>(t) / static_cast<double>(parts));
  uint64_t lo = 0, hi = rows;  // smallest r with bytes_before_row(r) >= target
  while (lo < hi) {
    const uint64_t mid = (lo + hi) / 2;
    if (bytes_before_row(mid) < target)
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
  const RowBytes bytes_before_row(w);
  const uint64_t total = bytes_before_row(rows);
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
    a.row_begin = split_row(bytes_before_row, rows, total, t, parts, kernel.row_tile);
    a.row_end = split_row(bytes_before_row, rows, total, t + 1, parts, kernel.row_tile);
    if (a.row_begin < a.row_end) kernel.fn(a);
  }
}

}  // namespace lacuna
