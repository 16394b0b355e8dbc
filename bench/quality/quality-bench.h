#pragma once
// `lacuna bench quality`: what pruning costs in quality and buys in speed.
// Each point (pruning method x sparsity x dtype) is converted from the
// checkpoint, scored by held-out perplexity, and timed at decode against
// the dense bf16 model (oneDNN) in the same process.
#include <string>
#include <vector>

namespace lacuna::bench {

struct QualityBenchOptions {
  std::string model_dir;                      // a Hugging Face checkpoint with tokenizer.model
  std::vector<double> sparsities = {0, 0.5, 0.6, 0.7, 0.8, 0.9};
  std::vector<std::string> prunes = {"magnitude", "wanda"};
  std::vector<std::string> dtypes = {"bf16", "int8"};
  std::string text_path;   // held-out text (default MODEL_DIR/heldout.txt)
  std::string calib_path;  // Wanda's calibration text (default MODEL_DIR/calibration.txt)
  int64_t calib_tokens = 16384;
  int64_t ctx = 256, stride = 128;  // perplexity's window
  int decode_steps = 256;           // timed decode steps (batch 1) per point
  std::string work_dir;             // converted models (default: a fresh dir under /tmp)
  std::string csv_path, png_path;
};

int run_quality_bench(const QualityBenchOptions& o);

}  // namespace lacuna::bench
