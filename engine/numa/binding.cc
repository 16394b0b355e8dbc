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

namespace lacuna {

namespace {

void require_node(int os_node) {
  if (os_node < 0 || os_node > numa_max_node() || !numa_bitmask_isbitset(numa_all_nodes_ptr, static_cast<unsigned>(os_node)))
    throw Error("NUMA node " + std::to_string(os_node) + " does not exist here (nodes 0.." + std::to_string(numa_max_node()) + ")");
}

// `t`'s payload copied into `bytes` of memory `allocate` returns (first
// touch under the memory's policy), freed by numa_free with the tensor.
template <class Allocate>
Tensor copy_into(const Tensor& t, Allocate allocate, const std::string& where) {
  const size_t bytes = std::max<uint64_t>(t.payload_bytes(), 1);
  void* p = allocate(bytes);
  if (!p) throw Error("cannot allocate " + std::to_string(bytes) + " bytes " + where);
  std::memcpy(p, t.data(), t.payload_bytes());
  return Tensor::wrap(t.desc(), static_cast<const std::byte*>(p), std::shared_ptr<const void>(p, [bytes](const void* q) {
                        numa_free(const_cast<void*>(q), bytes);
                      }));
}

void require_numa() {
  if (numa_available() < 0) throw Error("this kernel has no NUMA support (numa_available failed)");
}

}  // namespace

Tensor copy_to_node(const Tensor& t, int os_node) {
  require_numa();
  require_node(os_node);
  return copy_into(t, [&](size_t bytes) { return numa_alloc_onnode(bytes, os_node); }, "on NUMA node " + std::to_string(os_node));
}

Tensor copy_interleaved(const Tensor& t, const std::vector<int>& os_nodes) {
  require_numa();
  if (os_nodes.empty()) throw Error("copy_interleaved: no NUMA node given");
  const std::unique_ptr<bitmask, void (*)(bitmask*)> mask(numa_allocate_nodemask(), numa_bitmask_free);
  for (int n : os_nodes) {
    require_node(n);
    numa_bitmask_setbit(mask.get(), static_cast<unsigned>(n));
  }
  return copy_into(t, [&](size_t bytes) { return numa_alloc_interleaved_subset(bytes, mask.get()); }, "interleaved over NUMA nodes");
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
