#include "sparse/weight-memory.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <algorithm>
#include <string>

#include "sparse/error.h"

namespace lacuna {
namespace {

constexpr size_t kHugePage = size_t{2} << 20;

}  // namespace

std::shared_ptr<std::byte> allocate_weight_memory(size_t bytes, const std::function<void(void*, size_t)>& place) {
  const auto page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  const size_t size = (std::max<size_t>(bytes, 1) + page - 1) / page * page;
  // Over-allocate by one huge page and trim, so that the range starts on a
  // 2 MiB boundary (only aligned 2 MiB ranges can become huge pages).
  void* raw = mmap(nullptr, size + kHugePage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (raw == MAP_FAILED) throw Error("cannot map " + std::to_string(size) + " bytes for weights: " + std::strerror(errno));
  const auto start = reinterpret_cast<uintptr_t>(raw), aligned = (start + kHugePage - 1) / kHugePage * kHugePage;
  if (aligned > start) munmap(raw, aligned - start);
  if (const size_t tail = start + size + kHugePage - (aligned + size); tail > 0) munmap(reinterpret_cast<void*>(aligned + size), tail);
  auto* data = reinterpret_cast<std::byte*>(aligned);
  std::shared_ptr<std::byte> memory(data, [size](std::byte* p) { munmap(p, size); });
  // Whole huge pages only: a partly used one would hold up to 2 MiB of
  // nothing per tensor, so the tail (and a tensor under 2 MiB) keeps small
  // pages. Advice only: without THP support everything works in small pages.
  const size_t body = bytes / kHugePage * kHugePage;
  if (body > 0) madvise(data, body, MADV_HUGEPAGE);
  if (size > body) madvise(data + body, size - body, MADV_NOHUGEPAGE);
  if (place) place(data, size);
  return memory;
}

Tensor copy_to_weight_memory(const Tensor& t, const std::function<void(void*, size_t)>& place) {
  std::shared_ptr<std::byte> memory = allocate_weight_memory(t.payload_bytes(), place);
  std::memcpy(memory.get(), t.data(), t.payload_bytes());
  std::byte* data = memory.get();
  return Tensor::wrap(t.desc(), data, std::shared_ptr<const void>(std::move(memory), data));
}

}  // namespace lacuna
