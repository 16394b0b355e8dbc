#pragma once
// --numa, --numa-replicate-budget and --numa-calib, shared by run, logits,
// serve and batch: the experts placed on this machine's NUMA nodes (or
// LACUNA_NUMA_SIMULATE's) before the first token.
#include <memory>
#include <string>

#include <CLI/CLI.hpp>

#include "engine/runtime/forward.h"
#include "engine/runtime/placed-experts.h"

namespace lacuna::cli {

struct NumaCliOptions {
  std::string policy = "none";
  double replicate_budget_mb = 0;
  std::string calibration_file;  // text whose routing sets the expected expert loads
  size_t batch = 1;              // the decode batch `auto` plans for
};

// --numa and --numa-replicate-budget, and --numa-calib unless the command
// gathers its statistics otherwise.
void add_numa_options(CLI::App* cmd, NumaCliOptions& o, bool calibration_file = true);

// How to open a model the options will place: experts left in the mapped
// file for the placement to copy to their nodes.
LoadOptions load_options(const NumaCliOptions& o);

// nullptr for --numa none; else the placed experts, described on stderr.
// Throws lacuna::Error for a calibration file that cannot be read or
// tokenized, and whatever placing the experts throws.
std::shared_ptr<const PlacedExperts> place_experts(const std::shared_ptr<const Model>& model, const NumaCliOptions& o);

// With experts placed: per-node pairs and busy time, imbalance and remote
// reads of `forward` so far, on stderr. Nothing without a placement.
void print_numa_counters(const Forward& forward);

}  // namespace lacuna::cli
