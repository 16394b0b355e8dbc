// Hugging Face safetensors: files assembled byte by byte here are read right,
// the writer's output follows the format (byte for byte where the reference
// library's own tests pin it down), rounding to F16/BF16 matches hand-computed
// bit patterns, shards are cross-checked against their index, and every kind of
// damage is an Error naming the file (and tensor), never a crash.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <random>

#include "sparse/error.h"
#include "sparse/safetensors.h"

namespace lacuna {
namespace {

namespace fs = std::filesystem;

// A fresh directory under the test temp dir, removed with everything in it.
class TempDir {
 public:
  TempDir() {
    std::string pattern = ::testing::TempDir() + "lacuna-safetensors-XXXXXX";
    if (!mkdtemp(pattern.data())) throw std::runtime_error("mkdtemp failed for " + pattern);
    path_ = pattern;
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  ~TempDir() { fs::remove_all(path_); }
  std::string file(const std::string& name) const { return (path_ / name).string(); }
  std::string path() const { return path_.string(); }

 private:
  fs::path path_;
};

std::string le64(uint64_t v) {
  std::string s(8, '\0');
  for (size_t i = 0; i < 8; ++i) s[i] = static_cast<char>((v >> (8 * i)) & 0xff);
  return s;
}

// A safetensors file by hand: the header's size, the header, the data.
std::string st_file(const std::string& header, const std::string& data) { return le64(header.size()) + header + data; }

std::string f32_bytes(std::initializer_list<float> values) {
  std::string s;
  for (float v : values)
    for (size_t i = 0; i < 4; ++i) s += static_cast<char>((std::bit_cast<uint32_t>(v) >> (8 * i)) & 0xff);
  return s;
}

std::string u16_bytes(const std::vector<uint16_t>& values) {
  std::string s;
  for (uint16_t v : values) {
    s += static_cast<char>(v & 0xff);
    s += static_cast<char>(v >> 8);
  }
  return s;
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(f.good()) << path;
}

std::string read_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

// The message of the Error open() throws, "" when it opens.
std::string open_error(const std::string& path) {
  try {
    SafetensorsCheckpoint::open(path);
    return "";
  } catch (const Error& e) {
    return e.what();
  }
}

std::vector<uint16_t> raw_u16(const StTensor& t) {
  std::vector<uint16_t> out(t.bytes.size() / 2);
  std::memcpy(out.data(), t.bytes.data(), out.size() * 2);
  return out;
}

// IEEE binary16 by its definition, independent of the library's bit manipulation.
double half_value(uint16_t h) {
  const int exponent = (h >> 10) & 0x1f, mantissa = h & 0x3ff;
  const double sign = (h & 0x8000) ? -1.0 : 1.0;
  if (exponent == 0) return sign * std::ldexp(mantissa, -24);
  if (exponent == 31) return mantissa ? std::numeric_limits<double>::quiet_NaN() : sign * std::numeric_limits<double>::infinity();
  return sign * std::ldexp(1024 + mantissa, exponent - 25);
}

// Writes `values` as one tensor of `dtype` and returns its stored 16-bit patterns.
std::vector<uint16_t> stored_bits(const TempDir& dir, StDType dtype, const std::vector<float>& values) {
  SafetensorsWriter w;
  w.add("t", dtype, {values.size()}, values);
  w.write(dir.file("bits.safetensors"));
  const auto c = SafetensorsCheckpoint::open(dir.file("bits.safetensors"));
  return raw_u16(*c.find("t"));
}

TEST(Safetensors, ReadsAHandAssembledFile) {
  TempDir dir;
  // Keys out of offset order, metadata, a scalar, an empty tensor and padding, as other writers produce.
  const std::string header =
      R"({"__metadata__":{"format":"pt"},)"
      R"("half.scalar":{"dtype":"F16","shape":[],"data_offsets":[22,24]},)"
      R"("w.f32":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},)"
      R"("b.bf16":{"dtype":"BF16","shape":[3],"data_offsets":[16,22]},)"
      R"("empty":{"dtype":"F32","shape":[0,5],"data_offsets":[24,24]}}   )";
  const std::string data = f32_bytes({1.0f, -2.0f, 0.5f, 3.25f}) + u16_bytes({0x3F80, 0xC020, 0x4049}) + u16_bytes({0xC100});
  write_bytes(dir.file("x.safetensors"), st_file(header, data));

  const auto c = SafetensorsCheckpoint::open(dir.file("x.safetensors"));
  ASSERT_EQ(c.tensors().size(), 4u);
  std::vector<std::string> names;
  for (const StTensor& t : c.tensors()) names.push_back(t.name);
  EXPECT_EQ(names, (std::vector<std::string>{"b.bf16", "empty", "half.scalar", "w.f32"}));

  const StTensor* w = c.find("w.f32");
  ASSERT_NE(w, nullptr);
  EXPECT_EQ(w->dtype, StDType::f32);
  EXPECT_EQ(w->shape, (std::vector<uint64_t>{2, 2}));
  EXPECT_EQ(w->elements(), 4u);
  EXPECT_EQ(w->file, dir.file("x.safetensors"));
  EXPECT_EQ(c.to_f32(*w), (std::vector<float>{1.0f, -2.0f, 0.5f, 3.25f}));

  const StTensor* b = c.find("b.bf16");
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(b->dtype, StDType::bf16);
  EXPECT_EQ(c.to_f32(*b), (std::vector<float>{1.0f, -2.5f, 3.140625f}));

  const StTensor* h = c.find("half.scalar");
  ASSERT_NE(h, nullptr);
  EXPECT_TRUE(h->shape.empty());
  EXPECT_EQ(h->elements(), 1u);
  EXPECT_EQ(c.to_f32(*h), std::vector<float>{-2.5f});

  const StTensor* e = c.find("empty");
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->elements(), 0u);
  EXPECT_TRUE(c.to_f32(*e).empty());

