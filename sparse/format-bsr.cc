// BSR: the matrix is tiled into block_rows x block_cols blocks; row_ptr[block
// rows + 1] (u64) points into col_idx (block-column index, u16/u32) and values
// (each block dense, row-major). Blocks on the right and bottom edges are
// stored whole, with zeros past the matrix.
#include <algorithm>

#include "sparse/element.h"
#include "sparse/error.h"
#include "sparse/format-internal.h"

namespace lacuna::detail {
namespace {

bool edge_padding_is_zero(const Tensor& t, uint64_t k, uint64_t r0, uint64_t c0) {
  const TensorDesc& d = t.desc();
  const uint64_t br = d.block_rows, bc = d.block_cols;
  return visit_dtype(d.dtype, [&]<class E>(E) {
    const auto* blk = t.section<typename E::type>(Section::values) + k * br * bc;
    for (uint64_t r = 0; r < br; ++r)
      for (uint64_t c = 0; c < bc; ++c)
        if ((r0 + r >= d.rows() || c0 + c >= d.cols()) && !E::is_zero(blk[r * bc + c])) return false;
    return true;
  });
}

}  // namespace

Tensor pack_bsr(const Tensor& dense, BlockShape block) {
  const TensorDesc& dd = dense.desc();
  const uint64_t rows = dd.rows(), cols = dd.cols(), br = block.rows, bc = block.cols;
  TensorDesc d = dd;
  d.format = Format::bsr;
  d.block_rows = block.rows;
  d.block_cols = block.cols;
  if (block.rows < 1 || block.cols < 1 || block.rows > 64 || block.cols > 64)
    throw Error("pack: bsr block shape " + std::to_string(br) + "x" + std::to_string(bc) + " is not within 1..64");
  const uint64_t block_rows = block_row_count(d), block_cols = (cols + bc - 1) / bc;
  return visit_dtype(dd.dtype, [&]<class E>(E) {
    using T = typename E::type;
    const T* v = dense.section<T>(Section::values);
    auto block_is_zero = [&](uint64_t bi, uint64_t bj) {
      for (uint64_t r = bi * br; r < std::min(rows, (bi + 1) * br); ++r)
        for (uint64_t c = bj * bc; c < std::min(cols, (bj + 1) * bc); ++c)
          if (!E::is_zero(v[r * cols + c])) return false;
      return true;
    };
    d.nnz = 0;
    for (uint64_t bi = 0; bi < block_rows; ++bi)
      for (uint64_t bj = 0; bj < block_cols; ++bj) d.nnz += !block_is_zero(bi, bj);
    Tensor t = Tensor::allocate(d);
    uint64_t* row_ptr = t.mutable_section<uint64_t>(Section::row_ptr);
    T* values = t.mutable_section<T>(Section::values);
    visit_index(index_size(cols), [&]<class I>(I*) {
      auto* col_idx = t.mutable_section<I>(Section::col_idx);
      uint64_t k = 0;
      for (uint64_t bi = 0; bi < block_rows; ++bi) {
        row_ptr[bi] = k;
        for (uint64_t bj = 0; bj < block_cols; ++bj) {
          if (block_is_zero(bi, bj)) continue;
          col_idx[k] = static_cast<I>(bj);
          T* blk = values + k * br * bc;
          for (uint64_t r = bi * br; r < std::min(rows, (bi + 1) * br); ++r)
            for (uint64_t c = bj * bc; c < std::min(cols, (bj + 1) * bc); ++c) blk[(r - bi * br) * bc + (c - bj * bc)] = v[r * cols + c];
          ++k;
        }
      }
      row_ptr[block_rows] = k;
    });
    copy_scales(dense, t);
    return t;
  });
}

Tensor unpack_bsr(const Tensor& t) {
  Tensor out = dense_like(t);
  const TensorDesc& d = t.desc();
  const uint64_t rows = d.rows(), cols = d.cols(), br = d.block_rows, bc = d.block_cols;
  const uint64_t* row_ptr = t.section<uint64_t>(Section::row_ptr);
  visit_dtype(d.dtype, [&]<class E>(E) {
    using T = typename E::type;
    const T* values = t.section<T>(Section::values);
    T* dst = out.mutable_section<T>(Section::values);
    visit_index(index_size(cols), [&]<class I>(I*) {
      const auto* col_idx = t.section<I>(Section::col_idx);
      for (uint64_t bi = 0; bi < block_row_count(d); ++bi)
        for (uint64_t k = row_ptr[bi]; k < row_ptr[bi + 1]; ++k) {
          const uint64_t c0 = uint64_t{col_idx[k]} * bc;
          for (uint64_t r = bi * br; r < std::min(rows, (bi + 1) * br); ++r)
            for (uint64_t c = c0; c < std::min(cols, c0 + bc); ++c) dst[r * cols + c] = values[k * br * bc + (r - bi * br) * bc + (c - c0)];
        }
    });
  });
  return out;
}

std::string check_bsr(const Tensor& t) {
  const TensorDesc& d = t.desc();
  const uint64_t block_rows = block_row_count(d), block_cols = (d.cols() + d.block_cols - 1) / d.block_cols;
  const uint64_t* row_ptr = t.section<uint64_t>(Section::row_ptr);
  if (std::string why = check_row_ptr(row_ptr, block_rows, d.nnz, "block-row"); !why.empty()) return why;
  const uint64_t br = d.block_rows, bc = d.block_cols;
  return visit_index(index_size(d.cols()), [&]<class I>(I*) -> std::string {
    const auto* col_idx = t.section<I>(Section::col_idx);
    for (uint64_t bi = 0; bi < block_rows; ++bi)
      for (uint64_t k = row_ptr[bi]; k < row_ptr[bi + 1]; ++k) {
        if (col_idx[k] >= block_cols)
          return "block row " + std::to_string(bi) + " has block column " + std::to_string(col_idx[k]) + " past " + std::to_string(block_cols);
        if (k > row_ptr[bi] && col_idx[k] <= col_idx[k - 1]) return "block row " + std::to_string(bi) + " has unsorted or repeated blocks";
        // Kernels may multiply whole edge blocks; what lies past the matrix must be zero, not NaN.
        const bool padded = bi * br + br > d.rows() || uint64_t{col_idx[k]} * bc + bc > d.cols();
        if (padded && !edge_padding_is_zero(t, k, bi * br, uint64_t{col_idx[k]} * bc))
          return "block row " + std::to_string(bi) + " has a nonzero value past the edge of the matrix";
      }
    return "";
  });
}

}  // namespace lacuna::detail
