#include "kernels/densified-product.h"

#include <algorithm>
#include <map>
#include <memory>
#include <tuple>
#include <vector>

#include "kernels/dense-onednn/onednn-matmul.h"
#include "kernels/densify.h"
#include "sparse/error.h"

namespace lacuna {
namespace {

// Expanded rows per block. Over the whole weight, expanded into blocks of
// 16 MB and multiplied by oneDNN on all threads, the rows went out to L3 or
// memory and were read back; a block of 1 MB per thread stays in that core's
// L2 (1 MB on both hosts measured) and, against 16 MB blocks, took a
// 512-token prefill of the 50 % bf16 mini model from 0.75x, 0.80x to
// 0.91x, 0.91x dense on an AMD EPYC host (512 KB: 0.89x, 0.87x; 2 MB:
// 0.90x, 0.88x; 4 MB: 0.85x, 0.86x; docs/benchmarks.md, "Expanded blocks
// in L2").
constexpr uint64_t kExpandedBlockBytes = uint64_t{1} << 20;

// The calling thread's buffer for a block of expanded rows, and its oneDNN
// products reading that buffer in place, one per block shape and dtype.
// Per thread, not per weight: a buffer holds one block at a time, and every
// weight of a shape shares one product's compiled primitives and batch
// buffers (one product per weight held ~700 MB of those after a 512-token
// prefill of the mini model).
class BlockScratch {
 public:
  static BlockScratch& of_this_thread() {
    thread_local BlockScratch s;
    return s;
  }
  // Rows [r0, r1) of `w` expanded into the buffer as a dense tensor of
  // `type` (int8 scales included).
  Tensor expand(const Tensor& w, DType type, uint64_t r0, uint64_t r1) {
    const TensorDesc dd = TensorDesc::matrix(Format::dense, type, r1 - r0, w.desc().cols());
    const PayloadLayout layout = payload_layout(dd);
    if (buffer_.size() < layout.total_bytes) buffer_.resize(layout.total_bytes);
    if (type == w.desc().dtype)
      densify_bitmap(w, buffer_.data(), r0, r1);
    else
      densify_bitmap_f32(w, reinterpret_cast<float*>(buffer_.data()), r0, r1);
    if (type == DType::int8)
      std::copy_n(w.section<float>(Section::scales) + r0, dd.rows(), reinterpret_cast<float*>(buffer_.data() + layout[Section::scales].offset));
    return Tensor::wrap(dd, buffer_.data(), nullptr);
  }
  OnednnMatmul& product(const Tensor& dense) {
    const TensorDesc& d = dense.desc();
    auto& p = products_[{d.rows(), d.cols(), d.dtype}];
    if (!p) p = std::make_unique<OnednnMatmul>(dense, OnednnMatmul::Weights::in_place);
    p->rebind(dense);
    return *p;
  }
  // The activations of a call, converted once for the products of all its blocks.
  OnednnSource& source() { return source_; }

 private:
  std::vector<std::byte> buffer_;
  OnednnSource source_;
  std::map<std::tuple<uint64_t, uint64_t, DType>, std::unique_ptr<OnednnMatmul>> products_;
};

}  // namespace

void densified_product(const Tensor& w, DType expanded_type, const float* x, size_t n, float* y) {
  const TensorDesc& d = w.desc();
  if (d.format != Format::bitmap) throw Error("densified_product needs a bitmap weight");
  if (expanded_type != d.dtype && !(expanded_type == DType::f32 && d.dtype == DType::bf16))
    throw Error(std::string("densified_product: a ") + dtype_name(d.dtype) + " weight cannot be expanded to " + dtype_name(expanded_type));
  const uint64_t rows = d.rows();
  const uint64_t row_bytes = d.cols() * dtype_size(expanded_type);
  const uint64_t blocks = std::max<uint64_t>(1, (rows * row_bytes + kExpandedBlockBytes - 1) / kExpandedBlockBytes);
  // Equal blocks of a multiple of 16 rows: few distinct shapes, so few oneDNN products.
  const uint64_t block_rows = std::min(rows, ((rows + blocks - 1) / blocks + 15) / 16 * 16);
  const auto count = static_cast<int64_t>((rows + block_rows - 1) / block_rows);
  OnednnSource& source = BlockScratch::of_this_thread().source();
  OnednnMatmul::prepare(expanded_type, d.cols(), x, n, source);
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t b = 0; b < count; ++b) {
    BlockScratch& scratch = BlockScratch::of_this_thread();
    const uint64_t r0 = static_cast<uint64_t>(b) * block_rows;
    const Tensor dense = scratch.expand(w, expanded_type, r0, std::min(rows, r0 + block_rows));
    scratch.product(dense).run(source, y + r0, rows);
  }
}

}  // namespace lacuna
