#include "sparse/prune.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>
#include <vector>

#include "sparse/error.h"

namespace lacuna {
namespace {

void check_sparsity(double sparsity) {
  if (!(sparsity >= 0.0 && sparsity <= 1.0)) throw Error("sparsity " + std::to_string(sparsity) + " is not in [0, 1]");
}

void check_finite(const float* w, size_t count) {
  for (size_t i = 0; i < count; ++i)
    if (!std::isfinite(w[i])) throw Error("cannot prune: weight " + std::to_string(i) + " is not finite");
}

// Zeroes the `count` entries of `w` (indexed by `ids`) with the smallest score.
// Scores must be finite: nth_element needs a strict weak order.
template <class Score>
void zero_smallest(std::vector<size_t>& ids, size_t count, Score score, float* w, auto&& zero) {
  if (count == 0) return;
  auto less = [&](size_t a, size_t b) {
    const double sa = score(a), sb = score(b);
    return sa < sb || (sa == sb && a < b);
  };
  if (count < ids.size()) std::nth_element(ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(count), ids.end(), less);
  for (size_t i = 0; i < count; ++i) zero(w, ids[i]);
}

// Zeroes the round(sparsity * cols) weights of each row with the smallest
// score(row, column).
template <class Score>
void prune_each_row(float* w, size_t rows, size_t cols, double sparsity, Score score) {
  const auto count = static_cast<size_t>(std::llround(sparsity * static_cast<double>(cols)));
  std::vector<size_t> ids(cols);
  for (size_t r = 0; r < rows; ++r) {
    float* row = w + r * cols;
    std::iota(ids.begin(), ids.end(), size_t{0});
    zero_smallest(ids, count, [&](size_t i) { return score(row, i); }, row, [](float* base, size_t i) { base[i] = 0.0f; });
  }
}

}  // namespace

void prune_magnitude(float* w, size_t rows, size_t cols, double sparsity, PruneScope scope) {
  check_sparsity(sparsity);
  check_finite(w, rows * cols);
  auto zero_one = [](float* base, size_t i) { base[i] = 0.0f; };
  if (scope == PruneScope::per_tensor) {
    std::vector<size_t> ids(rows * cols);
    std::iota(ids.begin(), ids.end(), size_t{0});
    const auto count = static_cast<size_t>(std::llround(sparsity * static_cast<double>(rows * cols)));
    zero_smallest(ids, count, [&](size_t i) { return std::fabs(w[i]); }, w, zero_one);
    return;
  }
  prune_each_row(w, rows, cols, sparsity, [](const float* row, size_t i) { return double{std::fabs(row[i])}; });
}

void prune_wanda(float* w, size_t rows, size_t cols, const float* input_norm, double sparsity) {
  check_sparsity(sparsity);
  check_finite(w, rows * cols);
  for (size_t j = 0; j < cols; ++j)
    if (!(std::isfinite(input_norm[j]) && input_norm[j] >= 0))
      throw Error("cannot prune by Wanda: the activation norm of input channel " + std::to_string(j) + " is not a finite non-negative number");
  prune_each_row(w, rows, cols, sparsity, [&](const float* row, size_t i) { return double{std::fabs(row[i])} * input_norm[i]; });
}

void prune_n_m(float* w, size_t rows, size_t cols, size_t n, size_t m) {
  if (m == 0 || n > m) throw Error("N:M pruning needs 0 <= N <= M and M > 0, got " + std::to_string(n) + ":" + std::to_string(m));
  check_finite(w, rows * cols);
  std::vector<size_t> ids;
  for (size_t r = 0; r < rows; ++r) {
    float* row = w + r * cols;
    for (size_t c0 = 0; c0 < cols; c0 += m) {
      const size_t len = std::min(m, cols - c0);
      ids.resize(len);
      std::iota(ids.begin(), ids.end(), c0);
      zero_smallest(ids, len - std::min(n, len), [&](size_t i) { return std::fabs(row[i]); }, row,
                    [](float* base, size_t i) { base[i] = 0.0f; });
    }
  }
}

void prune_blocks(float* w, size_t rows, size_t cols, size_t block_rows, size_t block_cols, double sparsity) {
  check_sparsity(sparsity);
  if (block_rows == 0 || block_cols == 0) throw Error("block pruning needs a non-empty block shape");
  check_finite(w, rows * cols);
  const size_t brows = (rows + block_rows - 1) / block_rows, bcols = (cols + block_cols - 1) / block_cols;
  std::vector<double> norm(brows * bcols, 0.0);
  for (size_t r = 0; r < rows; ++r)
    for (size_t c = 0; c < cols; ++c) norm[(r / block_rows) * bcols + c / block_cols] += double{w[r * cols + c]} * w[r * cols + c];
  std::vector<size_t> ids(brows * bcols);
  std::iota(ids.begin(), ids.end(), size_t{0});
  const auto count = static_cast<size_t>(std::llround(sparsity * static_cast<double>(ids.size())));
  zero_smallest(ids, count, [&](size_t b) { return norm[b]; }, w, [&](float* base, size_t b) {
    const size_t bi = b / bcols, bj = b % bcols;
    for (size_t r = bi * block_rows; r < std::min(rows, (bi + 1) * block_rows); ++r)
      for (size_t c = bj * block_cols; c < std::min(cols, (bj + 1) * block_cols); ++c) base[r * cols + c] = 0.0f;
  });
}

}  // namespace lacuna
