#include <malloc.h>

#include <cstdio>
#include <cstdlib>
#include <exception>

#include "engine/cli/commands.h"

int main(int argc, char** argv) {
  // glibc raises its mmap threshold to the largest block freed so far (up to
  // 32 MB, and the trim threshold to twice that), after which the forward
  // pass's step-sized buffers and oneDNN's per-call ones live in arenas that
  // keep freed memory: a 512-token prompt on the 90 % int8 mini model then
  // peaked ~200 MB higher, by how the threads' frees happened to interleave
  // (docs/benchmarks.md, "Peak memory: malloc's moving threshold"). A fixed
  // threshold keeps blocks of 1 MB or more mapped apart, and freed memory is
  // returned. A threshold the user set in the environment is left alone.
  if (!std::getenv("MALLOC_MMAP_THRESHOLD_") && !std::getenv("GLIBC_TUNABLES")) mallopt(M_MMAP_THRESHOLD, 1 << 20);
  CLI::App app{"lacuna: a sparse CPU inference engine for Mixture-of-Experts models"};
  app.require_subcommand(1);
  int exit_code = 0;
  lacuna::cli::add_info_command(app, exit_code);
  lacuna::cli::add_cpuinfo_command(app, exit_code);
  lacuna::cli::add_selftest_command(app, exit_code);
  lacuna::cli::add_bench_command(app, exit_code);
  lacuna::cli::add_model_commands(app, exit_code);
  lacuna::cli::add_serve_commands(app, exit_code);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "lacuna: error: %s\n", e.what());
    return 1;
  }
  return exit_code;
}
