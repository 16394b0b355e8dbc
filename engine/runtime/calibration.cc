#include "engine/runtime/calibration.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <unordered_map>

#include "engine/model/convert.h"
#include "engine/model/weights.h"
#include "engine/runtime/forward.h"
#include "sparse/error.h"

namespace lacuna {
namespace {

// Sums x_j^2 per input channel of each named weight, in double (tens of
// thousands of tokens of f32 squares lose digits in f32).
class NormCollector : public LinearInputObserver {
 public:
  explicit NormCollector(const Model& model) {
    const ModelConfig& c = model.config();
    for (int64_t l = 0; l < c.layers; ++l) {
      const LayerWeights& w = model.layers()[static_cast<size_t>(l)];
      name(w.q, layer_weight(l, "q"));
      name(w.k, layer_weight(l, "k"));
      name(w.v, layer_weight(l, "v"));
      name(w.o, layer_weight(l, "o"));
      for (int64_t e = 0; e < c.experts; ++e) {
        name(w.gate_up[static_cast<size_t>(e)], expert_weight(l, e, "gate_up"));
        name(w.down[static_cast<size_t>(e)], expert_weight(l, e, "down"));
      }
    }
  }

  void observe(const Linear& weight, const float* x, size_t n) override {
    const auto it = sums_.find(&weight);
    if (it == sums_.end() || n == 0) return;  // the output projection: never pruned
    Sum& sum = it->second;
    const size_t cols = sum.squares.size();
    for (size_t i = 0; i < n; ++i)
      for (size_t j = 0; j < cols; ++j) sum.squares[j] += double{x[i * cols + j]} * x[i * cols + j];
    sum.tokens += n;
  }

  void finish(Calibration& out) const {
    for (const auto& [weight, sum] : sums_) {
      if (sum.tokens == 0) continue;
      std::vector<float>& norms = out.input_norms[sum.name];
      for (double s : sum.squares) norms.push_back(static_cast<float>(std::sqrt(s)));
      out.tokens_seen[sum.name] = sum.tokens;
    }
  }

 private:
  struct Sum {
    std::string name;
    std::vector<double> squares;
    uint64_t tokens = 0;
  };
  void name(const Linear& weight, std::string name) { sums_[&weight] = Sum{std::move(name), std::vector<double>(weight.cols(), 0.0), 0}; }

  std::unordered_map<const Linear*, Sum> sums_;
};

}  // namespace

Calibration calibrate(std::shared_ptr<const Model> model, std::span<const int32_t> ids, int64_t ctx,
                      const std::function<void(int64_t, int64_t)>& progress) {
  const ModelConfig& c = model->config();
  const auto n = static_cast<int64_t>(ids.size());
  if (n == 0) throw Error("calibration: no tokens");
  if (ctx < 1 || ctx > c.max_context)
    throw Error("calibration: window of " + std::to_string(ctx) + " tokens must be in 1.." + std::to_string(c.max_context) + " (the model's context)");
  NormCollector collector(*model);
  Forward forward(model);
  forward.observe_inputs(&collector);
  for (int64_t begin = 0; begin < n; begin += ctx) {
    const int64_t len = std::min(ctx, n - begin);
    KvCache cache(c, len);
    const SequenceStep step{&cache, ids.subspan(static_cast<size_t>(begin), static_cast<size_t>(len)), nullptr, false};
    forward.step({&step, 1});
    if (progress) progress(begin + len, n);
  }
  Calibration out;
  out.tokens = n;
  collector.finish(out);
  return out;
}

Calibration calibrate_checkpoint(const std::string& hf_dir, const std::string& text, const CalibrationOptions& o) {
  if (o.tokens < 1) throw Error("calibration: the number of tokens must be at least 1");
  if (text.empty()) throw Error("calibration: the text is empty");
  if (o.scratch_path.empty()) throw Error("calibration: no scratch path for the dense model");
  // Removed on every way out, a failed conversion's partial file too.
  struct Remove {
    const std::string& path;
    ~Remove() {
      std::error_code ignored;
      std::filesystem::remove(path, ignored);
    }
  } remove_scratch{o.scratch_path};
  ConvertOptions dense;
  dense.format = Format::dense;
  convert_checkpoint(hf_dir, o.scratch_path, dense);
  const auto model = Model::open(o.scratch_path);
  if (!model->tokenizer()) throw Error("calibration: " + hf_dir + " has no tokenizer.model to read the calibration text with");
  std::vector<int32_t> ids = model->tokenizer()->encode(text, /*add_bos=*/true);
  if (static_cast<int64_t>(ids.size()) < o.tokens)
    throw Error("calibration: the text has " + std::to_string(ids.size()) + " tokens, fewer than the " + std::to_string(o.tokens) +
                " asked for (give a longer text or ask for fewer tokens)");
  ids.resize(static_cast<size_t>(o.tokens));
  return calibrate(model, ids, std::min(o.ctx, model->config().max_context), o.progress);
}

}  // namespace lacuna