  EXPECT_EQ(c.find("__metadata__"), nullptr);
  EXPECT_EQ(c.find("w"), nullptr);
  EXPECT_EQ(c.find("zzz"), nullptr);
}

TEST(Safetensors, EveryHalfDecodesToItsValue) {
  TempDir dir;
  std::vector<uint16_t> all(65536);
  for (size_t i = 0; i < all.size(); ++i) all[i] = static_cast<uint16_t>(i);
  // Offset by one F16 so the halves are not 4-byte aligned in the file.
  const std::string header = R"({"pad":{"dtype":"F16","shape":[1],"data_offsets":[0,2]},)"
                             R"("all":{"dtype":"F16","shape":[65536],"data_offsets":[2,131074]}})";
  write_bytes(dir.file("all.safetensors"), st_file(header, u16_bytes({0}) + u16_bytes(all)));
  const auto c = SafetensorsCheckpoint::open(dir.file("all.safetensors"));
  const std::vector<float> got = c.to_f32(*c.find("all"));
  for (size_t i = 0; i < all.size(); ++i) {
    const double want = half_value(static_cast<uint16_t>(i));
    if (std::isnan(want)) {
      EXPECT_TRUE(std::isnan(got[i])) << std::hex << i;
      EXPECT_EQ(std::signbit(got[i]), (i & 0x8000) != 0) << std::hex << i;
    } else {
      EXPECT_EQ(static_cast<double>(got[i]), want) << std::hex << i;
      EXPECT_EQ(std::signbit(got[i]), (i & 0x8000) != 0) << std::hex << i;
    }
  }
}

TEST(Safetensors, F32RoundTripIsBitExact) {
  TempDir dir;
  std::vector<float> values = {0.0f, -0.0f, 1.0f, -2.5f, 1e-40f, std::numeric_limits<float>::max(),
                               std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity(),
                               std::bit_cast<float>(0x7fc12345u)};
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.0f, 10.0f);
  for (int i = 0; i < 100; ++i) values.push_back(normal(rng));
  SafetensorsWriter w;
  w.add("v", StDType::f32, {values.size()}, values);
  w.write(dir.file("f32.safetensors"));
  const auto c = SafetensorsCheckpoint::open(dir.file("f32.safetensors"));
  const std::vector<float> got = c.to_f32(*c.find("v"));
  ASSERT_EQ(got.size(), values.size());
  for (size_t i = 0; i < values.size(); ++i) EXPECT_EQ(std::bit_cast<uint32_t>(got[i]), std::bit_cast<uint32_t>(values[i])) << i;
}

TEST(Safetensors, Bf16RoundsToNearestEven) {
  TempDir dir;
  const float inf = std::numeric_limits<float>::infinity();
  const std::vector<std::pair<float, uint16_t>> cases = {
      {1.0f, 0x3F80},     {-2.5f, 0xC020},
      {65504.0f, 0x4780},                        // 0x477FE000: low half 0xE000 rounds up
      {1e-8f, 0x322C},                           // 0x322BCC77
      {0.1f, 0x3DCD},                            // 0x3DCCCCCD
      {3.14159265f, 0x4049},                     // 0x40490FDB: rounds down
      {1.00390625f, 0x3F80},                     // 1 + 2^-8 = 0x3F808000: a tie, to even 0x3F80
      {1.01171875f, 0x3F82},                     // 1 + 3*2^-8 = 0x3F818000: a tie, to even 0x3F82
      {std::bit_cast<float>(0x3F808001u), 0x3F81},  // just past the tie
      {inf, 0x7F80},      {-inf, 0xFF80},     {-0.0f, 0x8000}};
  std::vector<float> values;
  for (const auto& [v, bits] : cases) values.push_back(v);
  values.push_back(std::numeric_limits<float>::quiet_NaN());
  values.push_back(std::bit_cast<float>(0x7f800001u));  // signalling NaN whose payload is all in the dropped half
  const std::vector<uint16_t> got = stored_bits(dir, StDType::bf16, values);
  for (size_t i = 0; i < cases.size(); ++i) EXPECT_EQ(got[i], cases[i].second) << "value " << cases[i].first;
  for (size_t i = cases.size(); i < values.size(); ++i) {
    EXPECT_EQ(got[i] & 0x7F80, 0x7F80) << i;
    EXPECT_NE(got[i] & 0x007F, 0) << "NaN became inf at " << i;
  }
  const auto c = SafetensorsCheckpoint::open(dir.file("bits.safetensors"));
  const std::vector<float> back = c.to_f32(*c.find("t"));
  for (size_t i = 0; i < cases.size(); ++i)
    EXPECT_EQ(std::bit_cast<uint32_t>(back[i]), uint32_t{cases[i].second} << 16) << "value " << cases[i].first;
}

TEST(Safetensors, F16RoundsToNearestEvenAndOverflowsToInf) {
  TempDir dir;
  const float inf = std::numeric_limits<float>::infinity();
  const std::vector<std::pair<float, uint16_t>> cases = {
      {1.0f, 0x3C00},
      {-2.5f, 0xC100},
      {0.1f, 0x2E66},
      {-0.0f, 0x8000},
      {65504.0f, 0x7BFF},                 // the largest half
      {65519.99f, 0x7BFF},                // below the midpoint to 65536
      {65520.0f, 0x7C00},                 // the midpoint: a tie, to even, which is inf
      {1e6f, 0x7C00},
      {-1e6f, 0xFC00},
      {inf, 0x7C00},
      {-inf, 0xFC00},
      {1e-8f, 0x0000},                    // under half the smallest subnormal
      {-1e-8f, 0x8000},
      {1e-7f, 0x0002},                    // 1.68 units of 2^-24
      {std::ldexp(1.0f, -24), 0x0001},    // the smallest subnormal
      {std::ldexp(1.0f, -25), 0x0000},    // tie between 0 and 1 unit: even 0
      {std::ldexp(3.0f, -25), 0x0002},    // tie between 1 and 2 units: even 2
      {std::ldexp(1023.0f, -24), 0x03FF},  // the largest subnormal
      {std::ldexp(2047.0f, -25), 0x0400},  // tie between it and the smallest normal
      {std::ldexp(1.0f, -14), 0x0400},
      {1.00048828125f, 0x3C00},           // 1 + 2^-11: tie, to even
      {1.00146484375f, 0x3C02},           // 1 + 3*2^-11: tie, to even
  };
  std::vector<float> values;
  for (const auto& [v, bits] : cases) values.push_back(v);
  values.push_back(std::numeric_limits<float>::quiet_NaN());
  values.push_back(-std::numeric_limits<float>::quiet_NaN());
  values.push_back(std::bit_cast<float>(0x7f800001u));  // payload only in the bits a half drops
  const std::vector<uint16_t> got = stored_bits(dir, StDType::f16, values);
  for (size_t i = 0; i < cases.size(); ++i) EXPECT_EQ(got[i], cases[i].second) << "value " << cases[i].first;
  for (size_t i = cases.size(); i < values.size(); ++i) {
    EXPECT_EQ(got[i] & 0x7C00, 0x7C00) << i;
    EXPECT_NE(got[i] & 0x03FF, 0) << "NaN became inf at " << i;
  }
  EXPECT_EQ(got[cases.size() + 1] & 0x8000, 0x8000);
}

// Every pair of neighbouring halves: each converts to itself, their midpoint to
// the even one, and the floats just either side of it to the nearer one.
TEST(Safetensors, F16RoundingIsExactAtEveryMidpoint) {
  TempDir dir;
  std::vector<float> values;
  std::vector<uint16_t> want;
  for (uint16_t h = 0; h < 0x7C00; ++h) {
    const double lo = half_value(h), hi = h == 0x7BFF ? 65536.0 : half_value(static_cast<uint16_t>(h + 1));
    const auto mid = static_cast<float>((lo + hi) / 2);  // exact: 12 significant bits at most
    const auto up = static_cast<uint16_t>(h + 1);
    for (const auto& [v, bits] : {std::pair<float, uint16_t>{static_cast<float>(lo), h},
                                  {mid, (h & 1) ? up : h},
                                  {std::nextafter(mid, 0.0f), h},
                                  {std::nextafter(mid, 1e9f), up}})
      for (uint16_t sign : {uint16_t{0}, uint16_t{0x8000}}) {
        values.push_back(sign ? -v : v);
        want.push_back(static_cast<uint16_t>(bits | sign));
      }
  }
  const std::vector<uint16_t> got = stored_bits(dir, StDType::f16, values);
  ASSERT_EQ(got.size(), want.size());
  size_t wrong = 0;
  for (size_t i = 0; i < got.size() && wrong < 10; ++i)
    if (got[i] != want[i]) {
      ++wrong;
      ADD_FAILURE() << "value " << values[i] << ": got 0x" << std::hex << got[i] << ", want 0x" << want[i];
    }
}

// The reference library's serializer tests pin down these exact bytes: compact
// JSON with dtype, shape, data_offsets in that order, padded with spaces to 8.
TEST(Safetensors, WriterMatchesTheReferenceSerializerByteForByte) {
  TempDir dir;
  const std::vector<float> values = {0, 1, 2, 3, 4, 5};
  SafetensorsWriter a;
  a.add("attn.0", StDType::f32, {1, 2, 3}, values);
  a.write(dir.file("a.safetensors"));
  EXPECT_EQ(read_bytes(dir.file("a.safetensors")),
            le64(64) + R"({"attn.0":{"dtype":"F32","shape":[1,2,3],"data_offsets":[0,24]}})" + f32_bytes({0, 1, 2, 3, 4, 5}));

  SafetensorsWriter b;
  b.add("attn0", StDType::f32, {1, 1, 2, 3}, values);
  b.write(dir.file("b.safetensors"));
  EXPECT_EQ(read_bytes(dir.file("b.safetensors")),
            le64(72) + R"({"attn0":{"dtype":"F32","shape":[1,1,2,3],"data_offsets":[0,24]}})" + std::string(7, ' ') +
                f32_bytes({0, 1, 2, 3, 4, 5}));

  SafetensorsWriter empty;
  empty.write(dir.file("empty.safetensors"));
  EXPECT_EQ(read_bytes(dir.file("empty.safetensors")), le64(8) + "{}" + std::string(6, ' '));
  EXPECT_TRUE(SafetensorsCheckpoint::open(dir.file("empty.safetensors")).tensors().empty());
}

TEST(Safetensors, WriterLayoutFollowsTheFormat) {
  TempDir dir;
  const std::vector<std::pair<std::string, StDType>> order = {
      {"z.bf16", StDType::bf16}, {"m.f16", StDType::f16}, {"a.f32", StDType::f32}, {"e.empty", StDType::f32}, {"b.f32", StDType::f32}};
  const std::vector<std::vector<uint64_t>> shapes = {{3}, {1, 1}, {2}, {0, 4}, {3, 1}};
  SafetensorsWriter w;
  for (size_t i = 0; i < order.size(); ++i) {
    uint64_t count = 1;
    for (uint64_t d : shapes[i]) count *= d;
    std::vector<float> v(count);
    for (size_t k = 0; k < v.size(); ++k) v[k] = static_cast<float>(i * 10 + k);
    w.add(order[i].first, order[i].second, shapes[i], v);
  }
  const std::string path = dir.file("layout.safetensors");
  w.write(path);
  EXPECT_FALSE(fs::exists(path + ".tmp"));

  const std::string file = read_bytes(path);
  uint64_t n = 0;
  for (size_t i = 0; i < 8; ++i) n |= uint64_t{static_cast<unsigned char>(file[i])} << (8 * i);
  EXPECT_EQ(n % 8, 0u);
  ASSERT_LE(8 + n, file.size());
  const std::string header = file.substr(8, n);
  EXPECT_EQ(header.front(), '{');
  const size_t close = header.find_last_of('}');
  EXPECT_EQ(header.find_first_not_of(' ', close + 1), std::string::npos) << "padding is not spaces";

  const auto j = nlohmann::ordered_json::parse(header);
  std::vector<std::string> keys;
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  for (const auto& [name, entry] : j.items()) {
    keys.push_back(name);
    const auto begin = entry["data_offsets"][0].get<uint64_t>(), end = entry["data_offsets"][1].get<uint64_t>();
    const uint64_t size = entry["dtype"] == "F32" ? 4 : 2;
    EXPECT_EQ((8 + n + begin) % size, 0u) << name << " is not aligned to its element size";
    ranges.emplace_back(begin, end);
  }
  std::vector<std::string> want_keys;
  for (const auto& [name, dtype] : order) want_keys.push_back(name);
  EXPECT_EQ(keys, want_keys) << "header not in insertion order";
  EXPECT_EQ(j["z.bf16"]["dtype"], "BF16");
  EXPECT_EQ(j["m.f16"]["dtype"], "F16");
  EXPECT_EQ(j["m.f16"]["shape"], nlohmann::ordered_json::parse("[1,1]"));
  EXPECT_EQ(j["e.empty"]["shape"], nlohmann::ordered_json::parse("[0,4]"));
  std::sort(ranges.begin(), ranges.end());
  uint64_t covered = 0;
  for (const auto& [begin, end] : ranges) {
    EXPECT_EQ(begin, covered) << "data offsets leave a hole or overlap";
    covered = end;
  }
  EXPECT_EQ(8 + n + covered, file.size());

  const auto c = SafetensorsCheckpoint::open(path);
  EXPECT_EQ(c.to_f32(*c.find("b.f32")), (std::vector<float>{40, 41, 42}));
  EXPECT_EQ(c.to_f32(*c.find("z.bf16")), (std::vector<float>{0, 1, 2}));
  EXPECT_EQ(c.to_f32(*c.find("m.f16")), std::vector<float>{10});
}

TEST(Safetensors, WriterRejectsBadInput) {
  TempDir dir;
  const std::vector<float> three = {1, 2, 3};
  auto add_error = [](SafetensorsWriter& w, const std::string& name, std::vector<uint64_t> shape, std::span<const float> v) {
    try {
      w.add(name, StDType::f32, std::move(shape), v);
      return std::string();
    } catch (const Error& e) {
      return std::string(e.what());
    }
  };
  SafetensorsWriter w;
  EXPECT_NE(add_error(w, "w", {2, 2}, three).find("tensor 'w': shape [2, 2] holds 4 values, but 3 were given"), std::string::npos);
  EXPECT_NE(add_error(w, "w", {1ull << 32, 1ull << 32, 4}, three).find("'w'"), std::string::npos);
  EXPECT_NE(add_error(w, "__metadata__", {3}, three).find("reserved"), std::string::npos);
  EXPECT_NE(add_error(w, std::string("bad\xff"), {3}, three).find("UTF-8"), std::string::npos);
  EXPECT_EQ(add_error(w, "w", {3}, three), "");
  EXPECT_NE(add_error(w, "w", {3}, three).find("'w' is added twice"), std::string::npos);

  const std::string path = dir.file("missing-dir/out.safetensors");
  try {
    w.write(path);
    ADD_FAILURE() << "write into a missing directory succeeded";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
  }
}

TEST(Safetensors, OpensADirectoryHoldingModelSafetensors) {
  TempDir dir;
  SafetensorsWriter w;
  const std::vector<float> v = {1, 2};
  w.add("x", StDType::bf16, {2}, v);
  w.write(dir.file("model.safetensors"));
  const auto c = SafetensorsCheckpoint::open(dir.path());
  ASSERT_EQ(c.tensors().size(), 1u);
  EXPECT_EQ(c.tensors()[0].file, dir.file("model.safetensors"));
  EXPECT_EQ(c.to_f32(c.tensors()[0]), v);
}

class ShardedTest : public ::testing::Test {
 protected:
  // Shard 1 holds a and b, shard 2 holds c; the index says so unless a test changes it.
  void SetUp() override {
    write_shard("model-00001-of-00002.safetensors", {{"a", {1, 2, 3}}, {"b", {4}}});
    write_shard("model-00002-of-00002.safetensors", {{"c", {5, 6}}});
    write_index(R"({"a":"model-00001-of-00002.safetensors","b":"model-00001-of-00002.safetensors",)"
                R"("c":"model-00002-of-00002.safetensors"})");
  }
  void write_shard(const std::string& name, const std::vector<std::pair<std::string, std::vector<float>>>& tensors) {
    SafetensorsWriter w;
    for (const auto& [tensor, values] : tensors) w.add(tensor, StDType::f16, {values.size()}, values);
    w.write(dir_.file(name));
  }
  void write_index(const std::string& weight_map) {
    write_bytes(index(), R"({"metadata":{"total_size":12},"weight_map":)" + weight_map + "}");
  }
  std::string index() const { return dir_.file("model.safetensors.index.json"); }
  void expect_error(const std::vector<std::string>& parts) {
    const std::string msg = open_error(dir_.path());
    ASSERT_FALSE(msg.empty()) << "opened";
    for (const std::string& p : parts) EXPECT_NE(msg.find(p), std::string::npos) << "'" << p << "' not in: " << msg;
  }

