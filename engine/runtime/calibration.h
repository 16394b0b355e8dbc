#pragma once
// Calibration for Wanda pruning: text run through the dense model in Lacuna,
// and the L2 norm of each input channel of every weight's products
// collected over the tokens that weight multiplied (an expert: only the
// tokens routed to it).
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "engine/model/model.h"

namespace lacuna {

struct Calibration {
  // Weight name ("layers.0.q", "layers.1.expert.3.down") -> the L2 norm of
  // each input channel over the tokens it saw; a weight that saw no token is absent.
  std::map<std::string, std::vector<float>> input_norms;
  std::map<std::string, uint64_t> tokens_seen;  // per weight present in input_norms
  int64_t tokens = 0;                           // calibration tokens run
};

// Runs `ids` through `model` in windows of `ctx` tokens that do not overlap
// (each starts without context, as Wanda's calibration samples do).
// Throws lacuna::Error for no tokens, ctx outside 1..the model's context, or
// an invalid token id. `progress(tokens_run, tokens)` after each window.
Calibration calibrate(std::shared_ptr<const Model> model, std::span<const int32_t> ids, int64_t ctx,
                      const std::function<void(int64_t, int64_t)>& progress = {});

struct CalibrationOptions {
  int64_t tokens = 16384;  // the text's first `tokens` tokens are run
  int64_t ctx = 256;  // window; the model's context when that is shorter
  // Where the dense model is written while it runs (removed afterwards).
  std::string scratch_path;
  std::function<void(int64_t, int64_t)> progress;
};

// The checkpoint converted dense (bf16, unpruned: the model users run before
// pruning, oneDNN's products) to options.scratch_path,
// `text` tokenized by its tokenizer.model, calibrate() on its first
// options.tokens tokens. Throws lacuna::Error for an empty text, a text of
// fewer tokens than asked for, a checkpoint without tokenizer.model, and
// whatever conversion refuses.
Calibration calibrate_checkpoint(const std::string& hf_dir, const std::string& text, const CalibrationOptions& options);

}  // namespace lacuna
