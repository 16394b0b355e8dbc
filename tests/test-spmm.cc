// Every microkernel of the list against an independent dense product, and the
// dispatcher at every ISA level this machine has.
#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cstring>

#include "kernels/common/activations.h"
#include "kernels/dense-onednn/onednn-matmul.h"
#include "kernels/densified-product.h"
#include "kernels/densify.h"
#include "kernels/spmm-ukernels.h"
#include "sparse/convert.h"
#include "sparse/error.h"
#include "sparse/prune.h"
#include "tests/test-util.h"

namespace lacuna {
namespace {

// Every kernel accumulates in f32 or int32; what differs is how exactly it sees
// the activations. The bound is on |y - exact| for one output.
// For bf16 layouts: x rounded to bf16 (2^-9), and VDPBF16PS may round each
// product once more (it does on Zen 4), so twice the layout's rounding.
double tolerance(const SpmmUkernel& k, double magnitude, double x_step, double weight_abs_sum) {
  if (k.act == ActLayout::s8_padded) return 0.5 * x_step * weight_abs_sum + 1e-5 * magnitude + 1e-6;  // half a quantisation step
  return (2.0 * act_layout_rounding(k.act) + 1e-5) * magnitude + 1e-6;
}

Tensor make_weights(const SpmmUkernel& k, size_t rows, size_t cols, double sparsity, bool empty_rows, uint64_t seed) {
  // bsr: block-pruned, in the kernel's own block shape when it has one.
  const BlockShape block{k.block_rows ? k.block_rows : uint16_t{4}, k.block_cols ? k.block_cols : uint16_t{1}};
  auto w = testing::random_sparse(rows, cols, k.format == Format::bsr ? 0.0 : sparsity, empty_rows, seed);
  if (k.format == Format::bsr) prune_blocks(w.data(), rows, cols, block.rows, block.cols, sparsity);
  return pack(quantize_matrix(w.data(), rows, cols, k.dtype), k.format, block);
}

void expect_matches_dense(const SpmmUkernel& k, const Tensor& w, size_t n, uint64_t row_begin, uint64_t row_end) {
  const size_t rows = w.desc().rows(), cols = w.desc().cols();
  const auto x = testing::random_activations(n, cols, n * 31 + cols);
  const auto ref = testing::naive_product(w, x, n);
  const auto wd = dequantize(w);
  const float sentinel = 12345.0f;
  std::vector<float> y(n * rows, sentinel);
  const kernels::PreparedActivations xp = kernels::prepare_activations(k.act, x.data(), n, cols);
  k.fn(SpmmArgs{&w, xp.data, xp.ld, xp.scale, y.data(), rows, n, row_begin, row_end, xp.sum});
  for (size_t i = 0; i < n; ++i) {
    float x_max = 0;
    for (size_t c = 0; c < cols; ++c) x_max = std::max(x_max, std::fabs(x[i * cols + c]));
    for (size_t r = 0; r < rows; ++r) {
      const size_t at = i * rows + r;
      if (r < row_begin || r >= row_end) {
        ASSERT_EQ(y[at], sentinel) << k.name << " wrote row " << r << " outside its range";
        continue;
      }
      double w_abs = 0;
      for (size_t c = 0; c < cols; ++c) w_abs += std::fabs(wd[r * cols + c]);
      ASSERT_NEAR(y[at], ref.y[at], tolerance(k, ref.magnitude[at], x_max / 127.0, w_abs))
          << k.name << " " << w.desc().shape_string() << " n=" << n << " row " << r << " batch row " << i;
    }
  }
}

class Ukernel : public ::testing::TestWithParam<SpmmUkernel> {};

TEST_P(Ukernel, MatchesDenseProduct) {
  const SpmmUkernel& k = GetParam();
  if (std::string why = cpu_info().why_unavailable(k.features); !why.empty()) GTEST_SKIP() << k.name << " " << why;
  // 19 x 1100: row and column blocks of the large-batch kernels with parts left over.
  // 5 x 2600 and 3 x 9100: activation rows too wide for the widest token tiles (with_token_tile).
  // 6 x 230 and 4 x 450: a last csr8 block of 193-255 columns, which needs all four 64-column windows.
  const std::pair<size_t, size_t> shapes[] = {{1, 1}, {7, 33}, {17, 100}, {64, 64}, {45, 257}, {6, 230}, {4, 450}, {19, 1100}, {5, 2600}, {3, 9100}};
  const double sparsities[] = {0.0, 0.5, 0.9, 0.99, 1.0};
  // 150 and 256: more tokens than the widest tile, ending in a partial tile and a whole one.
  const size_t batches[] = {1, 2, 3, 4, 5, 7, 8, 15, 16, 17, 33, 64, 150, 256};
  uint64_t seed = 1;
  for (auto [rows, cols] : shapes)
    for (double s : sparsities)
      for (size_t n : batches) {
        if (n < k.min_n || (k.max_n && n > k.max_n)) continue;
        if (n >= 150 && rows * cols > 25000) continue;  // keeps the reference product cheap
        const Tensor w = make_weights(k, rows, cols, s, seed % 2 == 0, seed);
        ++seed;
        expect_matches_dense(k, w, n, 0, rows);
        if (HasFatalFailure()) return;
      }
}

// min_n is where dispatch starts to prefer a kernel, not a limit: a part of
// a batch may run on the batch's kernel (Linear::run_part), so every kernel
// must compute any batch from one token.
TEST_P(Ukernel, ComputesBatchesBelowItsMinimum) {
  const SpmmUkernel& k = GetParam();
  if (std::string why = cpu_info().why_unavailable(k.features); !why.empty()) GTEST_SKIP() << k.name << " " << why;
  if (k.min_n == 1) GTEST_SKIP() << k.name << " starts at one token";
  uint64_t seed = 7;
  for (auto [rows, cols] : {std::pair<size_t, size_t>{37, 70}, {19, 1100}})
    for (size_t n : {size_t{1}, size_t{2}, k.min_n - 1}) {
      expect_matches_dense(k, make_weights(k, rows, cols, 0.7, false, ++seed), n, 0, rows);
      if (HasFatalFailure()) return;
    }
  const Tensor w = make_weights(k, 8, 64, 0.5, false, 1);
  EXPECT_EQ(spmm_refusal_reason(k, w.desc(), 1, cpu_info()), "") << k.name;
  EXPECT_NE(spmm_decline_reason(k, w.desc(), 1, cpu_info()), "") << k.name;
}

TEST_P(Ukernel, ComputesOnlyItsRowRange) {
  const SpmmUkernel& k = GetParam();
  if (std::string why = cpu_info().why_unavailable(k.features); !why.empty()) GTEST_SKIP() << k.name << " " << why;
  const Tensor w = make_weights(k, 37, 70, 0.5, true, 99);
  const size_t n = std::max<size_t>(k.min_n, 3);
  expect_matches_dense(k, w, n, 5, 22);
  expect_matches_dense(k, w, n, 36, 37);
  expect_matches_dense(k, w, n, 10, 10);
}

// A sparse tensor whose groups are not all sparse: each row has one full run
// of 64 columns, runs of exactly 32 and 33 nonzeros, and in one 64-column
// block 16 nonzeros in its first half and 17 in its second, in a tensor of
// about 17 % density. The int8 and bf16 bitmap kernels read a sparse
// tensor's group values with 32-byte loads where they fit (HalfLoads), 64
// where not: 32 int8 or 16 bf16 values fit, 33 or 17 do not.
TEST_P(Ukernel, GroupsDenserThanTheirTensorMatchTheDenseProduct) {
  const SpmmUkernel& k = GetParam();
  if (std::string why = cpu_info().why_unavailable(k.features); !why.empty()) GTEST_SKIP() << k.name << " " << why;
  if (k.format == Format::bsr) GTEST_SKIP() << k.name << " stores blocks, not groups";
  const size_t rows = 24, cols = 1100;
  std::vector<float> w = testing::random_sparse(rows, cols, 0.97, false, 5);
  const auto fill = [&](size_t r, size_t from, size_t count) {
    for (size_t c = from; c < from + count && c < cols; ++c) w[r * cols + c] = 0.25f + 0.01f * static_cast<float>((r + c) % 50);
  };
  for (size_t r = 0; r < rows; ++r) {
    fill(r, 64 * (r % 17), 64);
    fill(r, 64 * ((r + 5) % 17), 32);
    fill(r, 64 * ((r + 9) % 17) + 7, 33);
    fill(r, 64 * ((r + 13) % 17), 16);
    fill(r, 64 * ((r + 13) % 17) + 32, 17);
  }
  const Tensor weights = pack(quantize_matrix(w.data(), rows, cols, k.dtype), k.format, BlockShape{});
  if (k.format == Format::bitmap) {
    ASSERT_LE(static_cast<double>(weights.desc().nnz), 0.2 * static_cast<double>(rows * cols));
  }
  for (size_t n : {1u, 2u, 4u, 5u, 16u, 33u}) {
    if (n < k.min_n || (k.max_n && n > k.max_n)) continue;
    expect_matches_dense(k, weights, n, 0, rows);
    if (HasFatalFailure()) return;
  }
}

// `batch` over n tokens gives every token the bits `single` gives it alone,
// over all rows and over a range that leaves rows over at both ends.
void expect_single_token_bits(const SpmmUkernel& batch_kernel, const SpmmUkernel& single, const Tensor& w, size_t n, uint64_t seed) {
  const uint64_t rows = w.desc().rows(), cols = w.desc().cols();
  const auto x = testing::random_activations(n, cols, seed);
  std::vector<float> batch(n * rows), alone(rows);
  for (auto [begin, end] : {std::pair<uint64_t, uint64_t>{0, rows}, {3, rows - 3}}) {
    // Prepared again for each range: preparing one token reuses the buffer.
    const kernels::PreparedActivations xp = kernels::prepare_activations(batch_kernel.act, x.data(), n, cols);
    batch_kernel.fn(SpmmArgs{&w, xp.data, xp.ld, xp.scale, batch.data(), rows, n, begin, end, xp.sum});
    for (size_t t = 0; t < n; ++t) {
      const kernels::PreparedActivations xt = kernels::prepare_activations(single.act, x.data() + t * cols, 1, cols);
      single.fn(SpmmArgs{&w, xt.data, xt.ld, xt.scale, alone.data(), rows, 1, begin, end, xt.sum});
      for (uint64_t r = begin; r < end; ++r)
        ASSERT_EQ(std::bit_cast<uint32_t>(batch[t * rows + r]), std::bit_cast<uint32_t>(alone[r]))
            << batch_kernel.name << " against " << single.name << " n=" << n << " token " << t << " row " << r << " rows [" << begin << ", "
            << end << ")";
    }
  }
}

// What the server's BatchPolicy::invariant relies on: a kernel that takes a
// single token gives every token of a batch the very bits it gives that token
// alone, whatever tiles of rows and tokens it walks the batch in (row counts
// and ranges that leave rows over, token counts that leave tokens over).
// The AMX tiles too, which Linear::run_part runs on parts of a batch.
TEST_P(Ukernel, EveryTokenOfABatchGetsItsSingleTokenBits) {
  const SpmmUkernel& k = GetParam();
  if (std::string why = cpu_info().why_unavailable(k.features); !why.empty()) GTEST_SKIP() << k.name << " " << why;
  if (k.min_n != 1 && !(k.features & kAmxTile)) GTEST_SKIP() << k.name << " is not chosen for one token";
  // 9 x 2600: activation rows too wide for the widest token tiles (with_token_tile).
  // 150 x 2600: more tokens than a tile, over several blocks of rows (kRowBlockBytes).
  for (auto [rows, cols] : {std::pair<uint64_t, uint64_t>{45, 300}, {9, 2600}, {150, 2600}}) {
    const Tensor w = make_weights(k, rows, cols, 0.7, true, 7);
    for (size_t n : {2u, 3u, 5u, 7u, 13u, 17u, 40u}) {
      if (k.max_n && n > k.max_n) continue;
      expect_single_token_bits(k, k, w, n, n + 1000);
      if (HasFatalFailure()) return;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(All, Ukernel, ::testing::ValuesIn(spmm_ukernels().begin(), spmm_ukernels().end()),
                         [](const ::testing::TestParamInfo<SpmmUkernel>& p) { return std::string(p.param.name); });

TEST(Dispatch, EveryFormatAndDtypeHasAKernelAtEveryIsaLevel) {
  const CpuInfo& cpu = cpu_info();
  for (IsaLevel level : kAllIsaLevels) {
    if (level > cpu.level()) continue;
    const CpuInfo capped = cpu.with_cap(level);
    for (Format f : kAllFormats)
      for (DType t : kAllDTypes)
        for (size_t n : {1, 4, 16, 64, 256}) {
          const TensorDesc d = TensorDesc::matrix(f, t, 100, 300);
          const SpmmChoice c = choose_spmm(d, n, capped);
          ASSERT_NE(c.kernel, nullptr);
          EXPECT_EQ(c.kernel->format, f);
          EXPECT_EQ(c.kernel->dtype, t);
          EXPECT_EQ(c.kernel->features & ~capped.features, 0u) << c.kernel->name << " exceeds cap " << isa_level_name(level);
          for (const auto& why : c.declined) { EXPECT_NE(why.find(": "), std::string::npos); }
        }
  }
}

TEST(Dispatch, TheChosenKernelIsRightAtEveryIsaLevel) {
  const CpuInfo& cpu = cpu_info();
  const auto wf = testing::random_sparse(48, 100, 0.0, false, 12);
  for (IsaLevel level : kAllIsaLevels) {
    if (level > cpu.level()) continue;
    const CpuInfo capped = cpu.with_cap(level);
    for (Format f : kAllFormats)
      for (DType t : kAllDTypes)
        for (BlockShape block : {BlockShape{4, 1}, BlockShape{16, 1}}) {
          if (f != Format::bsr && block.rows == 16) continue;
          auto pruned = wf;
          if (f == Format::bsr)
            prune_blocks(pruned.data(), 48, 100, block.rows, block.cols, 0.7);
          else
            prune_magnitude(pruned.data(), 48, 100, 0.7, PruneScope::per_row);
          const Tensor w = pack(quantize_matrix(pruned.data(), 48, 100, t), f, block);
          for (size_t n : {1, 5, 16, 40}) {
            const SpmmUkernel& k = *choose_spmm(w.desc(), n, capped).kernel;
            expect_matches_dense(k, w, n, 0, 48);
            ASSERT_FALSE(HasFatalFailure()) << isa_level_name(level) << " " << k.name;
          }
        }
  }
}

TEST(Dispatch, SpmmRunsTheChosenKernelOverAllRows) {
  const auto wf = testing::random_sparse(50, 90, 0.7, false, 5);
  for (Format f : kAllFormats) {
    const Tensor w = pack(quantize_matrix(wf.data(), 50, 90, DType::bf16), f);
    const auto x = testing::random_activations(3, 90, 6);
    const auto ref = testing::naive_product(w, x, 3);
    std::vector<float> y(3 * 50);
    spmm(w, x.data(), 3, y.data());
    for (size_t i = 0; i < y.size(); ++i) { ASSERT_NEAR(y[i], ref.y[i], 0x1p-8 * ref.magnitude[i] + 1e-6) << format_name(f); }
  }
}

TEST(Dispatch, DeclineReasonsNameTheCause) {
  const SpmmUkernel fake{"fake_amx", Format::bitmap, DType::bf16, ActLayout::bf16_padded, kAmxTile | kAmxBf16, 16, 0, 16, 0, 0, nullptr};
  const TensorDesc d = TensorDesc::matrix(Format::bitmap, DType::bf16, 8, 8);
  CpuInfo no_amx;
  no_amx.reported = no_amx.usable = kAvx2 | kFma;
  no_amx.features = no_amx.usable;
  EXPECT_NE(spmm_decline_reason(fake, d, 32, no_amx).find("the CPU lacks amx_tile, amx_bf16"), std::string::npos);
  CpuInfo no_permission = no_amx;
  no_permission.reported |= kAmxTile | kAmxBf16;
  EXPECT_NE(spmm_decline_reason(fake, d, 32, no_permission).find("the OS does not enable amx_tile"), std::string::npos);
  CpuInfo capped = no_permission;
  capped.usable = capped.reported;
  capped = capped.with_cap(IsaLevel::avx2);
  EXPECT_NE(spmm_decline_reason(fake, d, 32, capped).find("capped at avx2 excludes amx_tile"), std::string::npos);
  EXPECT_NE(spmm_decline_reason(fake, d, 4, capped).find("capped at avx2 excludes amx_tile"), std::string::npos);
  CpuInfo with_amx = no_permission;
  with_amx.usable = with_amx.reported;
  with_amx.features = with_amx.usable;
  EXPECT_EQ(spmm_decline_reason(fake, d, 4, with_amx), "batch 4 is outside 16..");
  EXPECT_NE(spmm_decline_reason(fake, TensorDesc::matrix(Format::csr, DType::bf16, 8, 8), 32, capped).find("not bitmap"), std::string::npos);
}

TEST(Dispatch, S8ActivationKernelsDeclineRowsTooWideForTheirInt32Sums) {
  int checked = 0;
  for (const SpmmUkernel& k : spmm_ukernels()) {
    if (k.act != ActLayout::s8_padded) continue;
    CpuInfo all;
    all.reported = all.usable = all.features = k.features;
    const TensorDesc fits = TensorDesc::matrix(k.format, k.dtype, 8, kS8PaddedMaxColumns);
    const TensorDesc too_wide = TensorDesc::matrix(k.format, k.dtype, 8, kS8PaddedMaxColumns + 64);
    EXPECT_EQ(spmm_decline_reason(k, fits, k.min_n, all), "") << k.name;
    EXPECT_NE(spmm_decline_reason(k, too_wide, k.min_n, all).find("1048640 columns overflow its int32 sums"), std::string::npos) << k.name;
    const SpmmChoice choice = choose_spmm(too_wide, k.min_n, all);
    EXPECT_NE(choice.kernel, &k) << k.name;
    EXPECT_NE(choice.kernel->act, ActLayout::s8_padded) << k.name;
    ++checked;
  }
  if (checked == 0) GTEST_SKIP() << "no kernel on s8 activations is compiled in";
}

// The CSR windows kernel permutes 16-bit column lanes: wider rows (32-bit
// indices) go to another CSR kernel, never to it.
TEST(Dispatch, CsrWindowsKernelDeclinesRowsWithThirtyTwoBitIndices) {
  const SpmmUkernel& k = *std::find_if(spmm_ukernels().begin(), spmm_ukernels().end(),
                                       [](const SpmmUkernel& u) { return u.fn == &lacuna_spmm_csr_bf16_ukernel_1x4__avx512bf16; });
  CpuInfo all;
  all.reported = all.usable = all.features = k.features;
  EXPECT_EQ(spmm_decline_reason(k, TensorDesc::matrix(Format::csr, DType::bf16, 8, 65536), 1, all), "");
  const TensorDesc too_wide = TensorDesc::matrix(Format::csr, DType::bf16, 8, 65537);
  EXPECT_NE(spmm_decline_reason(k, too_wide, 1, all).find("65537 columns need 32-bit indices"), std::string::npos);
  EXPECT_NE(choose_spmm(too_wide, 1, all).kernel, &k);
}

// BatchPolicy::invariant also lets a kernel on s8 activations hand a batch
// to another such kernel (Linear::choice_under): the AMX tiles must give
// each token the bits the single-token VNNI kernel gives it alone.
TEST(Dispatch, KernelsOnS8ActivationsGiveEveryTokenTheSingleTokenKernelsBits) {
  int checked = 0;
  for (const SpmmUkernel& k : spmm_ukernels()) {
    if (k.act != ActLayout::s8_padded || k.min_n == 1 || !cpu_info().why_unavailable(k.features).empty()) continue;
    const SpmmUkernel* single = nullptr;
    for (const SpmmUkernel& s : spmm_ukernels())
      if (!single && s.format == k.format && s.dtype == k.dtype && s.act == k.act && s.min_n == 1 && cpu_info().why_unavailable(s.features).empty())
        single = &s;
    ASSERT_NE(single, nullptr) << "no single-token kernel on s8 activations beside " << k.name;
    // 40 x 1024: whole groups, which dense AMX tiles read in place (but in the last, short block of rows).
    for (auto [rows, cols] : {std::pair<uint64_t, uint64_t>{45, 300}, {9, 2600}, {150, 2600}, {40, 1024}}) {
      const Tensor w = make_weights(k, rows, cols, 0.7, true, 11);
      for (size_t n : {6u, 7u, 10u, 16u, 17u, 33u, 64u}) {
        if (n < k.min_n || (k.max_n && n > k.max_n)) continue;
        expect_single_token_bits(k, *single, w, n, n + 2000);
        if (HasFatalFailure()) return;
      }
    }
    ++checked;
  }
  if (checked == 0) GTEST_SKIP() << "no batch kernel on s8 activations runs on this CPU (AMX)";
}

// At the widest row they accept, the largest products (weights +-127, moved
// to 255 and 1, times activations of +-127) must not overflow their int32
// lanes or the row's total, one token alone or in tiles of 4, 7, 8 and 16.
// Also at 2^17 columns, the widest row whose total the AMX tiles keep in
// int32 (one chunk, spmm-int8-amx.cc): 2^17 x 127 x 127 is just below 2^31.
TEST(Dispatch, S8ActivationKernelsSumTheWidestRowsTheyAcceptExactly) {
  int checked = 0;
  for (const size_t cols : {size_t{1} << 17, size_t{kS8PaddedMaxColumns}}) {
    std::vector<float> w(2 * cols);
    std::fill(w.begin(), w.begin() + cols, 1.0f);
    std::fill(w.begin() + cols, w.end(), -1.0f);
    for (const SpmmUkernel& k : spmm_ukernels()) {
      if (k.act != ActLayout::s8_padded || !cpu_info().why_unavailable(k.features).empty()) continue;
      const Tensor weights = pack(quantize_matrix(w.data(), 2, cols, k.dtype), k.format, BlockShape{});
      for (size_t n : {1, 4, 7, 8, 16}) {
        if (n < k.min_n) continue;
        std::vector<float> x(n * cols);
        for (size_t t = 0; t < n; ++t) std::fill(x.begin() + t * cols, x.begin() + (t + 1) * cols, t % 2 ? 1.0f : -1.0f);
        std::vector<float> y(n * 2);
        const kernels::PreparedActivations xp = kernels::prepare_activations(k.act, x.data(), n, cols);
        k.fn(SpmmArgs{&weights, xp.data, xp.ld, xp.scale, y.data(), 2, n, 0, 2, xp.sum});
        for (size_t t = 0; t < n; ++t) {
          const double x_sign = t % 2 ? 1.0 : -1.0;
          EXPECT_NEAR(y[t * 2], x_sign * static_cast<double>(cols), 1e-5 * static_cast<double>(cols)) << k.name << " n=" << n << " token " << t;
          EXPECT_NEAR(y[t * 2 + 1], -x_sign * static_cast<double>(cols), 1e-5 * static_cast<double>(cols)) << k.name << " n=" << n << " token " << t;
        }
      }
      ++checked;
    }
  }
  if (checked == 0) GTEST_SKIP() << "no kernel on s8 activations runs on this CPU";
}

TEST(CpuFeatures, MaxIsaCapsFeaturesAndRejectsUnknownLevels) {
  const CpuInfo scalar = probe_cpu("scalar");
  EXPECT_EQ(scalar.features, 0u);
  EXPECT_EQ(scalar.level(), IsaLevel::scalar);
  EXPECT_TRUE(scalar.capped_by_env);
  const CpuInfo avx2 = probe_cpu("avx2");
  EXPECT_EQ(avx2.features & kAvx512F, 0u);
  try {
    probe_cpu("avx9000");
    FAIL() << "an unknown LACUNA_MAX_ISA was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("avx512_core_bf16"), std::string::npos) << e.what();
  }
}

TEST(CpuFeatures, UsableIsReportedAndLevelsNest) {
  const CpuInfo& cpu = cpu_info();
  EXPECT_EQ(cpu.usable & ~cpu.reported, 0u);
  for (size_t i = 1; i < std::size(kAllIsaLevels); ++i) {
    EXPECT_EQ(isa_level_allows(kAllIsaLevels[i - 1]) & ~isa_level_allows(kAllIsaLevels[i]), 0u);
    EXPECT_EQ(isa_level_requires(kAllIsaLevels[i]) & ~isa_level_allows(kAllIsaLevels[i]), 0u);
  }
}

}  // namespace
}  // namespace lacuna

namespace lacuna {
namespace {

TEST(OnednnDense, MatchesTheDenseProduct) {
  const auto wf = testing::random_sparse(70, 130, 0.3, false, 8);
  for (DType t : kAllDTypes)
    for (auto mode : {OnednnMatmul::Weights::packed, OnednnMatmul::Weights::in_place}) {
      const Tensor w = quantize_matrix(wf.data(), 70, 130, t);
      OnednnMatmul mm(w, mode);
      for (size_t n : {1, 5, 17, 64, 5}) {  // 5 and 17 run primitives of 8 and 32 rows
      const auto x = testing::random_activations(n, 130, 9);
      const auto ref = testing::naive_product(w, x, n);
      std::vector<float> y(n * 70);
      mm.run(x.data(), n, y.data());
      // bf16 rounds x; int8 quantises x with one scale per token.
      const double rel = t == DType::f32 ? 1e-5 : t == DType::bf16 ? 0x1p-8 : 1.0 / 127;
      for (size_t i = 0; i < y.size(); ++i) {
        ASSERT_NEAR(y[i], ref.y[i], rel * ref.magnitude[i] + 1e-5) << dtype_name(t) << " n=" << n << " at " << i << " (" << mm.implementation(n) << ")";
      }
      }
    }
}

TEST(OnednnDense, NonFiniteActivationsGiveNonFiniteOutputs) {
  const auto wf = testing::random_sparse(8, 32, 0.0, false, 2);
  for (DType t : kAllDTypes) {
    OnednnMatmul mm(quantize_matrix(wf.data(), 8, 32, t));
    auto x = testing::random_activations(1, 32, 3);
    x[7] = NAN;
    std::vector<float> y(8);
    mm.run(x.data(), 1, y.data());
    for (float v : y) EXPECT_FALSE(std::isfinite(v)) << dtype_name(t);
  }
}

// Expanding a bitmap weight back into dense rows (for oneDNN at large
// batches) must give exactly the values sparse/'s own unpack gives: every
// dtype, rows with and without a partial last group, empty rows.
TEST(Densify, BitmapMatchesUnpackExactly) {
  constexpr uint64_t kAvx512 = kAvx512F | kAvx512Bw | kAvx512Vbmi2;
  for (DType t : kAllDTypes)
    for (size_t cols : {1, 37, 64, 200}) {
      const auto wf = testing::random_sparse(29, cols, 0.6, true, cols);
      const Tensor w = pack(quantize_matrix(wf.data(), 29, cols, t), Format::bitmap);
      const Tensor want = unpack(w);
      const size_t bytes = 29 * cols * dtype_size(t);
      std::vector<std::byte> got(bytes, std::byte{0x5a});
      densify_bitmap(w, got.data(), 0, 29);
      EXPECT_EQ(std::memcmp(got.data(), want.data(), bytes), 0) << dtype_name(t) << " cols " << cols;
      // A block of rows lands at the start of `out` (row 5 first).
      const size_t row_bytes = cols * dtype_size(t);
      std::fill(got.begin(), got.end(), std::byte{0x5a});
      densify_bitmap(w, got.data(), 5, 17);
      EXPECT_EQ(std::memcmp(got.data(), want.data() + 5 * row_bytes, 12 * row_bytes), 0) << "rows 5..16 " << dtype_name(t) << " cols " << cols;
      EXPECT_EQ(got[12 * row_bytes], std::byte{0x5a});
      if ((cpu_info().features & kAvx512) == kAvx512) {
        std::fill(got.begin(), got.end(), std::byte{0x5a});
        densify_bitmap_rows_avx512(w, got.data(), 0, 29);
        EXPECT_EQ(std::memcmp(got.data(), want.data(), bytes), 0) << "avx512 " << dtype_name(t) << " cols " << cols;
      }
    }
  const auto wf = testing::random_sparse(4, 8, 0.5, false, 1);
  std::vector<std::byte> out(64);
  EXPECT_THROW(densify_bitmap(pack(quantize_matrix(wf.data(), 4, 8, DType::bf16), Format::csr), out.data(), 0, 4), Error);
}

// bf16 weights widened to f32 on the way (for oneDNN's f32 matmul) must be
// exactly unpack's bf16 values, on the AVX-512 path and the portable one.
TEST(Densify, Bf16BitmapWidenedToF32MatchesUnpackExactly) {
  constexpr uint64_t kAvx512 = kAvx512F | kAvx512Bw | kAvx512Vbmi2;
  for (size_t cols : {1, 16, 17, 37, 64, 200}) {
    const auto wf = testing::random_sparse(29, cols, 0.6, true, cols);
    const Tensor w = pack(quantize_matrix(wf.data(), 29, cols, DType::bf16), Format::bitmap);
    const Tensor want = unpack(w);
    std::vector<float> expected(29 * cols);
    for (size_t i = 0; i < expected.size(); ++i) expected[i] = bf16_to_f32(reinterpret_cast<const uint16_t*>(want.data())[i]);
    std::vector<float> got(29 * cols, -7.0f);
    densify_bitmap_f32(w, got.data(), 0, 29);
    EXPECT_EQ(got, expected) << "cols " << cols;
    std::fill(got.begin(), got.end(), -7.0f);
    densify_bitmap_f32(w, got.data(), 5, 17);
    EXPECT_TRUE(std::equal(got.begin(), got.begin() + 12 * cols, expected.begin() + 5 * cols)) << "rows 5..16, cols " << cols;
    EXPECT_EQ(got[12 * cols], -7.0f);
    if ((cpu_info().features & kAvx512) == kAvx512) {
      std::fill(got.begin(), got.end(), -7.0f);
      densify_bitmap_rows_f32_avx512(w, got.data(), 0, 29);
      EXPECT_EQ(got, expected) << "avx512 cols " << cols;
    }
  }
  std::vector<float> out(32);
  const auto wf = testing::random_sparse(4, 8, 0.5, false, 1);
  EXPECT_THROW(densify_bitmap_f32(pack(quantize_matrix(wf.data(), 4, 8, DType::f32), Format::bitmap), out.data(), 0, 4), Error);
  EXPECT_THROW(densify_bitmap_f32(pack(quantize_matrix(wf.data(), 4, 8, DType::bf16), Format::bitmap), out.data(), 2, 5), Error);
}

// An in-place oneDNN product rebound to other weights computes with those
// (int8: with their row scales too), and refuses other shapes and dtypes.
TEST(OnednnDense, RebindReadsTheNewWeights) {
  const auto a = testing::random_sparse(70, 130, 0.3, false, 1), b = testing::random_sparse(70, 130, 0.3, false, 2);
  const auto x = testing::random_activations(20, 130, 3);
  for (DType t : {DType::bf16, DType::int8}) {
    const Tensor wa = quantize_matrix(a.data(), 70, 130, t), wb = quantize_matrix(b.data(), 70, 130, t);
    OnednnMatmul mm(wa, OnednnMatmul::Weights::in_place);
    std::vector<float> y(20 * 70), want(20 * 70);
    mm.rebind(wb);
    mm.run(x.data(), 20, y.data());
    OnednnMatmul(wb, OnednnMatmul::Weights::in_place).run(x.data(), 20, want.data());
    EXPECT_EQ(y, want) << dtype_name(t);
    EXPECT_THROW(mm.rebind(quantize_matrix(a.data(), 130, 70, t)), Error);
    EXPECT_THROW(OnednnMatmul(wa).rebind(wb), Error);
  }
  OnednnMatmul bf16(quantize_matrix(a.data(), 70, 130, DType::bf16), OnednnMatmul::Weights::in_place);
  EXPECT_THROW(bf16.rebind(quantize_matrix(a.data(), 70, 130, DType::int8)), Error);
}

// Activations prepared once feed products of several weights of the same
// width, each writing its own columns of a wider output: the same bits as
// each product run alone, nothing written outside its columns.
TEST(OnednnDense, PreparedSourceFeedsProductsIntoTheirColumns) {
  const auto a = testing::random_sparse(70, 130, 0.3, false, 1), b = testing::random_sparse(30, 130, 0.3, false, 2);
  constexpr size_t kLd = 105;
  for (DType t : kAllDTypes)
    for (size_t n : {5, 16}) {
      const auto x = testing::random_activations(n, 130, 3);
      OnednnMatmul ma(quantize_matrix(a.data(), 70, 130, t)), mb(quantize_matrix(b.data(), 30, 130, t));
      std::vector<float> want_a(n * 70), want_b(n * 30), y(n * kLd, -7.0f);
      ma.run(x.data(), n, want_a.data());
      mb.run(x.data(), n, want_b.data());
      OnednnSource source;
      OnednnMatmul::prepare(t, 130, x.data(), n, source);
      ma.run(source, y.data(), kLd);
      mb.run(source, y.data() + 70, kLd);
      for (size_t i = 0; i < n; ++i) {
        EXPECT_TRUE(std::equal(want_a.begin() + i * 70, want_a.begin() + (i + 1) * 70, y.begin() + i * kLd)) << dtype_name(t) << " n=" << n;
        EXPECT_TRUE(std::equal(want_b.begin() + i * 30, want_b.begin() + (i + 1) * 30, y.begin() + i * kLd + 70)) << dtype_name(t) << " n=" << n;
        for (size_t c = 100; c < kLd; ++c) EXPECT_EQ(y[i * kLd + c], -7.0f) << dtype_name(t) << " n=" << n;
      }
      EXPECT_THROW(ma.run(source, y.data(), 69), Error);
      OnednnMatmul::prepare(t, 131, x.data(), 1, source);
      EXPECT_THROW(ma.run(source, y.data(), kLd), Error);
      OnednnMatmul::prepare(t == DType::int8 ? DType::bf16 : DType::int8, 130, x.data(), 1, source);
      EXPECT_THROW(ma.run(source, y.data(), kLd), Error);
    }
}

// A bitmap weight expanded and multiplied block by block (about 1 MB of
// expanded rows each, on all threads) gives the dense product: weights of a
// few blocks and a shorter last one, in their own dtype and bf16 widened to
// f32; other formats and expansions are refused.
TEST(Densify, BlockProductMatchesTheDenseProduct) {
  constexpr size_t kRows = 700, kCols = 1000;  // bf16: 1.4 MB, 2 blocks; f32: 2.8 MB, 3 blocks
  const auto wf = testing::random_sparse(kRows, kCols, 0.6, true, 4);
  for (DType t : kAllDTypes)
    for (DType expanded : {t, DType::f32}) {
      if (expanded == DType::f32 && t == DType::int8) continue;
      const Tensor w = pack(quantize_matrix(wf.data(), kRows, kCols, t), Format::bitmap);
      for (size_t n : {1, 37}) {
        const auto x = testing::random_activations(n, kCols, 5);
        const auto ref = testing::naive_product(w, x, n);
        std::vector<float> y(n * kRows);
        densified_product(w, expanded, x.data(), n, y.data());
        const double rel = expanded == DType::f32 ? 1e-5 : t == DType::bf16 ? 0x1p-8 : 1.0 / 127;
        for (size_t i = 0; i < y.size(); ++i)
          ASSERT_NEAR(y[i], ref.y[i], rel * ref.magnitude[i] + 1e-5) << dtype_name(t) << " to " << dtype_name(expanded) << " n=" << n << " at " << i;
      }
    }
  std::vector<float> x(kCols), y(kRows);
  EXPECT_THROW(densified_product(pack(quantize_matrix(wf.data(), kRows, kCols, DType::bf16), Format::csr), DType::bf16, x.data(), 1, y.data()), Error);
  EXPECT_THROW(densified_product(pack(quantize_matrix(wf.data(), kRows, kCols, DType::int8), Format::bitmap), DType::f32, x.data(), 1, y.data()), Error);
}

TEST(OnednnDense, RefusesSparseWeights) {
  const auto wf = testing::random_sparse(8, 8, 0.5, false, 1);
  EXPECT_THROW(OnednnMatmul(pack(quantize_matrix(wf.data(), 8, 8, DType::bf16), Format::csr)), Error);
}

}  // namespace
}  // namespace lacuna

namespace lacuna {
namespace {

// Large enough that the driver splits the rows over every OpenMP thread.
TEST(Driver, ThreadedSplitMatchesTheDenseProduct) {
  const auto wf = testing::random_sparse(2003, 1000, 0.7, true, 17);
  for (Format f : {Format::bitmap, Format::csr, Format::dense})
    for (size_t n : {1, 3, 20}) {
      const Tensor w = pack(quantize_matrix(wf.data(), 2003, 1000, DType::bf16), f);
      const auto x = testing::random_activations(n, 1000, 4);
      const auto ref = testing::naive_product(w, x, n);
      std::vector<float> y(n * 2003);
      spmm(w, x.data(), n, y.data());
      for (size_t i = 0; i < y.size(); ++i) {
        ASSERT_NEAR(y[i], ref.y[i], 0x1p-8 * ref.magnitude[i] + 1e-5) << format_name(f) << " n=" << n << " at " << i;
      }
    }
}

TEST(Driver, ProductsInOneRegionGetTheBitsOfTheirOwnRuns) {
  struct Case {
    DType dtype;
    Format format;
    size_t rows, cols, n;
  };
  // Large enough to split over the threads, with a product of no tokens among them.
  const std::vector<Case> cases{{DType::int8, Format::bitmap, 1500, 900, 3},
                                {DType::bf16, Format::bitmap, 700, 1300, 5},
                                {DType::f32, Format::csr, 900, 700, 1},
                                {DType::int8, Format::bitmap, 300, 500, 0}};
  std::vector<Tensor> weights;
  std::vector<std::vector<float>> xs, ys;
  std::vector<SpmmJob> jobs;
  for (size_t i = 0; i < cases.size(); ++i) {
    const Case& c = cases[i];
    const auto wf = testing::random_sparse(c.rows, c.cols, 0.7, true, 40 + i);
    weights.push_back(pack(quantize_matrix(wf.data(), c.rows, c.cols, c.dtype), c.format));
    xs.push_back(testing::random_activations(c.n, c.cols, 50 + i));
    ys.emplace_back(c.n * c.rows, 12345.0f);
  }
  for (size_t i = 0; i < cases.size(); ++i)
    jobs.push_back({choose_spmm(weights[i].desc(), std::max<size_t>(cases[i].n, 1)).kernel, &weights[i], xs[i].data(), cases[i].n, ys[i].data()});
  spmm_run_all(jobs);
  for (size_t i = 0; i < cases.size(); ++i) {
    const Case& c = cases[i];
    std::vector<float> alone(c.n * c.rows);
    spmm_run(*jobs[i].kernel, weights[i], xs[i].data(), c.n, alone.data());
    const auto ref = testing::naive_product(weights[i], xs[i], c.n);
    for (size_t k = 0; k < alone.size(); ++k) {
      ASSERT_EQ(ys[i][k], alone[k]) << jobs[i].kernel->name << " output " << k;
      ASSERT_NEAR(ys[i][k], ref.y[k], 0.02 * ref.magnitude[k] + 1e-4) << jobs[i].kernel->name << " output " << k;
    }
  }
  // A kernel that declines its product stops the call before any product runs.
  const auto wf = testing::random_sparse(64, 64, 0.5, false, 9);
  const Tensor csr = pack(quantize_matrix(wf.data(), 64, 64, DType::bf16), Format::csr);
  std::vector<float> x(64, 1.0f), y(64, 12345.0f);
  jobs.push_back({choose_spmm(TensorDesc::matrix(Format::bitmap, DType::bf16, 64, 64), 1).kernel, &csr, x.data(), 1, y.data()});
  std::fill(ys[0].begin(), ys[0].end(), 12345.0f);
  EXPECT_THROW(spmm_run_all(jobs), Error);
  EXPECT_EQ(ys[0][0], 12345.0f);
  EXPECT_EQ(y[0], 12345.0f);
}

TEST(Driver, RefusesAKernelThatDoesNotFitTheWeights) {
  const auto wf = testing::random_sparse(8, 8, 0.5, false, 1);
  const Tensor csr = pack(quantize_matrix(wf.data(), 8, 8, DType::bf16), Format::csr);
  const SpmmUkernel& bitmap_kernel = *choose_spmm(TensorDesc::matrix(Format::bitmap, DType::bf16, 8, 8), 1).kernel;
  std::vector<float> x(8, 1.0f), y(8);
  EXPECT_THROW(spmm_run(bitmap_kernel, csr, x.data(), 1, y.data()), Error);
}

TEST(Driver, WideRowsUse32BitIndices) {
  const auto wf = testing::random_sparse(3, 70000, 0.9, false, 2);
  for (DType t : kAllDTypes)
    for (Format f : {Format::csr, Format::bitmap}) {
      const Tensor w = pack(quantize_matrix(wf.data(), 3, 70000, t), f);
      for (size_t n : {size_t{2}, size_t{16}}) {  // small- and large-batch kernels
        const auto x = testing::random_activations(n, 70000, 5);
        const auto ref = testing::naive_product(w, x, n);
        std::vector<float> y(n * 3);
        spmm(w, x.data(), n, y.data());
        for (size_t i = 0; i < y.size(); ++i) {
          ASSERT_NEAR(y[i], ref.y[i], 0x1p-7 * ref.magnitude[i] + 1e-4) << format_name(f) << " " << dtype_name(t) << " n=" << n;
        }
      }
    }
}

TEST(Driver, NonFiniteActivationsGiveNonFiniteOutputsInEveryKernel) {
  const auto wf = testing::random_sparse(16, 64, 0.5, false, 3);
  for (const SpmmUkernel& k : spmm_ukernels()) {
    if (!cpu_info().why_unavailable(k.features).empty()) continue;
    const size_t n = std::max<size_t>(k.min_n, 1);
    const Tensor w = make_weights(k, 16, 64, 0.0, false, 3);
    auto x = testing::random_activations(n, 64, 6);
    x[5] = NAN;  // token 0
    std::vector<float> y(n * 16);
    spmm_run(k, w, x.data(), n, y.data());
    for (size_t r = 0; r < 16; ++r) EXPECT_FALSE(std::isfinite(y[r])) << k.name << " row " << r << " = " << y[r];
  }
}

}  // namespace
}  // namespace lacuna
