// switchyard: the command-line entry point. Subcommands register themselves in commands.h.
#include <CLI/CLI.hpp>

#include <cstdio>
#include <sstream>
#include <string>

#include "launch/commands.h"
#include "runtime/core/check.h"
#include "runtime/core/version.h"

int main(int argc, char** argv) {
  CLI::App app{
      "switchyard: expert-parallel Mixture-of-Experts runtime. Measures how the choice of MoE "
      "router changes communication and load balance."};
  app.require_subcommand(1);
  // --help shows every option's default (subcommands inherit this when they are added).
  app.option_defaults()->always_capture_default();
  app.set_version_flag("--version", std::string("switchyard ") + sy::kVersion);
  sy::launch::register_commands(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // Under mpirun every rank parses the same command line: rank 0 alone prints the help or
    // the usage error, once.
    std::ostringstream quiet;
    const bool other_rank = sy::launch::launcher_rank() > 0;
    const int code = other_rank ? app.exit(e, quiet, quiet) : app.exit(e);
    return code == 0 ? 0 : sy::kExitUsage;
  }
  return sy::launch::exit_code();
}
