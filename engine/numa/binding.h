#pragma once
// Weights in a node's own memory. A tensor of the mmapped model file is
// copied into anonymous memory bound to its node (mbind before the first
// touch; huge pages, sparse/weight-memory.h), so
// that the pages are placed by the allocation, whatever the page cache did
// with the file; the file's pages can then be dropped, keeping memory at 1x.
// And a check of where pages actually are (move_pages in query mode).
#include <cstdint>
#include <map>
#include <vector>

#include "sparse/tensor.h"

namespace lacuna {

// A copy of `t` in memory of OS node `os_node`. Throws lacuna::Error when the
// kernel has no NUMA support, the node does not exist, or the memory cannot
// be had there.
Tensor copy_to_node(const Tensor& t, int os_node);

// A copy of `t` with its pages spread round-robin over `os_nodes`
// (numa_alloc_interleaved_subset); same errors as copy_to_node.
Tensor copy_interleaved(const Tensor& t, const std::vector<int>& os_nodes);

// Bytes of [data, data + bytes) resident on each OS node (whole pages,
// counted by move_pages in query mode); pages not in memory yet count under
// -1. Throws lacuna::Error when the query fails.
std::map<int, uint64_t> resident_nodes(const void* data, uint64_t bytes);

}  // namespace lacuna
