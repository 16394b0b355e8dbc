#include "engine/model/config.h"

#include <climits>
#include <cmath>
#include <nlohmann/json.hpp>

#include "sparse/error.h"

namespace lacuna {
namespace {

using nlohmann::json;

// A positive integer field; `fallback` < 0 means required.
int64_t int_field(const json& c, const char* name, int64_t fallback = -1) {
  if (!c.contains(name) || c[name].is_null()) {
    if (fallback < 0) throw Error(std::string("config.json: missing field \"") + name + "\"");
    return fallback;
  }
  const json& v = c[name];
  if (!v.is_number_integer() || v.get<int64_t>() <= 0)
    throw Error(std::string("config.json: field \"") + name + "\" must be a positive integer, not " + v.dump());
  return v.get<int64_t>();
}

// A number; a one-element list counts as its element (one Grok-1 port's
// config stores output_multiplier_scale as a 1-tuple).
double real_field(const json& c, const char* name, double fallback) {
  if (!c.contains(name) || c[name].is_null()) return fallback;
  const json& v = c[name].is_array() && c[name].size() == 1 ? c[name][0] : c[name];
  if (!v.is_number() || !std::isfinite(v.get<double>()))
    throw Error(std::string("config.json: field \"") + name + "\" must be a finite number, not " + v.dump());
  return v.get<double>();
}

bool bool_field(const json& c, const char* name, bool fallback) {
  if (!c.contains(name) || c[name].is_null()) return fallback;
  if (!c[name].is_boolean()) throw Error(std::string("config.json: field \"") + name + "\" must be true or false");
  return c[name].get<bool>();
}

// Token ids may be absent, null, a number or (for eos) a list of numbers.
int32_t token_field(const json& c, const char* name) {
  if (!c.contains(name) || c[name].is_null()) return -1;
  const json& v = c[name].is_array() && !c[name].empty() ? c[name][0] : c[name];
  if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() > INT32_MAX) return -1;
  return static_cast<int32_t>(v.get<int64_t>());
}

std::string architecture(const json& c) {
  if (!c.contains("architectures") || !c["architectures"].is_array() || c["architectures"].empty() || !c["architectures"][0].is_string())
    throw Error("config.json: missing \"architectures\" (expected MixtralForCausalLM, Grok1ModelForCausalLM or GrokForCausalLM)");
  return c["architectures"][0].get<std::string>();
}

}  // namespace

const char* arch_name(Arch a) { return a == Arch::grok1 ? "grok-1" : "mixtral"; }

Arch parse_arch(const std::string& name) {
  if (name == "grok-1") return Arch::grok1;
  if (name == "mixtral") return Arch::mixtral;
  throw Error("unknown architecture \"" + name + "\" (known: grok-1, mixtral)");
}

