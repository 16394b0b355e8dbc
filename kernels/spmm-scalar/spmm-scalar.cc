// Scalar reference kernels: plain loops, no ISA flags, the yardstick every
// optimised kernel is tested against. One template serves all formats: each
// format only says how to walk a row's nonzeros.
#include <bit>
#include <vector>

#include "kernels/spmm-ukernels.h"
#include "sparse/element.h"

namespace lacuna {
namespace {

template <class T>
using MaskOf = std::conditional_t<sizeof(T) == 4, uint16_t, std::conditional_t<sizeof(T) == 2, uint32_t, uint64_t>>;

template <class Index>
const Index* col_indices(const Tensor& w) {
  return w.section<Index>(Section::col_idx);
}

// Calls visit(column, value) for every stored value of row r.
template <Format F, class E, class Index, class Visit>
void for_each_in_row(const Tensor& w, uint64_t r, Visit&& visit) {
  using T = typename E::type;
  const TensorDesc& d = w.desc();
  const T* values = w.section<T>(Section::values);
  const uint64_t* row_ptr = w.section<uint64_t>(Section::row_ptr);
  if constexpr (F == Format::dense) {
    for (uint64_t c = 0; c < d.cols(); ++c) visit(c, E::to_f32(values[r * d.cols() + c]));
  } else if constexpr (F == Format::csr) {
    const Index* cols = col_indices<Index>(w);
    for (uint64_t k = row_ptr[r]; k < row_ptr[r + 1]; ++k) visit(uint64_t{cols[k]}, E::to_f32(values[k]));
  } else if constexpr (F == Format::bitmap) {
    using M = MaskOf<T>;
    const M* masks = w.section<M>(Section::masks);
    const uint64_t groups = group_count(d), width = bitmap_group_width(d.dtype);
    uint64_t k = row_ptr[r];
    for (uint64_t g = 0; g < groups; ++g)
      for (M m = masks[r * groups + g]; m; m &= m - 1) visit(g * width + std::countr_zero(m), E::to_f32(values[k++]));
  } else {
    const Index* block_cols = col_indices<Index>(w);
    const uint64_t br = d.block_rows, bc = d.block_cols, bi = r / br, rr = r % br;
    for (uint64_t k = row_ptr[bi]; k < row_ptr[bi + 1]; ++k)
      for (uint64_t cc = 0; cc < bc; ++cc) {
        const uint64_t c = uint64_t{block_cols[k]} * bc + cc;
        if (c < d.cols()) visit(c, E::to_f32(values[(k * br + rr) * bc + cc]));
      }
  }
}

template <Format F, DType T>
void spmm_scalar(const SpmmArgs& a) {
  using E = Element<T>;
  const float* scales = T == DType::int8 ? a.w->section<float>(Section::scales) : nullptr;
  std::vector<float> acc(a.n);
  auto run = [&]<class Index>(Index*) {
    for (uint64_t r = a.row_begin; r < a.row_end; ++r) {
      std::fill(acc.begin(), acc.end(), 0.0f);
      for_each_in_row<F, E, Index>(*a.w, r, [&](uint64_t c, float v) {
        for (size_t i = 0; i < a.n; ++i) acc[i] += a.x[i * a.ldx + c] * v;
      });
      const float scale = scales ? scales[r] : 1.0f;
      for (size_t i = 0; i < a.n; ++i) a.y[i * a.ldy + r] = acc[i] * scale;
    }
  };
  if (index_size(a.w->desc().cols()) == 2)
    run(static_cast<uint16_t*>(nullptr));
  else
    run(static_cast<uint32_t*>(nullptr));
}

}  // namespace

#define LACUNA_SPMM_UKERNEL(symbol, format, dtype, features, min_n, max_n) \
  void symbol(const SpmmArgs& args) { spmm_scalar<Format::format, DType::dtype>(args); }
#include "kernels/spmm-scalar/spmm-scalar.inc"
#undef LACUNA_SPMM_UKERNEL

}  // namespace lacuna
