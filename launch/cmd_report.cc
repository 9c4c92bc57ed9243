// `switchyard report DIR`: merges the per-rank load reports in DIR (rank-<r>.pb, else
// rank-<r>.json) into DIR/cluster.json (protobuf's canonical JSON of a ClusterReport) and
// DIR/report.html (self-contained, SVG charts), and prints the text tables with the run's
// steady-state figures (runtime/report/compare.h: the first --warmup steps left out).
// `switchyard report DIR1 DIR2 ...`: several runs side by side, one column per run, into
// OUT/compare.html and OUT/compare.md (OUT: --out, else the folders' common parent, else .),
// the table printed; the runs' folders are only read.
// Settings: a ReportConfig (proto/commands.proto), see launch/config_cli.h.
// Exit codes: 0 ok; 21 an invalid setting; 22 a missing, unreadable, corrupt or inconsistent
// report (the message names the file, or the layer and ranks), or an output that cannot be
// written.
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "launch/commands.h"
#include "launch/config.h"
#include "launch/config_cli.h"
#include "runtime/report/cluster_report.h"
#include "runtime/report/compare.h"
#include "runtime/report/html_svg.h"
#include "runtime/report/report_io.h"

namespace sy::launch {
namespace {

int fail(const Status& st) {
  std::fprintf(stderr, "switchyard report: %s\n", st.ToString().c_str());
  return st.exit_code();
}

// DIR's reports read and merged, the reading's warnings printed (and kept in the report).
StatusOr<switchyard::ClusterReport> load_run(const std::string& dir) {
  std::vector<std::string> warnings;
  StatusOr<switchyard::ClusterReport> c = load_run_report(dir, &warnings);
  for (const std::string& w : warnings)
    std::fprintf(stderr, "switchyard report: warning: %s\n", w.c_str());
  return c;
}

Status write_in(const std::string& out,
                const std::vector<std::pair<std::string, std::string>>& files) {
  std::error_code ec;
  std::filesystem::create_directories(out, ec);
  if (ec) return BadInput("cannot create " + out + ": " + ec.message());
  for (const auto& [name, data] : files)
    SY_RETURN_IF_ERROR(write_file_atomic((std::filesystem::path(out) / name).string(), data));
  return Status::Ok();
}

int run_report(const switchyard::ReportConfig& a) {
  StatusOr<switchyard::ClusterReport> cluster = load_run(a.dir());
  if (!cluster.ok()) return fail(cluster.status());
  StatusOr<Comparison> steady = compare_reports({cluster->router()}, {&*cluster}, a.warmup());
  if (!steady.ok()) return fail(steady.status());
  StatusOr<std::string> json = report_message_to_json(*cluster);
  if (!json.ok()) return fail(json.status());
  const std::string out = a.out().empty() ? a.dir() : a.out();
  Status st = write_in(
      out, {{"cluster.json", *json},
            {"report.html", render_cluster_html(*cluster, comparison_table_html(*steady))}});
  if (!st.ok()) return fail(st);
  if (!a.quiet())
    std::printf("%s\nsteady state\n%s", render_cluster_text(*cluster).c_str(),
                comparison_text(*steady).c_str());
  const std::filesystem::path o(out);
  std::printf("\nwrote %s and %s (%zu rank reports)\n", (o / "cluster.json").string().c_str(),
              (o / "report.html").string().c_str(), static_cast<size_t>(cluster->ranks_size()));
  return 0;
}

// The folder the runs share (".." components kept), else ".".
std::string common_parent(const std::vector<std::string>& dirs) {
  std::string parent;
  for (size_t i = 0; i < dirs.size(); ++i) {
    std::filesystem::path p = std::filesystem::path(dirs[i]).lexically_normal();
    if (!p.has_filename() && p.has_parent_path()) p = p.parent_path();
    const std::string q = p.parent_path().string();
    if (i > 0 && q != parent) return ".";
    parent = q;
  }
  return parent.empty() ? "." : parent;
}

int run_compare(const switchyard::ReportConfig& a) {
  std::vector<std::string> dirs = {a.dir()};
  dirs.insert(dirs.end(), a.more_dirs().begin(), a.more_dirs().end());
  std::vector<switchyard::ClusterReport> runs(dirs.size());
  std::vector<std::string> routers;
  for (size_t i = 0; i < dirs.size(); ++i) {
    StatusOr<switchyard::ClusterReport> c = load_run(dirs[i]);
    if (!c.ok()) return fail(c.status());
    runs[i] = std::move(*c);
    routers.push_back(runs[i].router());
  }
  std::vector<const switchyard::ClusterReport*> ptrs;
  for (const auto& r : runs) ptrs.push_back(&r);
  const std::vector<std::string> labels = comparison_labels(dirs, routers);
  StatusOr<Comparison> c = compare_reports(labels, ptrs, a.warmup());
  if (!c.ok()) return fail(c.status());
  std::string intro = "<p class=\"note\">runs: ";
  for (size_t i = 0; i < dirs.size(); ++i)
    intro += (i ? " &middot; " : "") + html::esc(labels[i]) + " = " + html::esc(dirs[i]);
  intro += "</p>\n";
  const std::string out = a.out().empty() ? common_parent(dirs) : a.out();
  Status st =
      write_in(out, {{"compare.html", comparison_html(*c, "switchyard: runs compared", intro)},
                     {"compare.md", comparison_markdown(*c)}});
  if (!st.ok()) return fail(st);
  if (!a.quiet()) std::fputs(comparison_text(*c).c_str(), stdout);
  const std::filesystem::path o(out);
  std::printf("\nwrote %s and %s (%zu runs)\n", (o / "compare.html").string().c_str(),
              (o / "compare.md").string().c_str(), dirs.size());
  return 0;
}

int run_report(const CommandConfig& cc, const std::vector<std::string>& more) {
  switchyard::ReportConfig cfg;
  Status checked = cc.resolve(&cfg);
  for (const std::string& d : more) cfg.add_more_dirs(d);
  if (checked.ok()) checked = validate_report_config(cfg);
  if (!checked.ok()) return fail(checked);
  if (cc.print_config()) {
    std::printf("%s", config_text(cfg).c_str());
    return 0;
  }
  return cfg.more_dirs().empty() ? run_report(cfg) : run_compare(cfg);
}

}  // namespace

void add_report_command(CLI::App& app) {
  CLI::App* cmd = app.add_subcommand(
      "report",
      "Merge per-rank load reports (DIR/rank-<r>.pb or .json) into DIR/cluster.json, "
      "DIR/report.html (self-contained, SVG charts) and a text table; with several DIRs, the runs "
      "side by side (compare.html, compare.md, a table). Exit 22 on a missing, corrupt or "
      "inconsistent report");
  auto c = std::make_shared<CommandConfig>(cmd, switchyard::ReportConfig::default_instance());
  c->add_config_options();
  // Positional, but not required by CLI11: --config or --set may give it instead.
  c->option("dir", "dir", "folder holding rank-<r>.pb / rank-<r>.json (a run's --out); required");
  auto more = std::make_shared<std::vector<std::string>>();
  cmd->add_option("more_dirs", *more,
                  "further runs' folders: the runs side by side, one column each, into "
                  "OUT/compare.html and OUT/compare.md [config: more_dirs]");
  c->option("--out", "out",
            "write cluster.json and report.html here (default: DIR); with several DIRs "
            "compare.html and compare.md (default: their common parent folder, else .)");
  c->option("--warmup", "warmup",
            "steps left out of the steady-state figures at the start of each run");
  c->flag("--quiet,-q", "quiet", "do not print the text tables");
  cmd->callback([c, more] { set_exit_code(run_report(*c, *more)); });
}

}  // namespace sy::launch
