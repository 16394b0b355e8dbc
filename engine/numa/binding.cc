#include "engine/numa/binding.h"

#include <numa.h>
#include <numaif.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "sparse/error.h"
#include "sparse/weight-memory.h"

namespace lacuna {

namespace {

void require_node(int os_node) {
  if (os_node < 0 || os_node > numa_max_node() || !numa_bitmask_isbitset(numa_all_nodes_ptr, static_cast<unsigned>(os_node)))
    throw Error("NUMA node " + std::to_string(os_node) + " does not exist here (nodes 0.." + std::to_string(numa_max_node()) + ")");
}

void require_numa() {
  if (numa_available() < 0) throw Error("this kernel has no NUMA support (numa_available failed)");
}

// Memory policy `mode` over `nodes` for a range, before its first touch.
void bind(void* data, size_t bytes, int mode, const bitmask& nodes, const std::string& where) {
  if (mbind(data, bytes, mode, nodes.maskp, nodes.size + 1, 0) != 0)
    throw Error("cannot bind " + std::to_string(bytes) + " bytes of weights " + where + ": " + std::strerror(errno));
}

using NodeMask = std::unique_ptr<bitmask, void (*)(bitmask*)>;

NodeMask mask_of(const std::vector<int>& os_nodes) {
  NodeMask mask(numa_allocate_nodemask(), numa_bitmask_free);
  for (int n : os_nodes) {
    require_node(n);
    numa_bitmask_setbit(mask.get(), static_cast<unsigned>(n));
  }
  return mask;
}

}  // namespace

Tensor copy_to_node(const Tensor& t, int os_node) {
  require_numa();
  const NodeMask mask = mask_of({os_node});
  const std::string where = "to NUMA node " + std::to_string(os_node);
  return copy_to_weight_memory(t, [&](void* data, size_t bytes) { bind(data, bytes, MPOL_BIND, *mask, where); });
}

Tensor copy_interleaved(const Tensor& t, const std::vector<int>& os_nodes) {
  require_numa();
  if (os_nodes.empty()) throw Error("copy_interleaved: no NUMA node given");
  const NodeMask mask = mask_of(os_nodes);
  return copy_to_weight_memory(t, [&](void* data, size_t bytes) { bind(data, bytes, MPOL_INTERLEAVE, *mask, "interleaved over NUMA nodes"); });
}

std::map<int, uint64_t> resident_nodes(const void* data, uint64_t bytes) {
  std::map<int, uint64_t> nodes;
  if (bytes == 0) return nodes;
  const auto page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  const auto begin = reinterpret_cast<uintptr_t>(data) / page * page, end = reinterpret_cast<uintptr_t>(data) + bytes;
  std::vector<void*> pages;
  for (uintptr_t a = begin; a < end; a += page) pages.push_back(reinterpret_cast<void*>(a));
  std::vector<int> status(pages.size());
  if (move_pages(0, pages.size(), pages.data(), nullptr, status.data(), 0) != 0)
    throw Error(std::string("move_pages could not query page placement: ") + std::strerror(errno));
  for (int s : status) nodes[s >= 0 ? s : -1] += page;
  return nodes;
}

}  // namespace lacuna