ModelConfig ModelConfig::from_hf(const json& c) {
  if (!c.is_object()) throw Error("config.json: not a JSON object");
  const std::string name = architecture(c);
  ModelConfig m;
  if (name == "MixtralForCausalLM") {
    m.arch = Arch::mixtral;
    m.experts = int_field(c, "num_local_experts");
    m.rope_theta = real_field(c, "rope_theta", 1e6);
    m.max_context = int_field(c, "max_position_embeddings", 4096 * 32);
    m.tied_embeddings = bool_field(c, "tie_word_embeddings", false);
    m.activation = ExpertActivation::silu;
    m.sliding_window = c.contains("sliding_window") && !c["sliding_window"].is_null() ? int_field(c, "sliding_window") : 0;
  } else if (name == "Grok1ModelForCausalLM" || name == "GrokForCausalLM") {
    m.arch = Arch::grok1;
    m.experts = c.contains("num_experts") ? int_field(c, "num_experts") : int_field(c, "num_local_experts");
    m.rope_theta = real_field(c, "rope_theta", 10000.0);
    m.max_context = int_field(c, "max_position_embeddings", 8192);
    m.tied_embeddings = bool_field(c, "tie_word_embeddings", true);
    // Absent multipliers default to Grok-1's own (xai-org/grok-1 run.py).
    m.embedding_multiplier = real_field(c, "embedding_multiplier_scale", 78.38367176906169);
    m.output_multiplier = real_field(c, "output_multiplier_scale", 0.5773502691896257);
    m.attn_logit_cap = real_field(c, "max_attn_value", 30.0);
    m.renormalize_top_k = false;
    m.post_norms = true;
    m.activation = ExpertActivation::gelu_tanh;
  } else {
    throw Error("config.json: architecture \"" + name + "\" is not supported (Lacuna runs MixtralForCausalLM, Grok1ModelForCausalLM, GrokForCausalLM)");
  }
  m.vocab = int_field(c, "vocab_size");
  m.hidden = int_field(c, "hidden_size");
  m.ffn = int_field(c, "intermediate_size");
  m.layers = int_field(c, "num_hidden_layers");
  m.heads = int_field(c, "num_attention_heads");
  // Grok-1's own config has 8 kv heads; a null field in either port means one per query head.
  const bool kv_absent = !c.contains("num_key_value_heads");
  m.kv_heads = kv_absent && m.arch == Arch::grok1 ? 8 : int_field(c, "num_key_value_heads", m.heads);
  m.head_dim = int_field(c, "head_dim", m.hidden / m.heads);
  m.top_k = int_field(c, "num_experts_per_tok", 2);
  m.norm_eps = real_field(c, "rms_norm_eps", 1e-5);
  m.attn_logit_multiplier = m.arch == Arch::grok1 ? real_field(c, "attn_output_multiplier", 0.08838834764831845)
                                                  : 1.0 / std::sqrt(static_cast<double>(m.head_dim));
  m.bos_id = token_field(c, "bos_token_id");
  m.eos_id = token_field(c, "eos_token_id");
  m.validate();
  return m;
}

void ModelConfig::validate() const {
  auto need = [](bool ok, const std::string& what) {
    if (!ok) throw Error("model config: " + what);
  };
  for (auto [v, what] : {std::pair{vocab, "vocab"}, {hidden, "hidden"}, {ffn, "ffn"}, {layers, "layers"}, {heads, "heads"},
                         {kv_heads, "kv_heads"}, {head_dim, "head_dim"}, {experts, "experts"}, {top_k, "top_k"}, {max_context, "max_context"}})
    need(v > 0 && v <= (int64_t{1} << 31), std::string(what) + " must be in 1..2^31, not " + std::to_string(v));
  need(sliding_window >= 0, "sliding_window must not be negative");
  need(heads % kv_heads == 0, "heads (" + std::to_string(heads) + ") must be a multiple of kv_heads (" + std::to_string(kv_heads) + ")");
  need(head_dim % 2 == 0, "head_dim must be even (RoPE rotates pairs), not " + std::to_string(head_dim));
  need(top_k <= experts, "top_k (" + std::to_string(top_k) + ") exceeds experts (" + std::to_string(experts) + ")");
  need(norm_eps > 0 && rope_theta > 1 && attn_logit_multiplier > 0 && attn_logit_cap >= 0 && embedding_multiplier > 0 && output_multiplier > 0,
       "eps, rope_theta and the multipliers must be positive");
  need(bos_id >= -1 && eos_id >= -1 && bos_id < vocab && eos_id < vocab, "bos/eos ids must be -1 (none) or below vocab");
}

uint64_t ModelConfig::parameters() const {
  const uint64_t h = hidden, attn = h * head_dim * (heads * 2 + kv_heads * 2);
  const uint64_t moe = experts * 3 * h * ffn + experts * h;
  return vocab * h * (tied_embeddings ? 1 : 2) + layers * (attn + moe + h * (post_norms ? 4 : 2)) + h;
}

