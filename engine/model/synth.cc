#include "engine/model/synth.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "engine/model/tokenizer.h"
#include "sparse/error.h"
#include "sparse/prune.h"
#include "sparse/safetensors.h"

namespace lacuna {
namespace {

// splitmix64: tiny, and its stream is the same on every platform (unlike
// std::normal_distribution, whose algorithm is the library's choice).
uint64_t mix(uint64_t z) {
  z += 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// Normal(0, stddev) values for row `row` of tensor `tensor`: every row has its
// own stream, so rows can be filled in parallel and still come out the same.
void fill_row(float* out, uint64_t n, uint64_t seed, uint64_t tensor, uint64_t row, double stddev, double mean) {
  uint64_t state = mix(seed ^ mix(tensor * 0x100000001b3ull ^ mix(row)));
  for (uint64_t i = 0; i < n; i += 2) {
    state = mix(state);
    const double u1 = (static_cast<double>(state >> 11) + 0.5) * 0x1.0p-53;
    state = mix(state);
    const double u2 = static_cast<double>(state >> 11) * 0x1.0p-53;
    const double r = std::sqrt(-2.0 * std::log(u1)) * stddev;
    out[i] = static_cast<float>(mean + r * std::cos(2 * M_PI * u2));
    if (i + 1 < n) out[i + 1] = static_cast<float>(mean + r * std::sin(2 * M_PI * u2));
  }
}

nlohmann::json hf_config(const ModelConfig& c, HfLayout layout) {
  nlohmann::json j{{"vocab_size", c.vocab},
                   {"hidden_size", c.hidden},
                   {"intermediate_size", c.ffn},
                   {"num_hidden_layers", c.layers},
                   {"num_attention_heads", c.heads},
                   {"num_key_value_heads", c.kv_heads},
                   {"head_dim", c.head_dim},
                   {"num_experts_per_tok", c.top_k},
                   {"max_position_embeddings", c.max_context},
                   {"rms_norm_eps", c.norm_eps},
                   {"rope_theta", c.rope_theta},
                   {"tie_word_embeddings", c.tied_embeddings},
                   {"bos_token_id", c.bos_id},
                   {"eos_token_id", c.eos_id}};
  if (c.arch == Arch::mixtral) {
    j["architectures"] = {"MixtralForCausalLM"};
    j["model_type"] = "mixtral";
    j["num_local_experts"] = c.experts;
    j["sliding_window"] = nullptr;
  } else {
    j["architectures"] = {layout == HfLayout::grok_transformer ? "GrokForCausalLM" : "Grok1ModelForCausalLM"};
    j["model_type"] = "grok-1";
    j[layout == HfLayout::grok_transformer ? "num_local_experts" : "num_experts"] = c.experts;
    j["embedding_multiplier_scale"] = c.embedding_multiplier;
    j["output_multiplier_scale"] = c.output_multiplier;
    j["attn_output_multiplier"] = c.attn_logit_multiplier;
    j["max_attn_value"] = c.attn_logit_cap;
  }
  return j;
}

}  // namespace

ModelConfig synth_config(Arch arch, const std::string& preset) {
  ModelConfig c;
  c.arch = arch;
  if (preset == "tiny") {
    c.vocab = 512, c.hidden = 64, c.ffn = 128, c.layers = 2, c.heads = 4, c.kv_heads = 2, c.head_dim = 16, c.experts = 4, c.max_context = 512;
  } else if (preset == "small") {
    c.vocab = 8000, c.hidden = 512, c.ffn = 1408, c.layers = 4, c.heads = 8, c.kv_heads = 4, c.head_dim = 64, c.experts = 8, c.max_context = 2048;
  } else if (preset == "mini") {
    c.vocab = 32000, c.hidden = 2048, c.ffn = 5632, c.layers = 8, c.heads = 16, c.kv_heads = 8, c.head_dim = 128, c.experts = 8, c.max_context = 4096;
  } else if (preset == "grok-1-layer") {
    c.vocab = 131072, c.hidden = 6144, c.ffn = 32768, c.layers = 1, c.heads = 48, c.kv_heads = 8, c.head_dim = 128, c.experts = 8, c.max_context = 8192;
  } else {
    throw Error("unknown preset \"" + preset + "\" (known: tiny, small, mini, grok-1-layer)");
  }
  c.top_k = 2;
  c.bos_id = 1;
  c.eos_id = 2;
  c.norm_eps = 1e-5;
  if (arch == Arch::grok1) {
    c.rope_theta = 10000;
    c.embedding_multiplier = std::sqrt(static_cast<double>(c.hidden));  // as Grok-1's 78.38 = sqrt(6144)
    c.output_multiplier = 0.5773502691896257;
    c.attn_logit_multiplier = 1.0 / std::sqrt(static_cast<double>(c.head_dim));
    c.attn_logit_cap = 30;
    c.renormalize_top_k = false;
    c.post_norms = true;
    c.tied_embeddings = true;
    c.activation = ExpertActivation::gelu_tanh;
  } else {
    c.rope_theta = 1e6;
    c.attn_logit_multiplier = 1.0 / std::sqrt(static_cast<double>(c.head_dim));
    c.activation = ExpertActivation::silu;
  }
  c.validate();
  return c;
}

void synthesize_checkpoint(const std::string& dir, const SynthOptions& o) {
  if (!(o.sparsity >= 0 && o.sparsity < 1)) throw Error("synth: sparsity must be in [0, 1)");  // NaN too
  const ModelConfig c = synth_config(o.arch, o.preset);
  const HfLayout layout = o.arch == Arch::mixtral ? HfLayout::mixtral : o.grok_layout;
  std::filesystem::create_directories(dir);

  SafetensorsWriter writer;
  const StDType dtype = o.f32 ? StDType::f32 : StDType::bf16;
  uint64_t index = 0;
  for (const WeightSpec& spec : model_weights(c, layout)) {
    const uint64_t rows = spec.cols ? spec.rows / spec.sources.size() : 1, cols = spec.cols ? spec.cols : spec.rows;
    for (const std::string& name : spec.sources) {
      std::vector<float> w(rows * cols);
      // Scales keep every activation near unit size: 1/sqrt(fan-in) for
      // projections, a decisive router (few near-ties between experts), and
      // norms near 1 but not 1, so a misapplied norm weight shows.
      double stddev = 1.0 / std::sqrt(static_cast<double>(cols)), mean = 0;
      if (spec.kind == WeightKind::norm) stddev = 0.1, mean = 1.0;
      if (spec.kind == WeightKind::router) stddev = 3.0 / std::sqrt(static_cast<double>(cols));
      // Unit-scale embeddings and output rows make the logits decisive (a
      // clear top-1 at most positions), so the reference tests compare
      // argmaxes that rounding cannot flip.
      if (spec.kind == WeightKind::embedding || spec.kind == WeightKind::output) stddev = 1.0;
      const uint64_t tensor = index++;
#pragma omp parallel for schedule(static)
      for (int64_t r = 0; r < static_cast<int64_t>(rows); ++r) fill_row(&w[r * cols], cols, o.seed, tensor, static_cast<uint64_t>(r), stddev, mean);
      if (o.sparsity > 0 && (spec.kind == WeightKind::attention || spec.kind == WeightKind::expert))
        prune_magnitude(w.data(), rows, cols, o.sparsity, PruneScope::per_row);
      writer.add(name, dtype, spec.cols ? std::vector<uint64_t>{rows, cols} : std::vector<uint64_t>{cols}, w);
    }
  }
  writer.write(dir + "/model.safetensors");

  std::ofstream(dir + "/config.json") << hf_config(c, layout).dump(2) << "\n";
  const std::vector<std::byte> tokenizer = train_synthetic_tokenizer(static_cast<int32_t>(std::min<int64_t>(c.vocab, 32000)));
  std::ofstream f(dir + "/tokenizer.model", std::ios::binary);
  f.write(reinterpret_cast<const char*>(tokenizer.data()), static_cast<std::streamsize>(tokenizer.size()));
  if (!f) throw Error(dir + "/tokenizer.model: cannot write");
}

}  // namespace lacuna
