// The model runtime against the independent NumPy reference
// (scripts/reference-moe.py): golden logits of the tiny synthetic models,
// committed in tests/fixtures/golden, for every storage format and dtype (and,
// through CTest, every ISA level: LACUNA_MAX_ISA). Also: batches match single
// sequences, greedy generation is deterministic and batch-independent, and
// bad checkpoints are refused with clear errors.
#include <gtest/gtest.h>
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>

#include "engine/model/convert.h"
#include "engine/model/model.h"
#include "engine/model/synth.h"
#include "engine/runtime/forward.h"
#include "engine/runtime/generate.h"
#include "engine/runtime/linear.h"
#include "kernels/dense-onednn/onednn-matmul.h"
#include "kernels/instruction-rates.h"
#include "kernels/planner.h"
#include "sparse/convert.h"
#include "sparse/error.h"
#include "sparse/model-file.h"
#include "tests/test-util.h"
#include "sparse/quantize.h"
#include "sparse/safetensors.h"

namespace lacuna {
namespace {

namespace fs = std::filesystem;

std::string read_text(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::ostringstream s;
  s << f.rdbuf();
  return s.str();
}

std::vector<int32_t> golden_tokens() {
  std::vector<int32_t> ids;
  std::istringstream in(read_text(fs::path(LACUNA_FIXTURES_DIR) / "golden/tokens.txt"));
  for (int32_t t; in >> t;) ids.push_back(t);
  return ids;
}

uint64_t fnv1a64(const std::string& bytes) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char b : bytes) h = (h ^ b) * 0x100000001b3ull;
  return h;
}

using testing::scratch;

// The tiny checkpoint the goldens were made from (scripts/make-goldens.sh: seed 7).
const fs::path& tiny_checkpoint(const std::string& arch) {
  static std::map<std::string, fs::path> made;
  if (!made.count(arch)) {
    const fs::path dir = scratch() / ("hf-" + arch);
    synthesize_checkpoint(dir.string(), SynthOptions{.arch = parse_arch(arch), .preset = "tiny", .seed = 7});
    made[arch] = dir;
  }
  return made[arch];
}

std::vector<float> all_logits(const std::shared_ptr<const Model>& model, const std::vector<int32_t>& ids, size_t chunk) {
  Forward forward(model);
  KvCache cache(model->config(), static_cast<int64_t>(ids.size()));
  const auto vocab = static_cast<size_t>(model->config().vocab);
  std::vector<float> logits(ids.size() * vocab);
  for (size_t at = 0; at < ids.size(); at += chunk) {
    const size_t n = std::min(chunk, ids.size() - at);
    const SequenceStep step{&cache, std::span(ids).subspan(at, n), &logits[at * vocab], true};
    forward.step({&step, 1});
  }
  return logits;
}

// Largest |a - b| relative to the expected largest |logit|, and the positions
// whose top-1 token disagrees. Agreement up to the tolerance: our top-1 must
// be the expected top-1, or, at a near-tie, a token whose expected logit is
// within twice the tolerance of the expected maximum (two logits that close
// may swap under any rounding; the random tiny Mixtral has a few such positions).
struct Agreement {
  double max_error = 0;
  std::vector<size_t> top1_mismatches;
};

Agreement compare(const std::vector<float>& got, const std::vector<float>& want, size_t vocab, double tolerance) {
  Agreement a;
  double scale = 0;
  for (float v : want) scale = std::max(scale, std::fabs(double{v}));
  for (size_t i = 0; i < want.size(); ++i) a.max_error = std::max(a.max_error, std::fabs(double{got[i]} - want[i]) / scale);
  for (size_t p = 0; p < want.size() / vocab; ++p) {
    auto top = [&](const std::vector<float>& l) { return std::max_element(l.begin() + p * vocab, l.begin() + (p + 1) * vocab) - l.begin(); };
    if (double{want[top(got)]} < double{want[top(want)]} - 2 * tolerance * scale) a.top1_mismatches.push_back(p);
  }
  return a;
}

struct Case {
  std::string arch;
  std::string format;  // auto, dense, csr, bitmap, bsr
  DType dtype;
  double tolerance;                   // max |error| / max |golden logit|
  std::optional<DType> output_dtype;  // ConvertOptions::output_dtype
};

// Tolerances: the goldens use the bf16 checkpoint's exact weights in f32
// arithmetic. f32 storage differs only by summation order; bf16 storage
// rounds activations to bf16 inside the kernels (2^-9 relative); int8
// quantises each weight row (1/254 of the row's largest weight).
std::vector<Case> cases() {
  std::vector<Case> out;
  for (const char* arch : {"grok-1", "mixtral"})
    for (const char* format : {"auto", "dense", "csr", "bitmap", "bsr"})
      for (auto [dtype, tol] : {std::pair{DType::f32, 1e-4}, {DType::bf16, 2e-2}, {DType::int8, 5e-2}}) out.push_back({arch, format, dtype, tol, {}});
  // csr8 stores bf16 weights only (convert refuses the others).
  for (const char* arch : {"grok-1", "mixtral"}) out.push_back({arch, "csr8", DType::bf16, 2e-2, {}});
  // bf16 weights with an int8 output projection (Grok-1's is its embedding): int8's tolerance.
  for (const char* arch : {"grok-1", "mixtral"}) out.push_back({arch, "auto", DType::bf16, 5e-2, DType::int8});
  return out;
}

class MatchesReference : public ::testing::TestWithParam<Case> {};

