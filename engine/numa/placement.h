#pragma once
// Where each (layer, expert) of a MoE model lives on a NUMA machine, and how
// a step's routed tokens are shared among the nodes that hold an expert.
// Pure planning: no memory is touched here (binding and execution use the
// plan). Load is measured in routed tokens: within a layer every expert has
// the same shape, so an expert's work is proportional to its tokens (pruning
// may leave experts with somewhat different bytes; that moves the balance of
// memory, not of work, and is reported in node_bytes).
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace lacuna {

enum class NumaPolicy { none, interleave, experts, slices, automatic };
const char* numa_policy_name(NumaPolicy p);  // "none", "interleave", "experts", "slices", "auto"
std::optional<NumaPolicy> parse_numa_policy(std::string_view name);

struct ExpertStats {
  uint64_t bytes = 0;  // the expert's weights, as stored
  uint64_t rows = 0;   // output rows of its projections, the unit slices split
  double load = 0;     // expected tokens routed to it (router statistics; any scale)
};

struct PlacementRequest {
  std::vector<std::vector<ExpertStats>> layers;  // [layer][expert]
  int nodes = 1;
  NumaPolicy policy = NumaPolicy::automatic;
  uint64_t replicate_budget_bytes = 0;  // `experts`: memory for extra copies of hot experts, all layers together
  size_t batch = 1;                     // `auto`: the decode batch the plan is for
  int top_k = 2;                        // `auto`: experts per token
};

struct ExpertPlacement {
  std::vector<int> nodes;          // `experts`: the owner first, then its replicas; `slices`: every node; else empty (not bound)
  std::vector<uint64_t> row_ends;  // `slices`: node i computes rows [row_ends[i-1], row_ends[i]) (row_ends[-1] = 0)
};

struct LayerPlacement {
  NumaPolicy policy = NumaPolicy::none;  // never `automatic`: what auto chose
  std::vector<ExpertPlacement> experts;
  std::string why;  // the reason auto gave, or the policy asked for
};

struct Placement {
  int nodes = 1;
  std::vector<LayerPlacement> layers;
  std::vector<uint64_t> node_bytes;  // expert weight bytes held per node (replicas included)
  uint64_t replica_bytes = 0;        // bytes of the extra copies, <= the budget
};

// `rows` cut into `nodes` nearly equal slices on multiples of 64 rows (every
// kernel's row tile divides 64): slice n is [ends[n-1], ends[n]), ends[-1] = 0.
// Slices of a small matrix may be empty.
std::vector<uint64_t> slice_row_ends(uint64_t rows, int nodes);

// Throws lacuna::Error for nodes < 1 or a layer without experts.
Placement plan_placement(const PlacementRequest& request);

// How one layer's routed tokens (tokens[e] for expert e) are shared among
// the nodes holding each expert: share[e][k] tokens of expert e run on node
// layer.experts[e].nodes[k]. Replicas split an expert's tokens so that the
// nodes' totals come out as even as the placement allows. `experts` layers
// only; under the other policies every node takes part in every expert.
std::vector<std::vector<uint64_t>> share_tokens(const LayerPlacement& layer, const std::vector<uint64_t>& tokens, int nodes);

// Tokens per node from share_tokens' result.
std::vector<uint64_t> node_tokens(const LayerPlacement& layer, const std::vector<std::vector<uint64_t>>& share, int nodes);

// The largest node load over the mean (1 = perfectly even; 1 when all are 0).
double load_imbalance(const std::vector<uint64_t>& per_node);

}  // namespace lacuna
