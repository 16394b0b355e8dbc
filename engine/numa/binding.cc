#include "engine/numa/binding.h"

#include <numa.h>
#include <numaif.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "sparse/error.h"

namespace lacuna {

Tensor copy_to_node(const Tensor& t, int os_node) {
  if (numa_available() < 0) throw Error("this kernel has no NUMA support (numa_available failed)");
  if (os_node < 0 || os_node > numa_max_node() || !numa_bitmask_isbitset(numa_all_nodes_ptr, static_cast<unsigned>(os_node)))
    throw Error("NUMA node " + std::to_string(os_node) + " does not exist here (nodes 0.." + std::to_string(numa_max_node()) + ")");
  const size_t bytes = std::max<uint64_t>(t.payload_bytes(), 1);
  void* p = numa_alloc_onnode(bytes, os_node);
  if (!p) throw Error("cannot allocate " + std::to_string(bytes) + " bytes on NUMA node " + std::to_string(os_node));
  std::memcpy(p, t.data(), t.payload_bytes());  // first touch, under the node's binding
  return Tensor::wrap(t.desc(), static_cast<const std::byte*>(p), std::shared_ptr<const void>(p, [bytes](const void* q) {
                        numa_free(const_cast<void*>(q), bytes);
                      }));
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