TEST_P(MatchesReference, EveryPositionWithinToleranceAndSameTop1) {
  const Case& c = GetParam();
  const fs::path golden_dir = fs::path(LACUNA_FIXTURES_DIR) / "golden";
  const fs::path ckpt = tiny_checkpoint(c.arch);
  char hash[17];
  std::snprintf(hash, sizeof hash, "%016llx", static_cast<unsigned long long>(fnv1a64(read_text(ckpt / "model.safetensors"))));
  ASSERT_EQ(std::string(hash), read_text(golden_dir / (c.arch + "-tiny.checkpoint-fnv1a64")).substr(0, 16))
      << "lacuna synth no longer writes the checkpoint the goldens were made from: if that change is intended, run scripts/make-goldens.sh";

  const std::string output_suffix = c.output_dtype ? std::string("-output-") + dtype_name(*c.output_dtype) : "";
  const fs::path out = scratch() / (c.arch + "-" + c.format + "-" + dtype_name(c.dtype) + output_suffix + ".lacuna");
  ConvertOptions o;
  o.dtype = c.dtype;
  o.output_dtype = c.output_dtype;
  if (c.format != "auto") o.format = *parse_format(c.format);
  convert_checkpoint(ckpt.string(), out.string(), o);
  {
    const ModelFile file = ModelFile::open(out.string());
    const TensorEntry* output = file.find("output");
    const TensorEntry* embedding = file.find("embedding");
    ASSERT_TRUE(embedding);
    ASSERT_EQ(output == nullptr, c.arch == "grok-1") << "Grok-1 ties its output projection to the embedding";
    EXPECT_EQ((output ? output : embedding)->tensor.desc().dtype, c.output_dtype.value_or(c.dtype));
    EXPECT_EQ(embedding->tensor.desc().dtype, output ? c.dtype : c.output_dtype.value_or(c.dtype));
    const TensorEntry* expert = file.find("layers.0.expert.0.down");
    ASSERT_TRUE(expert);
    EXPECT_EQ(expert->tensor.desc().dtype, c.dtype);
  }
  const auto model = Model::open(out.string());
  const std::vector<int32_t> ids = golden_tokens();
  const std::string raw = read_text(golden_dir / (c.arch + "-tiny.logits"));
  const auto vocab = static_cast<size_t>(model->config().vocab);
  ASSERT_EQ(raw.size(), ids.size() * vocab * sizeof(float));
  std::vector<float> want(ids.size() * vocab);
  std::memcpy(want.data(), raw.data(), raw.size());

  for (size_t chunk : {ids.size(), size_t{7}}) {  // one prefill step, and chunked prefill through the cache
    const Agreement a = compare(all_logits(model, ids, chunk), want, vocab, c.tolerance);
    EXPECT_LE(a.max_error, c.tolerance) << "chunk " << chunk;
    EXPECT_TRUE(a.top1_mismatches.empty()) << a.top1_mismatches.size() << " positions differ in top-1, first " << a.top1_mismatches.front()
                                           << " (chunk " << chunk << ")";
  }
}

INSTANTIATE_TEST_SUITE_P(Golden, MatchesReference, ::testing::ValuesIn(cases()), [](const auto& param_info) {
  std::string name = param_info.param.arch + "_" + param_info.param.format + "_" + dtype_name(param_info.param.dtype);
  if (param_info.param.output_dtype) name += std::string("_output_") + dtype_name(*param_info.param.output_dtype);
  std::replace(name.begin(), name.end(), '-', '_');
  return name;
});

std::shared_ptr<const Model> converted(const std::string& arch, const std::string& format, DType dtype) {
  const fs::path out = scratch() / (arch + "-" + format + "-" + dtype_name(dtype) + "-batch.lacuna");
  if (!fs::exists(out)) {
    ConvertOptions o;
    o.dtype = dtype;
    o.sparsity = 0.6;
    o.prune = PruneMethod::magnitude;
    if (format != "auto") o.format = *parse_format(format);
    convert_checkpoint(tiny_checkpoint(arch).string(), out.string(), o);
  }
  return Model::open(out.string());
}

// A batch may run other kernels than a single sequence (the planner picks
// per batch size: bf16 or u8 activations, another summation order), so a
// sequence in a batch matches itself alone within the bf16 activation rounding.
constexpr double kBatchTolerance = 2e-2;

class BatchMatchesSingle : public ::testing::TestWithParam<std::tuple<std::string, std::string, DType>> {};

TEST_P(BatchMatchesSingle, PrefillAndDecodeSteps) {
  const auto& [arch, format, dtype] = GetParam();
  const auto model = converted(arch, format, dtype);
  const auto vocab = static_cast<size_t>(model->config().vocab);
  const std::vector<int32_t> all = golden_tokens();
  const std::vector<size_t> lengths = {5, 17, 1, 11};
  // Alone: prompt, then three decode steps of given tokens.
  std::vector<std::vector<float>> single;
  for (size_t len : lengths) {
    std::vector<int32_t> ids(all.begin(), all.begin() + static_cast<std::ptrdiff_t>(len + 3));
    single.push_back(all_logits(model, ids, len));
  }
  // Together: every prompt in one step, then the decode steps batched.
  Forward forward(model);
  std::vector<KvCache> caches;
  for (size_t len : lengths) caches.emplace_back(model->config(), static_cast<int64_t>(len + 3));
  std::vector<std::vector<float>> batched(lengths.size());
  for (size_t i = 0; i < lengths.size(); ++i) batched[i].resize((lengths[i] + 3) * vocab);
  std::vector<SequenceStep> steps;
  for (size_t i = 0; i < lengths.size(); ++i) steps.push_back({&caches[i], std::span(all).first(lengths[i]), batched[i].data(), true});
  forward.step(steps);
  for (size_t d = 0; d < 3; ++d) {
    steps.clear();
    for (size_t i = 0; i < lengths.size(); ++i)
      steps.push_back({&caches[i], std::span(all).subspan(lengths[i] + d, 1), &batched[i][(lengths[i] + d) * vocab], false});
    forward.step(steps);
  }
  for (size_t i = 0; i < lengths.size(); ++i) {
    const Agreement a = compare(batched[i], single[i], vocab, kBatchTolerance);
    EXPECT_LE(a.max_error, kBatchTolerance) << "sequence " << i;
    EXPECT_TRUE(a.top1_mismatches.empty()) << "sequence " << i;
  }
}

std::string batch_case_name(const ::testing::TestParamInfo<BatchMatchesSingle::ParamType>& param_info) {
  std::string name = std::get<0>(param_info.param) + "_" + std::get<1>(param_info.param) + "_" + dtype_name(std::get<2>(param_info.param));
  std::replace(name.begin(), name.end(), '-', '_');
  return name;
}

INSTANTIATE_TEST_SUITE_P(Formats, BatchMatchesSingle,
                         ::testing::Combine(::testing::Values("grok-1", "mixtral"), ::testing::Values("auto", "dense", "csr", "bitmap"),
                                            ::testing::Values(DType::bf16, DType::int8)),
                         batch_case_name);
