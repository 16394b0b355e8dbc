#pragma once
// Hugging Face checkpoint -> .lacuna model: keeps the zeros a pruned
// checkpoint already has, prunes further only when asked, quantises when
// asked, and stores each weight in the format asked for or, with `auto`,
// the one the planner expects to run fastest at decode (batch 1).
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "sparse/tensor.h"

namespace lacuna {

// magnitude: the smallest |w| of each row; wanda: the smallest |w| times
// its input channel's activation norm (sparse/prune.h), norms from
// calibration (engine/runtime/calibration.h).
enum class PruneMethod : uint8_t { none, magnitude, wanda };
const char* prune_method_name(PruneMethod m);
std::optional<PruneMethod> parse_prune_method(std::string_view name);  // "none", "magnitude", "wanda"

struct ConvertOptions {
  double sparsity = 0;  // target fraction of zeros per row of each attention and expert weight
  // Per decoder layer, a sparsity for its attention and expert weights in place of `sparsity`.
  std::map<int64_t, double> layer_sparsity;
  PruneMethod prune = PruneMethod::none;
  // wanda: weight name -> activation norm of each input channel. A prunable
  // weight without one (an expert no calibration token was routed to) is
  // pruned by magnitude and listed in ConvertSummary::magnitude_fallbacks.
  std::map<std::string, std::vector<float>> input_norms;
  DType dtype = DType::bf16;  // of attention and expert weights, the embedding and the output projection
  // Of the output projection alone (the embedding, when tied, for it is the
  // output projection); nullopt: `dtype`. As llama-quantize's
  // --output-tensor-type: never pruned, at high sparsity the output
  // projection is the largest weight a decode step reads.
  std::optional<DType> output_dtype;
  std::optional<Format> format;  // nullopt: auto (the planner, per tensor)
  std::function<void(const std::string&)> log;  // one line per tensor, and warnings
};

struct ConvertSummary {
  uint64_t tensors = 0;
  uint64_t bytes = 0;             // stored payloads
  uint64_t dense_bf16_bytes = 0;  // the same weights dense in bf16
  bool has_tokenizer = false;
  std::vector<std::string> magnitude_fallbacks;  // wanda: weights pruned by magnitude for want of calibration tokens
};

// Throws lacuna::Error naming the problem: no or malformed config.json, an
// unsupported architecture, a missing, extra or mis-shaped tensor, an
// unsupported dtype, a bad tokenizer.model, a sparsity override for a layer
// the model does not have, Wanda without norms or with norms of the wrong size.
ConvertSummary convert_checkpoint(const std::string& hf_dir, const std::string& out_path, const ConvertOptions& options);

}  // namespace lacuna
