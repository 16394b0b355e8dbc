// The dense f32 primitives of every ISA this CPU runs, against double sums.
#include <gtest/gtest.h>

#include <cmath>

#include "kernels/vector/vector-ops.h"
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
