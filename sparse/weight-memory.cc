#include "sparse/weight-memory.h"

#include <sys/mman.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <string>

#include "sparse/error.h"

namespace lacuna {
namespace {

constexpr size_t kHugePage = size_t{2} << 20;

}  // namespace

std::shared_ptr<std::byte> allocate_weight_memory(size_t bytes, const std::function<void(void*, size_t)>& place) {
  const size_t size = (std::max<size_t>(bytes, 1) + kHugePage - 1) / kHugePage * kHugePage;
  // Over-allocate by one huge page and trim, so that the range starts on a
  // 2 MiB boundary (only aligned 2 MiB ranges can become huge pages).
  void* raw = mmap(nullptr, size + kHugePage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (raw == MAP_FAILED) throw Error("cannot map " + std::to_string(size) + " bytes for weights: " + std::strerror(errno));
  const auto start = reinterpret_cast<uintptr_t>(raw), aligned = (start + kHugePage - 1) / kHugePage * kHugePage;
  if (aligned > start) munmap(raw, aligned - start);
  if (const size_t tail = start + size + kHugePage - (aligned + size); tail > 0) munmap(reinterpret_cast<void*>(aligned + size), tail);
  auto* data = reinterpret_cast<std::byte*>(aligned);
  std::shared_ptr<std::byte> memory(data, [size](std::byte* p) { munmap(p, size); });
  // Advice only: without THP support the memory still works, in 4 KiB pages.
  madvise(data, size, MADV_HUGEPAGE);
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
