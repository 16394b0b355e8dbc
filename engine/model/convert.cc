#include "engine/model/convert.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "engine/model/config.h"
#include "engine/model/model.h"
#include "engine/model/tokenizer.h"
#include "engine/model/weights.h"
#include "kernels/planner.h"
#include "sparse/convert.h"
#include "sparse/error.h"
#include "sparse/model-file.h"
#include "sparse/prune.h"
#include "sparse/quantize.h"
#include "sparse/safetensors.h"

namespace lacuna {
namespace {

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return {};
  std::ostringstream s;
  s << f.rdbuf();
  return s.str();
}

nlohmann::json read_config(const std::string& dir) {
  const std::string path = dir + "/config.json";
  const std::string text = read_file(path);
  if (text.empty()) throw Error(path + ": missing or empty (a Hugging Face checkpoint directory holds config.json)");
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw Error(path + ": malformed JSON: " + e.what());
  }
}

// Norm tensors are saved as `.weight` by some ports and `.scale` by others.
const StTensor* find_source(const SafetensorsCheckpoint& ckpt, const std::string& name) {
  if (const StTensor* t = ckpt.find(name)) return t;
  const std::string suffix = ".weight";
  if (name.size() > suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0)
    return ckpt.find(name.substr(0, name.size() - suffix.size()) + ".scale");
  return nullptr;
}

std::string shape_text(const std::vector<uint64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += 'x';
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

// The weight as f32 [rows, cols], its sources concatenated by rows.
std::vector<float> load(const SafetensorsCheckpoint& ckpt, const WeightSpec& spec) {
  std::vector<float> out;
  const uint64_t parts = spec.sources.size();
  for (const std::string& name : spec.sources) {
    const StTensor* t = find_source(ckpt, name);
    if (!t) throw Error("checkpoint: missing tensor " + name);
    const std::vector<uint64_t> want =
        spec.cols == 0 ? std::vector<uint64_t>{spec.rows} : std::vector<uint64_t>{spec.rows / parts, spec.cols};
    if (t->shape != want) throw Error("checkpoint: tensor " + name + " is " + shape_text(t->shape) + ", the config needs " + shape_text(want));
    const size_t at = out.size();
    out.resize(at + t->elements());
    SafetensorsCheckpoint::to_f32(*t, out.data() + at);
  }
  for (float v : out)
    if (!std::isfinite(v)) throw Error("checkpoint: tensor " + spec.sources.front() + " holds a NaN or infinite value");
  return out;
}

// Whether csr8 may store weights of `dtype`: only bf16 has its small-batch
// kernel; the others would fall to the broadcast and scalar kernels and
// decode several times slower than bitmap.
bool csr8_stores(DType dtype) { return dtype == DType::bf16; }

Format pick_format(DType dtype, uint64_t rows, uint64_t cols, uint64_t nonzeros) {
  std::vector<Format> formats{Format::dense, Format::bitmap, Format::csr};
  if (csr8_stores(dtype)) formats.push_back(Format::csr8);
  const LinearPlan plan = plan_linear(dtype, rows, cols, nonzeros, 1, formats, MachineModel::for_bandwidth(30e9, omp_get_max_threads()));
  return plan.chosen.onednn ? Format::dense : plan.chosen.format;
}

}  // namespace

const char* prune_method_name(PruneMethod m) {
  switch (m) {
    case PruneMethod::none: return "none";
    case PruneMethod::magnitude: return "magnitude";
    case PruneMethod::wanda: return "wanda";
  }
  return "?";
}

std::optional<PruneMethod> parse_prune_method(std::string_view name) {
  for (PruneMethod m : {PruneMethod::none, PruneMethod::magnitude, PruneMethod::wanda})
    if (name == prune_method_name(m)) return m;
  return std::nullopt;
}