json ModelConfig::to_json() const {
  return json{{"arch", arch_name(arch)},
              {"vocab", vocab},
              {"hidden", hidden},
              {"ffn", ffn},
              {"layers", layers},
              {"heads", heads},
              {"kv_heads", kv_heads},
              {"head_dim", head_dim},
              {"experts", experts},
              {"top_k", top_k},
              {"max_context", max_context},
              {"sliding_window", sliding_window},
              {"norm_eps", norm_eps},
              {"rope_theta", rope_theta},
              {"embedding_multiplier", embedding_multiplier},
              {"output_multiplier", output_multiplier},
              {"attn_logit_multiplier", attn_logit_multiplier},
              {"attn_logit_cap", attn_logit_cap},
              {"renormalize_top_k", renormalize_top_k},
              {"post_norms", post_norms},
              {"tied_embeddings", tied_embeddings},
              {"activation", activation == ExpertActivation::silu ? "silu" : "gelu_tanh"},
              {"bos_id", bos_id},
              {"eos_id", eos_id}};
}

namespace {

// A metadata field as to_json writes it. A float where an integer belongs,
// or an integer beyond the field's type, is refused by name: converting it
// would truncate it silently, or be undefined behaviour beyond the range.
int64_t metadata_integer(const json& j, const char* key, int64_t least, int64_t most) {
  const json& v = j.at(key);
  const bool fits = v.is_number_unsigned() ? v.get<uint64_t>() <= static_cast<uint64_t>(most)
                                           : v.is_number_integer() && v.get<int64_t>() >= least && v.get<int64_t>() <= most;
  if (!fits) throw Error(std::string("model metadata: \"") + key + "\" must be an integer in " + std::to_string(least) + ".." + std::to_string(most) + ", not " + v.dump());
  return v.get<int64_t>();
}

double metadata_number(const json& j, const char* key) {
  const json& v = j.at(key);
  if (!v.is_number()) throw Error(std::string("model metadata: \"") + key + "\" must be a number, not " + v.dump());
  return v.get<double>();
}

}  // namespace

ModelConfig ModelConfig::from_json(const json& j) {
  try {
    ModelConfig m;
    m.arch = parse_arch(j.at("arch").get<std::string>());
    for (auto [field, key] : {std::pair{&m.vocab, "vocab"}, {&m.hidden, "hidden"}, {&m.ffn, "ffn"}, {&m.layers, "layers"}, {&m.heads, "heads"},
                              {&m.kv_heads, "kv_heads"}, {&m.head_dim, "head_dim"}, {&m.experts, "experts"}, {&m.top_k, "top_k"},
                              {&m.max_context, "max_context"}, {&m.sliding_window, "sliding_window"}})
      *field = metadata_integer(j, key, INT64_MIN, INT64_MAX);
    for (auto [field, key] : {std::pair{&m.norm_eps, "norm_eps"}, {&m.rope_theta, "rope_theta"}, {&m.embedding_multiplier, "embedding_multiplier"},
                              {&m.output_multiplier, "output_multiplier"}, {&m.attn_logit_multiplier, "attn_logit_multiplier"},
                              {&m.attn_logit_cap, "attn_logit_cap"}})
      *field = metadata_number(j, key);
    m.renormalize_top_k = j.at("renormalize_top_k").get<bool>();
    m.post_norms = j.at("post_norms").get<bool>();
    m.tied_embeddings = j.at("tied_embeddings").get<bool>();
    const std::string act = j.at("activation").get<std::string>();
    if (act != "silu" && act != "gelu_tanh") throw Error("unknown activation \"" + act + "\"");
    m.activation = act == "silu" ? ExpertActivation::silu : ExpertActivation::gelu_tanh;
    m.bos_id = static_cast<int32_t>(metadata_integer(j, "bos_id", INT32_MIN, INT32_MAX));
    m.eos_id = static_cast<int32_t>(metadata_integer(j, "eos_id", INT32_MIN, INT32_MAX));
    m.validate();
    return m;
  } catch (const json::exception& e) {
    throw Error(std::string("model metadata: ") + e.what());
  }
}

}  // namespace lacuna
