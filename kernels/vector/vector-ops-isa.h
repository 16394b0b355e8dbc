#pragma once
// The per-ISA instances of VectorOps (vector-ops-*.cc), for dispatch only.
#include <algorithm>
#include <cmath>
#include <limits>

#include "kernels/common/unrolled-for.h"
#include "kernels/vector/vector-ops.h"
#include "sparse/dtype.h"

namespace lacuna::kernels {

extern const VectorOps vector_ops_avx512;  // needs kAvx512F
extern const VectorOps vector_ops_avx2;     // needs kAvx2 | kFma
extern const VectorOps vector_ops_sse2;     // any x86-64

}  // namespace lacuna::kernels
