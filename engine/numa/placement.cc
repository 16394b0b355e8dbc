#include "engine/numa/placement.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "sparse/error.h"

namespace lacuna {
namespace {

// Slices are cut on multiples of this many rows: every kernel's row tile
// divides it, and a slice's bytes then start near a page boundary.
constexpr uint64_t kSliceRows = 64;

std::vector<double> layer_loads(const std::vector<ExpertStats>& experts) {
  std::vector<double> loads;
  for (const ExpertStats& e : experts) loads.push_back(std::max(0.0, e.load));
  // No statistics: every expert as likely as any other.
  if (std::accumulate(loads.begin(), loads.end(), 0.0) <= 0) std::fill(loads.begin(), loads.end(), 1.0);
  return loads;
}

LayerPlacement sliced(const std::vector<ExpertStats>& experts, int nodes) {
  LayerPlacement l{NumaPolicy::slices, {}, ""};
  for (const ExpertStats& e : experts) {
    ExpertPlacement p;
    for (int n = 0; n < nodes; ++n) p.nodes.push_back(n);
    p.row_ends = slice_row_ends(e.rows, nodes);
    l.experts.push_back(std::move(p));
  }
  return l;
}

// Replicas of hot experts, all layers together, within the byte budget: each
// step gives one more copy to the expert whose load per copy is the largest
// against its layer's mean expert load (as EPLB does for GPU slots), while
// that ratio is above 1 (a copy of an expert no busier than average cannot
// even out the nodes) and the expert has fewer copies than nodes.
// Layers under other policies get no copies.
std::vector<std::vector<int>> replica_counts(const PlacementRequest& r, const std::vector<std::vector<double>>& loads,
                                             const std::vector<double>& means, const std::vector<NumaPolicy>& policies, uint64_t& used) {
  std::vector<std::vector<int>> copies;
  for (const auto& l : loads) copies.emplace_back(l.size(), 1);
  used = 0;
  for (;;) {
    double best = 1.0;
    size_t bl = 0, be = 0;
    bool found = false;
    for (size_t l = 0; l < loads.size(); ++l) {
      if (policies[l] != NumaPolicy::experts) continue;
      for (size_t e = 0; e < loads[l].size(); ++e) {
        const double ratio = loads[l][e] / copies[l][e] / means[l];
        if (copies[l][e] < r.nodes && ratio > best && used + r.layers[l][e].bytes <= r.replicate_budget_bytes) {
          best = ratio, bl = l, be = e, found = true;
        }
      }
    }
    if (!found) return copies;
    ++copies[bl][be];
    used += r.layers[bl][be].bytes;
  }
}

// One layer's copies packed onto nodes, heaviest first onto the least loaded
// node that has room and no copy of that expert yet; room is an equal share
// of the layer's copies, so the nodes also hold about equal bytes.
LayerPlacement packed(const std::vector<double>& loads, const std::vector<int>& copies, int nodes) {
  struct Copy {
    size_t expert;
    double load;
  };
  std::vector<Copy> all;
  for (size_t e = 0; e < loads.size(); ++e)
    for (int c = 0; c < copies[e]; ++c) all.push_back({e, loads[e] / copies[e]});
  std::stable_sort(all.begin(), all.end(), [](const Copy& a, const Copy& b) { return a.load > b.load; });
  const size_t room = (all.size() + static_cast<size_t>(nodes) - 1) / static_cast<size_t>(nodes);
  std::vector<double> node_load(static_cast<size_t>(nodes), 0);
  std::vector<size_t> node_count(static_cast<size_t>(nodes), 0);
  LayerPlacement l{NumaPolicy::experts, std::vector<ExpertPlacement>(loads.size()), ""};
  for (const Copy& c : all) {
    const auto& held = l.experts[c.expert].nodes;
    auto least_loaded = [&](bool need_room) {
      int best = -1;
      for (int n = 0; n < nodes; ++n) {
        if ((need_room && node_count[static_cast<size_t>(n)] >= room) || std::find(held.begin(), held.end(), n) != held.end()) continue;
        if (best < 0 || node_load[static_cast<size_t>(n)] < node_load[static_cast<size_t>(best)]) best = n;
      }
      return best;
    };
    // When every node with room already holds this expert (one node took a
    // heavy expert while the others filled up), a node goes one over its share;
    // one without a copy always exists, as an expert has at most `nodes` copies.
    int best = least_loaded(true);
    if (best < 0) best = least_loaded(false);
    node_load[static_cast<size_t>(best)] += c.load;
    ++node_count[static_cast<size_t>(best)];
    l.experts[c.expert].nodes.push_back(best);
  }
  return l;
}

// Expected distinct experts a step of `batch` tokens routes to.
double expected_active(const std::vector<double>& loads, size_t batch, int top_k) {
  const double total = std::accumulate(loads.begin(), loads.end(), 0.0);
  double active = 0;
  for (double l : loads) active += 1 - std::pow(1 - std::min(1.0, top_k * l / total), static_cast<double>(batch));
  return active;
}

}  // namespace

std::vector<uint64_t> slice_row_ends(uint64_t rows, int nodes) {
  std::vector<uint64_t> ends;
  for (int n = 0; n < nodes; ++n) {
    const uint64_t end = rows * static_cast<uint64_t>(n + 1) / static_cast<uint64_t>(nodes);
    ends.push_back(n + 1 == nodes ? rows : std::min(rows, (end + kSliceRows / 2) / kSliceRows * kSliceRows));
  }
  return ends;
}

const char* numa_policy_name(NumaPolicy p) {
  switch (p) {
    case NumaPolicy::none: return "none";
    case NumaPolicy::interleave: return "interleave";
    case NumaPolicy::experts: return "experts";
    case NumaPolicy::slices: return "slices";
    case NumaPolicy::automatic: return "auto";
  }
  return "?";
}

std::optional<NumaPolicy> parse_numa_policy(std::string_view name) {
  for (NumaPolicy p : {NumaPolicy::none, NumaPolicy::interleave, NumaPolicy::experts, NumaPolicy::slices, NumaPolicy::automatic})
    if (name == numa_policy_name(p)) return p;
  return std::nullopt;
}

Placement plan_placement(const PlacementRequest& r) {
  if (r.nodes < 1) throw Error("a placement needs at least one node, not " + std::to_string(r.nodes));
  std::vector<std::vector<double>> loads;
  for (size_t l = 0; l < r.layers.size(); ++l) {
    if (r.layers[l].empty()) throw Error("layer " + std::to_string(l) + " has no experts to place");
    loads.push_back(layer_loads(r.layers[l]));
  }
  std::vector<double> means;  // each layer's mean expert load
  for (const auto& l : loads) means.push_back(std::accumulate(l.begin(), l.end(), 0.0) / static_cast<double>(l.size()));
  std::vector<NumaPolicy> policies;
  std::vector<std::string> whys;
  for (size_t l = 0; l < r.layers.size(); ++l) {
    if (r.policy != NumaPolicy::automatic) {
      policies.push_back(r.policy);
      whys.push_back(std::string("asked for ") + numa_policy_name(r.policy));
      continue;
    }
    const double active = expected_active(loads[l], r.batch, r.top_k);
    const double skew = *std::max_element(loads[l].begin(), loads[l].end()) / means[l];
    char reason[200];
    if (r.nodes == 1) {
      policies.push_back(NumaPolicy::none);
      std::snprintf(reason, sizeof reason, "one node: nothing to place");
    } else if (active < 2.0 * r.nodes) {
      policies.push_back(NumaPolicy::slices);
      std::snprintf(reason, sizeof reason, "batch %zu routes to %.1f of %zu experts per step (skew %.2f): whole experts would leave nodes idle",
                    r.batch, active, loads[l].size(), skew);
    } else {
      policies.push_back(NumaPolicy::experts);
      std::snprintf(reason, sizeof reason, "batch %zu routes to %.1f of %zu experts per step (skew %.2f): whole experts, hot ones replicated",
                    r.batch, active, loads[l].size(), skew);
    }
    whys.push_back(reason);
  }
  Placement p;
  p.nodes = r.nodes;
  p.node_bytes.assign(static_cast<size_t>(r.nodes), 0);
  const std::vector<std::vector<int>> copies = replica_counts(r, loads, means, policies, p.replica_bytes);
  for (size_t l = 0; l < r.layers.size(); ++l) {
    const auto& experts = r.layers[l];
    LayerPlacement layer;
    switch (policies[l]) {
      case NumaPolicy::experts:
        layer = packed(loads[l], copies[l], r.nodes);
        break;
      case NumaPolicy::slices:
        layer = sliced(experts, r.nodes);
        break;
      default:
        layer.policy = policies[l];
        layer.experts.resize(experts.size());
        break;
    }
    layer.why = whys[l];
    for (size_t e = 0; e < experts.size(); ++e) {
      const ExpertPlacement& ep = layer.experts[e];
      for (size_t k = 0; k < ep.nodes.size(); ++k) {
        // A slice holds its rows' share of the bytes; a whole copy all of them.
        const uint64_t begin = k && !ep.row_ends.empty() ? ep.row_ends[k - 1] : 0, end = ep.row_ends.empty() ? experts[e].rows : ep.row_ends[k];
        p.node_bytes[static_cast<size_t>(ep.nodes[k])] += experts[e].rows ? experts[e].bytes * (end - begin) / experts[e].rows : experts[e].bytes;
      }
    }
    p.layers.push_back(std::move(layer));
  }
  return p;
}

std::vector<std::vector<uint64_t>> share_tokens(const LayerPlacement& layer, const std::vector<uint64_t>& tokens, int nodes) {
  if (layer.policy != NumaPolicy::experts) throw Error(std::string("share_tokens needs an experts layer, not ") + numa_policy_name(layer.policy));
  if (tokens.size() != layer.experts.size())
    throw Error("share_tokens: " + std::to_string(tokens.size()) + " token counts for " + std::to_string(layer.experts.size()) + " experts");
  std::vector<uint64_t> load(static_cast<size_t>(nodes), 0);
  std::vector<std::vector<uint64_t>> share(tokens.size());
  std::vector<size_t> order(tokens.size());
  std::iota(order.begin(), order.end(), 0);
  // Single copies first (they have no choice), then the replicated experts,
  // busiest first, each filling its least loaded holders up evenly.
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    const size_t ca = layer.experts[a].nodes.size(), cb = layer.experts[b].nodes.size();
    return ca != cb ? ca < cb : tokens[a] > tokens[b];
  });
  for (size_t e : order) {
    const auto& holders = layer.experts[e].nodes;
    share[e].assign(holders.size(), 0);
    // Water-filling: the least loaded holders are raised to a common level.
    std::vector<size_t> by_load(holders.size());
    std::iota(by_load.begin(), by_load.end(), 0);
    auto load_of = [&](size_t k) { return load[static_cast<size_t>(holders[k])]; };
    std::stable_sort(by_load.begin(), by_load.end(), [&](size_t a, size_t b) { return load_of(a) < load_of(b); });
    uint64_t left = tokens[e], level = load_of(by_load[0]);
    size_t filled = 1;  // holders by_load[0..filled) end at `level` or above
    while (filled < by_load.size() && left >= (load_of(by_load[filled]) - level) * filled) {
      left -= (load_of(by_load[filled]) - level) * filled;
      level = load_of(by_load[filled++]);
    }
    for (size_t j = 0; j < filled; ++j) {
      const size_t k = by_load[j];
      share[e][k] = level - load_of(k) + left / filled + (j < left % filled ? 1 : 0);
    }
    for (size_t k = 0; k < holders.size(); ++k) load[static_cast<size_t>(holders[k])] += share[e][k];
  }
  return share;
}

std::vector<uint64_t> node_tokens(const LayerPlacement& layer, const std::vector<std::vector<uint64_t>>& share, int nodes) {
  std::vector<uint64_t> per_node(static_cast<size_t>(nodes), 0);
  for (size_t e = 0; e < share.size(); ++e)
    for (size_t k = 0; k < share[e].size(); ++k) per_node[static_cast<size_t>(layer.experts[e].nodes[k])] += share[e][k];
  return per_node;
}

double load_imbalance(const std::vector<uint64_t>& per_node) {
  if (per_node.empty()) return 1;
  const double total = static_cast<double>(std::accumulate(per_node.begin(), per_node.end(), uint64_t{0}));
  if (total == 0) return 1;
  return static_cast<double>(*std::max_element(per_node.begin(), per_node.end())) / (total / static_cast<double>(per_node.size()));
}

}  // namespace lacuna
