// CSR with byte column offsets: each row is cut into blocks of
// kCsr8BlockColumns (256) columns. row_ptr[rows + 1] (u64) as in CSR;
// block_counts[rows][blocks] (u16) the nonzeros of each block of each row;
// col_idx[nnz] (u8) a nonzero's column within its block; values[nnz]. A
// row's nonzeros are stored block after block, in column order.
// Why: at 90 % sparsity a u16 column index is half of a bf16 nonzero's
// bytes; a byte offset makes a nonzero 3 bytes, and the counts add 2 bytes
// per 256 columns, fewer bytes than a bitmap's bit per weight from about 88 %
// (docs/formats.md). The small-batch kernel picks each block's activations
// with a permute per 64 columns, as the CSR windows kernel does, without
// working out which windows a chunk spans.
#include <algorithm>

#include "sparse/element.h"
#include "sparse/format-internal.h"

namespace lacuna::detail {

Tensor pack_csr8(const Tensor& dense) {
  const TensorDesc& dd = dense.desc();
  const uint64_t rows = dd.rows(), cols = dd.cols();
  return visit_dtype(dd.dtype, [&]<class E>(E) {
    using T = typename E::type;
    const T* v = dense.section<T>(Section::values);
    Tensor t = allocate_for_nonzeros(dense, Format::csr8);
    const uint64_t blocks = csr8_block_count(dd);
    uint64_t* row_ptr = t.mutable_section<uint64_t>(Section::row_ptr);
    uint16_t* counts = t.mutable_section<uint16_t>(Section::block_counts);
    uint8_t* offsets = t.mutable_section<uint8_t>(Section::col_idx);
    T* values = t.mutable_section<T>(Section::values);
    uint64_t k = 0;
    for (uint64_t r = 0; r < rows; ++r) {
      row_ptr[r] = k;
      for (uint64_t b = 0; b < blocks; ++b) {
        const uint64_t first = k;
        for (uint64_t c = b * kCsr8BlockColumns; c < std::min(cols, (b + 1) * kCsr8BlockColumns); ++c) {
          const T x = v[r * cols + c];
          if (E::is_zero(x)) continue;
          offsets[k] = static_cast<uint8_t>(c - b * kCsr8BlockColumns);
          values[k++] = x;
        }
        counts[r * blocks + b] = static_cast<uint16_t>(k - first);
      }
    }
    row_ptr[rows] = k;
    copy_scales(dense, t);
    return t;
  });
}

Tensor unpack_csr8(const Tensor& t) {
  Tensor out = dense_like(t);
  const uint64_t rows = t.desc().rows(), cols = t.desc().cols(), blocks = csr8_block_count(t.desc());
  const uint64_t* row_ptr = t.section<uint64_t>(Section::row_ptr);
  const uint16_t* counts = t.section<uint16_t>(Section::block_counts);
  const uint8_t* offsets = t.section<uint8_t>(Section::col_idx);
  visit_dtype(t.desc().dtype, [&]<class E>(E) {
    using T = typename E::type;
    const T* values = t.section<T>(Section::values);
    T* dst = out.mutable_section<T>(Section::values);
    for (uint64_t r = 0; r < rows; ++r) {
      uint64_t k = row_ptr[r];
      for (uint64_t b = 0; b < blocks; ++b)
        for (uint64_t end = k + counts[r * blocks + b]; k < end; ++k) dst[r * cols + b * kCsr8BlockColumns + offsets[k]] = values[k];
    }
  });
  return out;
}

std::string check_csr8(const Tensor& t) {
  const uint64_t rows = t.desc().rows(), cols = t.desc().cols(), blocks = csr8_block_count(t.desc());
  const uint64_t* row_ptr = t.section<uint64_t>(Section::row_ptr);
  if (std::string why = check_row_ptr(row_ptr, rows, t.desc().nnz, "row"); !why.empty()) return why;
  const uint16_t* counts = t.section<uint16_t>(Section::block_counts);
  const uint8_t* offsets = t.section<uint8_t>(Section::col_idx);
  for (uint64_t r = 0; r < rows; ++r) {
    uint64_t k = row_ptr[r];
    for (uint64_t b = 0; b < blocks; ++b) {
      const uint64_t width = std::min(cols - b * kCsr8BlockColumns, kCsr8BlockColumns), count = counts[r * blocks + b];
      const std::string where = "row " + std::to_string(r) + " block " + std::to_string(b);
      if (count > width) return where + " counts " + std::to_string(count) + " nonzeros in " + std::to_string(width) + " columns";
      if (count > row_ptr[r + 1] - k) return where + " counts more nonzeros than its row's pointers span";
      for (uint64_t end = k + count; k < end; ++k) {
        if (offsets[k] >= width) return where + " has column offset " + std::to_string(offsets[k]) + " past its " + std::to_string(width) + " columns";
        if (k > end - count && offsets[k] <= offsets[k - 1]) return where + " has unsorted or repeated columns";
      }
    }
    if (k != row_ptr[r + 1])
      return "row " + std::to_string(r) + " block counts hold " + std::to_string(k - row_ptr[r]) + " values but its pointers span " +
             std::to_string(row_ptr[r + 1] - row_ptr[r]);
  }
  return "";
}

}  // namespace lacuna::detail
