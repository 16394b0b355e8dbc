#pragma once
// Declarations of every microkernel, from the one list that also drives the
// registry, the tests and the benchmarks.
#include "kernels/spmm.h"

namespace lacuna {
#define LACUNA_SPMM_UKERNEL(symbol, format, dtype, act, features, min_n, max_n, row_tile, block_rows, block_cols) \
  void symbol(const SpmmArgs& args);
#include "kernels/spmm-ukernels.inc"
#undef LACUNA_SPMM_UKERNEL
}  // namespace lacuna
