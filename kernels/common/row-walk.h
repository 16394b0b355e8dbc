#pragma once
// Walks the stored values of one weight row in any format: calls
// visit(column, value as f32 before the int8 row scale). Shared by the scalar
// reference and the kernels whose inner loop is per nonzero (large batch), so
// there is one definition of what each format's index arrays mean.
#include <bit>

#include "sparse/element.h"
#include "sparse/tensor.h"

namespace lacuna::kernels {

template <Format F, DType D, class Index, class Visit>
inline void for_each_in_row(const Tensor& w, uint64_t r, Visit&& visit) {
  using E = Element<D>;
  using T = typename E::type;
  const TensorDesc& d = w.desc();
  const T* values = w.section<T>(Section::values);
  const uint64_t* row_ptr = w.section<uint64_t>(Section::row_ptr);
  if constexpr (F == Format::dense) {
    for (uint64_t c = 0; c < d.cols(); ++c) visit(c, E::to_f32(values[r * d.cols() + c]));
  } else if constexpr (F == Format::csr) {
    const Index* cols = w.section<Index>(Section::col_idx);
    for (uint64_t k = row_ptr[r]; k < row_ptr[r + 1]; ++k) visit(uint64_t{cols[k]}, E::to_f32(values[k]));
  } else if constexpr (F == Format::csr8) {
    const uint8_t* offsets = w.section<uint8_t>(Section::col_idx);
    const uint64_t blocks = csr8_block_count(d);
    const uint16_t* counts = w.section<uint16_t>(Section::block_counts) + r * blocks;
    uint64_t k = row_ptr[r];
    for (uint64_t b = 0; b < blocks; ++b)
      for (const uint64_t end = k + counts[b]; k < end; ++k) visit(b * kCsr8BlockColumns + offsets[k], E::to_f32(values[k]));
  } else if constexpr (F == Format::bitmap) {
    using M = BitmapMask<T>;
    const M* masks = w.section<M>(Section::masks);
    const uint64_t groups = group_count(d), width = bitmap_group_width(d.dtype);
    uint64_t k = row_ptr[r];
    for (uint64_t g = 0; g < groups; ++g)
      for (M m = masks[r * groups + g]; m; m &= m - 1) visit(g * width + std::countr_zero(m), E::to_f32(values[k++]));
  } else {
    const Index* block_cols = w.section<Index>(Section::col_idx);
    const uint64_t br = d.block_rows, bc = d.block_cols, bi = r / br, rr = r % br;
    for (uint64_t k = row_ptr[bi]; k < row_ptr[bi + 1]; ++k)
      for (uint64_t cc = 0; cc < bc; ++cc) {
        const uint64_t c = uint64_t{block_cols[k]} * bc + cc;
        if (c < d.cols()) visit(c, E::to_f32(values[(k * br + rr) * bc + cc]));
      }
  }
}

// Runs body(static_cast<Index*>(nullptr)) with the tensor's column index type.
template <class Body>
inline void with_index_type(const Tensor& w, Body&& body) {
  visit_index(index_size(w.desc().cols()), body);
}

}  // namespace lacuna::kernels
