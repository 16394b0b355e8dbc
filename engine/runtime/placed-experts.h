#pragma once
// A MoE model's experts placed on NUMA nodes as a Placement says: every copy
// (whole expert, or one node's row slice of it) in its node's own memory,
// and the mapped file's pages of what was copied dropped, so that memory
// stays near 1x the weights (plus the replicas the budget allows).
#include <cstdint>
#include <memory>
#include <span>
#include <utility>
#include <vector>

#include "engine/model/model.h"
#include "engine/numa/placement.h"
#include "engine/numa/topology.h"
#include "engine/runtime/linear.h"
#include "sparse/convert.h"

namespace lacuna {

// One node's copy of an expert, or of its slice. gate_up holds the gate rows
// `ffn` then the up rows `ffn` of the expert's fused projection; down holds
// the output rows `out` (for a slice, the node's share of the hidden rows, so
// that each output element is still one whole dot product, summed exactly as
// the unplaced expert sums it).
struct NodeExpert {
  int node = 0;  // the team that runs it, whose memory holds it; -1: interleaved over every node, or unbound
  RowRange ffn, out;
  Linear gate_up, down;
};

// Router statistics: tokens routed to each expert, [layer][expert], over
// `ids` run through the unplaced model (as sequences of at most the context,
// in prompt chunks of 512). Throws lacuna::Error for an invalid token id.
std::vector<std::vector<uint64_t>> calibrate_routing(const std::shared_ptr<const Model>& model, std::span<const int32_t> ids);

// Router statistics -> the plan, for `model`'s experts (routed[layer][expert]
// tokens; empty: every expert alike). Throws lacuna::Error like plan_placement.
Placement plan_model_placement(const Model& model, int nodes, NumaPolicy policy, uint64_t replicate_budget_bytes, size_t batch,
                               const std::vector<std::vector<uint64_t>>& routed);

class PlacedExperts {
 public:
  // Copies the experts into node memory per `placement` (which must be for
  // `model` and `topology`). Open the model with
  // LoadOptions::leave_experts_mapped, or its experts are held twice. Throws lacuna::Error for a placement that does
  // not match, or memory that cannot be had on a node.
  PlacedExperts(const Model& model, Topology topology, Placement placement);

  const Topology& topology() const { return topology_; }
  const Placement& placement() const { return placement_; }
  // Copies of (layer, expert): for `experts` the owner first, then its
  // replicas; for `none` one unbound copy if the model left its experts in
  // the file, else none (the model's own weights run).
  const std::vector<NodeExpert>& copies(size_t layer, size_t expert) const { return copies_[layer][expert]; }
  // Weight bytes held in each node's memory (interleaved copies spread evenly).
  const std::vector<uint64_t>& node_bytes() const { return node_bytes_; }
  // Bytes of the node-bound copies whose pages are on their node, and of all
  // of them, read back page by page (move_pages): what the kernel did with
  // the binding. Throws lacuna::Error when the query fails.
  std::pair<uint64_t, uint64_t> resident_bytes() const;

 private:
  Topology topology_;
  Placement placement_;
  std::vector<std::vector<std::vector<NodeExpert>>> copies_;
  std::vector<uint64_t> node_bytes_;
};

}  // namespace lacuna
