#include <cstdio>
#include <exception>

#include "engine/cli/commands.h"

int main(int argc, char** argv) {
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
