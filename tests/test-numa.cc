// NUMA placement on simulated topologies: the plan's invariants (every
// expert placed once or replicated as reported, token counts that add up,
// replicas within the budget, balance on a skewed routing trace).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <random>

#include "engine/numa/binding.h"
#include "engine/numa/placement.h"
#include "engine/numa/topology.h"
#include "sparse/error.h"

namespace lacuna {
namespace {

Topology fake_machine(int real_nodes, int cpus_per_node) {
  Topology t;
  for (int n = 0; n < real_nodes; ++n) {
    NumaNode node{n, {}, uint64_t{16} << 30};
    for (int c = 0; c < cpus_per_node; ++c) node.cpus.push_back(n * cpus_per_node + c);
    t.nodes.push_back(node);
  }
  return t;
}

TEST(Topology, SimulationDealsEveryCpuOutAndSplitsMemory) {
  for (int real : {1, 2})
    for (int cpus : {1, 2, 8})
      for (int nodes : {1, 2, 4}) {
        const Topology t = simulate_topology(fake_machine(real, cpus), nodes);
        ASSERT_EQ(t.nodes.size(), static_cast<size_t>(nodes));
        EXPECT_EQ(t.simulated_from, real);
        std::vector<int> seen;
        for (const NumaNode& n : t.nodes) {
          EXPECT_FALSE(n.cpus.empty()) << t.describe();
          EXPECT_EQ(n.memory_bytes, (uint64_t{16} << 30) * static_cast<uint64_t>(real) / static_cast<uint64_t>(nodes));
          seen.insert(seen.end(), n.cpus.begin(), n.cpus.end());
        }
        std::sort(seen.begin(), seen.end());
        seen.erase(std::unique(seen.begin(), seen.end()), seen.end());
        EXPECT_EQ(seen.size(), static_cast<size_t>(real * cpus)) << t.describe();  // every cpu serves some node
        if (real * cpus >= nodes) {  // enough cpus: no cpu serves two nodes
          size_t total = 0;
          for (const NumaNode& n : t.nodes) total += n.cpus.size();
          EXPECT_EQ(total, static_cast<size_t>(real * cpus)) << t.describe();
        }
      }
  EXPECT_THROW(simulate_topology(fake_machine(1, 2), 0), Error);
  EXPECT_THROW(simulate_topology(fake_machine(1, 2), 65), Error);
  EXPECT_THROW(simulate_topology(Topology{}, 2), Error);
}

TEST(Topology, TheRealMachineAndTheEnvironmentVariable) {
  const Topology real = discover_topology();
  ASSERT_FALSE(real.nodes.empty());
  EXPECT_FALSE(real.nodes[0].cpus.empty());
  EXPECT_GT(real.nodes[0].memory_bytes, 0u);
  ASSERT_EQ(setenv("LACUNA_NUMA_SIMULATE", "2", 1), 0);
  EXPECT_EQ(topology_from_env().nodes.size(), 2u);
  for (const char* bad : {"0", "x", "2x", "-1", "65"}) {
    ASSERT_EQ(setenv("LACUNA_NUMA_SIMULATE", bad, 1), 0);
    try {
      topology_from_env();
      ADD_FAILURE() << bad << " was accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("LACUNA_NUMA_SIMULATE"), std::string::npos) << e.what();
    }
  }
  unsetenv("LACUNA_NUMA_SIMULATE");
  EXPECT_EQ(topology_from_env().nodes.size(), real.nodes.size());
}

// A routing trace skewed as real routers are: expert popularity ~ 1/rank^1.2,
// a different ranking per layer; counts of tokens x top-2 routed per expert.
std::vector<std::vector<uint64_t>> skewed_trace(size_t layers, size_t experts, uint64_t tokens, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<std::vector<uint64_t>> trace;
  for (size_t l = 0; l < layers; ++l) {
    std::vector<double> weight(experts);
    for (size_t e = 0; e < experts; ++e) weight[e] = 1.0 / std::pow(static_cast<double>(e + 1), 1.2);
    std::shuffle(weight.begin(), weight.end(), rng);
    std::discrete_distribution<size_t> pick(weight.begin(), weight.end());
    std::vector<uint64_t> counts(experts, 0);
    for (uint64_t t = 0; t < tokens; ++t) {
      const size_t a = pick(rng);
      size_t b = pick(rng);
      while (b == a) b = pick(rng);
      ++counts[a], ++counts[b];
    }
    trace.push_back(counts);
  }
  return trace;
}

PlacementRequest request_for(const std::vector<std::vector<uint64_t>>& trace, int nodes, NumaPolicy policy, uint64_t budget) {
  PlacementRequest r;
  for (const auto& counts : trace) {
    std::vector<ExpertStats> layer;
    for (uint64_t c : counts) layer.push_back({1000, 640, static_cast<double>(c)});
    r.layers.push_back(layer);
  }
  r.nodes = nodes;
  r.policy = policy;
  r.replicate_budget_bytes = budget;
  return r;
}

TEST(Placement, ExpertsArePlacedOnceOrReplicatedAsReportedWithinTheBudget) {
  const auto trace = skewed_trace(16, 8, 4096, 1);
  for (int nodes : {2, 4})
    for (uint64_t budget : {uint64_t{0}, uint64_t{5000}, uint64_t{48000}}) {
      const Placement p = plan_placement(request_for(trace, nodes, NumaPolicy::experts, budget));
      ASSERT_EQ(p.layers.size(), trace.size());
      uint64_t copies = 0, held = 0;
      for (const LayerPlacement& l : p.layers) {
        EXPECT_EQ(l.policy, NumaPolicy::experts);
        std::vector<size_t> per_node(static_cast<size_t>(nodes), 0);
        for (const ExpertPlacement& e : l.experts) {
          ASSERT_FALSE(e.nodes.empty());
          std::vector<int> sorted = e.nodes;
          std::sort(sorted.begin(), sorted.end());
          EXPECT_EQ(std::unique(sorted.begin(), sorted.end()), sorted.end()) << "two copies of one expert on one node";
          for (int n : e.nodes) {
            ASSERT_GE(n, 0);
            ASSERT_LT(n, nodes);
            ++per_node[static_cast<size_t>(n)];
          }
          copies += e.nodes.size() - 1;
          held += e.nodes.size();
        }
        // Equal shares of the layer's copies: memory stays balanced.
        EXPECT_LE(*std::max_element(per_node.begin(), per_node.end()) - *std::min_element(per_node.begin(), per_node.end()), 1u);
      }
      EXPECT_EQ(p.replica_bytes, copies * 1000);
      EXPECT_LE(p.replica_bytes, budget);
      EXPECT_EQ(std::accumulate(p.node_bytes.begin(), p.node_bytes.end(), uint64_t{0}), held * 1000);
    }
}

// Random and extreme loads (one expert far above the rest, all zero):
// every expert still gets distinct nodes, and the budget holds.
TEST(Placement, EveryExpertIsPlacedWhateverTheLoads) {
  std::mt19937 rng(5);
  for (int trial = 0; trial < 300; ++trial) {
    const int nodes = 2 + trial % 3;
    const size_t experts = 2 + rng() % 9;
    std::vector<std::vector<uint64_t>> trace(1 + rng() % 3, std::vector<uint64_t>(experts));
    for (auto& layer : trace)
      for (auto& t : layer) t = trial % 5 == 0 ? 0 : rng() % 50;
    if (trial % 7 == 0) trace[0][0] = 100000;
    const uint64_t budget = (rng() % 8) * 1000;
    const Placement p = plan_placement(request_for(trace, nodes, NumaPolicy::experts, budget));
    EXPECT_LE(p.replica_bytes, budget);
    for (size_t l = 0; l < trace.size(); ++l) {
      for (const ExpertPlacement& e : p.layers[l].experts) {
        ASSERT_FALSE(e.nodes.empty());
        ASSERT_LE(e.nodes.size(), static_cast<size_t>(nodes));
        std::vector<int> sorted = e.nodes;
        std::sort(sorted.begin(), sorted.end());
        EXPECT_EQ(std::unique(sorted.begin(), sorted.end()), sorted.end());
        for (int n : e.nodes) ASSERT_TRUE(n >= 0 && n < nodes);
      }
      const auto per_node = node_tokens(p.layers[l], share_tokens(p.layers[l], trace[l], nodes), nodes);
      EXPECT_EQ(std::accumulate(per_node.begin(), per_node.end(), uint64_t{0}), std::accumulate(trace[l].begin(), trace[l].end(), uint64_t{0}));
    }
  }
}

TEST(Placement, SharedTokensAddUpAndRebalancingEvensASkewedTrace) {
  const auto trace = skewed_trace(16, 8, 4096, 2);
  for (int nodes : {2, 4}) {
    // Enough budget for a few copies per layer: a quarter of the experts' bytes.
    const Placement p = plan_placement(request_for(trace, nodes, NumaPolicy::experts, 16 * 2 * 1000));
    const Placement plain = plan_placement(request_for(trace, nodes, NumaPolicy::experts, 0));
    double worst = 0, worst_plain = 0;
    for (size_t l = 0; l < trace.size(); ++l) {
      const auto share = share_tokens(p.layers[l], trace[l], nodes);
      for (size_t e = 0; e < trace[l].size(); ++e)
        EXPECT_EQ(std::accumulate(share[e].begin(), share[e].end(), uint64_t{0}), trace[l][e]) << "layer " << l << " expert " << e;
      const auto per_node = node_tokens(p.layers[l], share, nodes);
      EXPECT_EQ(std::accumulate(per_node.begin(), per_node.end(), uint64_t{0}), std::accumulate(trace[l].begin(), trace[l].end(), uint64_t{0}));
      worst = std::max(worst, load_imbalance(per_node));
      worst_plain = std::max(worst_plain, load_imbalance(node_tokens(plain.layers[l], share_tokens(plain.layers[l], trace[l], nodes), nodes)));
    }
    EXPECT_LT(worst, 1.1) << nodes << " nodes (without replicas: " << worst_plain << ")";
    EXPECT_GT(worst_plain, worst) << nodes << " nodes";
  }
}

TEST(Placement, SlicesCoverEveryRowOnEveryNode) {
  const auto trace = skewed_trace(3, 8, 256, 3);
  for (int nodes : {2, 4}) {
    const Placement p = plan_placement(request_for(trace, nodes, NumaPolicy::slices, 0));
    for (const LayerPlacement& l : p.layers)
      for (const ExpertPlacement& e : l.experts) {
        ASSERT_EQ(e.nodes.size(), static_cast<size_t>(nodes));
        ASSERT_EQ(e.row_ends.size(), static_cast<size_t>(nodes));
        EXPECT_EQ(e.row_ends.back(), 640u);
        EXPECT_TRUE(std::is_sorted(e.row_ends.begin(), e.row_ends.end()));
        for (uint64_t end : e.row_ends) EXPECT_TRUE(end % 64 == 0 || end == 640u);
      }
    EXPECT_EQ(p.replica_bytes, 0u);
    EXPECT_EQ(std::accumulate(p.node_bytes.begin(), p.node_bytes.end(), uint64_t{0}), 3u * 8 * 1000);  // memory 1x
  }
}

TEST(Placement, AutoChoosesPerLayerAndSaysWhy) {
  const auto trace = skewed_trace(2, 8, 1024, 4);
  PlacementRequest r = request_for(trace, 2, NumaPolicy::automatic, 8000);
  r.batch = 1;
  for (const LayerPlacement& l : plan_placement(r).layers) {
    EXPECT_EQ(l.policy, NumaPolicy::slices);
    EXPECT_NE(l.why.find("batch 1"), std::string::npos) << l.why;
  }
  r.batch = 64;
  const Placement big = plan_placement(r);
  for (const LayerPlacement& l : big.layers) {
    EXPECT_EQ(l.policy, NumaPolicy::experts);
    EXPECT_NE(l.why.find("replicated"), std::string::npos) << l.why;
  }
  r.nodes = 1;
  for (const LayerPlacement& l : plan_placement(r).layers) EXPECT_EQ(l.policy, NumaPolicy::none);
}

TEST(Placement, BadRequestsAreRefused) {
  EXPECT_THROW(plan_placement(request_for({{1, 2}}, 0, NumaPolicy::experts, 0)), Error);
  PlacementRequest empty = request_for({{1, 2}}, 2, NumaPolicy::experts, 0);
  empty.layers.push_back({});
  EXPECT_THROW(plan_placement(empty), Error);
  const Placement p = plan_placement(request_for({{1, 2}}, 2, NumaPolicy::experts, 0));
  EXPECT_THROW(share_tokens(p.layers[0], {1, 2, 3}, 2), Error);
  EXPECT_THROW(share_tokens(plan_placement(request_for({{1, 2}}, 2, NumaPolicy::slices, 0)).layers[0], {1, 2}, 2), Error);
  EXPECT_EQ(parse_numa_policy("auto"), NumaPolicy::automatic);
  EXPECT_FALSE(parse_numa_policy("nodes").has_value());
}

// The real binding path, on whatever node this machine has: a copy on the
// node of the first cpu's node holds the same bytes and lives there.
TEST(Binding, CopiesLandOnTheirNodeAndWrongNodesAreRefused) {
  const Topology real = discover_topology();
  const int node = real.nodes[0].os_index;
  const auto wf = std::vector<float>(300 * 1000, 0.5f);
  TensorDesc d = TensorDesc::matrix(Format::dense, DType::f32, 300, 1000);
  const Tensor t = Tensor::wrap(d, reinterpret_cast<const std::byte*>(wf.data()), nullptr);
  const Tensor copy = copy_to_node(t, node);
  ASSERT_EQ(copy.payload_bytes(), t.payload_bytes());
  EXPECT_EQ(std::memcmp(copy.data(), t.data(), t.payload_bytes()), 0);
  const auto where = resident_nodes(copy.data(), copy.payload_bytes());
  ASSERT_EQ(where.size(), 1u);
  EXPECT_EQ(where.begin()->first, node);
  EXPECT_GE(where.begin()->second, copy.payload_bytes());
  EXPECT_THROW(copy_to_node(t, 4095), Error);
  EXPECT_THROW(copy_to_node(t, -1), Error);
  EXPECT_TRUE(resident_nodes(copy.data(), 0).empty());
}

}  // namespace
}  // namespace lacuna
