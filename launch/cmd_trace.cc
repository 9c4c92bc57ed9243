// `switchyard trace stats DIR [--ep P] [--top N] [--json]`: what a routing trace (infer / train
// --trace DIR; runtime/trace/trace_format.h) says per MoE layer: load per expert, the expert
// pairs chosen together most often, and each token's send fan-out at expert-parallel degree P
// (runtime/trace/trace_stats.h). `switchyard trace diff A B`: whether two traces routed the same
// tokens the same way (a run at P ranks against one at 1 rank).
// Exit codes: 0 ok (diff: the same routing); 1 diff: they differ; 21 an invalid setting (--ep
// that does not divide E); 22 a missing, truncated, tampered or inconsistent trace, the message
// naming the file and the field.
#include <cstdio>
#include <memory>
#include <string>

#include "launch/commands.h"
#include "launch/config.h"
#include "launch/config_cli.h"
#include "runtime/trace/trace_format.h"
#include "runtime/trace/trace_stats.h"

namespace sy::launch {
namespace {

int fail(const char* cmd, const Status& st) {
  std::fprintf(stderr, "switchyard trace %s: %s\n", cmd, st.ToString().c_str());
  return st.exit_code();
}

// The settings, resolved and checked, or --print-config; *done when the command is over.
template <typename Config>
int resolve(const CommandConfig& cc, const char* cmd, Config* cfg, bool* done) {
  Status st = cc.resolve(cfg);
  *done = true;
  if (!st.ok()) return fail(cmd, st);
  if (cc.print_config()) {
    std::printf("%s", config_text(*cfg).c_str());
    return 0;
  }
  *done = false;
  return 0;
}

int run_stats(const CommandConfig& cc) {
  switchyard::TraceStatsConfig cfg;
  bool done = false;
  if (int code = resolve(cc, "stats", &cfg, &done); done) return code;
  if (cfg.dir().empty()) return fail("stats", InvalidArgument("dir (positional DIR) is required"));
  if (cfg.ep() < 0 || cfg.top() < 0)
    return fail("stats", InvalidArgument("--ep (ep) and --top (top) must be >= 0"));
  StatusOr<Trace> t = read_trace(cfg.dir());
  if (!t.ok()) return fail("stats", t.status());
  const int ep = cfg.ep() > 0 ? cfg.ep() : t->meta().world_size;
  StatusOr<TraceStats> s = trace_stats(*t, ep, cfg.top());
  if (!s.ok()) return fail("stats", s.status());
  std::fputs((cfg.json() ? trace_stats_json(*t, *s) : trace_stats_text(*t, *s)).c_str(), stdout);
  return 0;
}

int run_diff(const CommandConfig& cc) {
  switchyard::TraceDiffConfig cfg;
  bool done = false;
  if (int code = resolve(cc, "diff", &cfg, &done); done) return code;
  if (cfg.a().empty() || cfg.b().empty())
    return fail("diff", InvalidArgument("two trace folders A B (a, b) are required"));
  StatusOr<Trace> a = read_trace(cfg.a());
  if (!a.ok()) return fail("diff", a.status());
  StatusOr<Trace> b = read_trace(cfg.b());
  if (!b.ok()) return fail("diff", b.status());
  StatusOr<std::string> d = trace_diff(*a, *b);
  if (!d.ok()) return fail("diff", d.status());
  if (!d->empty()) {
    std::printf("traces differ: %s\n", d->c_str());
    return 1;
  }
  std::printf("same routing: %lld tokens, %lld MoE layers (%d vs %d ranks)\n",
              static_cast<long long>(a->tokens()), static_cast<long long>(a->meta().layers()),
              a->meta().world_size, b->meta().world_size);
  return 0;
}

}  // namespace

void add_trace_command(CLI::App& app) {
  CLI::App* cmd =
      app.add_subcommand("trace", "Read routing traces (infer / train --trace DIR): stats, diff");
  cmd->require_subcommand(1);

  CLI::App* stats = cmd->add_subcommand(
      "stats",
      "Per MoE layer: load per expert, co-activated expert pairs, per-token send fan-out at "
      "expert-parallel degree P (contiguous placement). Exit 22 on a bad trace");
  auto s = std::make_shared<CommandConfig>(stats, switchyard::TraceStatsConfig::default_instance());
  s->add_config_options();
  s->option("dir", "dir", "trace folder (rank-<r>.safetensors); required");
  s->option("--ep", "ep", "expert-parallel degree P of the fan-out (0: the trace's world size)");
  s->option("--top", "top", "co-activated pairs shown per layer");
  s->flag("--json", "json", "print one JSON object instead of text");
  stats->callback([s] { set_exit_code(run_stats(*s)); });

  CLI::App* diff = cmd->add_subcommand(
      "diff",
      "Exit 0 when two traces routed the same tokens the same way (ids, weights bitwise, "
      "drops), whatever the ranks; 1 with the first difference; 22 on a bad trace");
  auto d = std::make_shared<CommandConfig>(diff, switchyard::TraceDiffConfig::default_instance());
  d->add_config_options();
  d->option("a", "a", "first trace folder");
  d->option("b", "b", "second trace folder");
  diff->callback([d] { set_exit_code(run_diff(*d)); });
}

}  // namespace sy::launch
