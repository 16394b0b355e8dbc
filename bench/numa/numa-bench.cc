#include "bench/numa/numa-bench.h"

#include <omp.h>

#include <cstdio>
#include <fstream>
#include <memory>
#include <numeric>

#include "bench/common/stats.h"
#include "bench/model/greedy-decoder.h"
#include "engine/numa/topology.h"
#include "engine/runtime/forward.h"
#include "engine/runtime/placed-experts.h"
#include "kernels/cpu-features.h"
#include "sparse/error.h"

namespace lacuna::bench {
namespace {

NumaCounters minus(const NumaCounters& a, const NumaCounters& b) {
  NumaCounters d = a;
  for (size_t i = 0; i < d.node_tokens.size() && i < b.node_tokens.size(); ++i) d.node_tokens[i] -= b.node_tokens[i];
  for (size_t i = 0; i < d.node_busy_seconds.size() && i < b.node_busy_seconds.size(); ++i) d.node_busy_seconds[i] -= b.node_busy_seconds[i];
  d.remote_weight_bytes -= b.remote_weight_bytes;
  d.critical_pairs -= b.critical_pairs;
  return d;
}

}  // namespace

int run_numa_bench(const NumaBenchOptions& o) {
  const CpuInfo& cpu = cpu_info();
  const Topology topology = topology_from_env();
  std::printf("machine: %s, %d threads, isa %s\ntopology: %s\n", cpu.brand.c_str(), omp_get_max_threads(), isa_level_name(cpu.level()),
              topology.describe().c_str());
  // Every placement, and the unplaced model, has its own mapping of the file:
  // placing experts drops the file's pages of what was copied from that
  // mapping, which another placement's unplaced layers (or `none`) would
  // otherwise fault back in while timed.
  auto open = [&](bool placed) {
    return Model::open(o.model_path, OpenOptions{.verify_checksums = false, .prefault = true}, LoadOptions{.leave_experts_mapped = placed});
  };
  const auto unplaced = open(false);
  const std::vector<int32_t> prompt = bench_prompt(72, unplaced->config().vocab);
  std::printf("model: %s; %d timed decode steps per batch size (median), each policy's step alternated with --numa none's;\n"
              "replicate budget %.0f MB. vs none: median over pairs of steps run A B B A of the time ratio. critical: the busiest node's (token, expert) pairs per\n"
              "step, the paper model's measure of a bandwidth-bound step (docs/numa.md); imbalance: max / mean node busy time\n\n",
              o.model_path.c_str(), o.decode_steps, o.replicate_budget_mb);
  std::printf("placing the experts for %zu policies...\n", o.policies.size());
  struct Entry {
    std::string policy;
    std::shared_ptr<const Model> model;
    std::shared_ptr<const PlacedExperts> placed;
  };
  std::vector<Entry> entries;
  for (const std::string& name : o.policies) {
    const auto policy = parse_numa_policy(name);
    if (!policy || *policy == NumaPolicy::none) throw Error("bench numa: policy '" + name + "' (give interleave, experts, slices or auto)");
    const auto model = open(true);
    Placement plan = plan_model_placement(*model, static_cast<int>(topology.nodes.size()), *policy,
                                          static_cast<uint64_t>(o.replicate_budget_mb * 1e6), o.batches.front(), {});
    entries.push_back({name, model, std::make_shared<const PlacedExperts>(*model, topology, std::move(plan))});
  }
  std::ofstream csv;
  if (!o.csv_path.empty()) {
    csv.open(o.csv_path);
    csv << "model,nodes,simulated,policy,batch,tokens_per_s,ratio_vs_none,critical_pairs_per_step,imbalance,remote_bytes_per_step,replica_mb\n";
  }
  std::printf("%-11s %5s %12s %9s %10s %10s %14s %11s\n", "policy", "batch", "tokens/s", "vs none", "critical", "imbalance", "remote MB/step",
              "replica MB");
  for (size_t batch : o.batches) {
    GreedyDecoder none(unplaced);
    none.start(batch, o.decode_steps * static_cast<int>(entries.size()), prompt);
    for (const Entry& e : entries) {
      GreedyDecoder placed(e.model, e.placed);
      placed.start(batch, o.decode_steps, prompt);
      const NumaCounters before = placed.forward().numa_counters();
      // Steps in A B B A order, a ratio per pair of pairs: what runs second
      // may find the first one's weights in the cache (auto on one node
      // reads the same weights as none), and the order cancels that.
      std::vector<double> t, ratio;
      double base_sum = 0, placed_sum = 0;
      for (int s = 0; s < o.decode_steps; ++s) {
        double base = 0, x = 0;
        if (s % 2 == 0) {
          base = none.step();
          x = placed.step();
        } else {
          x = placed.step();
          base = none.step();
        }
        t.push_back(x);
        base_sum += base;
        placed_sum += x;
        if (s % 2 == 1) {
          ratio.push_back(base_sum / placed_sum);
          base_sum = placed_sum = 0;
        }
      }
      const NumaCounters d = minus(placed.forward().numa_counters(), before);
      const double steps = o.decode_steps;
      const double tps = static_cast<double>(batch) / median(t), vs = median(ratio);
      const double replica_mb = static_cast<double>(e.placed->placement().replica_bytes) / 1e6;
      std::printf("%-11s %5zu %12.2f %8.3fx %10.1f %10.3f %14.1f %11.1f\n", e.policy.c_str(), batch, tps, vs, d.critical_pairs / steps, d.imbalance(),
                  static_cast<double>(d.remote_weight_bytes) / steps / 1e6, replica_mb);
      std::fflush(stdout);
      if (csv.is_open())
        csv << o.model_path << ',' << topology.nodes.size() << ',' << (topology.simulated_from ? 1 : 0) << ',' << e.policy << ',' << batch << ','
            << tps << ',' << vs << ',' << d.critical_pairs / steps << ',' << d.imbalance() << ','
            << static_cast<double>(d.remote_weight_bytes) / steps << ',' << replica_mb << '\n';
    }
  }
  if (csv.is_open()) {
    if (!csv) throw Error(o.csv_path + ": cannot write");
    std::printf("\nwrote %s\n", o.csv_path.c_str());
  }
  return 0;
}

}  // namespace lacuna::bench
