#pragma once
// The subcommands of the `lacuna` tool. Each returns the process exit code.
#include <chrono>
#include <string>

#include <CLI/CLI.hpp>

#include "engine/runtime/kv-cache.h"

namespace lacuna::cli {

void add_info_command(CLI::App& app, int& exit_code);
void add_cpuinfo_command(CLI::App& app, int& exit_code);
void add_selftest_command(CLI::App& app, int& exit_code);
void add_bench_command(CLI::App& app, int& exit_code);
void add_model_commands(CLI::App& app, int& exit_code);  // demo, synth, convert, run, logits, numa-plan, perplexity
void add_serve_commands(CLI::App& app, int& exit_code);  // serve, batch

// --kv-type f16|f32 and --gather-us, for the commands that run the scheduler.
void add_kv_type_option(CLI::App* cmd, KvType& type);
void add_gather_option(CLI::App* cmd, std::chrono::microseconds& gather);

// Prints the per-tensor table of an open model file; shared by `info` and `selftest`.
int print_model_info(const std::string& path, bool verify_checksums);

}  // namespace lacuna::cli
