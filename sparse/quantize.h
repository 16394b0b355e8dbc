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

// Symmetric int8 quantisation of x[0..n), shared by weights (per row) and
// activations (per token): returns the scale max|x| / 127 and writes
// round(x / scale) clamped to [-127, 127] (zeros when every x is zero, or
// when max|x| is below 127 x FLT_MIN, so that the scale is subnormal). A NaN
// or infinite value leaves no scale: it returns NaN and writes zeros.
float quantize_int8_symmetric(const float* x, size_t n, int8_t* out);

// The f32 value of every element, row-major [rows, cols], for any format
// (int8 values multiplied by their row scale).
std::vector<float> dequantize(const Tensor& t);

}  // namespace lacuna
