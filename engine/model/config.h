#pragma once
// A model's hyper-parameters: read from a Hugging Face config.json when
// converting, stored in the .lacuna file's metadata, read back when running.
// docs/architectures.md gives every field, its default and its source.
#include <cstdint>
#include <string>

#include <nlohmann/json_fwd.hpp>

namespace lacuna {

enum class Arch : uint8_t { grok1, mixtral };
const char* arch_name(Arch a);  // "grok-1", "mixtral"
Arch parse_arch(const std::string& name);  // throws lacuna::Error naming the known ones

enum class ExpertActivation : uint8_t { gelu_tanh, silu };

struct ModelConfig {
  Arch arch = Arch::mixtral;
  int64_t vocab = 0;
  int64_t hidden = 0;
  int64_t ffn = 0;  // one expert's hidden size
  int64_t layers = 0;
  int64_t heads = 0;
  int64_t kv_heads = 0;
  int64_t head_dim = 0;
  int64_t experts = 0;
  int64_t top_k = 0;
  int64_t max_context = 0;
  int64_t sliding_window = 0;  // Mixtral: a query sees only the last `sliding_window` keys; 0 = all
  double norm_eps = 1e-5;
  double rope_theta = 10000.0;
  // Grok-1's scalings; 1 and 0 (no cap) leave Mixtral's forward as it is.
  double embedding_multiplier = 1.0;
  double output_multiplier = 1.0;
  double attn_logit_multiplier = 0;  // q·k is multiplied by this (Mixtral: 1/sqrt(head_dim))
  double attn_logit_cap = 0;         // cap·tanh(logit/cap) when > 0
  bool renormalize_top_k = true;     // Mixtral renormalises the top-k router weights; Grok-1 does not
  bool post_norms = false;           // Grok-1: RMSNorm after attention and after the MoE block too
  bool tied_embeddings = false;
  ExpertActivation activation = ExpertActivation::silu;
  int32_t bos_id = -1, eos_id = -1;

  // From a Hugging Face config.json; refuses unknown architectures and
  // missing or inconsistent fields with lacuna::Error naming the field.
  static ModelConfig from_hf(const nlohmann::json& config);
  // The .lacuna metadata form (every field explicit) and back.
  nlohmann::json to_json() const;
  static ModelConfig from_json(const nlohmann::json& j);
  // Throws when a value is out of range (also guards files built elsewhere).
  void validate() const;
  uint64_t parameters() const;
};

}  // namespace lacuna