ConvertSummary convert_checkpoint(const std::string& hf_dir, const std::string& out_path, const ConvertOptions& o) {
  auto log = [&](const std::string& line) {
    if (o.log) o.log(line);
  };
  if (!(o.sparsity >= 0 && o.sparsity < 1)) throw Error("convert: sparsity must be in [0, 1)");  // NaN too
  const ModelConfig config = ModelConfig::from_hf(read_config(hf_dir));
  for (const auto& [layer, sparsity] : o.layer_sparsity) {
    if (layer < 0 || layer >= config.layers)
      throw Error("convert: a sparsity is given for layer " + std::to_string(layer) + "; the model has layers 0.." + std::to_string(config.layers - 1));
    if (!(sparsity >= 0 && sparsity < 1)) throw Error("convert: the sparsity of layer " + std::to_string(layer) + " must be in [0, 1)");
  }
  if (o.prune == PruneMethod::wanda && o.input_norms.empty()) throw Error("convert: Wanda pruning needs calibration (activation norms)");
  if (o.format == Format::csr8 && !csr8_stores(o.dtype))
    throw Error(std::string("convert: csr8 has small-batch kernels for bf16 weights only, not ") + dtype_name(o.dtype) + "; store them as bitmap or csr");
  const SafetensorsCheckpoint ckpt = SafetensorsCheckpoint::open(hf_dir);
  std::vector<std::string> names;
  for (const StTensor& t : ckpt.tensors()) names.push_back(t.name);
  const HfLayout layout = detect_hf_layout(config.arch, names);

  ModelConfig stored = config;
  std::vector<WeightSpec> specs = model_weights(config, layout);
  if (!config.tied_embeddings && !find_source(ckpt, specs.back().sources.front())) {
    log("warning: no " + specs.back().sources.front() + "; the embedding serves as the output projection");
    stored.tied_embeddings = true;
    specs.pop_back();
  }

  // Every missing and unexpected tensor is found before any work is done.
  std::set<std::string> used;
  for (const WeightSpec& spec : specs)
    for (const std::string& name : spec.sources) {
      const StTensor* t = find_source(ckpt, name);
      if (!t) throw Error("checkpoint: missing tensor " + name);
      used.insert(t->name);
    }
  for (const std::string& name : names)
    if (!used.count(name) && !(name == "lm_head.weight" && stored.tied_embeddings) && name.find("rotary_emb.inv_freq") == std::string::npos)
      throw Error("checkpoint: unexpected tensor " + name + " (not part of a " + std::string(arch_name(config.arch)) + " model)");

  std::vector<std::byte> tokenizer;
  const std::string tokenizer_text = read_file(hf_dir + "/tokenizer.model");
  if (tokenizer_text.empty()) {
    log("warning: no tokenizer.model in " + hf_dir + "; the model will take and give token ids only");
  } else {
    tokenizer.resize(tokenizer_text.size());
    std::memcpy(tokenizer.data(), tokenizer_text.data(), tokenizer_text.size());
    const Tokenizer check = Tokenizer::from_bytes(tokenizer);
    if (check.vocab_size() > config.vocab)
      throw Error(hf_dir + "/tokenizer.model: " + std::to_string(check.vocab_size()) + " pieces, more than the model's vocabulary of " +
                  std::to_string(config.vocab));
  }

  nlohmann::json layer_sparsity_json = nlohmann::json::object();
  for (const auto& [layer, sparsity] : o.layer_sparsity) layer_sparsity_json[std::to_string(layer)] = sparsity;
  const nlohmann::json source{{"checkpoint", hf_dir},
                              {"layout", hf_layout_name(layout)},
                              {"prune", prune_method_name(o.prune)},
                              {"sparsity", o.sparsity},
                              {"layer_sparsity", layer_sparsity_json},
                              {"dtype", dtype_name(o.dtype)},
                              {"output_dtype", dtype_name(o.output_dtype.value_or(o.dtype))},
                              {"format", o.format ? format_name(*o.format) : "auto"}};
  ModelFileWriter writer(out_path, model_metadata(stored, source.dump()), tokenizer);
  ConvertSummary summary;
  summary.has_tokenizer = !tokenizer.empty();
  char line[256];
  for (const WeightSpec& spec : specs) {
    std::vector<float> w = load(ckpt, spec);
    const uint64_t rows = spec.cols ? spec.rows : 1, cols = spec.cols ? spec.cols : spec.rows;
    const bool prunable = spec.kind == WeightKind::attention || spec.kind == WeightKind::expert;
    DType dtype = DType::f32;
    Format format = Format::dense;
    const auto layer_override = o.layer_sparsity.find(spec.layer);
    const double sparsity = layer_override != o.layer_sparsity.end() ? layer_override->second : o.sparsity;
    if (prunable && o.prune != PruneMethod::none && sparsity > 0) {
      const auto norms = o.input_norms.find(spec.name);
      if (o.prune == PruneMethod::wanda && norms != o.input_norms.end()) {
        if (norms->second.size() != cols)
          throw Error("convert: the calibration norms of " + spec.name + " have " + std::to_string(norms->second.size()) + " channels, the weight " +
                      std::to_string(cols) + " columns");
        prune_wanda(w.data(), rows, cols, norms->second.data(), sparsity);
      } else {
        if (o.prune == PruneMethod::wanda) {
          summary.magnitude_fallbacks.push_back(spec.name);
          log("warning: " + spec.name + " saw no calibration token; pruned by magnitude");
        }
        prune_magnitude(w.data(), rows, cols, sparsity, PruneScope::per_row);
      }
    }
    const auto zeros = static_cast<uint64_t>(std::count(w.begin(), w.end(), 0.0f));
    if (prunable) {
      dtype = o.dtype;
      format = o.format ? *o.format : pick_format(dtype, rows, cols, rows * cols - zeros);
    } else if (spec.kind == WeightKind::output || (spec.kind == WeightKind::embedding && stored.tied_embeddings)) {
      dtype = o.output_dtype.value_or(o.dtype);
    } else if (spec.kind == WeightKind::embedding) {
      dtype = o.dtype;
    }
    const Tensor dense = quantize_matrix(w.data(), rows, cols, dtype);
    const Tensor packed = format == Format::dense ? dense : pack(dense, format, BlockShape{16, 1});
    writer.add(spec.name, packed);
    summary.tensors++;
    summary.bytes += packed.payload_bytes();
    summary.dense_bf16_bytes += rows * cols * 2;
    std::snprintf(line, sizeof line, "%-32s %12s %-6s %-4s %5.1f%% zeros %10.2f MB", spec.name.c_str(), packed.desc().shape_string().c_str(),
                  format_name(packed.desc().format), dtype_name(dtype), 100.0 * static_cast<double>(zeros) / static_cast<double>(w.size()),
                  static_cast<double>(packed.payload_bytes()) / 1e6);
    log(line);
  }
  writer.finish();
  return summary;
}

}  // namespace lacuna
