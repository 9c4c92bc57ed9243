// `switchyard report DIR`: merges the per-rank load reports in DIR (rank-<r>.pb, else
// rank-<r>.json) into DIR/cluster.json (protobuf's canonical JSON of a ClusterReport) and
// DIR/report.html (self-contained, SVG charts), and prints the text tables.
// Settings: a ReportConfig (proto/commands.proto), see launch/config_cli.h.
// Exit codes: 0 ok; 21 an invalid setting; 22 a missing, unreadable, corrupt or inconsistent
// report (the message names the file, or the layer and ranks), or an output that cannot be
// written.
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>

#include "launch/commands.h"
#include "launch/config.h"
#include "launch/config_cli.h"
#include "runtime/report/cluster_report.h"
#include "runtime/report/report_io.h"

namespace sy::launch {
namespace {

int fail(const Status& st) {
  std::fprintf(stderr, "switchyard report: %s\n", st.ToString().c_str());
  return st.exit_code();
}

int run_report(const switchyard::ReportConfig& a) {
  StatusOr<RankReportSet> set = load_rank_reports(a.dir());
  if (!set.ok()) return fail(set.status());
  StatusOr<switchyard::ClusterReport> cluster = merge_rank_reports(set->reports, set->files);
  if (!cluster.ok()) return fail(cluster.status());
  for (const std::string& w : set->warnings) {
    std::fprintf(stderr, "switchyard report: warning: %s\n", w.c_str());
    cluster->add_warnings(w);
  }
  const std::string out = a.out().empty() ? a.dir() : a.out();
  std::error_code ec;
  std::filesystem::create_directories(out, ec);
  if (ec) return fail(BadInput("cannot create " + out + ": " + ec.message()));
  const std::string json_path = (std::filesystem::path(out) / "cluster.json").string();
  const std::string html_path = (std::filesystem::path(out) / "report.html").string();
  StatusOr<std::string> json = report_message_to_json(*cluster);
  if (!json.ok()) return fail(json.status());
  Status st = write_file_atomic(json_path, *json);
  if (!st.ok()) return fail(st);
  st = write_file_atomic(html_path, render_cluster_html(*cluster));
  if (!st.ok()) return fail(st);
  if (!a.quiet()) std::fputs(render_cluster_text(*cluster).c_str(), stdout);
  std::printf("\nwrote %s and %s (%zu rank reports)\n", json_path.c_str(), html_path.c_str(),
              set->reports.size());
  return 0;
}

int run_report(const CommandConfig& cc) {
  switchyard::ReportConfig cfg;
  Status checked = cc.resolve(&cfg);
  if (checked.ok()) checked = validate_report_config(cfg);
  if (!checked.ok()) return fail(checked);
  if (cc.print_config()) {
    std::printf("%s", config_text(cfg).c_str());
    return 0;
  }
  return run_report(cfg);
}

}  // namespace

void add_report_command(CLI::App& app) {
  CLI::App* cmd = app.add_subcommand(
      "report",
      "Merge per-rank load reports (DIR/rank-<r>.pb or .json) into DIR/cluster.json, "
      "DIR/report.html (self-contained, SVG charts) and a text table. Exit 22 on a missing, "
      "corrupt or inconsistent report");
  auto c = std::make_shared<CommandConfig>(cmd, switchyard::ReportConfig::default_instance());
  c->add_config_options();
  // Positional, but not required by CLI11: --config or --set may give it instead.
  c->option("dir", "dir", "folder holding rank-<r>.pb / rank-<r>.json (a run's --out); required");
  c->option("--out", "out", "write cluster.json and report.html here (default: DIR)");
  c->flag("--quiet,-q", "quiet", "do not print the text tables");
  cmd->callback([c] { set_exit_code(run_report(*c)); });
}

}  // namespace sy::launch
