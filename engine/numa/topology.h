#pragma once
// The machine's NUMA nodes (hwloc), or a simulated split of them, so that
// every placement and execution path runs and is tested on a one-node host.
#include <cstdint>
#include <string>
#include <vector>

namespace lacuna {

struct NumaNode {
  int os_index = 0;          // the kernel's node number (mbind, move_pages); simulated nodes reuse the real one's
  std::vector<int> cpus;     // OS cpu numbers of the node's hardware threads
  uint64_t memory_bytes = 0; // the node's local memory (a simulated node's share of it)
};

struct Topology {
  std::vector<NumaNode> nodes;
  int simulated_from = 0;  // 0: the real topology; else the real node count a simulation split
  // "2 nodes (simulated on 1): node 0 cpus 0 6.0 GiB; node 1 cpus 1 6.0 GiB"
  std::string describe() const;
};

// The real topology. Throws lacuna::Error when hwloc cannot read it.
Topology discover_topology();

// `real` seen as `nodes` virtual nodes: every real node's cpus dealt out in
// turn, and memory split evenly. With more nodes than cpus, cpus are shared
// (cpu i of the sequence serves node i mod cpus too), so that each virtual
// node has at least one. Throws lacuna::Error for nodes outside 1..64 or a
// topology without cpus.
Topology simulate_topology(const Topology& real, int nodes);

// discover_topology(), split by simulate_topology when LACUNA_NUMA_SIMULATE
// holds a node count. Throws lacuna::Error naming the variable when its
// value is not an integer in 1..64.
Topology topology_from_env();

}  // namespace lacuna
