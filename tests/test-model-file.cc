// The .lacuna file: round trip, and every kind of damage gives a clear error
// that names the problem (and the tensor), never a crash.
#include <gtest/gtest.h>
#include <xxhash.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "sparse/convert.h"
#include "sparse/error.h"
#include "sparse/model-file-layout.h"
#include "sparse/model-file.h"
#include "sparse/prune.h"
#include "tests/test-util.h"

namespace lacuna {
namespace {

namespace fl = file_layout;
using Bytes = std::vector<char>;

std::string temp_path(const std::string& name) {
  return (std::filesystem::temp_directory_path() / ("lacuna-test-" + std::to_string(::getpid()) + "-" + name)).string();
}

Bytes read_all(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return Bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

void write_all(const std::string& path, const Bytes& b) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(b.data(), static_cast<std::streamsize>(b.size()));
}

struct Sample {
  std::string name;
  Tensor tensor;
};

std::vector<Sample> sample_tensors() {
  std::vector<Sample> out;
  auto big = testing::random_sparse(256, 300, 0.0, false, 1);  // > 64 KiB as bf16: page aligned
  prune_magnitude(big.data(), 256, 300, 0.5, PruneScope::per_row);
  out.push_back({"layers.0.big.bitmap", pack(quantize_matrix(big.data(), 256, 300, DType::bf16), Format::bitmap)});
  const auto w = testing::random_sparse(33, 70, 0.7, true, 2);
  out.push_back({"layers.0.csr.int8", pack(quantize_matrix(w.data(), 33, 70, DType::int8), Format::csr)});
  out.push_back({"layers.0.csr8.bf16", pack(quantize_matrix(big.data(), 256, 300, DType::bf16), Format::csr8)});
  out.push_back({"layers.0.bsr.f32", pack(quantize_matrix(w.data(), 33, 70, DType::f32), Format::bsr, BlockShape{4, 1})});
  out.push_back({"layers.0.dense.bf16", quantize_matrix(w.data(), 33, 70, DType::bf16)});
  TensorDesc norm;
  norm.ndim = 1;
  norm.shape = {70, 0, 0, 0};
  std::vector<float> ones(70, 1.0f);
  out.push_back({"norm", quantize(ones.data(), norm)});
  return out;
}

const std::string kMetadata = R"({"architecture":"test","layers":1})";
const std::vector<std::byte> kTokenizer = {std::byte{1}, std::byte{2}, std::byte{3}, std::byte{4}, std::byte{5}};

class ModelFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = temp_path(::testing::UnitTest::GetInstance()->current_test_info()->name() + std::string(".lacuna"));
    ModelFileWriter writer(path_, kMetadata, kTokenizer);
    for (const Sample& s : sample_tensors()) writer.add(s.name, s.tensor);
    writer.finish();
    good_ = read_all(path_);
    bad_path_ = path_ + ".bad";
  }
  void TearDown() override {
    std::filesystem::remove(path_);
    std::filesystem::remove(bad_path_);
  }

  // Opens `bytes` as a file; returns the error message ("" if it opened).
  std::string open_error(const Bytes& bytes, OpenOptions options = {}) {
    write_all(bad_path_, bytes);
    try {
      ModelFile::open(bad_path_, options);
      return "";
    } catch (const Error& e) {
      return e.what();
    }
  }

  fl::Header header_of(const Bytes& b) {
    fl::Header h;
    std::memcpy(&h, b.data(), sizeof h);
    return h;
  }
  void put_header(Bytes& b, fl::Header h, bool fix_checksum = true) {
    if (fix_checksum) h.header_checksum = XXH3_64bits(&h, offsetof(fl::Header, header_checksum));
    std::memcpy(b.data(), &h, sizeof h);
  }
  // Lets a test rewrite record i, then restores the table and header checksums so
  // only the structural checks can catch the change.
  template <class Edit>
  Bytes with_record(size_t i, Edit edit) {
    Bytes b = good_;
    fl::Header h = header_of(b);
    fl::TensorRecord r;
    char* at = b.data() + h.table.offset + i * sizeof(fl::TensorRecord);
    std::memcpy(&r, at, sizeof r);
    edit(r);
    std::memcpy(at, &r, sizeof r);
    h.table.checksum = XXH3_64bits(b.data() + h.table.offset, h.table.bytes);
    put_header(b, h);
    return b;
  }

