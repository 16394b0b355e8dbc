#pragma once
// f32 weights -> a dense tensor of a stored dtype, and any tensor -> f32.
#include <cstddef>
#include <vector>

#include "sparse/tensor.h"

namespace lacuna {

// Converts a row-major [rows, cols] f32 matrix (or a 1-D vector, rows = 1) to a
// dense tensor: f32 is copied, bf16 rounds to nearest even, int8 is symmetric
// per row (scale = max|w| / 127, q = round(w * (1 / scale)), clamped to
// [-127, 127]); zeros stay exactly zero.
Tensor quantize(const float* w, const TensorDesc& shape_and_dtype);
Tensor quantize_matrix(const float* w, size_t rows, size_t cols, DType dtype);

// The f32 value of every element, row-major [rows, cols], for any format
// (int8 values multiplied by their row scale).
std::vector<float> dequantize(const Tensor& t);

}  // namespace lacuna