  TempDir dir_;
};

TEST_F(ShardedTest, ReadsEveryShard) {
  const auto c = SafetensorsCheckpoint::open(dir_.path());
  ASSERT_EQ(c.tensors().size(), 3u);
  EXPECT_EQ(c.tensors()[0].name, "a");
  EXPECT_EQ(c.tensors()[2].name, "c");
  EXPECT_EQ(c.find("b")->file, dir_.file("model-00001-of-00002.safetensors"));
  EXPECT_EQ(c.find("c")->file, dir_.file("model-00002-of-00002.safetensors"));
  EXPECT_EQ(c.to_f32(*c.find("a")), (std::vector<float>{1, 2, 3}));
  EXPECT_EQ(c.to_f32(*c.find("c")), (std::vector<float>{5, 6}));
}

TEST_F(ShardedTest, IndexNamingAMissingShard) {
  write_index(R"({"a":"model-00001-of-00002.safetensors","b":"model-00001-of-00002.safetensors",)"
              R"("c":"model-00002-of-00002.safetensors","d":"model-00003-of-00002.safetensors"})");
  expect_error({index(), "'d'", "model-00003-of-00002.safetensors", "does not exist"});
}

TEST_F(ShardedTest, IndexListingATensorItsShardLacks) {
  write_index(R"({"a":"model-00001-of-00002.safetensors","b":"model-00001-of-00002.safetensors",)"
              R"("c":"model-00002-of-00002.safetensors","ghost":"model-00002-of-00002.safetensors"})");
  expect_error({index(), "'ghost'", "model-00002-of-00002.safetensors", "does not hold it"});
}

TEST_F(ShardedTest, IndexPuttingATensorInTheWrongShard) {
  write_index(R"({"a":"model-00001-of-00002.safetensors","b":"model-00002-of-00002.safetensors",)"
              R"("c":"model-00002-of-00002.safetensors"})");
  expect_error({index(), "'b'", "but it is in " + dir_.file("model-00001-of-00002.safetensors")});
}

TEST_F(ShardedTest, ShardTensorMissingFromTheIndex) {
  write_index(R"({"a":"model-00001-of-00002.safetensors","c":"model-00002-of-00002.safetensors"})");
  expect_error({dir_.file("model-00001-of-00002.safetensors"), "'b'", "not listed in " + index()});
}

TEST_F(ShardedTest, SameTensorInTwoShards) {
  write_shard("model-00002-of-00002.safetensors", {{"c", {5, 6}}, {"a", {7}}});
  expect_error({"'a'", dir_.file("model-00001-of-00002.safetensors"), dir_.file("model-00002-of-00002.safetensors")});
}

TEST_F(ShardedTest, MalformedIndex) {
  write_bytes(index(), R"({"weight_map": {"a": "model-00001-of-00002.safetensors",)");
  expect_error({index(), "not valid JSON", "parse error"});
  write_bytes(index(), R"({"metadata": {}})");
  expect_error({index(), "weight_map"});
  write_index(R"({"a": 3})");
  expect_error({index(), "'a'", "not a file name"});
  write_index(R"({"a": "../model-00001-of-00002.safetensors"})");
  expect_error({index(), "'a'", "not a file name"});
  write_index(R"({"a":"model-00001-of-00002.safetensors","a":"model-00001-of-00002.safetensors"})");
  expect_error({index(), "repeats the key 'a'"});
}

TEST_F(ShardedTest, DamagedShardIsNamed) {
  write_bytes(dir_.file("model-00002-of-00002.safetensors"), "tiny");
  expect_error({dir_.file("model-00002-of-00002.safetensors"), "shorter than the 8-byte header size"});
}

TEST(Safetensors, DirectoryWithoutACheckpoint) {
  TempDir dir;
  const std::string msg = open_error(dir.path());
  EXPECT_NE(msg.find(dir.path()), std::string::npos) << msg;
  EXPECT_NE(msg.find("neither model.safetensors nor model.safetensors.index.json"), std::string::npos) << msg;
  EXPECT_NE(open_error(dir.file("absent.safetensors")).find("absent.safetensors: cannot open"), std::string::npos);
}

struct BadFile {
  std::string what, bytes;
  std::vector<std::string> expect;
};

std::string one(const std::string& entry, const std::string& data = f32_bytes({1, 2, 3, 4})) { return st_file("{\"w\":" + entry + "}", data); }

std::vector<BadFile> bad_files() {
  const std::string ok_entry = R"({"dtype":"F32","shape":[2,2],"data_offsets":[0,16]})";
  const std::string data16 = f32_bytes({1, 2, 3, 4});
  const std::string deep = std::string(1'000'000, '[') + std::string(1'000'000, ']');
  return {
      {"short file", "abcde", {"5 bytes, shorter than the 8-byte header size"}},
      {"header past the end", le64(100) + "{}", {"header size 100 runs past the end of the 10-byte file"}},
      {"absurd header", le64(200'000'000) + std::string(64, ' '), {"header size 200000000 is over the 100000000-byte limit"}},
      {"malformed JSON", st_file(R"({"w": {"dtype": "F32",)", ""), {"not valid JSON", "parse error"}},
      {"invalid UTF-8", st_file("{\"w\xff\": 1}", ""), {"not valid JSON"}},
      {"number beyond double", one(R"({"dtype":"F32","shape":[2,2],"data_offsets":[0,1e999]})"), {"not valid JSON", "number overflow"}},
      {"not an object", st_file("[1, 2]", ""), {"does not start with '{'"}},
      {"duplicate tensor", st_file("{\"w\":" + ok_entry + ",\"w\":" + ok_entry + "}", data16), {"repeats the key 'w'"}},
      {"entry not an object", one("5"), {"tensor 'w'", "not an object"}},
      {"no dtype", one(R"({"shape":[2,2],"data_offsets":[0,16]})"), {"tensor 'w'", "no \"dtype\""}},
      {"no shape", one(R"({"dtype":"F32","data_offsets":[0,16]})"), {"tensor 'w'", "no \"shape\""}},
      {"no offsets", one(R"({"dtype":"F32","shape":[2,2]})"), {"tensor 'w'", "no \"data_offsets\""}},
      {"I64", one(R"({"dtype":"I64","shape":[2],"data_offsets":[0,16]})"), {"tensor 'w' has dtype I64; Lacuna reads F32, F16, BF16"}},
      {"dtype not a string", one(R"({"dtype":4,"shape":[2,2],"data_offsets":[0,16]})"), {"tensor 'w'", "dtype is 4"}},
      {"negative dim", one(R"({"dtype":"F32","shape":[-2,2],"data_offsets":[0,16]})"), {"tensor 'w'", "shape[0] is -2"}},
      {"fractional dim", one(R"({"dtype":"F32","shape":[2,2.5],"data_offsets":[0,16]})"), {"tensor 'w'", "shape[1] is 2.5"}},
      {"shape not an array", one(R"({"dtype":"F32","shape":4,"data_offsets":[0,16]})"), {"tensor 'w'", "not an array"}},
      {"size mismatch", one(R"({"dtype":"F32","shape":[2,3],"data_offsets":[0,16]})"),
       {"tensor 'w'", "hold 16 bytes, but F32 [2, 3] needs 24"}},
      {"begin after end", one(R"({"dtype":"F32","shape":[0],"data_offsets":[16,0]})"), {"tensor 'w'", "[16, 0] begin after they end"}},
      {"end past the data", one(R"({"dtype":"F32","shape":[2,4],"data_offsets":[0,32]})"),
       {"tensor 'w'", "run past the end of the 16-byte data section"}},
      {"element count overflow", one(R"({"dtype":"F32","shape":[4294967296,4294967296,2],"data_offsets":[0,16]})"),
       {"tensor 'w'", "too large to count in 64 bits"}},
      {"byte count overflow", one(R"({"dtype":"F32","shape":[4611686018427387904],"data_offsets":[0,16]})"),
       {"tensor 'w'", "too large to count in 64 bits"}},
      {"offsets not a pair", one(R"({"dtype":"F32","shape":[2,2],"data_offsets":[0]})"), {"tensor 'w'", "not [begin, end]"}},
      {"offset not a number", one(R"({"dtype":"F32","shape":[2,2],"data_offsets":[0,"16"]})"), {"tensor 'w'", "data_offsets[1]"}},
      {"overlap",
       st_file(R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"v":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})",
               data16),
       {"'v'", "overlaps tensor 'w'"}},
      {"empty tensor inside another",
       st_file(R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"v":{"dtype":"F32","shape":[0],"data_offsets":[8,8]}})",
               data16),
       {"'v'", "overlaps tensor 'w'"}},
      {"hole",
       st_file(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"v":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})",
               data16),
       {"[4, 8]", "'v'", "no holes"}},
      {"shape nested a million deep", one(R"({"dtype":"F32","shape":)" + deep + R"(,"data_offsets":[0,16]})"),
       {"tensor 'w'", "shape[0] is an array"}},
      {"entry nested a million deep", one(deep), {"tensor 'w'", "entry is an array"}},
      {"trailing bytes", one(R"({"dtype":"F32","shape":[3],"data_offsets":[0,12]})"), {"last 4 of the 16 data bytes", "trailing"}},
  };
}

