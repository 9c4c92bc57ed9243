// `switchyard routers`: every registered router with its parameter count and FLOPs per token
// for a given layer shape.
#include <cstdio>
#include <memory>
#include <string>

#include "launch/commands.h"
#include "routers/registry.h"

namespace sy::launch {
namespace {

struct RoutersArgs {
  int64_t d_model = 2048;
  int64_t experts = 60;
  int64_t top_k = 4;
  int64_t hidden = 0;
  int64_t vocab = 151936;
};

int run_routers(const RoutersArgs& a) {
  std::printf("routers for d_model=%lld experts=%lld top_k=%lld router_hidden=%lld\n",
              static_cast<long long>(a.d_model), static_cast<long long>(a.experts),
              static_cast<long long>(a.top_k),
              static_cast<long long>(a.hidden > 0 ? a.hidden : RouterConfig::kDefaultHidden));
  std::printf("%-14s %14s %16s  %s\n", "router", "parameters", "FLOPs/token", "scores");
  for (const RouterInfo& info : router_registry()) {
    RouterConfig cfg;
    cfg.name = info.name;
    cfg.d_model = a.d_model;
    cfg.num_experts = a.experts;
    cfg.top_k = a.top_k;
    cfg.hidden = a.hidden;
    cfg.vocab_size = a.vocab;
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
  auto args = std::make_shared<RoutersArgs>();
  CLI::App* cmd = app.add_subcommand(
      "routers", "List the registered routers with parameter counts and FLOPs per token");
  cmd->add_option("--d-model", args->d_model, "hidden size D")->capture_default_str();
  cmd->add_option("--experts", args->experts, "number of experts E")->capture_default_str();
  cmd->add_option("--top-k", args->top_k, "experts per token K")->capture_default_str();
  cmd->add_option("--router-hidden", args->hidden,
                  "hidden size of attention/mlp/hybrid/mlp_hadamard routers (0: default)")
      ->capture_default_str();
  cmd->add_option("--vocab", args->vocab, "vocabulary size (hash router table)")
      ->capture_default_str();
  cmd->callback([args] { set_exit_code(run_routers(*args)); });
}

}  // namespace sy::launch
