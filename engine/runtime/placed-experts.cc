#include "engine/runtime/placed-experts.h"

#include "engine/numa/binding.h"
#include "engine/runtime/forward.h"
#include "sparse/weight-memory.h"
#include "sparse/error.h"

namespace lacuna {

std::vector<std::vector<uint64_t>> calibrate_routing(const std::shared_ptr<const Model>& model, std::span<const int32_t> ids) {
  const auto context = static_cast<size_t>(model->config().max_context);
  Forward forward(model);
  for (size_t at = 0; at < ids.size(); at += context) {
    const std::span<const int32_t> window = ids.subspan(at, std::min(ids.size() - at, context));
    KvCache cache(model->config(), static_cast<int64_t>(window.size()));
    for (size_t k = 0; k < window.size(); k += 512) {
      const SequenceStep step{&cache, window.subspan(k, std::min<size_t>(512, window.size() - k)), nullptr, false};
      forward.step({&step, 1});
    }
  }
  return forward.routed_tokens();
}

Placement plan_model_placement(const Model& model, int nodes, NumaPolicy policy, uint64_t replicate_budget_bytes, size_t batch,
                               const std::vector<std::vector<uint64_t>>& routed) {
  const ModelConfig& c = model.config();
  PlacementRequest r;
  r.nodes = nodes;
  r.policy = policy;
  r.replicate_budget_bytes = replicate_budget_bytes;
  r.batch = batch;
  r.top_k = static_cast<int>(c.top_k);
  for (size_t l = 0; l < model.layers().size(); ++l) {
    const LayerWeights& w = model.layers()[l];
    std::vector<ExpertStats> experts;
    for (size_t e = 0; e < w.gate_up.size(); ++e) {
      const double load = l < routed.size() && e < routed[l].size() ? static_cast<double>(routed[l][e]) : 0.0;
      experts.push_back({w.gate_up[e].bytes() + w.down[e].bytes(), static_cast<uint64_t>(c.ffn), load});
    }
    r.layers.push_back(std::move(experts));
  }
  return plan_placement(r);
}

PlacedExperts::PlacedExperts(const Model& model, Topology topology, Placement placement)
    : topology_(std::move(topology)), placement_(std::move(placement)), node_bytes_(topology_.nodes.size(), 0) {
  const ModelConfig& c = model.config();
  if (placement_.nodes != static_cast<int>(topology_.nodes.size()) || placement_.layers.size() != model.layers().size())
    throw Error("NUMA placement for " + std::to_string(placement_.nodes) + " nodes and " + std::to_string(placement_.layers.size()) +
                " layers does not match a topology of " + std::to_string(topology_.nodes.size()) + " nodes and a model of " +
                std::to_string(model.layers().size()) + " layers");
  std::vector<int> all_nodes;
  for (const NumaNode& n : topology_.nodes) all_nodes.push_back(n.os_index);
  const auto ffn = static_cast<uint64_t>(c.ffn), hidden = static_cast<uint64_t>(c.hidden);
  const std::vector<uint64_t> out_ends = slice_row_ends(hidden, placement_.nodes);
  for (size_t l = 0; l < placement_.layers.size(); ++l) {
    const LayerPlacement& layer = placement_.layers[l];
    const LayerWeights& w = model.layers()[l];
    if (layer.experts.size() != w.gate_up.size())
      throw Error("NUMA placement of layer " + std::to_string(l) + " has " + std::to_string(layer.experts.size()) + " experts, the model " +
                  std::to_string(w.gate_up.size()));
    auto& layer_copies = copies_.emplace_back(w.gate_up.size());
    for (size_t e = 0; e < w.gate_up.size(); ++e) {
      const Tensor& gate_up = w.gate_up[e].weight();
      const Tensor& down = w.down[e].weight();
      if (layer.policy == NumaPolicy::none) {
        // Unbound, but out of the file like every weight the model loaded (LoadOptions).
        if (!model.file().holds(gate_up) && !model.file().holds(down)) continue;
        layer_copies[e].push_back({-1, {0, ffn}, {0, hidden}, Linear(copy_to_weight_memory(gate_up)), Linear(copy_to_weight_memory(down))});
        for (uint64_t& b : node_bytes_) b += (gate_up.payload_bytes() + down.payload_bytes()) / node_bytes_.size();
      } else if (layer.policy == NumaPolicy::interleave) {
        layer_copies[e].push_back({-1, {0, ffn}, {0, hidden}, Linear(copy_interleaved(gate_up, all_nodes)), Linear(copy_interleaved(down, all_nodes))});
        for (uint64_t& b : node_bytes_) b += (gate_up.payload_bytes() + down.payload_bytes()) / node_bytes_.size();
      } else {
        const ExpertPlacement& ep = layer.experts[e];
        const bool sliced = layer.policy == NumaPolicy::slices;
        for (size_t k = 0; k < ep.nodes.size(); ++k) {
          const int node = ep.nodes[k];
          if (node < 0 || node >= placement_.nodes) throw Error("NUMA placement names node " + std::to_string(node));
          const RowRange f = sliced ? RowRange{k ? ep.row_ends[k - 1] : 0, ep.row_ends[k]} : RowRange{0, ffn};
          const RowRange o = sliced ? RowRange{k ? out_ends[k - 1] : 0, out_ends[k]} : RowRange{0, hidden};
          if (f.begin == f.end && o.begin == o.end) continue;  // a small expert has nothing for this node
          const int os = topology_.nodes[static_cast<size_t>(node)].os_index;
          // A slice's two parts: the gate and up rows of its ffn range (the
          // activation pairs them); the down rows of its output range.
          const RowRange gate_rows[] = {f, {ffn + f.begin, ffn + f.end}};
          const RowRange down_rows[] = {o};
          const bool whole = f.begin == 0 && f.end == ffn && o.begin == 0 && o.end == hidden;
          NodeExpert copy{node, f, o, Linear(), Linear()};
          if (f.begin < f.end) copy.gate_up = Linear(copy_to_node(whole ? gate_up : select_rows(gate_up, gate_rows), os));
          if (o.begin < o.end) copy.down = Linear(copy_to_node(whole ? down : select_rows(down, down_rows), os));
          node_bytes_[static_cast<size_t>(node)] += copy.gate_up.bytes() + copy.down.bytes();
          layer_copies[e].push_back(std::move(copy));
        }
      }
      // Experts already copied out of the file at open stay there too.
      for (const Tensor* t : {&gate_up, &down})
        if (model.file().holds(*t)) model.file().drop_pages(*t);
    }
  }
}

std::pair<uint64_t, uint64_t> PlacedExperts::resident_bytes() const {
  uint64_t home = 0, total = 0;
  for (const auto& layer : copies_)
    for (const auto& expert : layer)
      for (const NodeExpert& copy : expert) {
        if (copy.node < 0) continue;
        const int os = topology_.nodes[static_cast<size_t>(copy.node)].os_index;
        for (const Linear* l : {&copy.gate_up, &copy.down}) {
          if (l->weight().empty()) continue;
          for (const auto& [node, bytes] : resident_nodes(l->weight().data(), l->weight().payload_bytes())) {
            total += bytes;
            if (node == os) home += bytes;
          }
        }
      }
  return {home, total};
}

}  // namespace lacuna
