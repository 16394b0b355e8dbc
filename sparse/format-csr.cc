// CSR: row_ptr[rows + 1] (u64), col_idx[nnz] (u16/u32), values[nnz].
#include <algorithm>

#include "sparse/element.h"
#include "sparse/format-internal.h"

namespace lacuna::detail {

Tensor pack_csr(const Tensor& dense) {
  const TensorDesc& dd = dense.desc();
  const uint64_t rows = dd.rows(), cols = dd.cols();
  return visit_dtype(dd.dtype, [&]<class E>(E) {
    using T = typename E::type;
    const T* v = dense.section<T>(Section::values);
    Tensor t = allocate_for_nonzeros(dense, Format::csr);
    uint64_t* row_ptr = t.mutable_section<uint64_t>(Section::row_ptr);
    T* values = t.mutable_section<T>(Section::values);
    visit_index(index_size(cols), [&]<class I>(I*) {
      auto* col_idx = t.mutable_section<I>(Section::col_idx);
      uint64_t k = 0;
      for (uint64_t r = 0; r < rows; ++r) {
        row_ptr[r] = k;
        for (uint64_t c = 0; c < cols; ++c) {
          const T x = v[r * cols + c];
          if (E::is_zero(x)) continue;
          col_idx[k] = static_cast<I>(c);
          values[k++] = x;
        }
      }
      row_ptr[rows] = k;
    });
    copy_scales(dense, t);
    return t;
  });
}

Tensor unpack_csr(const Tensor& t) {
  Tensor out = dense_like(t);
  const uint64_t rows = t.desc().rows(), cols = t.desc().cols();
  const uint64_t* row_ptr = t.section<uint64_t>(Section::row_ptr);
  visit_dtype(t.desc().dtype, [&]<class E>(E) {
    using T = typename E::type;
    const T* values = t.section<T>(Section::values);
    T* dst = out.mutable_section<T>(Section::values);
    visit_index(index_size(cols), [&]<class I>(I*) {
      const auto* col_idx = t.section<I>(Section::col_idx);
      for (uint64_t r = 0; r < rows; ++r)
        for (uint64_t k = row_ptr[r]; k < row_ptr[r + 1]; ++k) dst[r * cols + col_idx[k]] = values[k];
    });
  });
  return out;
}

std::string check_csr(const Tensor& t) {
  const uint64_t rows = t.desc().rows(), cols = t.desc().cols();
  const uint64_t* row_ptr = t.section<uint64_t>(Section::row_ptr);
  if (std::string why = check_row_ptr(row_ptr, rows, t.desc().nnz, "row"); !why.empty()) return why;
  return visit_index(index_size(cols), [&]<class I>(I*) -> std::string {
    const auto* col_idx = t.section<I>(Section::col_idx);
    for (uint64_t r = 0; r < rows; ++r)
      for (uint64_t k = row_ptr[r]; k < row_ptr[r + 1]; ++k) {
        if (col_idx[k] >= cols) return "row " + std::to_string(r) + " has column " + std::to_string(col_idx[k]) + " past " + std::to_string(cols);
        if (k > row_ptr[r] && col_idx[k] <= col_idx[k - 1]) return "row " + std::to_string(r) + " has unsorted or repeated columns";
      }
    return "";
  });
}

}  // namespace lacuna::detail
