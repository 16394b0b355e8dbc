// Scalar reference kernels: plain loops, no ISA flags, the yardstick every
// optimised kernel is tested against. One template serves all formats.
#include <vector>

#include "kernels/common/row-walk.h"
#include "kernels/spmm-ukernels.h"

namespace lacuna {
namespace {

template <Format F, DType D>
void spmm_scalar(const SpmmArgs& a) {
  const float* x = static_cast<const float*>(a.x);
  const float* scales = D == DType::int8 ? a.w->section<float>(Section::scales) : nullptr;
  std::vector<float> acc(a.n);
  kernels::with_index_type(*a.w, [&]<class Index>(Index*) {
    for (uint64_t r = a.row_begin; r < a.row_end; ++r) {
      std::fill(acc.begin(), acc.end(), 0.0f);
      kernels::for_each_in_row<F, D, Index>(*a.w, r, [&](uint64_t c, float v) {
        for (size_t i = 0; i < a.n; ++i) acc[i] += x[i * a.ldx + c] * v;
      });
      const float scale = scales ? scales[r] : 1.0f;
      for (size_t i = 0; i < a.n; ++i) a.y[i * a.ldy + r] = acc[i] * scale;
    }
  });
}

}  // namespace

#define LACUNA_SPMM_UKERNEL(symbol, format, dtype, act, features, min_n, max_n, row_tile, block_rows, block_cols) \
  void symbol(const SpmmArgs& args) { spmm_scalar<Format::format, DType::dtype>(args); }
#include "kernels/spmm-scalar/spmm-scalar.inc"
#undef LACUNA_SPMM_UKERNEL

}  // namespace lacuna
