#include "engine/numa/topology.h"

#include <hwloc.h>

#include <charconv>
#include <cstdlib>
#include <cstring>
#include <memory>

#include "sparse/error.h"

namespace lacuna {
namespace {

constexpr int kMaxNodes = 64;

std::string gib(uint64_t bytes) {
  char s[32];
  std::snprintf(s, sizeof s, "%.1f GiB", static_cast<double>(bytes) / (1u << 30));
  return s;
}

std::vector<int> cpus_of(hwloc_const_bitmap_t set) {
  std::vector<int> cpus;
  for (int i = hwloc_bitmap_first(set); i >= 0; i = hwloc_bitmap_next(set, i)) cpus.push_back(i);
  return cpus;
}

}  // namespace

std::string Topology::describe() const {
  std::string s = std::to_string(nodes.size()) + (nodes.size() == 1 ? " node" : " nodes");
  if (simulated_from) s += " (simulated on " + std::to_string(simulated_from) + ")";
  s += ":";
  for (size_t i = 0; i < nodes.size(); ++i) {
    s.append(i ? "; node " : " node ").append(std::to_string(i)).append(" cpus");
    for (size_t c = 0; c < nodes[i].cpus.size(); ++c) s.append(c ? "," : " ").append(std::to_string(nodes[i].cpus[c]));
    s.append(" ").append(gib(nodes[i].memory_bytes));
  }
  return s;
}

Topology discover_topology() {
  hwloc_topology_t raw;
  if (hwloc_topology_init(&raw) != 0) throw Error("hwloc could not start reading the topology");
  const std::unique_ptr<hwloc_topology, void (*)(hwloc_topology_t)> topo(raw, hwloc_topology_destroy);
  if (hwloc_topology_load(raw) != 0) throw Error(std::string("hwloc could not read the topology: ") + std::strerror(errno));
  Topology t;
  const int count = hwloc_get_nbobjs_by_type(raw, HWLOC_OBJ_NUMANODE);
  for (int i = 0; i < count; ++i) {
    const hwloc_obj_t obj = hwloc_get_obj_by_type(raw, HWLOC_OBJ_NUMANODE, static_cast<unsigned>(i));
    NumaNode n{static_cast<int>(obj->os_index), cpus_of(obj->cpuset), obj->attr->numanode.local_memory};
    if (!n.cpus.empty()) t.nodes.push_back(std::move(n));  // memory-only nodes (e.g. CXL, HBM) run no threads
  }
  if (t.nodes.empty()) {  // hwloc reports no node on some kernels: the machine is one node
    const std::vector<int> cpus = cpus_of(hwloc_topology_get_complete_cpuset(raw));
    t.nodes.push_back({0, cpus, hwloc_get_root_obj(raw)->total_memory});
  }
  return t;
}

Topology simulate_topology(const Topology& real, int nodes) {
  if (nodes < 1 || nodes > kMaxNodes) throw Error("a simulated topology needs 1 to " + std::to_string(kMaxNodes) + " nodes, not " + std::to_string(nodes));
  std::vector<std::pair<int, int>> cpus;  // (cpu, real node index), node by node
  uint64_t memory = 0;
  for (size_t i = 0; i < real.nodes.size(); ++i) {
    for (int c : real.nodes[i].cpus) cpus.emplace_back(c, static_cast<int>(i));
    memory += real.nodes[i].memory_bytes;
  }
  if (cpus.empty()) throw Error("cannot simulate NUMA nodes on a topology without cpus");
  Topology t;
  t.simulated_from = static_cast<int>(real.nodes.size());
  t.nodes.resize(static_cast<size_t>(nodes));
  const size_t dealt = std::max(cpus.size(), static_cast<size_t>(nodes));
  for (size_t i = 0; i < dealt; ++i) {
    NumaNode& n = t.nodes[i * static_cast<size_t>(nodes) / dealt];
    const auto [cpu, from] = cpus[i % cpus.size()];
    if (n.cpus.empty()) n.os_index = real.nodes[static_cast<size_t>(from)].os_index;
    n.cpus.push_back(cpu);
  }
  for (NumaNode& n : t.nodes) n.memory_bytes = memory / static_cast<uint64_t>(nodes);
  return t;
}

Topology topology_from_env() {
  Topology real = discover_topology();
  const char* v = std::getenv("LACUNA_NUMA_SIMULATE");
  if (!v || !*v) return real;
  int nodes = 0;
  const char* end = v + std::strlen(v);
  const auto [ptr, ec] = std::from_chars(v, end, nodes);
  if (ec != std::errc{} || ptr != end || nodes < 1 || nodes > kMaxNodes)
    throw Error("LACUNA_NUMA_SIMULATE=" + std::string(v) + ": expected a node count from 1 to " + std::to_string(kMaxNodes));
  return simulate_topology(real, nodes);
}

}  // namespace lacuna
