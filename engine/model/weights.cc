#include "engine/model/weights.h"

#include <algorithm>

#include "sparse/error.h"

namespace lacuna {
namespace {

// One layout's checkpoint names. `{L}` and `{E}` stand for the layer and expert.
struct LayoutNames {
  const char* embedding;
  const char* final_norm;
  const char* output;
  const char* attn_norm;
  const char* attn_post_norm;  // nullptr: the architecture has none
  const char* moe_norm;
  const char* moe_post_norm;
  const char* q;
  const char* k;
  const char* v;
  const char* o;
  const char* router;
  const char* gate;
  const char* up;
  const char* down;
};

constexpr LayoutNames kMixtral{"model.embed_tokens.weight",
                               "model.norm.weight",
                               "lm_head.weight",
                               "model.layers.{L}.input_layernorm.weight",
                               nullptr,
                               "model.layers.{L}.post_attention_layernorm.weight",
                               nullptr,
                               "model.layers.{L}.self_attn.q_proj.weight",
                               "model.layers.{L}.self_attn.k_proj.weight",
                               "model.layers.{L}.self_attn.v_proj.weight",
                               "model.layers.{L}.self_attn.o_proj.weight",
                               "model.layers.{L}.block_sparse_moe.gate.weight",
                               "model.layers.{L}.block_sparse_moe.experts.{E}.w1.weight",
                               "model.layers.{L}.block_sparse_moe.experts.{E}.w3.weight",
                               "model.layers.{L}.block_sparse_moe.experts.{E}.w2.weight"};

constexpr LayoutNames kGrokModel{"model.embed_tokens.weight",
                                 "model.norm.weight",
                                 "lm_head.weight",
                                 "model.layers.{L}.pre_attn_norm.weight",
                                 "model.layers.{L}.post_attn_norm.weight",
                                 "model.layers.{L}.pre_moe_norm.weight",
                                 "model.layers.{L}.post_moe_norm.weight",
                                 "model.layers.{L}.attn.q_proj.weight",
                                 "model.layers.{L}.attn.k_proj.weight",
                                 "model.layers.{L}.attn.v_proj.weight",
                                 "model.layers.{L}.attn.o_proj.weight",
                                 "model.layers.{L}.moe_block.gate.weight",
                                 "model.layers.{L}.moe_block.experts.{E}.linear.weight",
                                 "model.layers.{L}.moe_block.experts.{E}.linear_v.weight",
                                 "model.layers.{L}.moe_block.experts.{E}.linear_1.weight"};

constexpr LayoutNames kGrokTransformer{"transformer.in_out_embed.weight",
                                       "transformer.rms_norm.weight",
                                       "lm_head.weight",
                                       "transformer.decoder_layer.{L}.rms_norm.weight",
                                       "transformer.decoder_layer.{L}.rms_norm_1.weight",
                                       "transformer.decoder_layer.{L}.rms_norm_2.weight",
                                       "transformer.decoder_layer.{L}.rms_norm_3.weight",
                                       "transformer.decoder_layer.{L}.multi_head_attention.query.weight",
                                       "transformer.decoder_layer.{L}.multi_head_attention.key.weight",
                                       "transformer.decoder_layer.{L}.multi_head_attention.value.weight",
                                       "transformer.decoder_layer.{L}.multi_head_attention.linear.weight",
                                       "transformer.decoder_layer.{L}.router.weight",
                                       "transformer.decoder_layer.{L}.moe.{E}.linear.weight",
                                       "transformer.decoder_layer.{L}.moe.{E}.linear_v.weight",
                                       "transformer.decoder_layer.{L}.moe.{E}.linear_1.weight"};

const LayoutNames& names_of(HfLayout l) {
  switch (l) {
    case HfLayout::mixtral: return kMixtral;
    case HfLayout::grok_model: return kGrokModel;
    case HfLayout::grok_transformer: return kGrokTransformer;
  }
  return kMixtral;
}

std::string fill(const char* pattern, int64_t layer, int64_t expert = 0) {
  std::string s = pattern;
  const std::pair<std::string, int64_t> fields[] = {{"{L}", layer}, {"{E}", expert}};
  for (const auto& [key, value] : fields)
    for (size_t at = s.find(key); at != std::string::npos; at = s.find(key)) s.replace(at, key.size(), std::to_string(value));
  return s;
}

}  // namespace

const char* hf_layout_name(HfLayout l) {
  switch (l) {
    case HfLayout::mixtral: return "mixtral";
    case HfLayout::grok_model: return "grok (model.layers.N.attn)";
    case HfLayout::grok_transformer: return "grok (transformer.decoder_layer.N)";
  }
  return "?";
}

HfLayout detect_hf_layout(Arch arch, const std::vector<std::string>& names) {
  const std::vector<HfLayout> candidates =
      arch == Arch::mixtral ? std::vector{HfLayout::mixtral} : std::vector{HfLayout::grok_model, HfLayout::grok_transformer};
  for (HfLayout l : candidates)
    if (std::find(names.begin(), names.end(), fill(names_of(l).q, 0)) != names.end()) return l;
  std::string expected;
  for (HfLayout l : candidates) expected += std::string(expected.empty() ? "" : " or ") + fill(names_of(l).q, 0);
  throw Error(std::string("checkpoint does not look like ") + arch_name(arch) + ": no tensor " + expected);
}

std::string layer_weight(int64_t layer, const char* what) { return "layers." + std::to_string(layer) + "." + what; }

std::string expert_weight(int64_t layer, int64_t expert, const char* what) {
  return "layers." + std::to_string(layer) + ".expert." + std::to_string(expert) + "." + what;
}

std::vector<WeightSpec> model_weights(const ModelConfig& c, HfLayout layout) {
  const LayoutNames& n = names_of(layout);
  const uint64_t hidden = c.hidden, q_rows = c.heads * c.head_dim, kv_rows = c.kv_heads * c.head_dim;
  std::vector<WeightSpec> w;
  w.push_back({"embedding", static_cast<uint64_t>(c.vocab), hidden, WeightKind::embedding, {n.embedding}});
  for (int64_t l = 0; l < c.layers; ++l) {
    const size_t first_of_layer = w.size();
    auto norm = [&](const char* what, const char* source) {
      if (source) w.push_back({layer_weight(l, what), hidden, 0, WeightKind::norm, {fill(source, l)}});
    };
    norm("attn_norm", n.attn_norm);
    norm("attn_post_norm", c.post_norms ? n.attn_post_norm : nullptr);
    norm("moe_norm", n.moe_norm);
    norm("moe_post_norm", c.post_norms ? n.moe_post_norm : nullptr);
    w.push_back({layer_weight(l, "q"), q_rows, hidden, WeightKind::attention, {fill(n.q, l)}});
    w.push_back({layer_weight(l, "k"), kv_rows, hidden, WeightKind::attention, {fill(n.k, l)}});
    w.push_back({layer_weight(l, "v"), kv_rows, hidden, WeightKind::attention, {fill(n.v, l)}});
    w.push_back({layer_weight(l, "o"), hidden, q_rows, WeightKind::attention, {fill(n.o, l)}});
    w.push_back({layer_weight(l, "router"), static_cast<uint64_t>(c.experts), hidden, WeightKind::router, {fill(n.router, l)}});
    for (int64_t e = 0; e < c.experts; ++e) {
      w.push_back({expert_weight(l, e, "gate_up"), 2 * static_cast<uint64_t>(c.ffn), hidden, WeightKind::expert, {fill(n.gate, l, e), fill(n.up, l, e)}});
      w.push_back({expert_weight(l, e, "down"), hidden, static_cast<uint64_t>(c.ffn), WeightKind::expert, {fill(n.down, l, e)}});
    }
    for (size_t i = first_of_layer; i < w.size(); ++i) w[i].layer = l;
  }
  w.push_back({"final_norm", hidden, 0, WeightKind::norm, {n.final_norm}});
  if (!c.tied_embeddings) w.push_back({"output", static_cast<uint64_t>(c.vocab), hidden, WeightKind::output, {n.output}});
  return w;
}

}  // namespace lacuna