TEST(Safetensors, EveryKindOfDamageNamesFileAndTensor) {
  TempDir dir;
  for (const BadFile& bad : bad_files()) {
    const std::string path = dir.file("bad.safetensors");
    write_bytes(path, bad.bytes);
    const std::string msg = open_error(path);
    ASSERT_FALSE(msg.empty()) << bad.what << " opened";
    EXPECT_EQ(msg.find(path), 0u) << bad.what << ": " << msg;
    for (const std::string& part : bad.expect) EXPECT_NE(msg.find(part), std::string::npos) << bad.what << ": '" << part << "' not in: " << msg;
  }
}

std::string sample_file(const TempDir& dir) {
  SafetensorsWriter w;
  const std::vector<float> v = {1.5f, -2.0f, 3.0f, 0.25f, 7.0f, -1.0f};
  w.add("layers.0.weight", StDType::bf16, {2, 3}, v);
  w.add("layers.0.bias", StDType::f32, {3}, std::span(v).first(3));
  w.add("norm", StDType::f16, {5}, std::span(v).first(5));
  w.write(dir.file("sample.safetensors"));
  return read_bytes(dir.file("sample.safetensors"));
}

TEST(Safetensors, TruncationAtEveryOffsetThrows) {
  TempDir dir;
  const std::string good = sample_file(dir);
  const std::string path = dir.file("cut.safetensors");
  for (size_t cut = 0; cut < good.size(); ++cut) {
    write_bytes(path, good.substr(0, cut));
    const std::string msg = open_error(path);
    EXPECT_EQ(msg.find(path), 0u) << "cut at " << cut << ": " << (msg.empty() ? "opened" : msg);
  }
  write_bytes(path, good);
  EXPECT_EQ(open_error(path), "");
}

