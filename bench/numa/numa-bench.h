#pragma once
// `lacuna bench numa`: decode of one model with its experts placed by each
// NUMA policy, alternated step by step with `--numa none` in one process, on
// this machine's nodes or LACUNA_NUMA_SIMULATE's.
#include <string>
#include <vector>

namespace lacuna::bench {

struct NumaBenchOptions {
  std::string model_path;
  std::vector<std::string> policies = {"interleave", "experts", "slices", "auto"};
  std::vector<size_t> batches = {1, 8};
  int decode_steps = 15;          // timed steps per batch size and policy (after one warm-up)
  double replicate_budget_mb = 0;
  std::string csv_path;
};

int run_numa_bench(const NumaBenchOptions& o);

}  // namespace lacuna::bench
