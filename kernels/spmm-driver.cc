// Runs one kernel over a whole weight, or several products in one parallel
// region: prepares the activations once, then splits each weight's rows
// into blocks holding about the same number of stored bytes (a row's cost
// is its bytes, not its position), which the OpenMP threads take in turn.
#include <omp.h>

#include <algorithm>
#include <atomic>

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
      case Format::csr8:
        per_value_ = esize + 1;
        per_row_ = csr8_block_count(d) * sizeof(uint16_t) + 8;
        break;
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
// Below this many activations, several jobs' conversions run on the calling thread.
constexpr uint64_t kParallelMinValues = 16 * 1024;
constexpr size_t kBlocksPerThread = 8;

}  // namespace

void spmm_run(const SpmmUkernel& kernel, const Tensor& w, const float* x, size_t n, float* y) {
  const SpmmJob job{&kernel, &w, x, n, y};
  spmm_run_all({&job, 1});
}

void spmm_run_all(std::span<const SpmmJob> jobs) {
  for (const SpmmJob& j : jobs)
    if (std::string why = j.n == 0 ? std::string() : spmm_refusal_reason(*j.kernel, j.w->desc(), j.n, cpu_info()); !why.empty())
      throw Error(std::string(j.kernel->name) + " cannot run this product: " + why);
  // Per job: its activations, in buffers of its own (every job's must stay
  // valid until the region ends), and its rows' stored bytes. Kept per
  // thread, so a decode step does not allocate.
  struct Prepared {
    Prepared(const SpmmJob& j, size_t index)
        : job(index),
          kernel(j.kernel),
          args{j.w, nullptr, 0, nullptr, j.y, j.w->desc().rows(), j.n, 0, j.w->desc().rows(), nullptr},
          bytes_before_row(*j.w),
          total(bytes_before_row(j.w->desc().rows())) {}
    size_t job;
    const SpmmUkernel* kernel;
    SpmmArgs args;
    RowBytes bytes_before_row;
    uint64_t total;
  };
  thread_local std::vector<kernels::ActivationBuffers> t_buffers;
  thread_local std::vector<Prepared> t_prepared;
  // The caller's: inside a region, the name of a thread_local would be each thread's own.
  std::vector<kernels::ActivationBuffers>& buffers = t_buffers;
  std::vector<Prepared>& prepared = t_prepared;
  if (buffers.size() < jobs.size()) buffers.resize(jobs.size());
  prepared.clear();
  uint64_t work = 0, values = 0;
  for (size_t i = 0; i < jobs.size(); ++i) {
    if (jobs[i].n == 0) continue;
    prepared.emplace_back(jobs[i], i);
    work += prepared.back().total * jobs[i].n;
    values += jobs[i].n * jobs[i].w->desc().cols();
  }
  const auto prepare = [&](Prepared& p) {
    const SpmmJob& j = jobs[p.job];
    const kernels::PreparedActivations xp = kernels::prepare_activations(j.kernel->act, j.x, j.n, j.w->desc().cols(), buffers[p.job]);
    p.args.x = xp.data;
    p.args.ldx = xp.ld;
    p.args.x_scale = xp.scale;
    p.args.x_sum = xp.sum;
  };
  // Several jobs' conversions run side by side (a decode step's experts, a
  // few tokens each); one job's splits its tokens over the threads itself.
  // Not one region with an `if` clause: a region whose clause is false still
  // encloses the conversion's own region, which is then a nested team, and
  // libgomp starts (and ends) a new thread for it on every call; that cost a
  // 12-token int8 product of the mini model's down projection (5632
  // columns, the first size converted in parallel) 2-4x its time
  // (docs/benchmarks.md, "A thread per product").
  const auto count = static_cast<int64_t>(prepared.size());
  if (count > 1 && values >= kParallelMinValues) {
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t k = 0; k < count; ++k) prepare(prepared[static_cast<size_t>(k)]);
  } else {
    for (Prepared& p : prepared) prepare(p);
  }
  const int threads = work < kParallelMinWork ? 1 : omp_get_max_threads();
  if (threads == 1) {
    for (const Prepared& p : prepared) p.kernel->fn(p.args);
    return;
  }
  // More blocks than threads, taken as threads come free: a thread that
  // runs slower (a busy sibling, a preempted vCPU) takes fewer, instead of
  // keeping the others waiting at the end of the region.
  // The jobs go widest batch first, and the threads take blocks from both
  // ends: even threads from the front, odd from the back. Products of many
  // tokens are bound by the core, those of few by memory; run side by side,
  // one thread's computing overlaps the other's streaming.
  std::stable_sort(prepared.begin(), prepared.end(), [&](const Prepared& a, const Prepared& b) { return a.args.n > b.args.n; });
  const size_t parts = static_cast<size_t>(threads) * kBlocksPerThread;
  const auto blocks = static_cast<uint32_t>(prepared.size() * parts);
  std::atomic<uint64_t> ends{uint64_t{blocks} << 32};  // front in the low half, back (one past) in the high
  const auto take = [&](bool front) -> int64_t {
    uint64_t e = ends.load(std::memory_order_relaxed);
    for (;;) {
      const uint64_t f = e & 0xffffffffu, b = e >> 32;
      if (f >= b) return -1;
      const uint64_t next = front ? e + 1 : e - (uint64_t{1} << 32);
      if (ends.compare_exchange_weak(e, next, std::memory_order_relaxed)) return static_cast<int64_t>(front ? f : b - 1);
    }
  };
#pragma omp parallel num_threads(threads)
  {
    const bool front = omp_get_thread_num() % 2 == 0;
    for (int64_t b; (b = take(front)) >= 0;) {
      const Prepared& p = prepared[static_cast<size_t>(b) / parts];
      const size_t t = static_cast<size_t>(b) % parts;
      SpmmArgs a = p.args;
      const uint64_t rows = a.w->desc().rows();
      a.row_begin = split_row(p.bytes_before_row, rows, p.total, t, parts, p.kernel->row_tile);
      a.row_end = split_row(p.bytes_before_row, rows, p.total, t + 1, parts, p.kernel->row_tile);
      if (a.row_begin < a.row_end) p.kernel->fn(a);
    }
  }
}

}  // namespace lacuna
