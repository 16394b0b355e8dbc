#pragma once
// Measures this machine's memory read bandwidth the way a decode step reads
// weights: all threads streaming a buffer far larger than the caches.
#include <cstddef>
#include <cstdint>

namespace lacuna::bench {

struct Bandwidth {
  double bytes_per_s = 0;  // median over repetitions
  size_t buffer_bytes = 0;
  int threads = 0;
};

Bandwidth measure_read_bandwidth(size_t buffer_bytes, int repetitions);

// Seconds for all threads to read [data, data + bytes) once (whole 64-byte lines).
double read_seconds(const std::byte* data, size_t bytes);

}  // namespace lacuna::bench
