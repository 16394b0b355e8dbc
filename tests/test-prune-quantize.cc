#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>

#include "sparse/convert.h"
#include "sparse/error.h"
#include "sparse/prune.h"
#include "sparse/quantize.h"
#include "sparse/stats.h"
#include "tests/test-util.h"

namespace lacuna {
namespace {

size_t zeros_in(const float* w, size_t count) { return static_cast<size_t>(std::count(w, w + count, 0.0f)); }

TEST(Prune, MagnitudePerRowZeroesTheSmallestOfEachRow) {
  for (double s : {0.0, 0.3, 0.5, 0.7, 0.9, 1.0}) {
    auto w = testing::random_sparse(13, 101, 0.0, false, 7);
    const auto original = w;
    prune_magnitude(w.data(), 13, 101, s, PruneScope::per_row);
    const size_t expect = static_cast<size_t>(std::llround(s * 101));
    for (size_t r = 0; r < 13; ++r) {
      const float* row = w.data() + r * 101;
      ASSERT_EQ(zeros_in(row, 101), expect) << "row " << r << " sparsity " << s;
      // Every kept weight is at least as large as every pruned one.
      float max_pruned = 0, min_kept = INFINITY;
      for (size_t c = 0; c < 101; ++c) {
        const float a = std::fabs(original[r * 101 + c]);
        if (row[c] == 0.0f) {
          max_pruned = std::max(max_pruned, a);
        } else {
          min_kept = std::min(min_kept, a);
          EXPECT_EQ(row[c], original[r * 101 + c]);
        }
      }
      EXPECT_LE(max_pruned, min_kept);
    }
  }
}

TEST(Prune, MagnitudePerTensorHitsTheTargetOverall) {
  auto w = testing::random_sparse(40, 50, 0.0, false, 8);
  prune_magnitude(w.data(), 40, 50, 0.75, PruneScope::per_tensor);
  EXPECT_EQ(zeros_in(w.data(), w.size()), 1500u);
}

TEST(Prune, RejectsSparsityOutsideZeroToOne) {
  std::vector<float> w(10, 1.0f);
  EXPECT_THROW(prune_magnitude(w.data(), 1, 10, 1.5, PruneScope::per_row), Error);
  EXPECT_THROW(prune_magnitude(w.data(), 1, 10, -0.1, PruneScope::per_tensor), Error);
  EXPECT_THROW(prune_magnitude(w.data(), 1, 10, NAN, PruneScope::per_tensor), Error);
}

TEST(Prune, RefusesNonFiniteWeights) {
  std::vector<float> w = {1.0f, NAN, 2.0f, 3.0f};
  EXPECT_THROW(prune_magnitude(w.data(), 1, 4, 0.5, PruneScope::per_row), Error);
  EXPECT_THROW(prune_n_m(w.data(), 1, 4, 2, 4), Error);
  w[1] = INFINITY;
  EXPECT_THROW(prune_blocks(w.data(), 1, 4, 1, 2, 0.5), Error);
}

// Wanda against a plain sort of each row by |w| * norm (ties: earlier column first).
TEST(Prune, WandaZeroesTheSmallestWeightTimesInputNormOfEachRow) {
  const size_t rows = 9, cols = 77;
  std::vector<float> norm(cols);
  for (size_t c = 0; c < cols; ++c) norm[c] = c % 11 == 0 ? 0.0f : 0.05f + static_cast<float>((c * 37) % 19);  // zero norms too
  for (double s : {0.0, 0.5, 0.7, 1.0}) {
    auto w = testing::random_sparse(rows, cols, 0.0, false, 21);
    const auto original = w;
    prune_wanda(w.data(), rows, cols, norm.data(), s);
    const size_t count = static_cast<size_t>(std::llround(s * static_cast<double>(cols)));
    for (size_t r = 0; r < rows; ++r) {
      std::vector<size_t> order(cols);
      for (size_t c = 0; c < cols; ++c) order[c] = c;
      auto score = [&](size_t c) { return double{std::fabs(original[r * cols + c])} * norm[c]; };
      std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return score(a) < score(b); });
      std::vector<float> expect(original.begin() + static_cast<ptrdiff_t>(r * cols), original.begin() + static_cast<ptrdiff_t>((r + 1) * cols));
      for (size_t i = 0; i < count; ++i) expect[order[i]] = 0.0f;
      for (size_t c = 0; c < cols; ++c) ASSERT_EQ(w[r * cols + c], expect[c]) << "row " << r << " col " << c << " sparsity " << s;
    }
  }
  // With equal norms it is magnitude pruning.
  auto a = testing::random_sparse(rows, cols, 0.0, false, 22), b = a;
  const std::vector<float> ones(cols, 3.0f);
  prune_wanda(a.data(), rows, cols, ones.data(), 0.6);
  prune_magnitude(b.data(), rows, cols, 0.6, PruneScope::per_row);
  EXPECT_EQ(a, b);
}

