// The planner's cost model on Grok-1's 6144->32768 weight: the choices it
// makes here are the ones `lacuna bench sweep` measured to be fastest on the
// machine the rates come from (docs/benchmarks.md).
#include <gtest/gtest.h>

#include <algorithm>

#include "kernels/planner.h"
#include "kernels/spmm-ukernels.h"
#include "sparse/convert.h"
#include "sparse/stats.h"
#include "tests/test-util.h"

namespace lacuna {
namespace {

constexpr uint64_t kRows = 32768, kCols = 6144;
// What `lacuna convert --format auto` chooses among.
const std::vector<Format> kFormats{Format::dense, Format::bitmap, Format::csr, Format::csr8};

LinearPlan plan(DType t, double sparsity, size_t n, const std::vector<Format>& formats = kFormats) {
  const MachineModel m = MachineModel::for_bandwidth(32e9, 2);
  const auto nonzeros = static_cast<uint64_t>((1.0 - sparsity) * kRows * kCols);
  return plan_linear(t, kRows, kCols, nonzeros, n, formats, m, cpu_info().with_cap(IsaLevel::avx512_core_bf16));
}

bool avx512_bf16() { return (cpu_info().usable & (kAvx512Bf16 | kAvx512Vbmi2)) == (kAvx512Bf16 | kAvx512Vbmi2); }

TEST(Planner, DenseStaysWithOnednn) {
  for (size_t n : {1, 16, 64, 256}) EXPECT_TRUE(plan(DType::bf16, 0.0, n).chosen.onednn) << "n=" << n << ": " << plan(DType::bf16, 0.0, n).why();
}

TEST(Planner, SparseWinsAtBatchOneAndPicksTheFormatBySparsity) {
  if (!avx512_bf16()) GTEST_SKIP() << "the rates are for the AVX-512 BF16 kernels";
  const LinearPlan p70 = plan(DType::bf16, 0.7, 1);
  EXPECT_FALSE(p70.chosen.onednn) << p70.why();
  EXPECT_EQ(p70.chosen.format, Format::bitmap) << p70.why();
  const LinearPlan p95 = plan(DType::bf16, 0.95, 1);
  EXPECT_EQ(p95.chosen.format, Format::csr8) << p95.why();
  EXPECT_EQ(plan(DType::int8, 0.7, 1).chosen.format, Format::bitmap) << plan(DType::int8, 0.7, 1).why();
}

// One token of very sparse bitmap bf16: packing the activations (a compress
// per 32 columns, a dot product per 32 nonzeros) beats expanding the weights
// (a dot product per 32 columns), cold 6144->32768 at 90 % 4.30 against 6.01
// ms; at 50 % and from a few tokens the expanding tiles stay faster
// (docs/benchmarks.md, "Packed activations").
TEST(Planner, VerySparseBitmapBf16PacksTheActivationsForOneToken) {
  if (!avx512_bf16()) GTEST_SKIP() << "the rates are for the AVX-512 BF16 kernels";
  const auto packs = [](const LinearPlan& p) { return p.chosen.kernel && p.chosen.kernel->fn == &lacuna_spmm_bitmap_bf16_ukernel_1x8__avx512vbmi2; };
  const std::vector<Format> bitmap{Format::bitmap};
  EXPECT_TRUE(packs(plan(DType::bf16, 0.9, 1, bitmap))) << plan(DType::bf16, 0.9, 1, bitmap).why();
  EXPECT_FALSE(packs(plan(DType::bf16, 0.5, 1, bitmap))) << plan(DType::bf16, 0.5, 1, bitmap).why();
  EXPECT_FALSE(packs(plan(DType::bf16, 0.9, 4, bitmap))) << plan(DType::bf16, 0.9, 4, bitmap).why();
}

// Between CSR and bitmap, one token of 90 % bf16 goes to CSR and its
// windows kernel (a permute per 64-column window of every 32 nonzeros):
// cold 2048->11264 at 90 %, 0.267-0.280 ms against 0.380-0.412 for the
// packed bitmap kernel, though CSR stores 23 % more bytes; at 70 % bitmap
// stays, 0.51 against 0.85 ms (docs/benchmarks.md, "CSR windows").
TEST(Planner, VerySparseBf16TakesTheCsrWindowsForOneToken) {
  if (!avx512_bf16()) GTEST_SKIP() << "the rates are for the AVX-512 BF16 kernels";
  const auto windows = [](const LinearPlan& p) { return p.chosen.kernel && p.chosen.kernel->fn == &lacuna_spmm_csr_bf16_ukernel_1x4__avx512bf16; };
  const std::vector<Format> csr_or_bitmap{Format::dense, Format::bitmap, Format::csr};
  EXPECT_TRUE(windows(plan(DType::bf16, 0.9, 1, csr_or_bitmap))) << plan(DType::bf16, 0.9, 1, csr_or_bitmap).why();
  EXPECT_EQ(plan(DType::bf16, 0.7, 1, csr_or_bitmap).chosen.format, Format::bitmap) << plan(DType::bf16, 0.7, 1, csr_or_bitmap).why();
}

// With csr8 among the formats, 90 % and 95 % bf16 go to it: 3 bytes a
// nonzero against CSR's 4 (and fewer than a bitmap's bit per weight from
// 88 %), and a chunk's windows are its block's four. Cold, one token, two
// threads: at 90 % 0.223 ms against CSR's 0.276 (2048->11264), 0.150
// against 0.155 (5632->2048); at 95 % 0.208 against 0.245 and 0.130 against
// 0.134 (docs/benchmarks.md, "A block's first chunk"). At 70 % bitmap's
// bytes stay fewer (0.73 bytes a weight against 0.91).
TEST(Planner, VerySparseBf16TakesCsr8ForOneToken) {
  if (!avx512_bf16()) GTEST_SKIP() << "the rates are for the AVX-512 BF16 kernels";
  const auto csr8_windows = [](const LinearPlan& p) { return p.chosen.kernel && p.chosen.kernel->fn == &lacuna_spmm_csr8_bf16_ukernel_1x4__avx512bf16; };
  EXPECT_TRUE(csr8_windows(plan(DType::bf16, 0.9, 1))) << plan(DType::bf16, 0.9, 1).why();
  EXPECT_TRUE(csr8_windows(plan(DType::bf16, 0.95, 1))) << plan(DType::bf16, 0.95, 1).why();
  EXPECT_EQ(plan(DType::bf16, 0.7, 1).chosen.format, Format::bitmap) << plan(DType::bf16, 0.7, 1).why();
  // int8 has no csr8 small-batch kernel: its plan never takes csr8.
  EXPECT_EQ(plan(DType::int8, 0.9, 1).chosen.format, Format::bitmap) << plan(DType::int8, 0.9, 1).why();
}

TEST(Planner, UnprunedInt8StaysDenseOnTheVnniTilesWhereTheRuntimeRunsThem) {
  const SpmmUkernel* tiles = dense_int8_tile_kernel(TensorDesc::matrix(Format::dense, DType::int8, kRows, kCols), 1, cpu_info().with_cap(IsaLevel::avx512_core_bf16));
  if (!tiles) GTEST_SKIP() << "needs the AVX-512 VNNI kernels";
  // One byte a weight dense against 1.125 in a bitmap: at batch 1 the tiles stream it dense.
  const LinearPlan p = plan(DType::int8, 0.0, 1);
  EXPECT_EQ(p.chosen.format, Format::dense) << p.why();
  EXPECT_FALSE(p.chosen.onednn) << p.why();
  EXPECT_EQ(p.chosen.kernel, tiles) << p.why();
  // Beyond kDenseInt8TileTokens the runtime takes oneDNN for dense int8, and so does the plan.
  const LinearPlan large = plan(DType::int8, 0.0, kDenseInt8TileTokens + 1);
  for (const PlanOption& o : large.considered) EXPECT_FALSE(o.format == Format::dense && !o.onednn) << large.why();
}

TEST(Planner, LargeBatchFallsBackToDenseUntilSparseIsFaster) {
  if (!avx512_bf16()) GTEST_SKIP() << "the rates are for the AVX-512 BF16 kernels";
  EXPECT_TRUE(plan(DType::bf16, 0.5, 64).chosen.onednn) << plan(DType::bf16, 0.5, 64).why();
  EXPECT_FALSE(plan(DType::bf16, 0.95, 64).chosen.onednn) << plan(DType::bf16, 0.95, 64).why();
}

// Pruned int8 at a few tokens: the VNNI tiles, one VPDPBUSD per 64 weights
// and token. Counted per 32 weights, the plan took oneDNN's dense bf16 at 8
// and 16 tokens, where the tiles ran 2.3x and 1.6x faster
// (docs/benchmarks.md, "The planner's VNNI tokens").
TEST(Planner, PrunedInt8StaysOnTheVnniTilesAtAFewTokens) {
  if (!avx512_bf16() || !(cpu_info().usable & kAvx512Vnni)) GTEST_SKIP() << "the rates are for the AVX-512 VNNI kernels";
  // The mini model's 2048->11264 at the bandwidth `bench sweep` measured then (40.9 GB/s).
  constexpr uint64_t rows = 11264, cols = 2048;
  const MachineModel m = MachineModel::for_bandwidth(40.9e9, 2);
  for (size_t n : {1, 4, 8, 16}) {
    const LinearPlan p = plan_linear(DType::int8, rows, cols, static_cast<uint64_t>(0.3 * rows * cols), n, kFormats, m,
                                     cpu_info().with_cap(IsaLevel::avx512_core_bf16));
    EXPECT_EQ(p.chosen.format, Format::bitmap) << "n=" << n << ": " << p.why();
    ASSERT_NE(p.chosen.kernel, nullptr) << "n=" << n << ": " << p.why();
    EXPECT_EQ(p.chosen.kernel->act, ActLayout::s8_padded) << "n=" << n << ": " << p.why();
  }
}

// At 16 tokens the VNNI tiles may beat both (the runtime runs dense int8 on
// them up to kDenseInt8TileTokens); of oneDNN's two, bf16 must come first.
TEST(Planner, Int8WeightsFallBackToBf16WhereOnednnS8IsSlow) {
  const LinearPlan p16 = plan(DType::int8, 0.0, 16);
  const auto onednn = std::find_if(p16.considered.begin(), p16.considered.end(), [](const PlanOption& o) { return o.onednn; });
  ASSERT_NE(onednn, p16.considered.end()) << p16.why();
  EXPECT_EQ(onednn->onednn_dtype, DType::bf16) << p16.why();
  const LinearPlan p256 = plan(DType::int8, 0.0, 256);
  ASSERT_TRUE(p256.chosen.onednn) << p256.why();
  EXPECT_EQ(p256.chosen.onednn_dtype, DType::int8) << p256.why();
}

TEST(Planner, OptionsAreSortedAndCoverEveryFormat) {
  const LinearPlan p = plan(DType::bf16, 0.7, 4);
  for (Format f : kFormats) {
    bool present = false;
    for (const PlanOption& o : p.considered) present = present || o.format == f;
    EXPECT_TRUE(present) << format_name(f) << ": " << p.why();
  }
  for (size_t i = 1; i < p.considered.size(); ++i) EXPECT_LE(p.considered[i - 1].predicted_ms, p.considered[i].predicted_ms);
  EXPECT_EQ(p.chosen.describe(), p.considered[0].describe());
  EXPECT_NE(p.why().find(" < "), std::string::npos);
}

TEST(Planner, StoredBytesMatchPackedTensors) {
  const auto w = testing::random_sparse(100, 300, 0.7, false, 3);
  for (DType t : kAllDTypes) {
    const Tensor dense = quantize_matrix(w.data(), 100, 300, t);
    const uint64_t nonzeros = tensor_stats(dense).nonzeros;
    for (Format f : {Format::dense, Format::csr, Format::bitmap})
      EXPECT_EQ(stored_bytes(f, t, 100, 300, nonzeros), pack(dense, f).payload_bytes()) << format_name(f) << " " << dtype_name(t);
  }
}

}  // namespace
}  // namespace lacuna
