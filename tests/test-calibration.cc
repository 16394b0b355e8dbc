// Wanda on the committed trained model (tests/fixtures/kjv-moe): calibration
// statistics against the independent NumPy reference
// (scripts/make-calibration-golden.sh), the conversion's use of them, and
// the quality acceptance: Wanda at 50 % beats magnitude at 50 % on the
// held-out books.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>

#include <nlohmann/json.hpp>

#include "engine/model/convert.h"
#include "engine/runtime/calibration.h"
#include "engine/runtime/perplexity.h"
#include "engine/runtime/text-file.h"
#include "sparse/error.h"
#include "sparse/quantize.h"
#include "tests/test-util.h"

namespace lacuna {
namespace {

namespace fs = std::filesystem;

const fs::path& fixture() {
  static const fs::path dir = fs::path(LACUNA_FIXTURES_DIR) / "kjv-moe";
  return dir;
}

std::string read(const fs::path& path) { return read_text_file(path.string(), "a fixture"); }

// The checkpoint converted dense, unpruned, once per dtype.
std::shared_ptr<const Model> dense_model(DType dtype) {
  static std::map<DType, std::shared_ptr<const Model>> models;
  auto& model = models[dtype];
  if (!model) {
    const fs::path out = testing::scratch() / ("kjv-dense-" + std::string(dtype_name(dtype)) + ".lacuna");
    ConvertOptions o;
    o.format = Format::dense;
    o.dtype = dtype;
    convert_checkpoint(fixture().string(), out.string(), o);
    model = Model::open(out.string());
  }
  return model;
}

// The default calibration of the committed text (on the dense bf16 model), shared by the tests that prune.
const Calibration& full_calibration() {
  static const Calibration c = [] {
    CalibrationOptions o;
    o.scratch_path = (testing::scratch() / "calibration-dense.lacuna").string();
    return calibrate_checkpoint(fixture().string(), read(fixture() / "calibration.txt"), o);
  }();
  return c;
}

const std::string& exception_text(const std::function<void()>& f) {
  static std::string text;
  text.clear();
  try {
    f();
  } catch (const Error& e) {
    text = e.what();
  }
  return text;
}

// The f32 model computes what NumPy computes (bf16 products round the
// activations to bf16, enough to route a near-tied token otherwise).
TEST(Calibration, NormsMatchTheNumpyReference) {
  const nlohmann::json golden = nlohmann::json::parse(read(fixture() / "calibration-norms.json"));
  const auto tokens = golden.at("tokens").get<std::vector<int32_t>>();
  // Lacuna's tokenizer reads the calibration text as SentencePiece does.
  const std::vector<int32_t> ours = dense_model(DType::f32)->tokenizer()->encode(read(fixture() / "calibration.txt"), true);
  ASSERT_GE(ours.size(), tokens.size());
  EXPECT_EQ(std::vector<int32_t>(ours.begin(), ours.begin() + static_cast<ptrdiff_t>(tokens.size())), tokens);

  const Calibration c = calibrate(dense_model(DType::f32), tokens, golden.at("window").get<int64_t>());
  EXPECT_EQ(c.tokens, static_cast<int64_t>(tokens.size()));
  const auto& norms = golden.at("norms");
  EXPECT_EQ(c.input_norms.size(), norms.size());
  double worst = 0;
  for (const auto& [name, expected_json] : norms.items()) {
    SCOPED_TRACE(name);
    const auto expected = expected_json.get<std::vector<double>>();
    ASSERT_TRUE(c.input_norms.count(name));
    EXPECT_EQ(c.tokens_seen.at(name), golden.at("tokens_seen").at(name).get<uint64_t>());
    const std::vector<float>& got = c.input_norms.at(name);
    ASSERT_EQ(got.size(), expected.size());
    double top = 0;
    for (double v : expected) top = std::max(top, v);
    for (size_t j = 0; j < got.size(); ++j) worst = std::max(worst, std::fabs(got[j] - expected[j]) / top);
  }
  // f32 sums in other orders over 512 tokens and 4 layers.
  EXPECT_LT(worst, 1e-4) << "largest difference, relative to the weight's largest norm";
}

TEST(Calibration, OfACheckpointRunsTheFirstTokensOfItsText) {
  CalibrationOptions o;
  o.tokens = 300;
  o.ctx = 128;
  o.scratch_path = (testing::scratch() / "calib-300.lacuna").string();
  const std::string text = read(fixture() / "calibration.txt");
  const Calibration c = calibrate_checkpoint(fixture().string(), text, o);
  EXPECT_FALSE(fs::exists(o.scratch_path));
  // What it converted and ran is the dense bf16 model.
  std::vector<int32_t> ids = dense_model(DType::bf16)->tokenizer()->encode(text, true);
  ids.resize(300);
  const Calibration direct = calibrate(dense_model(DType::bf16), ids, 128);
  EXPECT_EQ(c.tokens, 300);
  EXPECT_EQ(c.tokens_seen, direct.tokens_seen);
  EXPECT_EQ(c.input_norms, direct.input_norms);
  // Every token reaches top_k experts of each layer.
  const ModelConfig& m = dense_model(DType::bf16)->config();
  for (int64_t l = 0; l < m.layers; ++l) {
    uint64_t routed = 0;
    for (int64_t e = 0; e < m.experts; ++e) {
      const auto it = c.tokens_seen.find("layers." + std::to_string(l) + ".expert." + std::to_string(e) + ".gate_up");
      if (it != c.tokens_seen.end()) routed += it->second;
    }
    EXPECT_EQ(routed, 300u * static_cast<uint64_t>(m.top_k));
    EXPECT_EQ(c.tokens_seen.at("layers." + std::to_string(l) + ".q"), 300u);
  }
}

TEST(Calibration, RefusesTextItCannotCalibrateWith) {
  CalibrationOptions o;
  o.scratch_path = (testing::scratch() / "calib-refused.lacuna").string();
  EXPECT_NE(exception_text([&] { calibrate_checkpoint(fixture().string(), "", o); }).find("empty"), std::string::npos);
  o.tokens = 512;
  const std::string& short_text = exception_text([&] { calibrate_checkpoint(fixture().string(), "In the beginning God created the heaven.", o); });
  EXPECT_NE(short_text.find("fewer than the 512 asked for"), std::string::npos) << short_text;
  EXPECT_FALSE(fs::exists(o.scratch_path));
  // A checkpoint without a tokenizer cannot read text.
  const fs::path bare = testing::scratch() / "kjv-no-tokenizer";
  fs::create_directories(bare);
  fs::copy_file(fixture() / "config.json", bare / "config.json", fs::copy_options::overwrite_existing);
  fs::copy_file(fixture() / "model.safetensors", bare / "model.safetensors", fs::copy_options::overwrite_existing);
  EXPECT_NE(exception_text([&] { calibrate_checkpoint(bare.string(), "some text", o); }).find("no tokenizer.model"), std::string::npos);
  const std::vector<int32_t> none, bad{1, 4000};
  EXPECT_THROW(calibrate(dense_model(DType::bf16), none, 16), Error);
  EXPECT_THROW(calibrate(dense_model(DType::bf16), bad, 16), Error);
  const std::vector<int32_t> ids{1, 2, 3};
  EXPECT_THROW(calibrate(dense_model(DType::bf16), ids, 0), Error);
  EXPECT_THROW(calibrate(dense_model(DType::bf16), ids, 513), Error);  // beyond the model's context
}

// Row-wise zeros of a stored weight.
std::vector<size_t> row_zeros(const Linear& w) {
  const std::vector<float> v = dequantize(w.weight());
  std::vector<size_t> zeros(w.rows(), 0);
  for (size_t r = 0; r < w.rows(); ++r)
    for (size_t c = 0; c < w.cols(); ++c) zeros[r] += v[r * w.cols() + c] == 0.0f;
  return zeros;
}

TEST(Wanda, ConvertPrunesByNormsFallsBackWhereNoneAndHonoursLayerOverrides) {
  ConvertOptions o;
  o.sparsity = 0.5;
  o.layer_sparsity = {{2, 0.75}};
  o.prune = PruneMethod::wanda;
  o.input_norms = full_calibration().input_norms;
  const std::string unrouted = "layers.1.expert.3.down";
  o.input_norms.erase(unrouted);
  const fs::path out = testing::scratch() / "wanda-mixed.lacuna";
  const ConvertSummary s = convert_checkpoint(fixture().string(), out.string(), o);
  EXPECT_EQ(s.magnitude_fallbacks, std::vector<std::string>{unrouted});
  const auto m = Model::open(out.string());
  const ModelConfig& c = m->config();
  for (int64_t l = 0; l < c.layers; ++l) {
    const size_t expect_q = l == 2 ? 144 : 96, expect_down = l == 2 ? 192 : 128;  // of 192 and 256 columns
    for (size_t z : row_zeros(m->layers()[static_cast<size_t>(l)].q)) ASSERT_EQ(z, expect_q) << "layer " << l;
    for (size_t z : row_zeros(m->layers()[static_cast<size_t>(l)].down[5])) ASSERT_EQ(z, expect_down) << "layer " << l;
  }
  // The fallback expert is exactly what magnitude pruning stores, the others are not.
  ConvertOptions mag;
  mag.sparsity = 0.5;
  mag.prune = PruneMethod::magnitude;
  const fs::path mag_out = testing::scratch() / "magnitude-50.lacuna";
  convert_checkpoint(fixture().string(), mag_out.string(), mag);
  const auto mm = Model::open(mag_out.string());
  EXPECT_EQ(dequantize(m->layers()[1].down[3].weight()), dequantize(mm->layers()[1].down[3].weight()));
  EXPECT_NE(dequantize(m->layers()[1].down[4].weight()), dequantize(mm->layers()[1].down[4].weight()));
}

TEST(Wanda, ConvertRefusesMissingOrMisshapedNormsAndUnknownLayers) {
  const fs::path out = testing::scratch() / "refused.lacuna";
  ConvertOptions o;
  o.sparsity = 0.5;
  o.prune = PruneMethod::wanda;
  EXPECT_NE(exception_text([&] { convert_checkpoint(fixture().string(), out.string(), o); }).find("needs calibration"), std::string::npos);
  o.input_norms = full_calibration().input_norms;
  o.input_norms["layers.0.o"].pop_back();
  EXPECT_NE(exception_text([&] { convert_checkpoint(fixture().string(), out.string(), o); }).find("layers.0.o"), std::string::npos);
  ConvertOptions layers;
  layers.prune = PruneMethod::magnitude;
  layers.layer_sparsity = {{4, 0.5}};
  EXPECT_NE(exception_text([&] { convert_checkpoint(fixture().string(), out.string(), layers); }).find("layer 4"), std::string::npos);
  layers.layer_sparsity = {{0, 1.0}};
  EXPECT_THROW(convert_checkpoint(fixture().string(), out.string(), layers), Error);
  layers.layer_sparsity = {{0, std::nan("")}};
  EXPECT_THROW(convert_checkpoint(fixture().string(), out.string(), layers), Error);
  ConvertOptions nan_sparsity;
  nan_sparsity.sparsity = std::nan("");
  EXPECT_THROW(convert_checkpoint(fixture().string(), out.string(), nan_sparsity), Error);
}

double heldout_perplexity(const ConvertOptions& o, const std::string& name) {
  const fs::path out = testing::scratch() / name;
  convert_checkpoint(fixture().string(), out.string(), o);
  const auto m = Model::open(out.string());
  const std::vector<int32_t> ids = m->tokenizer()->encode(read(fixture() / "heldout.txt"), true);
  Forward f(m);
  return perplexity(f, ids, 256, 128).perplexity;
}

// The acceptance: on held-out text, Wanda at 50 % is better than magnitude at 50 %.
TEST(Wanda, BeatsMagnitudeAtHalfSparsityOnHeldOutText) {
  ConvertOptions magnitude;
  magnitude.sparsity = 0.5;
  magnitude.prune = PruneMethod::magnitude;
  ConvertOptions wanda = magnitude;
  wanda.prune = PruneMethod::wanda;
  wanda.input_norms = full_calibration().input_norms;
  const double by_magnitude = heldout_perplexity(magnitude, "m50.lacuna"), by_wanda = heldout_perplexity(wanda, "w50.lacuna");
  std::printf("held-out perplexity at 50 %%: magnitude %.4f, wanda %.4f\n", by_magnitude, by_wanda);
  EXPECT_LT(by_wanda, by_magnitude);
}

}  // namespace
}  // namespace lacuna
