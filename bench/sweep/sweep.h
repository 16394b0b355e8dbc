#pragma once
// `lacuna bench sweep`: speed of sparse y = x · Wᵀ against oneDNN's dense bf16
// matmul, over shapes, sparsities, batch sizes, formats and dtypes, on cold
// weights (a working set of distinct matrices far larger than the caches).
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "sparse/tensor.h"

namespace lacuna::bench {

struct SweepShape {
  size_t in, out;  // W is [out, in]
};

struct SweepOptions {
  std::vector<SweepShape> shapes{{6144, 32768}};
  std::vector<double> sparsities{0.0, 0.5, 0.7, 0.9, 0.95};
  std::vector<size_t> batches{1, 4, 16, 64, 256};
  std::vector<Format> formats{Format::bitmap, Format::csr};
  std::vector<DType> dtypes{DType::bf16, DType::int8};
  uint64_t working_set_bytes = uint64_t{2} << 30;  // 0: warm (one matrix)
  double seconds_per_point = 0.3;
  int min_repetitions = 7;
  std::string csv_path, png_path;
};

int run_sweep(const SweepOptions& options);

}  // namespace lacuna::bench