TEST(Prune, WandaRefusesBadNorms) {
  std::vector<float> w = {1.0f, 2.0f, 3.0f, 4.0f};
  for (float bad : {-1.0f, NAN, INFINITY}) {
    const std::vector<float> norm = {1.0f, bad, 1.0f, 1.0f};
    EXPECT_THROW(prune_wanda(w.data(), 1, 4, norm.data(), 0.5), Error);
  }
  const std::vector<float> norm(4, 1.0f);
  EXPECT_THROW(prune_wanda(w.data(), 1, 4, norm.data(), 1.5), Error);
}

TEST(Prune, TwoFourKeepsTwoLargestOfEveryFour) {
  auto w = testing::random_sparse(6, 22, 0.0, false, 9);
  const auto original = w;
  prune_n_m(w.data(), 6, 22, 2, 4);
  for (size_t r = 0; r < 6; ++r)
    for (size_t c0 = 0; c0 < 22; c0 += 4) {
      const size_t len = std::min<size_t>(4, 22 - c0);
      const float* g = w.data() + r * 22 + c0;
      EXPECT_EQ(len - zeros_in(g, len), std::min<size_t>(2, len));
      for (size_t a = 0; a < len; ++a)
        for (size_t b = 0; b < len; ++b)
          if (g[a] != 0.0f && g[b] == 0.0f) { EXPECT_GE(std::fabs(g[a]), std::fabs(original[r * 22 + c0 + b])); }
    }
  EXPECT_THROW(prune_n_m(w.data(), 6, 22, 5, 4), Error);
}

TEST(Prune, BlocksZeroWholeBlocksAndStoreAsBsr) {
  auto w = testing::random_sparse(30, 18, 0.0, false, 10);
  prune_blocks(w.data(), 30, 18, 4, 1, 0.7);
  const Tensor bsr = pack(quantize_matrix(w.data(), 30, 18, DType::f32), Format::bsr, BlockShape{4, 1});
  const uint64_t blocks = 8 * 18;  // ceil(30 / 4) block rows x 18 columns
  EXPECT_EQ(bsr.desc().nnz, blocks - static_cast<uint64_t>(std::llround(0.7 * blocks)));
}

TEST(Quantize, Int8IsSymmetricPerRowWithinHalfAStep) {
  const auto w = testing::random_sparse(9, 300, 0.3, true, 11);
  const Tensor q = quantize_matrix(w.data(), 9, 300, DType::int8);
  const float* scales = q.section<float>(Section::scales);
  const int8_t* v = q.section<int8_t>(Section::values);
  const auto back = dequantize(q);
  for (size_t r = 0; r < 9; ++r) {
    float amax = 0;
    for (size_t c = 0; c < 300; ++c) amax = std::max(amax, std::fabs(w[r * 300 + c]));
    EXPECT_FLOAT_EQ(scales[r], amax / 127.0f);
    for (size_t c = 0; c < 300; ++c) {
      EXPECT_LE(std::fabs(back[r * 300 + c] - w[r * 300 + c]), scales[r] * 0.5f + 1e-7f);
      if (w[r * 300 + c] == 0.0f) { EXPECT_EQ(v[r * 300 + c], 0); }
      EXPECT_GE(v[r * 300 + c], -127);
    }
  }
}

TEST(Quantize, Bf16AndF32) {
  const auto w = testing::random_sparse(3, 50, 0.5, false, 12);
  EXPECT_EQ(dequantize(quantize_matrix(w.data(), 3, 50, DType::f32)), w);
  const auto b = dequantize(quantize_matrix(w.data(), 3, 50, DType::bf16));
  for (size_t i = 0; i < w.size(); ++i) { EXPECT_EQ(b[i], bf16_to_f32(f32_to_bf16(w[i]))); }
}

