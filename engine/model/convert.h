#pragma once
// Hugging Face checkpoint -> .lacuna model: keeps the zeros a pruned
// checkpoint already has, prunes further only when asked, quantises when
// asked, and stores each weight in the format asked for or, with `auto`,
// the one the planner expects to run fastest at decode (batch 1).
#include <cstdint>
#include <functional>
#include <optional>
#include <string>

#include "sparse/tensor.h"

namespace lacuna {

enum class PruneMethod : uint8_t { none, magnitude };

struct ConvertOptions {
  double sparsity = 0;  // target fraction of zeros per row of each attention and expert weight
  PruneMethod prune = PruneMethod::none;
  DType dtype = DType::bf16;      // of attention and expert weights; the embedding stays bf16 for int8
  std::optional<Format> format;   // nullopt: auto (the planner, per tensor)
  std::function<void(const std::string&)> log;  // one line per tensor, and warnings
};

struct ConvertSummary {
  uint64_t tensors = 0;
  uint64_t bytes = 0;             // stored payloads
  uint64_t dense_bf16_bytes = 0;  // the same weights dense in bf16
  bool has_tokenizer = false;
};

// Throws lacuna::Error naming the problem: no or malformed config.json, an
// unsupported architecture, a missing, extra or mis-shaped tensor, an
// unsupported dtype, a bad tokenizer.model.
ConvertSummary convert_checkpoint(const std::string& hf_dir, const std::string& out_path, const ConvertOptions& options);

}  // namespace lacuna