INSTANTIATE_TEST_SUITE_P(Csr8, BatchMatchesSingle,
                         ::testing::Combine(::testing::Values("grok-1", "mixtral"), ::testing::Values("csr8"), ::testing::Values(DType::bf16)),
                         batch_case_name);

// Attention runs blocks of consecutive tokens over the positions any of
// them sees, each token weighting only its own: with a sliding window
// shorter than the prompt, a whole prompt in one step (tokens of a block
// starting at different positions) must give what the same model gives one
// token per step (each token a block of its own), and the window must matter.
TEST(Attention, SlidingWindowIsTheSameInOneStepOrTokenByToken) {
  const fs::path dir = scratch() / "hf-mixtral-window";
  fs::create_directories(dir);
  for (const auto& entry : fs::directory_iterator(tiny_checkpoint("mixtral")))
    fs::copy_file(entry.path(), dir / entry.path().filename(), fs::copy_options::overwrite_existing);
  nlohmann::json config = nlohmann::json::parse(read_text(dir / "config.json"));
  config["sliding_window"] = 5;
  std::ofstream(dir / "config.json") << config.dump();
  ConvertOptions o;
  o.dtype = DType::f32;
  o.format = Format::dense;
  const fs::path windowed = scratch() / "mixtral-window.lacuna", full = scratch() / "mixtral-no-window.lacuna";
  convert_checkpoint(dir.string(), windowed.string(), o);
  convert_checkpoint(tiny_checkpoint("mixtral").string(), full.string(), o);
  const auto model = Model::open(windowed.string());
  ASSERT_EQ(model->config().sliding_window, 5);
  const auto vocab = static_cast<size_t>(model->config().vocab);
  const std::vector<int32_t> all = golden_tokens();
  const std::vector<int32_t> ids(all.begin(), all.begin() + 21);
  const std::vector<float> whole = all_logits(model, ids, ids.size()), stepwise = all_logits(model, ids, 1);
  const Agreement a = compare(whole, stepwise, vocab, 1e-4);
  EXPECT_LE(a.max_error, 1e-4);
  EXPECT_TRUE(a.top1_mismatches.empty());
  // Past the window, the logits are not those of the model that sees everything.
  const std::vector<float> unwindowed = all_logits(Model::open(full.string()), ids, ids.size());
  const std::vector<float> late(whole.begin() + 10 * static_cast<std::ptrdiff_t>(vocab), whole.end());
  const std::vector<float> late_unwindowed(unwindowed.begin() + 10 * static_cast<std::ptrdiff_t>(vocab), unwindowed.end());
  EXPECT_GT(compare(late, late_unwindowed, vocab, 1e-4).max_error, 1e-2);
}

TEST(Generate, GreedyIsDeterministicAndTheSameInsideABatch) {
  for (const char* arch : {"grok-1", "mixtral"}) {
    const auto model = converted(arch, "auto", DType::bf16);
    const std::vector<int32_t> all = golden_tokens();
    std::vector<GenerateRequest> requests;
    for (size_t len : {3, 9, 14}) {
      GenerateRequest r;
      r.prompt.assign(all.begin(), all.begin() + static_cast<std::ptrdiff_t>(len));
      r.options.sampling.temperature = 0;
      r.options.max_tokens = 24;
      r.options.stop_at_eos = false;
      r.options.prefill_chunk = 4;
      requests.push_back(r);
    }
    Forward forward(model);
    const std::vector<GenerateResult> together = generate(forward, requests);
    const std::vector<GenerateResult> again = generate(forward, requests);
    for (size_t i = 0; i < requests.size(); ++i) {
      const std::vector<GenerateResult> alone = generate(forward, {requests[i]});
      EXPECT_EQ(alone[0].tokens, together[i].tokens) << arch << " request " << i;
      EXPECT_EQ(again[i].tokens, together[i].tokens) << arch << " request " << i;
      EXPECT_EQ(together[i].tokens.size(), 24u);
      EXPECT_EQ(together[i].finish_reason, "length");
    }
  }
}

TEST(Sampler, LogprobsAreTheLogSoftmaxOfTheLogitsAsGiven) {
  const std::vector<float> logits = {2.0f, -1.0f, 0.5f, 2.0f, 7.0f, -30.0f, 1e-3f};
  const std::vector<double> reference = testing::log_softmax(logits);
  auto want = [&](size_t id) { return reference[id]; };
  const TokenLogprobs lp = token_logprobs(logits, 3, 3);
  EXPECT_NEAR(lp.logprob, want(3), 1e-6);
  // Highest first; of the tied 0 and 3, the lower id first.
  ASSERT_EQ(lp.top.size(), 3u);
  const size_t order[] = {4, 0, 3};
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(lp.top[i].first, static_cast<int32_t>(order[i]));
    EXPECT_NEAR(lp.top[i].second, want(order[i]), 1e-6);
  }
  EXPECT_TRUE(token_logprobs(logits, 5, 0).top.empty());
  EXPECT_EQ(token_logprobs(logits, 5, kMaxTopLogprobs).top.size(), logits.size());
  // Large logits do not overflow (the maximum is taken out first).
  const std::vector<float> large = {1000.0f, 1000.0f};
  EXPECT_NEAR(token_logprobs(large, 1, 0).logprob, -std::log(2.0), 1e-6);
}

TEST(Sampler, FrequencyAndPresencePenaltiesCountGeneratedTokensOnly) {
  const std::vector<float> logits = {1.0f, 0.9f, 0.5f, 0.0f};
  auto greedy_with = [&](float frequency, float presence, std::vector<int32_t> history, size_t generated) {
    Sampler s({.temperature = 0, .frequency_penalty = frequency, .presence_penalty = presence});
    return s.sample(logits, history, generated);
  };
  const std::vector<int32_t> twice_0_once_1 = {0, 0, 1};  // all generated
  EXPECT_EQ(greedy_with(0.0f, 0.0f, twice_0_once_1, 3), 0);
  EXPECT_EQ(greedy_with(0.3f, 0.0f, twice_0_once_1, 3), 1);   // 0.4, 0.6, 0.5, 0
  EXPECT_EQ(greedy_with(0.0f, 0.45f, twice_0_once_1, 3), 0);  // 0.55, 0.45, 0.5, 0
  EXPECT_EQ(greedy_with(0.1f, 0.45f, twice_0_once_1, 3), 2);  // 0.35, 0.35, 0.5, 0
  // The prompt's tokens are not penalised: only the last `generated` count.
  EXPECT_EQ(greedy_with(0.0f, 0.6f, {0, 0, 0, 2}, 1), 0);     // 1, 0.9, -0.1, 0
  // Negative values encourage a token already generated.
  EXPECT_EQ(greedy_with(0.0f, -1.5f, {3}, 1), 3);             // 1, 0.9, 0.5, 1.5
  EXPECT_THROW(Sampler({.frequency_penalty = 2.5f}), Error);
  EXPECT_THROW(Sampler({.presence_penalty = std::nanf("")}), Error);
  for (const float temperature : {0.0f, 0.8f}) EXPECT_THROW(Sampler({.temperature = temperature}).sample({}, {}, 0), Error) << temperature;
}

