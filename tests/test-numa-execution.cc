// Experts placed on simulated 2- and 4-node topologies and run on one team
// per node: every policy gives bitwise the logits and the greedy text of the
// unplaced model, the counters add up, bound policies read no remote weight,
// and the copies' pages are where the placement put them.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <numeric>

#include "engine/model/convert.h"
#include "engine/model/synth.h"
#include "engine/numa/binding.h"
#include "engine/numa/node-teams.h"
#include "engine/runtime/forward.h"
#include "engine/runtime/placed-experts.h"
#include "sparse/convert.h"
#include "sparse/error.h"
#include "tests/test-util.h"

namespace lacuna {
namespace {

namespace fs = std::filesystem;
using testing::scratch;

// The small Mixtral preset (ffn 1408, hidden 512: slices of real size),
// pruned to 60 %, in the format and dtype asked for.
std::shared_ptr<const Model> small_model(Format format, DType dtype) {
  const fs::path ckpt = scratch() / "hf-small";
  if (!fs::exists(ckpt / "config.json")) synthesize_checkpoint(ckpt.string(), SynthOptions{.arch = Arch::mixtral, .preset = "small", .seed = 3});
  const fs::path out = scratch() / (std::string("small-") + format_name(format) + "-" + dtype_name(dtype) + ".lacuna");
  ConvertOptions o;
  o.sparsity = 0.6;
  o.prune = PruneMethod::magnitude;
  o.dtype = dtype;
  o.format = format;
  convert_checkpoint(ckpt.string(), out.string(), o);
  return Model::open(out.string());
}

struct Trace {
  std::vector<float> logits;   // every position of two prompts, then each decode step's
  std::vector<int32_t> text;   // the greedy tokens
  std::vector<std::vector<uint64_t>> routed;
  NumaCounters numa;
};

// Two sequences: prompts of 21 and 9 tokens (all positions' logits), then 4
// greedy decode steps of both together.
Trace run(const std::shared_ptr<const Model>& m, BatchPolicy policy, std::shared_ptr<const PlacedExperts> placed) {
  Forward f(m, policy, std::move(placed));
  const auto vocab = static_cast<size_t>(m->config().vocab);
  std::vector<std::vector<int32_t>> prompts{{}, {}};
  for (int32_t i = 0; i < 21; ++i) prompts[0].push_back((i * 37 + 11) % static_cast<int32_t>(vocab));
  for (int32_t i = 0; i < 9; ++i) prompts[1].push_back((i * 101 + 5) % static_cast<int32_t>(vocab));
  KvCache a(m->config(), 64), b(m->config(), 64);
  Trace t;
  std::vector<float> la(prompts[0].size() * vocab), lb(prompts[1].size() * vocab);
  const SequenceStep prefill[] = {{&a, prompts[0], la.data(), true}, {&b, prompts[1], lb.data(), true}};
  f.step(prefill);
  t.logits = la;
  t.logits.insert(t.logits.end(), lb.begin(), lb.end());
  int32_t next[2] = {static_cast<int32_t>(std::max_element(la.end() - static_cast<ptrdiff_t>(vocab), la.end()) - (la.end() - static_cast<ptrdiff_t>(vocab))),
                     static_cast<int32_t>(std::max_element(lb.end() - static_cast<ptrdiff_t>(vocab), lb.end()) - (lb.end() - static_cast<ptrdiff_t>(vocab)))};
  for (int s = 0; s < 4; ++s) {
    std::vector<float> da(vocab), db(vocab);
    const SequenceStep decode[] = {{&a, {&next[0], 1}, da.data(), false}, {&b, {&next[1], 1}, db.data(), false}};
    f.step(decode);
    t.text.insert(t.text.end(), next, next + 2);
    t.logits.insert(t.logits.end(), da.begin(), da.end());
    t.logits.insert(t.logits.end(), db.begin(), db.end());
    next[0] = static_cast<int32_t>(std::max_element(da.begin(), da.end()) - da.begin());
    next[1] = static_cast<int32_t>(std::max_element(db.begin(), db.end()) - db.begin());
  }
  t.routed = f.routed_tokens();
  t.numa = f.numa_counters();
  return t;
}

uint64_t pairs(const Trace& t) {
  uint64_t n = 0;
  for (const auto& l : t.routed) n = std::accumulate(l.begin(), l.end(), n);
  return n;
}

void expect_same_as_unplaced(Format format, DType dtype, BatchPolicy policy) {
  const auto model = small_model(format, dtype);
  const Trace reference = run(model, policy, nullptr);
  const Topology real = discover_topology();
  for (int nodes : {2, 4}) {
    const Topology topology = simulate_topology(real, nodes);
    for (NumaPolicy p : {NumaPolicy::interleave, NumaPolicy::experts, NumaPolicy::slices, NumaPolicy::automatic}) {
      SCOPED_TRACE(std::string(numa_policy_name(p)) + " on " + std::to_string(nodes) + " nodes");
      // The reference run's routing as the statistics, and room for a few replicas.
      const Placement plan = plan_model_placement(*model, nodes, p, 3 * (model->layers()[0].gate_up[0].bytes() + model->layers()[0].down[0].bytes()),
                                                  2, reference.routed);
      if (p == NumaPolicy::experts) {
        EXPECT_GT(plan.replica_bytes, 0u) << "the skewed statistics should buy replicas";
      }
      const auto placed = std::make_shared<const PlacedExperts>(*model, topology, plan);
      const Trace t = run(model, policy, placed);
      ASSERT_EQ(t.logits.size(), reference.logits.size());
      EXPECT_EQ(std::memcmp(t.logits.data(), reference.logits.data(), t.logits.size() * sizeof(float)), 0) << "logits differ";
      EXPECT_EQ(t.text, reference.text);
      ASSERT_EQ(t.numa.node_tokens.size(), static_cast<size_t>(nodes));
      const uint64_t counted = std::accumulate(t.numa.node_tokens.begin(), t.numa.node_tokens.end(), uint64_t{0});
      if (p == NumaPolicy::experts) {
        EXPECT_EQ(counted, pairs(reference)) << "each (token, expert) pair runs on exactly one node";
        EXPECT_EQ(t.numa.remote_weight_bytes, 0u);
      } else if (p == NumaPolicy::slices) {
        EXPECT_EQ(counted, pairs(reference) * static_cast<uint64_t>(nodes)) << "every node takes part in every pair";
        EXPECT_EQ(t.numa.remote_weight_bytes, 0u);
      } else if (p == NumaPolicy::interleave) {
        EXPECT_GT(t.numa.remote_weight_bytes, 0u);
      }
    }
  }
}

TEST(NumaExecution, EveryPolicyGivesTheUnplacedLogitsBitmapBf16) { expect_same_as_unplaced(Format::bitmap, DType::bf16, BatchPolicy::fastest); }
TEST(NumaExecution, EveryPolicyGivesTheUnplacedLogitsCsrInt8) { expect_same_as_unplaced(Format::csr, DType::int8, BatchPolicy::fastest); }
TEST(NumaExecution, EveryPolicyGivesTheUnplacedLogitsInvariantBitmapInt8) {
  expect_same_as_unplaced(Format::bitmap, DType::int8, BatchPolicy::invariant);
}

TEST(NumaExecution, CopiesHoldTheirRowsInTheirNodesMemory) {
  const auto model = small_model(Format::bitmap, DType::bf16);
  const Topology topology = simulate_topology(discover_topology(), 2);
  const PlacedExperts placed(*model, topology, plan_model_placement(*model, 2, NumaPolicy::slices, 0, 1, {}));
  const uint64_t ffn = 1408, hidden = 512;
  for (size_t e = 0; e < 8; ++e) {
    const auto& copies = placed.copies(1, e);
    ASSERT_EQ(copies.size(), 2u);
    EXPECT_EQ(copies[0].ffn.begin, 0u);
    EXPECT_EQ(copies[0].ffn.end, copies[1].ffn.begin);
    EXPECT_EQ(copies[1].ffn.end, ffn);
    EXPECT_EQ(copies[0].out.end, copies[1].out.begin);
    EXPECT_EQ(copies[1].out.end, hidden);
    for (const NodeExpert& c : copies) {
      // The slice's rows, value for value, against the whole weight's.
      const RowRange rows[] = {c.ffn, {ffn + c.ffn.begin, ffn + c.ffn.end}};
      const Tensor expected = unpack(select_rows(model->layers()[1].gate_up[e].weight(), rows)), got = unpack(c.gate_up.weight());
      ASSERT_EQ(got.payload_bytes(), expected.payload_bytes());
      EXPECT_EQ(std::memcmp(got.data(), expected.data(), got.payload_bytes()), 0);
      const auto where = resident_nodes(c.gate_up.weight().data(), c.gate_up.weight().payload_bytes());
      ASSERT_EQ(where.size(), 1u);
      EXPECT_EQ(where.begin()->first, topology.nodes[static_cast<size_t>(c.node)].os_index);
    }
  }
  EXPECT_EQ(placed.node_bytes().size(), 2u);
  // A plan for another shape of model is refused.
  EXPECT_THROW(PlacedExperts(*model, simulate_topology(discover_topology(), 4), plan_model_placement(*model, 2, NumaPolicy::slices, 0, 1, {})), Error);
}

TEST(NumaExecution, TeamsRunOnTheirNodesAndPassErrorsBack) {
  const Topology topology = simulate_topology(discover_topology(), 2);
  NodeTeams teams(topology);
  ASSERT_EQ(teams.size(), 2);
  std::vector<int> ran(2, 0);
  teams.run([&](int node) { ran[static_cast<size_t>(node)] += 1; });
  teams.run([&](int node) { ran[static_cast<size_t>(node)] += 10; });
  EXPECT_EQ(ran, (std::vector<int>{11, 11}));
  EXPECT_THROW(teams.run([](int node) {
    if (node == 1) throw Error("node 1 failed");
  }),
               Error);
  teams.run([&](int node) { ran[static_cast<size_t>(node)] += 100; });  // still serving after an error
  EXPECT_EQ(ran, (std::vector<int>{111, 111}));
}

TEST(SelectRows, KeepsEveryValueOfTheRowsAskedForAndRefusesBadRanges) {
  const auto model = small_model(Format::csr, DType::int8);
  const Tensor& w = model->layers()[0].down[2].weight();
  const RowRange rows[] = {{10, 74}, {300, 301}};
  const Tensor part = select_rows(w, rows);
  ASSERT_EQ(part.desc().rows(), 65u);
  EXPECT_EQ(part.desc().format, Format::csr);
  const Tensor whole = unpack(w), got = unpack(part);
  const uint64_t row = w.desc().cols();
  EXPECT_EQ(std::memcmp(got.data(), whole.section<int8_t>(Section::values) + 10 * row, 64 * row), 0);
  EXPECT_EQ(std::memcmp(got.section<int8_t>(Section::values) + 64 * row, whole.section<int8_t>(Section::values) + 300 * row, row), 0);
  EXPECT_EQ(got.section<float>(Section::scales)[64], whole.section<float>(Section::scales)[300]);
  const RowRange outside[] = {{500, 513}};
  EXPECT_THROW(select_rows(w, outside), Error);
  EXPECT_THROW(select_rows(w, {}), Error);
}

}  // namespace
}  // namespace lacuna
