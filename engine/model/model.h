#pragma once
// A converted model opened for running: the .lacuna file mapped, its config
// and tokenizer read, every weight checked against the architecture.
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "engine/model/config.h"
#include "engine/model/tokenizer.h"
#include "engine/runtime/linear.h"
#include "sparse/model-file.h"

namespace lacuna {

struct LayerWeights {
  std::vector<float> attn_norm, attn_post_norm, moe_norm, moe_post_norm;  // post norms empty unless config.post_norms
  Linear q, k, v, o;
  std::vector<float> router;  // [experts, hidden] f32
  std::vector<Linear> gate_up, down;  // one per expert
};

// How a model's weights are held once the file is open.
struct LoadOptions {
  // Sparse weights (what the kernels stream every step) are copied into
  // anonymous memory backed by huge pages (sparse/weight-memory.h), and the
  // file's pages of them dropped. Off: the kernels read the mapped file.
  // Dense weights are packed by oneDNN into such memory either way.
  bool weights_in_memory = true;
  // Experts stay in the mapped file, for a NUMA placement to copy to their
  // nodes (so that they are not held twice).
  bool leave_experts_mapped = false;
};

class Model {
 public:
  // Throws lacuna::Error naming the file and the problem: a file that is not
  // a Lacuna model, a missing or mis-shaped weight, a bad config.
  // With OpenOptions::lock_memory, copies in memory are locked too.
  static std::shared_ptr<const Model> open(const std::string& path, const OpenOptions& options = {}, const LoadOptions& load = {});

  const ModelConfig& config() const { return config_; }
  const ModelFile& file() const { return file_; }
  // nullptr when the model was converted without one (token ids only).
  const Tokenizer* tokenizer() const { return tokenizer_ ? &*tokenizer_ : nullptr; }
  const std::vector<LayerWeights>& layers() const { return layers_; }
  const std::vector<float>& final_norm() const { return final_norm_; }
  const Linear& output() const { return output_; }  // the embedding itself when tied
  // Row `token` of the embedding (unscaled), as f32.
  void embed(int32_t token, float* out) const;
  // Weight bytes one decode token streams: attention plus top_k experts per layer, and the output.
  uint64_t decode_bytes_per_token() const;

 private:
  Model() = default;
  ModelConfig config_;
  ModelFile file_;
  std::optional<Tokenizer> tokenizer_;
  Tensor embedding_;
  // Rows are read from the file (ModelFile::read), not through the mapping:
  // a lookup's page fault would map up to a large folio of neighbours, and a
  // 512-token prompt left 35-57 MB of the mini models' tables resident.
  bool embedding_rows_read_ = false;
  std::vector<LayerWeights> layers_;
  std::vector<float> final_norm_;
  Linear output_;
};

// The metadata JSON of a .lacuna model: {"lacuna_model": 1, "config": {...}, "source": {...}}.
std::string model_metadata(const ModelConfig& c, const std::string& source_json);

}  // namespace lacuna