TEST(Sampler, LogitBiasIsAddedAfterThePenalties) {
  const std::vector<float> logits = {1.0f, 0.9f, 0.5f, 0.0f};
  auto greedy_with = [&](std::vector<std::pair<int32_t, float>> bias) {
    Sampler s({.temperature = 0, .logit_bias = std::move(bias)});
    return s.sample(logits, {}, 0);
  };
  EXPECT_EQ(greedy_with({}), 0);
  EXPECT_EQ(greedy_with({{0, -0.2f}}), 1);               // 0.8, 0.9, 0.5, 0
  EXPECT_EQ(greedy_with({{3, 1.01f}}), 3);               // 1, 0.9, 0.5, 1.01
  EXPECT_EQ(greedy_with({{0, -0.2f}, {1, -0.5f}}), 0);   // 0.8, 0.4, 0.5, 0
  // After the repetition penalty: token 0 (generated before) reads 1 / 2 - 0.3 = 0.2 < 0.3;
  // biased first, it would read (1 - 0.3) / 2 = 0.35, or 0.7 if the penalty then missed it.
  const std::vector<float> two = {1.0f, 0.3f};
  Sampler penalised({.temperature = 0, .repetition_penalty = 2.0f});
  EXPECT_EQ(penalised.sample(two, std::vector<int32_t>{0}, 1), 0);
  Sampler penalised_biased({.temperature = 0, .repetition_penalty = 2.0f, .logit_bias = {{0, -0.3f}}});
  EXPECT_EQ(penalised_biased.sample(two, std::vector<int32_t>{0}, 1), 1);
  // Sampled: -100 never comes up, 100 always does.
  const std::vector<float> flat(8, 0.0f);
  for (uint64_t seed = 0; seed < 500; ++seed) {
    Sampler banned({.temperature = 1.0f, .top_k = 0, .top_p = 1.0f, .seed = seed, .logit_bias = {{2, -100.0f}}});
    Sampler forced({.temperature = 1.0f, .top_k = 0, .top_p = 1.0f, .seed = seed, .logit_bias = {{5, 100.0f}}});
    ASSERT_NE(banned.sample(flat, {}, 0), 2) << "seed " << seed;
    ASSERT_EQ(forced.sample(flat, {}, 0), 5) << "seed " << seed;
  }
  EXPECT_THROW(Sampler({.logit_bias = {{1, 100.5f}}}), Error);
  EXPECT_THROW(Sampler({.logit_bias = {{1, std::nanf("")}}}), Error);
  EXPECT_THROW(Sampler({.logit_bias = {{1, 1.0f}, {0, 2.0f}, {1, -1.0f}}}), Error);  // token 1 twice
  Sampler outside({.temperature = 0, .logit_bias = {{4, 1.0f}}});
  EXPECT_THROW(outside.sample(logits, {}, 0), Error);  // a 4-token vocabulary
  EXPECT_THROW(validate_logit_bias_tokens({.logit_bias = {{-1, 1.0f}}}, 4), Error);
  EXPECT_NO_THROW(validate_logit_bias_tokens({.logit_bias = {{3, 1.0f}}}, 4));
}

TEST(Generate, LogprobsFollowEveryGeneratedTokenOnlyWhenAsked) {
  Forward forward(converted("mixtral", "auto", DType::bf16));
  GenerateRequest r;
  r.prompt = {1, 5, 9, 14};
  r.options.sampling.temperature = 0;
  r.options.max_tokens = 5;
  r.options.stop_at_eos = false;
  EXPECT_TRUE(generate(forward, {r})[0].logprobs.empty());
  r.options.logprobs = 2;
  const GenerateResult out = generate(forward, {r})[0];
  ASSERT_EQ(out.logprobs.size(), out.tokens.size());
  for (size_t i = 0; i < out.tokens.size(); ++i) {
    // Greedy takes the most likely token, so it heads its own top list.
    ASSERT_EQ(out.logprobs[i].top.size(), 2u);
    EXPECT_EQ(out.logprobs[i].top[0].first, out.tokens[i]);
    EXPECT_EQ(out.logprobs[i].top[0].second, out.logprobs[i].logprob);
    EXPECT_LE(out.logprobs[i].logprob, 0.0f);
    EXPECT_GE(out.logprobs[i].top[0].second, out.logprobs[i].top[1].second);
  }
  r.options.logprobs = kMaxTopLogprobs + 1;
  EXPECT_THROW(generate(forward, {r}), Error);
}

TEST(Generate, PromptLogprobsScoreEachPromptTokenByThePositionBefore) {
  const auto model = converted("mixtral", "auto", DType::f32);
  std::vector<int32_t> prompt{1};
  for (int32_t k = 1; k < 40; ++k) prompt.push_back(3 + (k * 29) % 400);
  // The reference: the whole prompt in one step, every position's logits,
  // a log-softmax in long double here.
  std::vector<float> rows(prompt.size() * static_cast<size_t>(model->config().vocab));
  {
    Forward forward(model);
    KvCache cache(model->config(), static_cast<int64_t>(prompt.size()));
    const SequenceStep step{&cache, prompt, rows.data(), true};
    forward.step(std::span(&step, 1));
  }
  const auto vocab = static_cast<size_t>(model->config().vocab);
  auto want = [&](size_t position, int32_t token) {
    return testing::log_softmax(std::span(rows).subspan(position * vocab, vocab))[static_cast<size_t>(token)];
  };

  Forward forward(model);
  GenerateRequest r;
  r.prompt = prompt;
  r.options.sampling.temperature = 0;
  r.options.max_tokens = 3;
  r.options.stop_at_eos = false;
  r.options.prefill_chunk = 16;  // three chunks: the scores cross their boundaries
  const GenerateResult plain = generate(forward, {r})[0];
  EXPECT_TRUE(plain.prompt_logprobs.empty());
  r.options.prompt_logprobs = 1;
  const GenerateResult scored = generate(forward, {r})[0];
  ASSERT_EQ(scored.prompt_logprobs.size(), prompt.size() - 1);
  for (size_t i = 0; i + 1 < prompt.size(); ++i) {
    EXPECT_NEAR(scored.prompt_logprobs[i].logprob, want(i, prompt[i + 1]), 1e-3) << i;
    ASSERT_EQ(scored.prompt_logprobs[i].top.size(), 1u);
    EXPECT_GE(scored.prompt_logprobs[i].top[0].second, scored.prompt_logprobs[i].logprob);
  }
  // Scoring the prompt does not change what follows it.
  EXPECT_EQ(scored.tokens, plain.tokens);
}

