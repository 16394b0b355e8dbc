// The dense f32 primitives of every ISA this CPU runs, against double sums,
// and the activation quantiser against the scalar one.
#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <limits>
#include <numeric>
#include <span>
#include <string>

#include "kernels/vector/vector-ops.h"
#include "sparse/dtype.h"
#include "sparse/quantize.h"
#include "tests/test-util.h"

namespace lacuna {
namespace {

class VectorOpsTest : public ::testing::TestWithParam<IsaLevel> {};

TEST_P(VectorOpsTest, DotAndAxpyMatchDoubleSumsForEveryLengthAndTail) {
  const CpuInfo cpu = cpu_info().with_cap(GetParam());
  const kernels::VectorOps& ops = kernels::vector_ops_for(cpu);
  for (const size_t n : {size_t{0}, size_t{1}, size_t{7}, size_t{15}, size_t{16}, size_t{17}, size_t{63}, size_t{64}, size_t{65}, size_t{128}, size_t{2051}}) {
    const std::vector<float> a = testing::random_activations(1, n, 11 + n), b = testing::random_activations(1, n, 97 + n);
    double expected = 0, magnitude = 0;
    for (size_t i = 0; i < n; ++i) {
      expected += static_cast<double>(a[i]) * b[i];
      magnitude += std::abs(static_cast<double>(a[i]) * b[i]);
    }
    EXPECT_NEAR(ops.dot(a.data(), b.data(), n), expected, 1e-6 * magnitude + 1e-30) << ops.isa << " n=" << n;
    std::vector<float> y = b;
    ops.axpy(-0.75f, a.data(), y.data(), n);
    for (size_t i = 0; i < n; ++i) ASSERT_NEAR(y[i], b[i] - 0.75 * a[i], 1e-6) << ops.isa << " n=" << n << " i=" << i;
  }
}

// The query heads of a GQA group against rows of a strided block (the keys
// of a cache block), and those rows weighted into each head's output (the
// values), for groups of 1-6 heads (taken as 4, 2 and 1), row counts of
// whole and partial tiles at every ISA's width, and every tail of the
// outputs' vector blocks, against double sums; rows in f32 and in f16 (an
// f16 KV cache: the sums of the rows' f16 values).
TEST_P(VectorOpsTest, DotRowsAndWeightedRowSumMatchDoubleSums) {
  const kernels::VectorOps& ops = kernels::vector_ops_for(cpu_info().with_cap(GetParam()));
  for (const bool f16 : {false, true})
    for (const size_t queries : {size_t{1}, size_t{2}, size_t{3}, size_t{6}})
      for (const size_t n : {size_t{1}, size_t{17}, size_t{64}, size_t{128}, size_t{2051}})
        for (const size_t count : {size_t{1}, size_t{3}, size_t{4}, size_t{7}, size_t{16}, size_t{17}, size_t{33}, size_t{40}}) {
          const size_t stride = n + 5, q_stride = n + 3, out_stride = count + 2, w_stride = count + 1;
          const uint64_t seed = 100 * queries + n + count;
          const std::vector<float> q = testing::random_activations(queries, q_stride, seed);
          std::vector<float> rows = testing::random_activations(count, stride, 3 * seed);
          std::vector<uint16_t> rows_f16(rows.size());
          for (size_t i = 0; i < rows.size(); ++i) {
            rows_f16[i] = f32_to_f16(rows[i]);
            if (f16) rows[i] = f16_to_f32(rows_f16[i]);  // what the f16 rows hold
          }
          const std::vector<float> w = testing::random_activations(queries, w_stride, 7 * seed), start = testing::random_activations(queries, q_stride, 5 * seed);
          std::vector<float> scores(queries * out_stride, -1.0f), out = start;
          if (f16) {
            ops.dot_rows_f16(q.data(), queries, q_stride, rows_f16.data(), stride, count, n, scores.data(), out_stride);
            ops.weighted_row_sum_f16(w.data(), queries, w_stride, rows_f16.data(), stride, count, n, out.data(), q_stride);
          } else {
            ops.dot_rows(q.data(), queries, q_stride, rows.data(), stride, count, n, scores.data(), out_stride);
            ops.weighted_row_sum(w.data(), queries, w_stride, rows.data(), stride, count, n, out.data(), q_stride);
          }
          const std::string what = std::string(ops.isa) + (f16 ? " f16" : " f32") + " queries=" + std::to_string(queries) + " n=" + std::to_string(n) +
                                   " count=" + std::to_string(count);
          for (size_t g = 0; g < queries; ++g) {
            for (size_t r = 0; r < count; ++r) {
              double expected = 0, magnitude = 0;
              for (size_t i = 0; i < n; ++i) {
                expected += static_cast<double>(q[g * q_stride + i]) * rows[r * stride + i];
                magnitude += std::abs(static_cast<double>(q[g * q_stride + i]) * rows[r * stride + i]);
              }
              EXPECT_NEAR(scores[g * out_stride + r], expected, 1e-6 * magnitude + 1e-30) << what << " query " << g << " row " << r;
            }
            for (size_t r = count; r < out_stride; ++r) EXPECT_EQ(scores[g * out_stride + r], -1.0f) << what << " wrote past count";
            for (size_t i = 0; i < q_stride; ++i) {
              double expected = start[g * q_stride + i], magnitude = std::abs(start[g * q_stride + i]);
              for (size_t r = 0; r < count && i < n; ++r) {
                expected += static_cast<double>(w[g * w_stride + r]) * rows[r * stride + i];
                magnitude += std::abs(static_cast<double>(w[g * w_stride + r]) * rows[r * stride + i]);
              }
              ASSERT_NEAR(out[g * q_stride + i], expected, 1e-6 * magnitude + 1e-30) << what << " query " << g << " i=" << i;
            }
          }
        }
}

// The same bytes, scale bits and byte sum as quantize_int8_symmetric, so a
// token quantised by either gets the same int8 products.
TEST_P(VectorOpsTest, QuantiseS8MatchesTheScalarQuantiserExactly) {
  const kernels::VectorOps& ops = kernels::vector_ops_for(cpu_info().with_cap(GetParam()));
  auto check = [&](const std::vector<float>& x, const std::string& what) {
    std::vector<int8_t> want(x.size()), got(x.size(), 99);
    const float want_scale = quantize_int8_symmetric(x.data(), x.size(), want.data());
    int32_t sum = -1;
    const float got_scale = ops.quantize_s8(x.data(), x.size(), got.data(), &sum);
    EXPECT_EQ(std::bit_cast<uint32_t>(got_scale), std::bit_cast<uint32_t>(want_scale)) << ops.isa << " " << what;
    EXPECT_EQ(got, want) << ops.isa << " " << what;
    if (!std::isnan(want_scale)) {
      EXPECT_EQ(sum, std::accumulate(want.begin(), want.end(), int32_t{0})) << ops.isa << " " << what;
    }
  };
  for (const size_t n : {size_t{0}, size_t{1}, size_t{15}, size_t{16}, size_t{17}, size_t{64}, size_t{2051}, size_t{5632}}) {
    std::vector<float> x = testing::random_activations(1, n, 5 + n);
    check(x, "random n=" + std::to_string(n));
    // Values landing on halves after scaling (ties go to even) and on the clamp.
    for (size_t i = 0; i < n; ++i) x[i] = static_cast<float>(static_cast<int>(i % 255) - 127) * 0.5f;
    check(x, "halves n=" + std::to_string(n));
    if (n == 0) continue;
    check(std::vector<float>(n, 0.0f), "zeros n=" + std::to_string(n));
    std::vector<float> subnormal(n, 0.0f);
    subnormal[n / 2] = -2e-39f;  // a subnormal scale
    check(subnormal, "subnormal n=" + std::to_string(n));
    for (const float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity()}) {
      x[n - 1] = bad;
      check(x, "non-finite last n=" + std::to_string(n));
      x[n - 1] = 0.0f;
      x[0] = -bad;
      check(x, "non-finite first n=" + std::to_string(n));
      x[0] = 0.0f;
    }
  }
}

// Attention's softmax, with and without Grok-1's cap, for lengths around
// the vector width (the tail's lanes must not count) and all-negative rows.
TEST_P(VectorOpsTest, SoftmaxMatchesDoubleFormula) {
  const kernels::VectorOps& ops = kernels::vector_ops_for(cpu_info().with_cap(GetParam()));
  for (const size_t n : {size_t{1}, size_t{3}, size_t{15}, size_t{16}, size_t{17}, size_t{4097}})
    for (const float cap : {0.0f, 30.0f})
      for (const float shift : {0.0f, -50.0f}) {
        std::vector<float> x = testing::random_activations(1, n, 11 + n);
        for (float& v : x) v = v * 40.0f + shift;
        std::vector<double> want(n);
        double top = -INFINITY, sum = 0;
        for (size_t i = 0; i < n; ++i) {
          double s = double{x[i]} * 0.125;
          if (cap > 0) s = cap * std::tanh(s / cap);
          want[i] = s;
          top = std::max(top, s);
        }
        for (double& w : want) sum += w = std::exp(w - top);
        for (double& w : want) w /= sum;
        ops.softmax(x.data(), n, 0.125f, cap);
        for (size_t i = 0; i < n; ++i)
          ASSERT_NEAR(x[i], want[i], 2e-6 * want[i] + 1e-9) << ops.isa << " n=" << n << " cap=" << cap << " shift=" << shift << " i=" << i;
      }
}

// Greedy sampling's argmax against std::max_element: lengths around the
// vector width, the largest value in the tail, ties (the first wins),
// -0 against +0, infinities, and NaNs (skipped, but kept at index 0).
TEST_P(VectorOpsTest, ArgmaxIsTheIndexMaxElementGives) {
  const kernels::VectorOps& ops = kernels::vector_ops_for(cpu_info().with_cap(GetParam()));
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  auto expect_same = [&](const std::vector<float>& x, const std::string& what) {
    const auto want = static_cast<size_t>(std::max_element(x.begin(), x.end()) - x.begin());
    EXPECT_EQ(ops.argmax(x.data(), x.size()), want) << ops.isa << " " << what << " n=" << x.size();
  };
  for (const size_t n : {size_t{1}, size_t{3}, size_t{15}, size_t{16}, size_t{17}, size_t{33}, size_t{32000}}) {
    std::vector<float> x = testing::random_activations(1, n, 5 + n);
    expect_same(x, "random");
    x.back() = 100.0f;
    expect_same(x, "largest last");
    x[n / 2] = 100.0f;
    expect_same(x, "tied");
    std::fill(x.begin(), x.end(), -1.0f);
    expect_same(x, "all equal");
    x[n - 1] = 0.0f;
    x[n / 3] = -0.0f;
    expect_same(x, "-0 and +0");
    x[n - 1] = inf;
    expect_same(x, "inf");
    std::fill(x.begin(), x.end(), -inf);
    expect_same(x, "all -inf");
    x[n - 1] = nan;
    expect_same(x, "NaN last");
    x[0] = nan;
    x[n / 2] = 3.0f;
    expect_same(x, "NaN first");
    std::fill(x.begin(), x.end(), nan);
    expect_same(x, "all NaN");
  }
  std::vector<float> x = {1.0f, nan, 2.0f, nan, 2.0f};
  expect_same(x, "NaN between");
}

TEST_P(VectorOpsTest, GatedActivationsMatchDoubleFormulas) {
  const kernels::VectorOps& ops = kernels::vector_ops_for(cpu_info().with_cap(GetParam()));
  for (const size_t n : {size_t{1}, size_t{15}, size_t{16}, size_t{17}, size_t{5632}}) {
    std::vector<float> gate = testing::random_activations(1, n, 3 + n), up = testing::random_activations(1, n, 7 + n), out(n);
    for (size_t i = 0; i < n; ++i) gate[i] *= 8.0f;  // well into both tails of the curves
    gate[0] = -120.0f;                               // e^120 overflows float: SiLU is -0
    for (const bool gelu : {false, true}) {
      ops.gated_activation(gate.data(), up.data(), out.data(), n, gelu);
      for (size_t i = 0; i < n; ++i) {
        const double x = gate[i];
        const double act = gelu ? 0.5 * x * (1 + std::tanh(0.7978845608028654 * (x + 0.044715 * x * x * x))) : x / (1 + std::exp(-x));
        const double want = act * up[i];
        ASSERT_NEAR(out[i], want, 4e-6 * std::abs(want) + 1e-6) << ops.isa << (gelu ? " gelu" : " silu") << " n=" << n << " x=" << x;
      }
    }
  }
}

// The VNNI tiles' float steps, (sum * row scale) * token scale, bit for bit,
// nothing written past n, and the same in place (y = sums).
TEST_P(VectorOpsTest, DequantizeRowTakesTheTilesFloatStepsExactly) {
  const kernels::VectorOps& ops = kernels::vector_ops_for(cpu_info().with_cap(GetParam()));
  for (const size_t n : {size_t{1}, size_t{15}, size_t{16}, size_t{17}, size_t{2051}}) {
    std::vector<float> sums(n), scales = testing::random_activations(1, n, 11 + n), y(n + 1, 99.0f);
    for (size_t i = 0; i < n; ++i) sums[i] = static_cast<float>(static_cast<int64_t>(i * 2654435761u % 4000000) - 2000000);
    const float token = 0.0123f;
    ops.dequantize_row(sums.data(), scales.data(), token, y.data(), n);
    for (size_t i = 0; i < n; ++i) {
      const float want = sums[i] * scales[i] * token;
      ASSERT_EQ(std::bit_cast<uint32_t>(y[i]), std::bit_cast<uint32_t>(want)) << ops.isa << " n=" << n << " i=" << i;
    }
    EXPECT_EQ(y[n], 99.0f) << ops.isa << " wrote past n=" << n;
    std::vector<float> in_place = sums;
    ops.dequantize_row(in_place.data(), scales.data(), token, in_place.data(), n);
    EXPECT_TRUE(std::equal(in_place.begin(), in_place.end(), y.begin())) << ops.isa << " in place, n=" << n;
  }
}

// ops' conversion `convert` of rows of every length in `lengths`, random
// with a value of `special` at every third element, gives `scalar`'s bits
// and writes nothing past the row.
void expect_scalar_bits(const kernels::VectorOps& ops, void (*convert)(const float*, uint16_t*, size_t), uint16_t (*scalar)(float),
                        std::span<const float> special, std::initializer_list<size_t> lengths, uint64_t seed) {
  for (const size_t n : lengths) {
    std::vector<float> x = testing::random_activations(1, n, seed + n);
    for (size_t i = 0; i < n; ++i)
      if (i % 3 == 0) x[i] = special[(i / 3) % special.size()];
    std::vector<uint16_t> got(n + 1, 0xabcd);
    convert(x.data(), got.data(), n);
    for (size_t i = 0; i < n; ++i) ASSERT_EQ(got[i], scalar(x[i])) << ops.isa << " n=" << n << " i=" << i << " x bits " << std::bit_cast<uint32_t>(x[i]);
    EXPECT_EQ(got[n], 0xabcd) << ops.isa << " wrote past n=" << n;
  }
}

// Ties (both parities), the largest finite values rounding to infinity,
// infinities, NaNs, zeros, denormals.
TEST_P(VectorOpsTest, ToBf16MatchesTheScalarConversionExactly) {
  const kernels::VectorOps& ops = kernels::vector_ops_for(cpu_info().with_cap(GetParam()));
  const float special[] = {std::bit_cast<float>(0x3f808000u), std::bit_cast<float>(0x3f818000u), std::numeric_limits<float>::max(),
                           -std::numeric_limits<float>::max(), std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity(),
                           std::numeric_limits<float>::quiet_NaN(), std::bit_cast<float>(0x7f800001u), -0.0f, std::bit_cast<float>(0x00018000u)};
  expect_scalar_bits(ops, ops.to_bf16, f32_to_bf16, special, {1, 15, 16, 17, 2051}, 21);
}

// The hardware conversion (AVX-512, F16C) and the scalar tail give
// f32_to_f16's bits: ties of both parities, values rounding up to 65504 and
// to infinity, infinities, NaNs (quiet and signalling), zeros, f16
// subnormals and values below half the smallest of them.
TEST_P(VectorOpsTest, ToF16MatchesTheScalarConversionExactly) {
  const kernels::VectorOps& ops = kernels::vector_ops_for(cpu_info().with_cap(GetParam()));
  const float special[] = {std::bit_cast<float>(0x3f801000u), std::bit_cast<float>(0x3f803000u), 65504.0f, 65519.0f, 65520.0f, -1e6f,
                           std::numeric_limits<float>::infinity(), std::numeric_limits<float>::quiet_NaN(), std::bit_cast<float>(0x7f800001u),
                           -0.0f, 3e-6f, -6e-8f, 2e-8f, std::bit_cast<float>(0x00018000u)};
  expect_scalar_bits(ops, ops.to_f16, f32_to_f16, special, {1, 7, 8, 15, 16, 17, 2051}, 23);
}

// Every element lands at its transposed place with its bits (NaN payloads
// included, as a pair of bf16 may read); nothing written beside the output
// rows' columns (ld_out > rows) or past the last column. Tile edges in
// both directions: 1-40 rows, 1-33 columns.
TEST_P(VectorOpsTest, TransposeMovesEveryElementsBits) {
  const kernels::VectorOps& ops = kernels::vector_ops_for(cpu_info().with_cap(GetParam()));
  for (const size_t rows : {size_t{1}, size_t{15}, size_t{16}, size_t{17}, size_t{40}})
    for (const size_t cols : {size_t{1}, size_t{7}, size_t{16}, size_t{33}}) {
      const size_t ld_in = cols + 3, ld_out = rows + 5;
      std::vector<float> in = testing::random_activations(rows, ld_in, rows * 100 + cols);
      for (size_t i = 0; i < in.size(); i += 5) in[i] = std::bit_cast<float>(static_cast<uint32_t>(0x7f800001u + i));  // signalling NaNs
      std::vector<float> out(cols * ld_out + 1, 99.0f);
      ops.transpose(in.data(), ld_in, rows, cols, out.data(), ld_out);
      for (size_t c = 0; c < cols; ++c) {
        for (size_t r = 0; r < rows; ++r)
          ASSERT_EQ(std::bit_cast<uint32_t>(out[c * ld_out + r]), std::bit_cast<uint32_t>(in[r * ld_in + c]))
              << ops.isa << " rows " << rows << " cols " << cols << " at " << r << "," << c;
        for (size_t r = rows; r < ld_out; ++r) ASSERT_EQ(out[c * ld_out + r], 99.0f) << ops.isa << " wrote beside row " << r << " of column " << c;
      }
      EXPECT_EQ(out[cols * ld_out], 99.0f) << ops.isa << " wrote past the last column";
    }
}

TEST(VectorOps, DispatchFollowsTheIsaCap) {
  EXPECT_STREQ(kernels::vector_ops_for(cpu_info().with_cap(IsaLevel::scalar)).isa, "sse2");
  if ((cpu_info().features & (kAvx2 | kFma)) == (kAvx2 | kFma)) {
    EXPECT_STREQ(kernels::vector_ops_for(cpu_info().with_cap(IsaLevel::avx2)).isa, "avx2");
  }
  if (cpu_info().features & kAvx512F) {
    EXPECT_STREQ(kernels::vector_ops_for(cpu_info()).isa, "avx512");
  }
}

INSTANTIATE_TEST_SUITE_P(EveryIsa, VectorOpsTest, ::testing::ValuesIn(kAllIsaLevels),
                         [](const auto& param_info) { return std::string(isa_level_name(param_info.param)); });

}  // namespace
}  // namespace lacuna