TEST(Quantize, SymmetricInt8HasNoScaleForNonFiniteValues) {
  const float x[4] = {0.5f, -1.27f, INFINITY, 0.0f};
  int8_t q[4] = {1, 1, 1, 1};
  EXPECT_TRUE(std::isnan(quantize_int8_symmetric(x, 4, q)));
  for (int8_t v : q) EXPECT_EQ(v, 0);
  EXPECT_FLOAT_EQ(quantize_int8_symmetric(x, 2, q), 0.01f);
  EXPECT_EQ(q[0], 50);
  EXPECT_EQ(q[1], -127);
  const float zeros[3] = {0.0f, 0.0f, 0.0f};
  EXPECT_EQ(quantize_int8_symmetric(zeros, 3, q), 0.0f);
  EXPECT_EQ(q[0], 0);
  // A subnormal scale (1 / scale overflows, and 0 * inf is NaN): zeros, as
  // the values are at int8 precision; found by fuzzing a checkpoint.
  const float tiny[3] = {0.0f, 1e-40f, -3e-39f};
  q[0] = q[1] = q[2] = 1;
  EXPECT_EQ(quantize_int8_symmetric(tiny, 3, q), 3e-39f / 127.0f);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(q[i], 0) << i;
}

TEST(Quantize, SymmetricInt8RoundsToNearestEven) {
  // 127 makes the scale 1, so the halves below are exact ties.
  const float ties[] = {127.0f, 2.5f, -3.5f, 0.5f, -0.5f, 1.5f, -126.5f, 126.49f};
  int8_t q[8];
  EXPECT_EQ(quantize_int8_symmetric(ties, 8, q), 1.0f);
  const int8_t expected[] = {127, 2, -4, 0, 0, 2, -126, 126};
  for (size_t i = 0; i < 8; ++i) EXPECT_EQ(q[i], expected[i]) << ties[i];
  // Random rows against the definition: nearest integer of x / scale, ties to even.
  std::mt19937 rng(31);
  std::normal_distribution<float> dist(0.0f, 3.0f);
  std::vector<float> x(4099);
  for (float& v : x) v = dist(rng);
  std::vector<int8_t> got(x.size());
  const float scale = quantize_int8_symmetric(x.data(), x.size(), got.data());
  float amax = 0;
  for (float v : x) amax = std::max(amax, std::fabs(v));
  EXPECT_EQ(scale, amax / 127.0f);
  for (size_t i = 0; i < x.size(); ++i) EXPECT_EQ(got[i], static_cast<int8_t>(std::nearbyint(x[i] * (1.0f / scale)))) << i;
  const float nan_row[3] = {1.0f, NAN, 2.0f};
  EXPECT_TRUE(std::isnan(quantize_int8_symmetric(nan_row, 3, q)));
}

TEST(Quantize, Int8RefusesNonFiniteRows) {
  std::vector<float> w = {1.0f, NAN, 2.0f};
  EXPECT_THROW(quantize_matrix(w.data(), 1, 3, DType::int8), Error);
}

TEST(Stats, CountBytesAndSparsity) {
  auto w = testing::random_sparse(64, 128, 0.0, false, 13);
  prune_magnitude(w.data(), 64, 128, 0.75, PruneScope::per_row);
  const Tensor dense = quantize_matrix(w.data(), 64, 128, DType::bf16);
  const TensorStats d = tensor_stats(dense);
  EXPECT_EQ(d.elements, 64u * 128u);
  EXPECT_DOUBLE_EQ(d.sparsity(), 0.75);
  EXPECT_DOUBLE_EQ(d.bytes_per_weight(), 2.0);
  const TensorStats b = tensor_stats(pack(dense, Format::bitmap));
  // 32 stored bf16 values per row (64 B) + 4 masks (16 B) + a row pointer (8 B) = 88 B per row, plus padding.
  EXPECT_GE(b.payload_bytes, 64u * 88u);
  EXPECT_LT(b.payload_bytes, 64u * 88u + 4 * 64u);
  EXPECT_DOUBLE_EQ(b.sparsity(), 0.75);
}

}  // namespace
}  // namespace lacuna