  std::string path_, bad_path_;
  Bytes good_;
};

TEST_F(ModelFileTest, RoundTripsTensorsMetadataAndTokenizer) {
  const ModelFile f = ModelFile::open(path_);
  EXPECT_EQ(f.metadata(), kMetadata);
  ASSERT_EQ(f.tokenizer().size(), kTokenizer.size());
  EXPECT_TRUE(std::equal(kTokenizer.begin(), kTokenizer.end(), f.tokenizer().begin()));
  const auto samples = sample_tensors();
  ASSERT_EQ(f.tensors().size(), samples.size());
  for (const Sample& s : samples) {
    const TensorEntry* e = f.find(s.name);
    ASSERT_NE(e, nullptr) << s.name;
    EXPECT_EQ(e->tensor.desc().format, s.tensor.desc().format);
    EXPECT_EQ(e->tensor.desc().shape, s.tensor.desc().shape);
    EXPECT_EQ(e->tensor.desc().ndim, s.tensor.desc().ndim);
    EXPECT_EQ(dequantize(e->tensor), dequantize(s.tensor)) << s.name;
    EXPECT_EQ(e->file_offset % 64, 0u);
    if (e->tensor.payload_bytes() >= fl::kPageAlignFrom) {
      EXPECT_EQ(e->file_offset % fl::kPageSize, 0u) << s.name;
    }
  }
  EXPECT_EQ(f.find("missing"), nullptr);
}

TEST_F(ModelFileTest, TensorsOutliveTheFileObject) {
  Tensor kept;
  {
    const ModelFile f = ModelFile::open(path_);
    kept = f.find("layers.0.csr.int8")->tensor;
  }
  EXPECT_EQ(dequantize(kept), dequantize(sample_tensors()[1].tensor));
}

TEST_F(ModelFileTest, TruncationAtAnyOffsetIsAnError) {
  std::vector<size_t> cuts = {0, 1, 7, 8, 64, 127, 128, 129, good_.size() - 1};
  for (size_t step = good_.size() / 97, c = 200; c < good_.size(); c += step) cuts.push_back(c);
  for (size_t cut : cuts) {
    const std::string msg = open_error(Bytes(good_.begin(), good_.begin() + static_cast<std::ptrdiff_t>(cut)));
    EXPECT_TRUE(msg.find("truncated") != std::string::npos) << "cut at " << cut << ": " << msg;
  }
}

TEST_F(ModelFileTest, TrailingBytesAreAnError) {
  Bytes b = good_;
  b.push_back('x');
  EXPECT_NE(open_error(b).find("unexpected bytes after its end"), std::string::npos);
}

TEST_F(ModelFileTest, FlippedBytesInEveryRegionAreCaught) {
  const fl::Header h = header_of(good_);
  struct Target {
    uint64_t begin, bytes;
    std::string expect;
  };
  std::vector<Target> targets = {{0, 8, "magic"},
                                 {16, 104, "header checksum"},
                                 {h.metadata.offset, h.metadata.bytes, "metadata: checksum"},
                                 {h.tokenizer.offset, h.tokenizer.bytes, "tokenizer: checksum"},
                                 {h.table.offset, h.table.bytes, "tensor table: checksum"}};
  const ModelFile f = ModelFile::open(path_);
  for (const TensorEntry& e : f.tensors())
    targets.push_back({e.file_offset, e.tensor.payload_bytes(), "tensor '" + e.name + "' (#"});
  for (const Target& t : targets)
    for (uint64_t off : {t.begin, t.begin + t.bytes / 2, t.begin + t.bytes - 1}) {
      Bytes b = good_;
      b[off] = static_cast<char>(b[off] ^ 0x5a);
      const std::string msg = open_error(b);
      EXPECT_NE(msg.find(t.expect), std::string::npos) << "flip at " << off << ": " << msg;
    }
}

TEST_F(ModelFileTest, WrongMagicAndFutureVersion) {
  Bytes b = good_;
  b[1] = 'X';
  EXPECT_NE(open_error(b).find("not a .lacuna file"), std::string::npos);
  b = good_;
  fl::Header h = header_of(b);
  h.version = 2;
  put_header(b, h);
  EXPECT_NE(open_error(b).find("format version 2 is newer than this build reads (1)"), std::string::npos) << open_error(b);
  h.version = 0;
  put_header(b, h);
  EXPECT_NE(open_error(b).find("version 0"), std::string::npos);
}