// Any single damaged byte of the header either still describes a valid file or
// is an Error; no other exception escapes and nothing reads out of bounds.
TEST(Safetensors, DamagedHeaderBytesNeverEscapeAsAnythingButError) {
  TempDir dir;
  const std::string good = sample_file(dir);
  const std::string path = dir.file("damaged.safetensors");
  uint64_t n = 0;
  for (size_t i = 0; i < 8; ++i) n |= uint64_t{static_cast<unsigned char>(good[i])} << (8 * i);
  const char replacements[] = {'0', '9', '"', '}', ',', '-', '\xff', '\0'};
  size_t tries = 0, errors = 0;
  for (size_t at = 0; at < 8 + n; ++at)
    for (char c : {replacements[at % 8], replacements[(at + 3) % 8]}) {
      if (good[at] == c) continue;
      ++tries;
      std::string bad = good;
      bad[at] = c;
      write_bytes(path, bad);
      try {
        const auto cp = SafetensorsCheckpoint::open(path);
        for (const StTensor& t : cp.tensors()) (void)cp.to_f32(t);
      } catch (const Error&) {
        ++errors;
      }
    }
  EXPECT_GT(errors, tries / 2);
}

TEST(Safetensors, ToF32RefusesBytesThatDoNotMatchTheShape) {
  StTensor t;
  t.name = "w";
  t.file = "f.safetensors";
  t.dtype = StDType::f32;
  t.shape = {3};
  const float data[2] = {1, 2};
  t.bytes = std::as_bytes(std::span(data));
  float out[3];
  EXPECT_THROW(SafetensorsCheckpoint::to_f32(t, out), Error);
}

}  // namespace
}  // namespace lacuna
