#pragma once
// The weights a model holds, under Lacuna's own names, and where each comes
// from in a Hugging Face checkpoint of each supported layout
// (docs/architectures.md lists both sides).
#include <cstdint>
#include <string>
#include <vector>

#include "engine/model/config.h"

namespace lacuna {

enum class WeightKind : uint8_t {
  embedding,  // [vocab, hidden]; also the output projection when tied
  norm,       // [hidden], RMSNorm scale, kept f32 dense
  attention,  // q, k, v, o projections
  router,     // [experts, hidden], kept f32 dense: the routing decision is made in f32
  expert,     // gate_up [2 ffn, hidden] (gate rows first) and down [hidden, ffn]
  output,     // [vocab, hidden] when not tied
};

struct WeightSpec {
  std::string name;  // Lacuna's name, e.g. "layers.3.expert.5.gate_up"
  uint64_t rows = 0, cols = 0;  // cols = 0: a vector of `rows` values
  WeightKind kind = WeightKind::norm;
  // The checkpoint tensors it is made of, concatenated by rows (gate_up has two).
  std::vector<std::string> sources;
  int64_t layer = -1;  // the decoder layer it belongs to; -1: none (embedding, final norm, output)
};

enum class HfLayout : uint8_t {
  mixtral,          // model.layers.N.self_attn.q_proj / block_sparse_moe.experts.E.w1
  grok_model,       // model.layers.N.attn.q_proj / moe_block.experts.E.linear
  grok_transformer  // transformer.decoder_layer.N.multi_head_attention.query / moe.E.linear
};
const char* hf_layout_name(HfLayout l);

// Which layout a checkpoint of `arch` uses, from one tensor name it holds
// (the embedding's); throws lacuna::Error when none matches.
HfLayout detect_hf_layout(Arch arch, const std::vector<std::string>& names);

// Every weight of a model, in a fixed order (layer by layer).
std::vector<WeightSpec> model_weights(const ModelConfig& c, HfLayout layout);

// Lacuna's names, for the runtime.
std::string layer_weight(int64_t layer, const char* what);  // "layers.L.what"
std::string expert_weight(int64_t layer, int64_t expert, const char* what);

}  // namespace lacuna