TEST(Generate, SeededSamplingIsReproducibleAndStopsAtText) {
  const auto model = converted("mixtral", "auto", DType::bf16);
  GenerateRequest r;
  r.prompt = model->tokenizer()->encode("The weather today is", true);
  r.options.sampling = {.temperature = 1.0f, .top_k = 50, .top_p = 0.9f, .repetition_penalty = 1.1f, .seed = 42};
  r.options.max_tokens = 16;
  Forward forward(model);
  std::string streamed;
  const auto a = generate(forward, {r}, nullptr, [&](size_t, int32_t, std::string_view text) {
    streamed += text;
    return true;
  });
  const auto b = generate(forward, {r});
  EXPECT_EQ(a[0].tokens, b[0].tokens);
  // The text follows the prompt's, so it starts with the space between them.
  const Tokenizer& tok = *model->tokenizer();
  std::vector<int32_t> all = r.prompt;
  all.insert(all.end(), a[0].tokens.begin(), a[0].tokens.end());
  EXPECT_EQ(tok.decode(r.prompt) + a[0].text, tok.decode(all));
  EXPECT_EQ(streamed, a[0].text);
  ASSERT_GE(a[0].text.size(), 4u);
  // Stopping at a piece of the text it produced: the result ends before it,
  // and the callback never saw any of the stop string.
  r.options.stop = {a[0].text.substr(a[0].text.size() / 2, 3)};
  streamed.clear();
  const auto c = generate(forward, {r}, nullptr, [&](size_t, int32_t, std::string_view text) {
    streamed += text;
    return true;
  });
  EXPECT_EQ(c[0].finish_reason, "stop");
  EXPECT_EQ(c[0].text, a[0].text.substr(0, a[0].text.find(r.options.stop[0])));
  EXPECT_EQ(streamed, c[0].text);
}

TEST(Generate, CallbackCancelsAndACallersCacheContinuesTheSequence) {
  const auto model = converted("grok-1", "auto", DType::bf16);
  Forward forward(model);
  GenerateRequest whole;
  whole.prompt = {1, 124, 306, 281, 69};
  whole.options.sampling.temperature = 0;
  whole.options.max_tokens = 12;
  whole.options.stop_at_eos = false;
  const std::vector<int32_t> expected = generate(forward, {whole})[0].tokens;

  size_t calls = 0;
  const auto cancelled = generate(forward, {whole}, nullptr, [&](size_t, int32_t, std::string_view) { return ++calls < 3; });
  EXPECT_EQ(cancelled[0].finish_reason, "cancelled");
  EXPECT_EQ(cancelled[0].tokens, std::vector<int32_t>(expected.begin(), expected.begin() + 3));

  // Six tokens, then six more continuing the same cache: the same twelve.
  KvCache cache(model->config(), 64);
  GenerateRequest first = whole;
  first.options.max_tokens = 6;
  first.cache = &cache;
  const std::vector<int32_t> part1 = generate(forward, {first})[0].tokens;
  EXPECT_EQ(cache.length(), 5 + 5);  // the prompt and every generated token but the last
  GenerateRequest second = first;
  second.preceding = whole.prompt;
  second.preceding.insert(second.preceding.end(), part1.begin(), part1.end() - 1);
  second.prompt = {part1.back()};
  const std::vector<int32_t> part2 = generate(forward, {second})[0].tokens;
  std::vector<int32_t> both = part1;
  both.insert(both.end(), part2.begin(), part2.end());
  EXPECT_EQ(both, expected);

  // A cache that fills ends generation with "context".
  KvCache small(model->config(), 8);
  GenerateRequest tight = whole;
  tight.cache = &small;
  const GenerateResult full = generate(forward, {tight})[0];
  EXPECT_EQ(full.finish_reason, "context");
  EXPECT_EQ(full.tokens, std::vector<int32_t>(expected.begin(), expected.begin() + 3));  // 5 + 3 = 8 positions
  tight.prompt.assign(9, 1);
  KvCache fresh(model->config(), 8);
  tight.cache = &fresh;
  EXPECT_THROW(generate(forward, {tight}), Error);
}

// Pages of [begin, begin + bytes) mapped into this process (/proc/self/pagemap, bit 63).
size_t mapped_pages(const std::byte* begin, size_t bytes) {
  const auto page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  const uintptr_t first = reinterpret_cast<uintptr_t>(begin) / page, last = (reinterpret_cast<uintptr_t>(begin) + bytes - 1) / page;
  std::vector<uint64_t> entries(last - first + 1);
  const int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
  const size_t want = entries.size() * sizeof(uint64_t);
  const ssize_t got = fd < 0 ? -1 : pread(fd, entries.data(), want, static_cast<off_t>(first * sizeof(uint64_t)));
  if (fd >= 0) close(fd);
  if (got != static_cast<ssize_t>(want)) throw std::runtime_error("cannot read /proc/self/pagemap");
  return static_cast<size_t>(std::count_if(entries.begin(), entries.end(), [](uint64_t e) { return (e >> 63) != 0; }));
}

