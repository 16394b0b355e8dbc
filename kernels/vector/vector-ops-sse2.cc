#include <xsimd/xsimd.hpp>

#include "kernels/vector/vector-ops-isa.h"

namespace lacuna::kernels {
namespace {
#include "kernels/vector/vector-ops.inc"
}  // namespace

const VectorOps vector_ops_sse2{"sse2", &dot, &axpy, &dot_rows, &weighted_row_sum, &dot_rows_f16, &weighted_row_sum_f16, &quantize_s8, &gated_activation, &softmax, &argmax, &dequantize_row, &to_bf16, &to_f16, &transpose};

}  // namespace lacuna::kernels
