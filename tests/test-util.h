#pragma once
// Shared helpers for the tests: random sparse matrices, an independent
// dense product in double precision, a scratch directory.
#include <stdlib.h>

#include <cmath>
#include <filesystem>
#include <random>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include "sparse/quantize.h"
#include "sparse/tensor.h"

namespace lacuna::testing {

// An independent log-softmax of one row of logits, summed in long double:
// the reference for the engine's log-probabilities.
inline std::vector<double> log_softmax(std::span<const float> logits) {
  long double sum = 0;
  for (float l : logits) sum += std::exp(static_cast<long double>(l));
  std::vector<double> out;
  out.reserve(logits.size());
  for (float l : logits) out.push_back(static_cast<double>(static_cast<long double>(l) - std::log(sum)));
  return out;
}

// A scratch directory for the whole test program, removed at exit.
inline const std::filesystem::path& scratch() {
  static const std::filesystem::path dir = [] {
    std::string pattern = (std::filesystem::temp_directory_path() / "lacuna-test-XXXXXX").string();
    if (!mkdtemp(pattern.data())) throw std::runtime_error("mkdtemp failed");
    return std::filesystem::path(pattern);
  }();
  static const struct Cleanup {
    ~Cleanup() { std::filesystem::remove_all(dir); }
  } cleanup;
  return dir;
}

// A row-major [rows, cols] f32 matrix with about `sparsity` of its entries zero
// (exactly zero at 1.0), and, when `empty_rows`, every third row all zero.
inline std::vector<float> random_sparse(size_t rows, size_t cols, double sparsity, bool empty_rows, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  std::vector<float> w(rows * cols);
  for (size_t r = 0; r < rows; ++r)
    for (size_t c = 0; c < cols; ++c) {
      const bool keep = uniform(rng) >= sparsity && !(empty_rows && r % 3 == 1);
      float v = normal(rng);
      if (v == 0.0f) v = 1.0f;
      w[r * cols + c] = keep ? v : 0.0f;
    }
  return w;
}

inline std::vector<float> random_activations(size_t n, size_t cols, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  std::vector<float> x(n * cols);
  for (float& v : x) v = uniform(rng);
  return x;
}

// y[i, r] = sum_c x[i, c] * W[r, c] in double, with W the dequantised weights,
// and the matching sum of |x * w| (the scale of the rounding error).
struct DenseProduct {
  std::vector<double> y, magnitude;
};

inline DenseProduct naive_product(const Tensor& w, const std::vector<float>& x, size_t n) {
  const std::vector<float> wd = dequantize(w);
  const size_t rows = w.desc().rows(), cols = w.desc().cols();
  DenseProduct p{std::vector<double>(n * rows), std::vector<double>(n * rows)};
  for (size_t i = 0; i < n; ++i)
    for (size_t r = 0; r < rows; ++r) {
      double acc = 0, mag = 0;
      for (size_t c = 0; c < cols; ++c) {
        acc += double{x[i * cols + c]} * wd[r * cols + c];
        mag += std::fabs(double{x[i * cols + c]} * wd[r * cols + c]);
      }
      p.y[i * rows + r] = acc;
      p.magnitude[i * rows + r] = mag;
    }
  return p;
}

}  // namespace lacuna::testing
