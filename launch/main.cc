// switchyard: the command-line entry point. Subcommands register themselves in commands.h.
#include <CLI/CLI.hpp>

#include <cstdio>
#include <string>

#include "launch/commands.h"
#include "runtime/core/check.h"
#include "runtime/core/version.h"

int main(int argc, char** argv) {
  CLI::App app{
      "switchyard: expert-parallel Mixture-of-Experts runtime. Measures how the choice of MoE "
      "router changes communication and load balance."};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string("switchyard ") + sy::kVersion);
  sy::launch::register_commands(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : sy::kExitUsage;
  }
  return sy::launch::exit_code();
}
