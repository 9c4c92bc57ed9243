// `switchyard routers`: every registered router with its parameter count and FLOPs per token
// for a given layer shape.
#include <cstdio>
#include <memory>
#include <string>

#include "launch/commands.h"
#include "launch/config.h"
#include "launch/config_cli.h"
#include "routers/registry.h"

namespace sy::launch {
namespace {

int run_routers(const CommandConfig& cc) {
  switchyard::RoutersConfig a;
  Status st = cc.resolve(&a);
  if (st.ok()) st = validate_routers_config(a);
  if (!st.ok()) {
    std::fprintf(stderr, "switchyard routers: %s\n", st.ToString().c_str());
    return st.exit_code();
  }
  if (cc.print_config()) {
    std::printf("%s", config_text(a).c_str());
    return 0;
  }
  std::printf("routers for d_model=%lld experts=%lld top_k=%lld router_hidden=%lld\n",
              static_cast<long long>(a.d_model()), static_cast<long long>(a.experts()),
              static_cast<long long>(a.top_k()),
              static_cast<long long>(a.hidden() > 0 ? a.hidden() : RouterConfig::kDefaultHidden));
  std::printf("%-14s %14s %16s  %s\n", "router", "parameters", "FLOPs/token", "scores");
  for (const RouterInfo& info : router_registry()) {
    RouterConfig cfg;
    cfg.name = info.name;
    cfg.d_model = a.d_model();
    cfg.num_experts = a.experts();
    cfg.top_k = a.top_k();
    cfg.hidden = a.hidden();
    cfg.vocab_size = a.vocab();
    cfg.init_std = 0.0f;  // only counting: skip drawing random weights
    auto router = make_router(cfg);
    if (!router.ok()) {
      std::fprintf(stderr, "switchyard routers: %s\n", router.status().ToString().c_str());
      return router.status().exit_code();
    }
    std::printf("%-14s %14lld %16lld  %s\n", info.name,
                static_cast<long long>((*router)->num_params()),
                static_cast<long long>((*router)->flops_per_token()), info.summary);
  }
  return 0;
}

}  // namespace

void add_routers_command(CLI::App& app) {
  CLI::App* cmd = app.add_subcommand(
      "routers", "List the registered routers with parameter counts and FLOPs per token");
  auto c = std::make_shared<CommandConfig>(cmd, switchyard::RoutersConfig::default_instance());
  c->add_config_options();
  c->option("--d-model", "d_model", "hidden size D");
  c->option("--experts", "experts", "number of experts E");
  c->option("--top-k", "top_k", "experts per token K");
  c->option("--router-hidden", "hidden",
            "hidden size of attention/mlp/hybrid/mlp_hadamard routers (0: default)");
  c->option("--vocab", "vocab", "vocabulary size (hash router table)");
  cmd->callback([c] { set_exit_code(run_routers(*c)); });
}

}  // namespace sy::launch