TEST_F(ModelFileTest, RegionsPastTheEndAreCaught) {
  Bytes b = good_;
  fl::Header h = header_of(b);
  h.metadata.offset = good_.size() + 4096;
  put_header(b, h);
  EXPECT_NE(open_error(b).find("metadata at offset"), std::string::npos) << open_error(b);
  h = header_of(good_);
  h.table.bytes = ~uint64_t{0} - 10;  // offset + bytes overflows
  put_header(b = good_, h);
  EXPECT_NE(open_error(b).find("past the end of the file"), std::string::npos) << open_error(b);
}

TEST_F(ModelFileTest, TensorRecordProblemsNameTheTensor) {
  const std::string name = "'layers.0.csr.int8' (#1)";
  auto expect_error = [&](const Bytes& b, const std::string& what) {
    const std::string msg = open_error(b);
    EXPECT_NE(msg.find(name), std::string::npos) << "expected '" << what << "', got: " << msg;
    EXPECT_NE(msg.find(what), std::string::npos) << "expected '" << what << "', got: " << msg;
  };
  expect_error(with_record(1, [](fl::TensorRecord& r) { r.payload.offset = uint64_t{1} << 40; }), "past the end of the file");
  expect_error(with_record(1, [](fl::TensorRecord& r) { r.payload.offset += 8; }), "not 64-byte aligned");
  expect_error(with_record(1, [](fl::TensorRecord& r) { r.format = 9; }), "unknown format code 9");
  expect_error(with_record(1, [](fl::TensorRecord& r) { r.dtype = 7; }), "unknown dtype code 7");
  expect_error(with_record(1, [](fl::TensorRecord& r) { r.shape[0] = 40; }), "needs");
  expect_error(with_record(1, [](fl::TensorRecord& r) { r.shape[0] = 0; }), "dimension 0 is 0");
  expect_error(with_record(1, [](fl::TensorRecord& r) { r.ndim = 3, r.shape[2] = 1; }), "needs a 2-D tensor");
  expect_error(with_record(1, [](fl::TensorRecord& r) { r.nnz = 33 * 70 + 1; }), "more stored values");
  expect_error(with_record(1, [](fl::TensorRecord& r) { r.payload.checksum ^= 1; }), "checksum mismatch");
  const Bytes overlap = with_record(1, [&](fl::TensorRecord& r) {
    const fl::Header h = header_of(good_);
    fl::TensorRecord first;
    std::memcpy(&first, good_.data() + h.table.offset, sizeof first);
    r.payload.offset = first.payload.offset;
    r.payload.checksum = XXH3_64bits(good_.data() + first.payload.offset, r.payload.bytes);
  });
  EXPECT_NE(open_error(overlap).find("overlaps"), std::string::npos) << open_error(overlap);
}

TEST_F(ModelFileTest, NamePoolProblemsAreCaught) {
  EXPECT_NE(open_error(with_record(2, [](fl::TensorRecord& r) { r.name_offset = 1u << 30; })).find("outside the name pool"), std::string::npos);
  EXPECT_NE(open_error(with_record(2, [](fl::TensorRecord& r) { r.name_bytes = 0; })).find("outside the name pool"), std::string::npos);
  const Bytes dup = with_record(2, [&](fl::TensorRecord& r) {
    const fl::Header h = header_of(good_);
    fl::TensorRecord first;
    std::memcpy(&first, good_.data() + h.table.offset + sizeof first, sizeof first);
    r.name_offset = first.name_offset;
    r.name_bytes = first.name_bytes;
  });
  EXPECT_NE(open_error(dup).find("used twice"), std::string::npos) << open_error(dup);
}

