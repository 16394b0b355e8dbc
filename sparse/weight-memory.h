#pragma once
// Anonymous memory for weights: 2 MiB aligned and advised for transparent
// huge pages (MADV_HUGEPAGE, which the kernel honours under the common
// `madvise` THP setting). A decode step streams gigabytes of weights; through
// 4 KiB pages every page costs a TLB miss, which under virtualisation is a
// two-level page walk. bench-weight-memory measures the difference on a
// machine (docs/benchmarks.md, "Weight memory").
#include <cstddef>
#include <functional>
#include <memory>

#include "sparse/tensor.h"

namespace lacuna {

// `bytes` of such memory. `place` runs on the whole range before any page is
// touched (NUMA binding: mbind). Throws lacuna::Error when the memory cannot
// be had, or `place` throws.
std::shared_ptr<std::byte> allocate_weight_memory(size_t bytes, const std::function<void(void* data, size_t bytes)>& place = {});

// A copy of `t` (payload and description) in such memory.
Tensor copy_to_weight_memory(const Tensor& t, const std::function<void(void* data, size_t bytes)>& place = {});

}  // namespace lacuna