// Embedding lookups read their rows from the file: through the mapping, each
// lookup's page fault also mapped the pages around it (fault-around), and a
// prompt of scattered tokens left most of the table resident. The rows must
// still be the stored ones, and a file cut short under a running model must
// give an error, not a SIGBUS.
TEST(Model, EmbeddingRowsAreReadWithoutMappingTheTable) {
  const fs::path ckpt = scratch() / "small-mixtral";
  synthesize_checkpoint(ckpt.string(), SynthOptions{.arch = Arch::mixtral, .preset = "small", .seed = 5});
  for (const DType dtype : {DType::bf16, DType::int8}) {
    SCOPED_TRACE(dtype_name(dtype));
    const fs::path path = scratch() / ("small-embedding-" + std::string(dtype_name(dtype)) + ".lacuna");
    ConvertOptions o;
    o.dtype = dtype;
    convert_checkpoint(ckpt.string(), path.string(), o);
    const auto model = Model::open(path.string(), OpenOptions{.verify_checksums = false, .prefault = true});
    const auto vocab = static_cast<int32_t>(model->config().vocab);
    const auto hidden = static_cast<size_t>(model->config().hidden);
    const int32_t stride = 13;  // every few pages of the table
    std::vector<float> rows(static_cast<size_t>((vocab + stride - 1) / stride) * hidden);
    for (int32_t t = 0; t < vocab; t += stride) model->embed(t, &rows[static_cast<size_t>(t / stride) * hidden]);
    const Tensor& table = model->file().find("embedding")->tensor;
    const size_t table_pages = table.payload_bytes() / static_cast<size_t>(sysconf(_SC_PAGESIZE));
    EXPECT_LT(mapped_pages(table.data(), table.payload_bytes()), table_pages / 16) << "of " << table_pages;

    for (int32_t t = 0; t < vocab; t += stride)
      for (size_t i = 0; i < hidden; ++i) {
        const size_t at = static_cast<size_t>(t) * hidden + i;
        const float stored = dtype == DType::bf16 ? bf16_to_f32(table.section<uint16_t>(Section::values)[at])
                                                  : static_cast<float>(table.section<int8_t>(Section::values)[at]) *
                                                        table.section<float>(Section::scales)[t];
        ASSERT_EQ(rows[static_cast<size_t>(t / stride) * hidden + i], stored) << "token " << t << " column " << i;
      }

    fs::resize_file(path, model->file().find("embedding")->file_offset + 4096);
    std::vector<float> row(hidden);
    EXPECT_THROW(model->embed(vocab - 1, row.data()), IoError);
  }
}

TEST(Forward, RefusesBadTokensAndFullCachesWithoutChangingTheCache) {
  const auto model = converted("grok-1", "auto", DType::bf16);
  Forward forward(model);
  KvCache cache(model->config(), 4);
  const std::vector<int32_t> bad = {1, static_cast<int32_t>(model->config().vocab)}, negative = {-1}, five = {1, 2, 3, 4, 5};
  for (const auto* ids : {&bad, &negative, &five}) {
    const SequenceStep step{&cache, *ids, nullptr, false};
    EXPECT_THROW(forward.step({&step, 1}), Error);
    EXPECT_EQ(cache.length(), 0);
  }
  GenerateRequest r;
  r.prompt = {1, 2};
  r.options.max_tokens = static_cast<int32_t>(model->config().max_context);
  EXPECT_THROW(generate(forward, {r}), Error);
}

// Large batches: a bitmap weight is expanded per call and run through oneDNN
// (int8 from 24 tokens, or 129 where the AMX tiles run; bf16 from 16 below 75 % sparsity, or, widened to f32
// where VDPBF16PS is slower than f32 FMAs, from 64 below 65 % and 256 below
// 85 %), and any weight may run a small-batch kernel over chunks of 64
// tokens; the result must be the product all the same, short last chunk
// included.
TEST(Linear, LargeBatchesMatchTheDenseProductWhateverRunsThem) {
  for (const size_t zeros_in_13 : {6, 9, 12}) {  // 46 %, 69 % and 92 % sparse
    std::vector<float> wf(96 * 200);
    for (size_t i = 0; i < wf.size(); ++i)
      wf[i] = (i * 7919 % 13 < zeros_in_13) ? 0.0f : static_cast<float>(static_cast<int>(i * 31 % 17) - 8) / 8.0f;
    for (Format format : {Format::bitmap, Format::csr, Format::csr8})
      for (DType dtype : {DType::bf16, DType::int8}) {
        if (format == Format::csr8 && dtype != DType::bf16) continue;  // convert stores csr8 as bf16 only
        const Linear linear(pack(quantize_matrix(wf.data(), 96, 200, dtype), format));
        const std::vector<float> w = dequantize(linear.weight());
        for (size_t n : {15, 20, 31, 32, 40, 65, 130, 260}) {
          std::vector<float> x(n * 200), y(n * 96);
          for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(static_cast<int>(i * 13 % 29) - 14) / 14.0f;
          linear.run(x.data(), n, y.data());
          for (size_t t = 0; t < n; ++t)
            for (size_t r = 0; r < 96; ++r) {
              double want = 0, magnitude = 0;
              for (size_t c = 0; c < 200; ++c)
                want += double{x[t * 200 + c]} * w[r * 200 + c], magnitude += std::fabs(double{x[t * 200 + c]} * w[r * 200 + c]);
              ASSERT_NEAR(y[t * 96 + r], want, 1e-2 * magnitude + 1e-5) << format_name(format) << " " << dtype_name(dtype) << " " << zeros_in_13
                                                                         << "/13 zeros n=" << n << " token " << t << " row " << r << " ("
                                                                         << linear.describe(n) << ")";
            }
          // int8 keeps the AMX tiles up to two chunks of their 64 tokens; bf16 keeps its AMX tiles at every batch, and where
          // only oneDNN runs on AMX stays bf16 and expands from 16.
          const bool amx_int8 = cpu_info().why_unavailable(kAmxTile | kAmxInt8).empty();
          const bool amx_bf16 = cpu_info().why_unavailable(kAmxTile | kAmxBf16).empty();
          const bool widened = dtype == DType::bf16 && f32_outruns_bf16_dot() && !onednn_runs_amx();
          const size_t from = dtype == DType::int8 ? (amx_int8 ? 129 : 24)
                              : amx_bf16 ? 0
                              : onednn_runs_amx() ? 16
                              : widened ? (zeros_in_13 >= 12 ? 0 : zeros_in_13 >= 9 ? 256 : 64)
                                        : (zeros_in_13 >= 12 ? 0 : 16);
          const bool expanded = format == Format::bitmap && from && n >= from;
          EXPECT_EQ(linear.describe(n).find("expanded") != std::string::npos, expanded) << zeros_in_13 << "/13 zeros: " << linear.describe(n);
          if (expanded) {
            EXPECT_NE(linear.describe(n).find(widened ? "dense f32" : dtype_name(dtype)), std::string::npos) << linear.describe(n);
          }
        }
      }
  }
}

