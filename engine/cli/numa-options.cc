#include "engine/cli/numa-options.h"

#include <cstdio>

#include "engine/runtime/text-file.h"
#include "engine/numa/topology.h"
#include "sparse/error.h"

namespace lacuna::cli {
namespace {

std::string megabytes(uint64_t bytes) {
  char s[32];
  std::snprintf(s, sizeof s, "%.1f MB", static_cast<double>(bytes) / 1e6);
  return s;
}

}  // namespace

void add_numa_options(CLI::App* cmd, NumaCliOptions& o, bool calibration_file) {
  cmd->add_option("--numa", o.policy, "Expert placement on NUMA nodes: none, interleave, experts, slices or auto")
      ->check(CLI::IsMember({"none", "interleave", "experts", "slices", "auto"}))
      ->capture_default_str();
  cmd->add_option("--numa-replicate-budget", o.replicate_budget_mb, "MB for extra copies of hot experts (experts, auto)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  if (calibration_file) cmd->add_option("--numa-calib", o.calibration_file, "Text file whose routing gives the expected expert loads (default: all alike)");
}

LoadOptions load_options(const NumaCliOptions& o) { return {.weights_in_memory = true, .leave_experts_mapped = o.policy != "none"}; }

void print_numa_counters(const Forward& forward) {
  if (!forward.placed()) return;
  const NumaCounters c = forward.numa_counters();
  std::string nodes;
  for (size_t n = 0; n < c.node_tokens.size(); ++n) {
    char part[96];
    std::snprintf(part, sizeof part, "%snode %zu: %llu pairs, %.2f s busy", n ? "; " : "", n, static_cast<unsigned long long>(c.node_tokens[n]),
                  n < c.node_busy_seconds.size() ? c.node_busy_seconds[n] : 0.0);
    nodes += part;
  }
  std::fprintf(stderr, "numa: %s; imbalance %.3f (max / mean busy time); remote expert weight reads %s\n", nodes.c_str(), c.imbalance(),
               megabytes(c.remote_weight_bytes).c_str());
}

std::shared_ptr<const PlacedExperts> place_experts(const std::shared_ptr<const Model>& model, const NumaCliOptions& o) {
  const NumaPolicy policy = *parse_numa_policy(o.policy);
  if (policy == NumaPolicy::none) return nullptr;
  std::vector<std::vector<uint64_t>> routed;
  if (!o.calibration_file.empty()) {
    const std::string text = read_text_file(o.calibration_file, "the NUMA calibration text");
    if (!model->tokenizer()) throw Error("--numa-calib needs the model's tokenizer, and this model has none");
    const std::vector<int32_t> ids = model->tokenizer()->encode(text, true);
    if (ids.size() < 2) throw Error(o.calibration_file + ": the NUMA calibration text is empty");
    routed = calibrate_routing(model, ids);
  }
  Topology topology = topology_from_env();
  const int nodes = static_cast<int>(topology.nodes.size());
  Placement plan = plan_model_placement(*model, nodes, policy, static_cast<uint64_t>(o.replicate_budget_mb * 1e6), o.batch, routed);
  auto placed = std::make_shared<const PlacedExperts>(*model, std::move(topology), std::move(plan));
  std::string bytes;
  for (size_t n = 0; n < placed->node_bytes().size(); ++n)
    bytes.append(n ? ", " : "").append(megabytes(placed->node_bytes()[n]));
  const auto [home, total] = placed->resident_bytes();
  std::fprintf(stderr, "numa: %s on %s; expert weights per node %s; replicas %.1f MB; pages on their own node: %s of %s\n", o.policy.c_str(),
               placed->topology().describe().c_str(), bytes.c_str(), static_cast<double>(placed->placement().replica_bytes) / 1e6,
               megabytes(home).c_str(), megabytes(total).c_str());
  return placed;
}

}  // namespace lacuna::cli