TEST_F(ModelFileTest, BrokenIndicesWithValidChecksumsAreCaught) {
  const ModelFile f = ModelFile::open(path_);
  const TensorEntry& e = *f.find("layers.0.csr.int8");
  Bytes b = good_;
  // Make row pointer 5 decrease, then re-sign the payload so only the structure check can see it.
  auto* row_ptr = reinterpret_cast<uint64_t*>(b.data() + e.file_offset);
  row_ptr[5] = row_ptr[4] > 0 ? row_ptr[4] - 1 : 1000;
  const Bytes fixed = with_record(1, [&](fl::TensorRecord& r) { r.payload.checksum = XXH3_64bits(b.data() + e.file_offset, r.payload.bytes); });
  Bytes combined = fixed;
  std::memcpy(combined.data() + e.file_offset, b.data() + e.file_offset, e.tensor.payload_bytes());
  const std::string msg = open_error(combined);
  EXPECT_NE(msg.find("'layers.0.csr.int8'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("row pointer"), std::string::npos) << msg;
}

TEST_F(ModelFileTest, SkippingChecksumsStillChecksStructure) {
  const ModelFile f = ModelFile::open(path_);
  const TensorEntry& e = *f.find("layers.0.big.bitmap");
  Bytes b = good_;
  // A flipped value byte passes without checksums; a broken mask count does not.
  b[e.file_offset + e.tensor.layout()[Section::values].offset] ^= 0x01;
  EXPECT_EQ(open_error(b, OpenOptions{.verify_checksums = false}), "");
  b[e.file_offset + e.tensor.layout()[Section::masks].offset] ^= 0x01;
  EXPECT_NE(open_error(b, OpenOptions{.verify_checksums = false}).find("masks hold"), std::string::npos);
}

TEST_F(ModelFileTest, PaddingBytesDoNotMatter) {
  const fl::Header h = header_of(good_);
  Bytes b = good_;
  b[h.metadata.offset + h.metadata.bytes] ^= 0x7f;  // the byte after metadata is alignment padding
  EXPECT_EQ(open_error(b), "");
}

TEST_F(ModelFileTest, LargePayloadsOwnTheirPages) {
  const ModelFile f = ModelFile::open(path_);
  const TensorEntry& big = *f.find("layers.0.big.bitmap");
  ASSERT_GE(big.tensor.payload_bytes(), fl::kPageAlignFrom);
  const uint64_t end = big.file_offset + big.tensor.payload_bytes();
  for (const TensorEntry& e : f.tensors())
    if (e.file_offset > big.file_offset) {
      EXPECT_GE(e.file_offset, (end + fl::kPageSize - 1) / fl::kPageSize * fl::kPageSize) << e.name;
    }
  const std::string msg = open_error(with_record(0, [](fl::TensorRecord& r) { r.payload.offset += 64; }));
  EXPECT_NE(msg.find("not 4096-byte aligned"), std::string::npos) << msg;
}

TEST(ModelFileWriter, RefusesBadNamesAndTensors) {
  const std::string path = temp_path("writer-bad.lacuna");
  ModelFileWriter w(path, "{}");
  const Tensor t = quantize_matrix(std::vector<float>(4, 1.0f).data(), 2, 2, DType::f32);
  EXPECT_THROW(w.add(std::string("a\0b", 3), t), Error);
  EXPECT_THROW(w.add("empty", Tensor()), Error);
  Tensor broken = pack(t, Format::csr);
  Tensor copy = Tensor::allocate(broken.desc());
  std::memcpy(copy.mutable_data(), broken.data(), broken.payload_bytes());
  copy.mutable_section<uint64_t>(Section::row_ptr)[1] = 99;
  EXPECT_THROW(w.add("broken", copy), Error);
}

TEST(ModelFileWriter, RefusesDuplicateAndEmptyNamesAndLeavesNoFileOnFailure) {
  const std::string path = temp_path("writer.lacuna");
  {
    ModelFileWriter w(path, "{}");
    const Tensor t = quantize_matrix(std::vector<float>(4, 1.0f).data(), 2, 2, DType::f32);
    w.add("a", t);
    EXPECT_THROW(w.add("a", t), Error);
    EXPECT_THROW(w.add("", t), Error);
  }
  EXPECT_FALSE(std::filesystem::exists(path));
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
  EXPECT_THROW(ModelFileWriter("/nonexistent-dir/x.lacuna", "{}"), Error);
}

TEST(ModelFileReader, MissingAndNonRegularFiles) {
  try {
    ModelFile::open("/nonexistent/model.lacuna");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("cannot open"), std::string::npos);
  }
  EXPECT_THROW(ModelFile::open(std::filesystem::temp_directory_path().string()), Error);
}

}  // namespace
}  // namespace lacuna
