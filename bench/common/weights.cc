#include "bench/common/weights.h"

#include <algorithm>

#include "sparse/prune.h"
#include "sparse/quantize.h"
#include "sparse/weight-memory.h"

namespace lacuna::bench {
namespace {

// splitmix64: fast enough to fill hundreds of millions of weights.
struct Rng {
  uint64_t s;
  uint64_t next() {
    uint64_t z = (s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  double uniform() { return static_cast<double>(next() >> 11) * 0x1p-53; }
};

}  // namespace

Tensor random_weight(Format format, DType dtype, size_t rows, size_t cols, double sparsity, uint64_t seed, BlockShape block) {
  std::vector<float> w(rows * cols);
  Rng rng{seed};
  const bool blocks = format == Format::bsr;
  for (float& v : w) {
    const float value = static_cast<float>(rng.uniform() * 2.0 - 1.0) * 0.05f;
    v = (blocks || rng.uniform() >= sparsity) ? (value == 0.0f ? 0.01f : value) : 0.0f;
  }
  if (blocks) prune_blocks(w.data(), rows, cols, block.rows, block.cols, sparsity);
  return pack(quantize_matrix(w.data(), rows, cols, dtype), format, block);
}

std::vector<Tensor> cold_copies(const Tensor& t, uint64_t min_bytes, size_t min_count) {
  std::vector<Tensor> out;
  uint64_t bytes = 0;
  while (bytes < min_bytes || out.size() < std::max<size_t>(min_count, 1)) {
    out.push_back(copy_to_weight_memory(t));
    bytes += t.payload_bytes();
  }
  return out;
}

}  // namespace lacuna::bench
