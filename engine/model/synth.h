#pragma once
// Random-weight Hugging Face-style checkpoints (config.json, safetensors, a
// SentencePiece tokenizer.model), so demos, tests and benchmarks need no
// download. Deterministic for a seed: the same options give the same bytes.
#include <cstdint>
#include <string>

#include "engine/model/config.h"
#include "engine/model/weights.h"

namespace lacuna {

struct SynthOptions {
  Arch arch = Arch::mixtral;
  std::string preset = "tiny";  // tiny, small, mini, grok-1-layer
  double sparsity = 0;          // fraction of each attention and expert row zeroed by magnitude (an already pruned checkpoint)
  uint64_t seed = 1;
  bool f32 = false;             // store f32 instead of bf16
  HfLayout grok_layout = HfLayout::grok_model;
};

// The preset's hyper-parameters; throws lacuna::Error for an unknown preset.
ModelConfig synth_config(Arch arch, const std::string& preset);
// Writes the checkpoint into `dir` (created if needed).
void synthesize_checkpoint(const std::string& dir, const SynthOptions& options);

}  // namespace lacuna
