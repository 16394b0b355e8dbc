#include "engine/model/model.h"

#include <sys/mman.h>

#include <cerrno>
#include <cstring>

#include <nlohmann/json.hpp>

#include "engine/model/weights.h"
#include "sparse/dtype.h"
#include "sparse/error.h"
#include "sparse/quantize.h"
#include "sparse/weight-memory.h"

namespace lacuna {
namespace {

const Tensor& weight(const ModelFile& f, const WeightSpec& spec) {
  const TensorEntry* e = f.find(spec.name);
  if (!e) throw Error(f.path() + ": missing weight " + spec.name);
  const TensorDesc& d = e->tensor.desc();
  const bool shape_ok = spec.cols == 0 ? d.elements() == spec.rows : d.rows() == spec.rows && d.cols() == spec.cols;
  if (!shape_ok)
    throw Error(f.path() + ": weight " + spec.name + " is " + d.shape_string() + ", the config needs " + std::to_string(spec.rows) +
                (spec.cols ? "x" + std::to_string(spec.cols) : ""));
  return e->tensor;
}


}  // namespace

std::string model_metadata(const ModelConfig& c, const std::string& source_json) {
  return nlohmann::json{{"lacuna_model", 1}, {"config", c.to_json()}, {"source", nlohmann::json::parse(source_json)}}.dump(1);
}

std::shared_ptr<const Model> Model::open(const std::string& path, const OpenOptions& options, const LoadOptions& load) {
  std::shared_ptr<Model> m(new Model());
  m->file_ = ModelFile::open(path, options);
  nlohmann::json meta;
  try {
    meta = nlohmann::json::parse(m->file_.metadata());
  } catch (const nlohmann::json::exception& e) {
    throw Error(path + ": metadata is not JSON: " + e.what());
  }
  if (!meta.is_object() || !meta.contains("lacuna_model") || !meta.contains("config"))
    throw Error(path + ": not a Lacuna model (its metadata has no model config; convert a checkpoint with `lacuna convert`)");
  try {
    m->config_ = ModelConfig::from_json(meta["config"]);
  } catch (const Error& e) {
    throw Error(path + ": " + e.what());
  }
  const ModelConfig& c = m->config_;
  if (!m->file_.tokenizer().empty()) m->tokenizer_ = Tokenizer::from_bytes(m->file_.tokenizer());

  // Lacuna's names and shapes do not depend on the checkpoint layout, only on the architecture.
  const std::vector<WeightSpec> specs = model_weights(c, c.arch == Arch::grok1 ? HfLayout::grok_model : HfLayout::mixtral);
  size_t next = 0;
  auto take = [&]() -> const Tensor& { return weight(m->file_, specs[next++]); };
  // A weight Lacuna's kernels read moved into huge-page memory (see
  // LoadOptions); the others are read from oneDNN's packed copy.
  auto in_memory = [&](const Tensor& t, bool expert) -> Tensor {
    if (!load.weights_in_memory || !Linear::reads_weight_in_place(t.desc()) || (expert && load.leave_experts_mapped)) return t;
    Tensor copy = copy_to_weight_memory(t);
    if (options.lock_memory && mlock(copy.data(), copy.payload_bytes()) != 0)
      throw IoError(path + ": cannot lock " + std::to_string(copy.payload_bytes()) + " bytes of weights in RAM (mlock: " + std::strerror(errno) +
                    "; raise ulimit -l)");
    m->file_.drop_pages(t);
    return copy;
  };
  m->embedding_ = take();
  if (m->embedding_.desc().format != Format::dense) throw Error(path + ": the embedding must be stored dense");
  // Opening the file read every page of it; a lookup reads one row per token
  // with pread (embed), so the table's pages do not come back (62-131 MB of
  // resident memory otherwise, on the mini models). Locked memory stays.
  if (!options.lock_memory) {
    m->file_.drop_pages(m->embedding_);
    m->embedding_rows_read_ = true;
  }
  m->layers_.resize(c.layers);
  for (LayerWeights& l : m->layers_) {
    l.attn_norm = dequantize(take());
    if (c.post_norms) l.attn_post_norm = dequantize(take());
    l.moe_norm = dequantize(take());
    if (c.post_norms) l.moe_post_norm = dequantize(take());
    for (Linear* attention : {&l.q, &l.k, &l.v, &l.o}) *attention = Linear(in_memory(take(), false));
    l.router = dequantize(take());
    for (int64_t e = 0; e < c.experts; ++e) {
      l.gate_up.emplace_back(in_memory(take(), true));
      l.down.emplace_back(in_memory(take(), true));
    }
  }
  m->final_norm_ = dequantize(take());
  m->output_ = Linear(c.tied_embeddings ? m->embedding_ : in_memory(take(), false));
  // Dense weights are packed for oneDNN at load, and the file pages the
  // packed copies replace are dropped: a dense model then holds its weights
  // in memory once, as a sparse one does, and no decode step pays for packing.
  auto prepare = [&](Linear& l) {
    if (l.prepare()) m->file_.drop_pages(l.weight());
  };
  for (LayerWeights& l : m->layers_) {
    for (Linear* p : {&l.q, &l.k, &l.v, &l.o}) prepare(*p);
    for (Linear& e : l.gate_up) prepare(e);
    for (Linear& e : l.down) prepare(e);
  }
  prepare(m->output_);
  if (m->file_.tensors().size() != specs.size())
    throw Error(path + ": holds " + std::to_string(m->file_.tensors().size()) + " tensors, the config needs " + std::to_string(specs.size()));
  return m;
}

void Model::embed(int32_t token, float* out) const {
  const TensorDesc& d = embedding_.desc();
  const uint64_t cols = d.cols(), row = static_cast<uint64_t>(token);
  const size_t row_bytes = cols * dtype_size(d.dtype);
  const std::byte* stored = embedding_.section<std::byte>(Section::values) + row * row_bytes;
  // Each thread's row buffer grows once (a decode loop must not allocate per token).
  thread_local std::vector<std::byte> read_row;
  if (embedding_rows_read_) {
    if (read_row.size() < row_bytes) read_row.resize(row_bytes);
    file_.read(stored, row_bytes, read_row.data());
    stored = read_row.data();
  }
  switch (d.dtype) {
    case DType::f32:
      std::memcpy(out, stored, row_bytes);
      break;
    case DType::bf16:
      for (uint64_t i = 0; i < cols; ++i) {
        uint16_t v;
        std::memcpy(&v, stored + 2 * i, sizeof v);
        out[i] = bf16_to_f32(v);
      }
      break;
    case DType::int8: {
      const auto* v = reinterpret_cast<const int8_t*>(stored);
      const float scale = embedding_.section<float>(Section::scales)[row];
      for (uint64_t i = 0; i < cols; ++i) out[i] = static_cast<float>(v[i]) * scale;
      break;
    }
  }
}

uint64_t Model::decode_bytes_per_token() const {
  uint64_t bytes = output_.bytes();
  for (const LayerWeights& l : layers_) {
    bytes += l.q.bytes() + l.k.bytes() + l.v.bytes() + l.o.bytes();
    uint64_t experts = 0;
    for (size_t e = 0; e < l.gate_up.size(); ++e) experts += l.gate_up[e].bytes() + l.down[e].bytes();
    bytes += experts * static_cast<uint64_t>(config_.top_k) / l.gate_up.size();
  }
  return bytes;
}

}  // namespace lacuna