// One token of a 92 % sparse bf16 weight runs fastest on the kernel that
// packs the activations, but it packs them again for every token of a
// batch: the server's invariant policy, which keeps one kernel at every
// batch size, takes the fastest of the others, and its products still
// match the dense product at every batch.
TEST(Linear, TheInvariantPolicyLeavesOutKernelsThatWorkPerToken) {
  constexpr size_t kRows = 2048, kCols = 2048;
  std::vector<float> wf(kRows * kCols);
  for (size_t i = 0; i < wf.size(); ++i) wf[i] = (i * 7919 % 25 < 23) ? 0.0f : static_cast<float>(static_cast<int>(i * 31 % 17) - 8) / 8.0f;
  const Linear linear(pack(quantize_matrix(wf.data(), kRows, kCols, DType::bf16), Format::bitmap));
  const SpmmUkernel* fastest = linear.single_kernel(1);
  if (!fastest || !works_per_token(*fastest)) GTEST_SKIP() << "one token does not run on a per-token kernel here";
  const SpmmUkernel* invariant = linear.single_kernel(1, BatchPolicy::invariant);
  ASSERT_NE(invariant, nullptr);
  EXPECT_FALSE(works_per_token(*invariant)) << invariant->name;
  const std::vector<float> w = dequantize(linear.weight());
  for (size_t n : {1, 4, 9}) {
    std::vector<float> x(n * kCols), y(n * kRows);
    for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(static_cast<int>(i * 13 % 29) - 14) / 14.0f;
    for (BatchPolicy policy : {BatchPolicy::fastest, BatchPolicy::invariant}) {
      linear.run(x.data(), n, y.data(), policy);
      for (size_t t = 0; t < n; ++t)
        for (size_t r = 0; r < kRows; r += 7) {
          double want = 0, magnitude = 0;
          for (size_t c = 0; c < kCols; ++c)
            want += double{x[t * kCols + c]} * w[r * kCols + c], magnitude += std::fabs(double{x[t * kCols + c]} * w[r * kCols + c]);
          ASSERT_NEAR(y[t * kRows + r], want, 1e-2 * magnitude + 1e-5) << "n=" << n << " token " << t << " row " << r;
        }
    }
  }
}

// An expanded weight larger than the expansion block (1 MB) runs block by
// block of rows on all threads, the last block shorter; every block's
// outputs must land in its own columns.
TEST(Linear, ExpandedWeightsLargerThanABlockMatchTheDenseProduct) {
  constexpr size_t kRows = 4100, kCols = 2100, kTokens = 140;  // 17 MB in bf16, 34 MB widened to f32, 8.6 MB in int8
  std::vector<float> wf(kRows * kCols);
  for (size_t i = 0; i < wf.size(); ++i) wf[i] = (i * 7919 % 13 < 6) ? 0.0f : static_cast<float>(static_cast<int>(i * 31 % 17) - 8) / 8.0f;
  std::vector<float> x(kTokens * kCols), y(kTokens * kRows);
  for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(static_cast<int>(i * 13 % 29) - 14) / 14.0f;
  // Each dtype where this host expands it at this batch (int8 on every host; bf16 where its AMX tiles do not run).
  int expanded = 0;
  for (DType dtype : {DType::bf16, DType::int8}) {
    const Linear linear(pack(quantize_matrix(wf.data(), kRows, kCols, dtype), Format::bitmap));
    if (linear.describe(kTokens).find("expanded") == std::string::npos) continue;
    ++expanded;
    const std::vector<float> w = dequantize(linear.weight());
    linear.run(x.data(), kTokens, y.data());
    for (size_t t = 0; t < kTokens; t += 7)
      for (size_t r = 0; r < kRows; ++r) {
        double want = 0, magnitude = 0;
        for (size_t c = 0; c < kCols; ++c) want += double{x[t * kCols + c]} * w[r * kCols + c], magnitude += std::fabs(double{x[t * kCols + c]} * w[r * kCols + c]);
        ASSERT_NEAR(y[t * kRows + r], want, 1e-2 * magnitude + 1e-5) << dtype_name(dtype) << " token " << t << " row " << r;
      }
  }
  EXPECT_GT(expanded, 0);
}

// Bad checkpoints: each is the good tiny checkpoint with one thing broken.
class BadCheckpoint : public ::testing::Test {
 protected:
  fs::path copy(const std::string& name) {
    const fs::path dir = scratch() / ("bad-" + name);
    fs::remove_all(dir);
    fs::copy(tiny_checkpoint("mixtral"), dir);
    return dir;
  }
  // Rewrites model.safetensors through `edit`, which may drop, reshape or retype tensors.
  void rewrite(const fs::path& dir, const std::function<void(const std::string&, std::vector<uint64_t>&, bool&)>& edit, StDType dtype = StDType::bf16) {
    const SafetensorsCheckpoint in = SafetensorsCheckpoint::open(dir.string());
    SafetensorsWriter w;
    for (const StTensor& t : in.tensors()) {
      std::vector<uint64_t> shape = t.shape;
      bool keep = true;
      edit(t.name, shape, keep);
      if (!keep) continue;
      std::vector<float> v = in.to_f32(t);
      uint64_t n = 1;
      for (uint64_t d : shape) n *= d;
      v.resize(n);
      w.add(t.name, dtype, shape, v);
    }
    fs::remove(dir / "model.safetensors");
    w.write((dir / "model.safetensors").string());
  }
  std::string convert_error(const fs::path& dir) {
    try {
      convert_checkpoint(dir.string(), (dir / "out.lacuna").string(), {});
    } catch (const Error& e) {
      EXPECT_FALSE(fs::exists(dir / "out.lacuna"));
      return e.what();
    }
    return "converted without an error";
  }
};

