// Round trips dense -> format -> dense for every format x dtype over shapes with
// tails, sparsities 0 to 1, empty rows, single rows and columns.
#include <gtest/gtest.h>

#include <cstring>
#include <tuple>

#include "sparse/convert.h"
#include "sparse/element.h"
#include "sparse/error.h"
#include "sparse/stats.h"
#include "tests/test-util.h"

namespace lacuna {
namespace {

struct Variant {
  Format format;
  BlockShape block;
  std::string name() const {
    return std::string(format_name(format)) + (format == Format::bsr ? std::to_string(block.rows) + "x" + std::to_string(block.cols) : "");
  }
};

const Variant kVariants[] = {{Format::dense, {}},         {Format::csr, {}},          {Format::bitmap, {}},       {Format::csr8, {}},
                             {Format::bsr, {1, 4}},       {Format::bsr, {4, 1}},      {Format::bsr, {16, 1}},
                             {Format::bsr, {4, 4}},       {Format::bsr, {3, 5}}};
const std::pair<size_t, size_t> kShapes[] = {{1, 1}, {1, 77}, {77, 1}, {5, 16}, {17, 33}, {33, 65}, {64, 64}, {31, 129}, {4, 256}, {4, 513}, {3, 70000}};
const double kSparsities[] = {0.0, 0.5, 0.9, 0.99, 1.0};

using Param = std::tuple<Variant, DType, std::pair<size_t, size_t>, double, bool>;

class RoundTrip : public ::testing::TestWithParam<Param> {};

uint64_t count_nonzeros(const Tensor& dense) {
  return tensor_stats(dense).nonzeros;
}

TEST_P(RoundTrip, UnpackGivesBackEveryValue) {
  const auto& [variant, dtype, shape, sparsity, empty_rows] = GetParam();
  const auto [rows, cols] = shape;
  const auto w = testing::random_sparse(rows, cols, sparsity, empty_rows, rows * 1000 + cols);
  const Tensor dense = quantize_matrix(w.data(), rows, cols, dtype);
  const Tensor packed = pack(dense, variant.format, variant.block);

  EXPECT_EQ(check_payload(packed), "");
  EXPECT_EQ(packed.desc().format, variant.format);
  EXPECT_EQ(packed.desc().dtype, dtype);
  EXPECT_EQ(packed.desc().rows(), rows);
  EXPECT_EQ(packed.desc().cols(), cols);
  if (variant.format != Format::dense && variant.format != Format::bsr) { EXPECT_EQ(packed.desc().nnz, count_nonzeros(dense)); }
  EXPECT_EQ(tensor_stats(packed).nonzeros, count_nonzeros(dense));

  const Tensor back = unpack(packed);
  ASSERT_EQ(back.desc().format, Format::dense);
  EXPECT_EQ(dequantize(back), dequantize(dense));
  EXPECT_EQ(dequantize(packed), dequantize(dense));
  if (sparsity == 1.0) { EXPECT_EQ(count_nonzeros(back), 0u); }
}

std::string param_name(const ::testing::TestParamInfo<Param>& info) {
  const auto& [variant, dtype, shape, sparsity, empty_rows] = info.param;
  return variant.name() + "_" + dtype_name(dtype) + "_" + std::to_string(shape.first) + "x" + std::to_string(shape.second) + "_s" +
         std::to_string(static_cast<int>(sparsity * 100)) + (empty_rows ? "_emptyrows" : "");
}

INSTANTIATE_TEST_SUITE_P(AllFormats, RoundTrip,
                         ::testing::Combine(::testing::ValuesIn(kVariants), ::testing::ValuesIn(kAllDTypes), ::testing::ValuesIn(kShapes),
                                            ::testing::ValuesIn(kSparsities), ::testing::Bool()),
                         param_name);

TEST(Formats, IndexWidthFollowsColumns) {
  EXPECT_EQ(index_size(65536), 2u);
  EXPECT_EQ(index_size(65537), 4u);
  const auto w = testing::random_sparse(2, 70000, 0.9, false, 1);
  const Tensor csr = pack(quantize_matrix(w.data(), 2, 70000, DType::f32), Format::csr);
  EXPECT_EQ(csr.layout()[Section::col_idx].bytes, csr.desc().nnz * 4);
}

TEST(Formats, BitmapGroupMatchesVectorWidth) {
  EXPECT_EQ(bitmap_group_width(DType::f32), 16u);
  EXPECT_EQ(bitmap_group_width(DType::bf16), 32u);
  EXPECT_EQ(bitmap_group_width(DType::int8), 64u);
}

TEST(Formats, SectionsAreAligned) {
  const auto w = testing::random_sparse(33, 65, 0.5, false, 2);
  for (Format f : kAllFormats)
    for (DType t : kAllDTypes) {
      const Tensor p = pack(quantize_matrix(w.data(), 33, 65, t), f);
      for (const SectionSpan& s : p.layout().sections) { EXPECT_EQ(s.offset % kSectionAlign, 0u); }
      EXPECT_EQ(reinterpret_cast<uintptr_t>(p.data()) % kSectionAlign, 0u);
    }
}

TEST(Formats, DescriptionsCannotOverflowTheElementCount) {
  TensorDesc d = TensorDesc::matrix(Format::dense, DType::f32, uint64_t{1} << 32, uint64_t{1} << 32);
  EXPECT_NE(check_desc(d).find("2^40"), std::string::npos) << check_desc(d);
  d.ndim = 4;
  d.shape = {1u << 16, 1u << 16, 1u << 16, 1u << 16};  // 2^64: would wrap to 0
  EXPECT_NE(check_desc(d).find("2^40"), std::string::npos) << check_desc(d);
  EXPECT_THROW(Tensor::allocate(d), Error);
}

TEST(Formats, BsrEdgePaddingMustBeZero) {
  const auto w = testing::random_sparse(6, 7, 0.0, false, 21);  // 4x4 blocks: both edges padded
  const Tensor bsr = pack(quantize_matrix(w.data(), 6, 7, DType::f32), Format::bsr, BlockShape{4, 4});
  ASSERT_EQ(check_payload(bsr), "");
  Tensor copy = Tensor::allocate(bsr.desc());
  std::memcpy(copy.mutable_data(), bsr.data(), bsr.payload_bytes());
  copy.mutable_section<float>(Section::values)[3] = NAN;  // block (0,0), row 0, column 3: inside the matrix
  EXPECT_EQ(check_payload(copy), "");
  const uint64_t last = bsr.desc().nnz - 1;  // block (1,1): rows 4..7, columns 4..7; row 6 is past the edge
  copy.mutable_section<float>(Section::values)[last * 16 + 2 * 4 + 0] = NAN;
  EXPECT_NE(check_payload(copy).find("past the edge"), std::string::npos) << check_payload(copy);
}

TEST(Formats, NegativeZeroIsNotStored) {
  const float w[4] = {-0.0f, 1.0f, 0.0f, -2.0f};
  const Tensor p = pack(quantize_matrix(w, 1, 4, DType::bf16), Format::csr);
  EXPECT_EQ(p.desc().nnz, 2u);
}

TEST(Formats, PackRejectsNonDenseSourceAndBadBlocks) {
  const auto w = testing::random_sparse(4, 4, 0.5, false, 3);
  const Tensor dense = quantize_matrix(w.data(), 4, 4, DType::f32);
  EXPECT_THROW(pack(pack(dense, Format::csr), Format::bitmap), Error);
  EXPECT_THROW(pack(dense, Format::bsr, BlockShape{0, 4}), Error);
  EXPECT_THROW(pack(dense, Format::bsr, BlockShape{65, 1}), Error);
}

TEST(Formats, CheckPayloadFindsBrokenIndices) {
  const auto w = testing::random_sparse(8, 40, 0.5, false, 4);
  Tensor csr = pack(quantize_matrix(w.data(), 8, 40, DType::f32), Format::csr);
  Tensor copy = Tensor::allocate(csr.desc());
  std::memcpy(copy.mutable_data(), csr.data(), csr.payload_bytes());
  copy.mutable_section<uint16_t>(Section::col_idx)[0] = 40;
  EXPECT_NE(check_payload(copy).find("past 40"), std::string::npos) << check_payload(copy);
  copy.mutable_section<uint16_t>(Section::col_idx)[0] = 0;
  copy.mutable_section<uint64_t>(Section::row_ptr)[3] = 1000;
  EXPECT_NE(check_payload(copy).find("pointer 3"), std::string::npos) << check_payload(copy);
}

// csr8's counts and byte offsets, each broken in turn, on 2 rows of 300
// columns (a full block of 256 and a last one of 44).
TEST(Formats, CheckPayloadFindsBrokenCsr8Blocks) {
  std::vector<float> w(2 * 300, 0.0f);
  for (const int c : {3, 7, 260, 299}) w[c] = 1.0f;  // row 0: two nonzeros in each block
  w[300 + 5] = 2.0f;                                  // row 1: one, in its first block
  const Tensor csr8 = pack(quantize_matrix(w.data(), 2, 300, DType::bf16), Format::csr8);
  ASSERT_EQ(check_payload(csr8), "");
  ASSERT_EQ(csr8.desc().nnz, 5u);
  const auto broken = [&](auto&& change) {
    Tensor copy = Tensor::allocate(csr8.desc());
    std::memcpy(copy.mutable_data(), csr8.data(), csr8.payload_bytes());
    change(copy);
    return check_payload(copy);
  };
  const auto offsets = [](Tensor& t) { return t.mutable_section<uint8_t>(Section::col_idx); };
  const auto counts = [](Tensor& t) { return t.mutable_section<uint16_t>(Section::block_counts); };
  EXPECT_NE(broken([&](Tensor& t) { offsets(t)[3] = 44; }).find("row 0 block 1 has column offset 44 past its 44 columns"), std::string::npos);
  EXPECT_NE(broken([&](Tensor& t) { offsets(t)[1] = 3; }).find("row 0 block 0 has unsorted or repeated columns"), std::string::npos);
  EXPECT_NE(broken([&](Tensor& t) { counts(t)[1] = 257; }).find("row 0 block 1 counts 257 nonzeros in 44 columns"), std::string::npos);
  EXPECT_NE(broken([&](Tensor& t) { counts(t)[1] = 1; }).find("row 0 block counts hold 3 values but its pointers span 4"), std::string::npos);
  EXPECT_NE(broken([&](Tensor& t) { counts(t)[2] = 2; }).find("row 1 block 0 counts more nonzeros than its row's pointers span"), std::string::npos);
}

}  // namespace
}  // namespace lacuna
