#include "bench/common/bandwidth.h"

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <vector>

#include "bench/common/stats.h"
#include "sparse/weight-memory.h"

namespace lacuna::bench {

double read_seconds(const std::byte* data, size_t bytes) {
  const auto* words = reinterpret_cast<const uint64_t*>(data);
  const size_t count = bytes / sizeof(uint64_t) / 8 * 8;  // whole 8-word steps
  static volatile uint64_t sink = 0;
  const auto start = std::chrono::steady_clock::now();
  uint64_t total = 0;
#pragma omp parallel for schedule(static) reduction(^ : total)
  for (size_t i = 0; i < count; i += 8) {
    uint64_t acc = 0;
    for (size_t k = 0; k < 8; ++k) acc ^= words[i + k];
    total ^= acc;
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  sink = sink ^ total;
  return seconds;
}

Bandwidth measure_read_bandwidth(size_t buffer_bytes, int repetitions) {
  const size_t words = buffer_bytes / sizeof(uint64_t) / 8 * 8;
  // The kind of memory the weights are read from (2 MiB pages where the
  // kernel gives them): in malloc's 4 KiB pages the probe read less than
  // oneDNN then streamed its packed dense weights at.
  const std::shared_ptr<std::byte> memory = allocate_weight_memory(words * sizeof(uint64_t));
  auto* buf = reinterpret_cast<uint64_t*>(memory.get());
  // Written, not just allocated: untouched pages all map the shared zero page.
#pragma omp parallel for schedule(static)
  for (size_t i = 0; i < words; ++i) buf[i] = i * 0x9e3779b97f4a7c15ull;
  std::vector<double> seconds;
  for (int rep = 0; rep < repetitions; ++rep) seconds.push_back(read_seconds(memory.get(), words * sizeof(uint64_t)));
  return {static_cast<double>(words * sizeof(uint64_t)) / median(seconds), words * sizeof(uint64_t), omp_get_max_threads()};
}

}  // namespace lacuna::bench