TEST_F(BadCheckpoint, MissingTensor) {
  const fs::path dir = copy("missing");
  rewrite(dir, [](const std::string& name, auto&, bool& keep) { keep = name != "model.layers.1.self_attn.k_proj.weight"; });
  EXPECT_NE(convert_error(dir).find("missing tensor model.layers.1.self_attn.k_proj.weight"), std::string::npos) << convert_error(dir);
}

TEST_F(BadCheckpoint, WrongShape) {
  const fs::path dir = copy("shape");
  rewrite(dir, [](const std::string& name, std::vector<uint64_t>& shape, bool&) {
    if (name == "model.layers.0.block_sparse_moe.experts.2.w2.weight") shape[1] -= 1;
  });
  const std::string e = convert_error(dir);
  EXPECT_NE(e.find("model.layers.0.block_sparse_moe.experts.2.w2.weight is [64x127]"), std::string::npos) << e;
}

TEST_F(BadCheckpoint, ExtraTensor) {
  const fs::path dir = copy("extra");
  const SafetensorsCheckpoint in = SafetensorsCheckpoint::open(dir.string());
  SafetensorsWriter w;
  for (const StTensor& t : in.tensors()) w.add(t.name, t.dtype, t.shape, in.to_f32(t));
  w.add("model.layers.0.mystery.weight", StDType::f32, {2}, std::vector<float>{1, 2});
  fs::remove(dir / "model.safetensors");
  w.write((dir / "model.safetensors").string());
  EXPECT_NE(convert_error(dir).find("unexpected tensor model.layers.0.mystery.weight"), std::string::npos);
}

TEST_F(BadCheckpoint, UnsupportedDtype) {
  const fs::path dir = copy("dtype");
  // Patch one tensor's dtype in the header to I64 (same size as 4 bf16).
  std::string bytes = read_text(dir / "model.safetensors");
  const size_t at = bytes.find("\"BF16\"");
  ASSERT_NE(at, std::string::npos);
  bytes.replace(at, 6, "\"I16\" ");
  std::ofstream(dir / "model.safetensors", std::ios::binary) << bytes;
  EXPECT_NE(convert_error(dir).find("I16"), std::string::npos) << convert_error(dir);
}

TEST_F(BadCheckpoint, TruncatedSafetensors) {
  const fs::path dir = copy("truncated");
  const auto size = fs::file_size(dir / "model.safetensors");
  for (uintmax_t keep : {uintmax_t{0}, uintmax_t{7}, uintmax_t{100}, size / 2, size - 1}) {
    fs::resize_file(dir / "model.safetensors", keep);
    EXPECT_NE(convert_error(dir).find("model.safetensors"), std::string::npos) << "kept " << keep;
  }
}

TEST_F(BadCheckpoint, MalformedConfig) {
  const fs::path dir = copy("config");
  const std::string good = read_text(dir / "config.json");
  std::ofstream(dir / "config.json") << good.substr(0, good.size() / 2);
  EXPECT_NE(convert_error(dir).find("config.json: malformed JSON"), std::string::npos);
  nlohmann::json j = nlohmann::json::parse(good);
  j["architectures"] = {"LlamaForCausalLM"};
  std::ofstream(dir / "config.json") << j.dump();
  EXPECT_NE(convert_error(dir).find("LlamaForCausalLM\" is not supported"), std::string::npos);
  j = nlohmann::json::parse(good);
  j.erase("hidden_size");
  std::ofstream(dir / "config.json") << j.dump();
  EXPECT_NE(convert_error(dir).find("missing field \"hidden_size\""), std::string::npos);
  j = nlohmann::json::parse(good);
  j["num_key_value_heads"] = 3;
  std::ofstream(dir / "config.json") << j.dump();
  EXPECT_NE(convert_error(dir).find("multiple of kv_heads"), std::string::npos);
}

// The .lacuna metadata's config (ModelConfig::from_json): fields must have
// the types to_json writes, so a file built elsewhere cannot slip a float
// or an out-of-range integer into a conversion.
TEST(ModelConfig, MetadataFieldsOfAnotherTypeOrRangeAreRefusedByName) {
  const nlohmann::json good = synth_config(Arch::mixtral, "tiny").to_json();
  EXPECT_EQ(ModelConfig::from_json(good).to_json(), good);
  struct BadField {
    const char* key;
    nlohmann::json value;
    const char* message;
  };
  const std::vector<BadField> cases = {
      {"vocab", 2.5, "\"vocab\" must be an integer"},
      {"hidden", 1e300, "\"hidden\" must be an integer"},
      {"layers", "2", "\"layers\" must be an integer"},
      {"experts", uint64_t{1} << 63, "\"experts\" must be an integer"},
      {"bos_id", 1e10, "\"bos_id\" must be an integer"},
      {"eos_id", int64_t{1} << 40, "\"eos_id\" must be an integer in -2147483648..2147483647"},
      {"bos_id", -7, "bos/eos ids must be -1 (none) or below vocab"},
      {"rope_theta", "1e4", "\"rope_theta\" must be a number"},
      {"post_norms", 1, "model metadata"},
      {"activation", "relu", "unknown activation"},
  };
  for (const BadField& c : cases) {
    nlohmann::json j = good;
    j[c.key] = c.value;
    try {
      ModelConfig::from_json(j);
      ADD_FAILURE() << c.key << " = " << c.value << " accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(c.message), std::string::npos) << c.key << ": " << e.what();
    }
  }
  nlohmann::json missing = good;
  missing.erase("heads");
  EXPECT_THROW(ModelConfig::from_json(missing), Error);
}

TEST_F(BadCheckpoint, NoTokenizerStillConvertsAndRunsOnTokenIds) {
  const fs::path dir = copy("no-tokenizer");
  fs::remove(dir / "tokenizer.model");
  std::vector<std::string> log;
  ConvertOptions o;
  o.log = [&](const std::string& line) { log.push_back(line); };
  convert_checkpoint(dir.string(), (dir / "out.lacuna").string(), o);
  EXPECT_NE(log.front().find("warning: no tokenizer.model"), std::string::npos);
  const auto model = Model::open((dir / "out.lacuna").string());
  EXPECT_EQ(model->tokenizer(), nullptr);
  Forward forward(model);
  GenerateRequest r;
  r.prompt = {1, 5, 9};
  r.options.max_tokens = 3;
  EXPECT_EQ(generate(forward, {r})[0].tokens.size(), 3u);
}

}  // namespace
}  // namespace lacuna
