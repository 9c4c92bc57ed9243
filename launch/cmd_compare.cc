// `switchyard compare A.npy B.npy`: how far two float32 .npy arrays are apart (for checking a
// P-rank run against a 1-rank run). Exit 0 when every element is within atol + rtol*|b|, 1
// when not, 21 on an invalid setting, 22 when a file is unreadable or the shapes differ.
// Settings: a CompareConfig (proto/commands.proto), see launch/config_cli.h.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "launch/commands.h"
#include "launch/config.h"
#include "launch/config_cli.h"
#include "runtime/io/npy.h"

namespace sy::launch {
namespace {

int fail(const Status& st) {
  std::fprintf(stderr, "switchyard compare: %s\n", st.ToString().c_str());
  return st.exit_code();
}

int run_compare(const switchyard::CompareConfig& args) {
  std::vector<float> a, b;
  std::vector<int64_t> sa, sb;
  for (auto [path, data, shape] :
       {std::make_tuple(&args.a(), &a, &sa), std::make_tuple(&args.b(), &b, &sb)}) {
    Status s = npy_read_f32(*path, data, shape);
    if (!s.ok()) {
      fail(s);
      return kExitBadInput;
    }
  }
  if (sa != sb) {
    std::fprintf(stderr, "switchyard compare: shapes differ (%zu vs %zu dims, %zu vs %zu values)\n",
                 sa.size(), sb.size(), a.size(), b.size());
    return kExitBadInput;
  }
  int64_t differ = 0, outside = 0, first = -1;
  double max_abs = 0, max_rel = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::memcmp(&a[i], &b[i], sizeof(float)) == 0) continue;
    ++differ;
    const double d = std::fabs(static_cast<double>(a[i]) - b[i]);
    const double rel = d / std::max(1e-30, std::fabs(static_cast<double>(b[i])));
    max_abs = std::max(max_abs, std::isnan(d) ? INFINITY : d);
    max_rel = std::max(max_rel, std::isnan(rel) ? INFINITY : rel);
    if (!(d <= args.atol() + args.rtol() * std::fabs(static_cast<double>(b[i])))) {
      if (first < 0) first = static_cast<int64_t>(i);
      ++outside;
    }
  }
  std::printf(
      "%zu values: %lld bitwise different, max |a-b| %.3g, max rel %.3g; %lld outside "
      "atol %.3g + rtol %.3g*|b|\n",
      a.size(), static_cast<long long>(differ), max_abs, max_rel, static_cast<long long>(outside),
      args.atol(), args.rtol());
  if (outside > 0) {
    std::printf("first outside at flat index %lld: %.9g vs %.9g\n", static_cast<long long>(first),
                a[static_cast<size_t>(first)], b[static_cast<size_t>(first)]);
    return 1;
  }
  return 0;
}

int run_compare(const CommandConfig& cc) {
  switchyard::CompareConfig cfg;
  Status checked = cc.resolve(&cfg);
  if (checked.ok()) checked = validate_compare_config(cfg);
  if (!checked.ok()) return fail(checked);
  if (cc.print_config()) {
    std::printf("%s", config_text(cfg).c_str());
    return 0;
  }
  return run_compare(cfg);
}

}  // namespace

void add_compare_command(CLI::App& app) {
  CLI::App* cmd = app.add_subcommand(
      "compare", "Compare two float32 .npy files (e.g. a P-rank --dump against a 1-rank one)");
  auto c = std::make_shared<CommandConfig>(cmd, switchyard::CompareConfig::default_instance());
  c->add_config_options();
  // Positional, but not required by CLI11: --config or --set may give them instead.
  c->option("a", "a", "first .npy; required");
  c->option("b", "b", "second .npy (the reference); required");
  c->option("--atol", "atol", "absolute tolerance (0 with rtol 0: bitwise)");
  c->option("--rtol", "rtol", "relative tolerance");
  cmd->callback([c] { set_exit_code(run_compare(*c)); });
}

}  // namespace sy::launch
