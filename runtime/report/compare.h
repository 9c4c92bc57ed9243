// Comparing runs: several merged load reports (cluster_report.h), one per run (one router,
// one model, one configuration), put side by side as rows of figures, one value per run, and
// as per-step series, rendered as a terminal table, GitHub-flavoured Markdown and a
// self-contained HTML page. `switchyard report DIR...` renders them for several folders;
// `switchyard study` adds its own rows (router parameters, latency, held-out losses) and series
// (its loss curve) to what compare_reports() computes and renders with the same functions.
//
// Steady state: the first step (or forward) of a run is cold (caches, first-touch pages, the
// communicator's warm-up), so the figures leave out the first `warmup` steps of every run and
// say so. A ClusterReport sums over steps, so the steady figures come from a second merge of
// the runs' RankReports (ClusterReport.ranks) with the warm-up entries removed. A run with no
// more than `warmup` steps keeps its last step (a figure of one cold step beats none); the
// notes say which.
//
// Figures per run (MetricRow.key in brackets; all over the steady steps; "per step" means
// summed over a step's MoE layers, then averaged over the steps):
//   routing        [imbalance] max/mean rows received over experts, per layer and step, then
//                  the mean (what capacity meets each step); [load_cv] the load's coefficient
//                  of variation, steps summed, mean over layers; [drops] % of assignments
//                  dropped by capacity
//   communication  [local_fraction] % of dispatched rows a rank keeps for its own experts;
//                  [recv_imbalance] max/mean over ranks of rows received, per layer and step,
//                  then the mean; [ranks_per_token] distinct ranks per token (the
//                  ranks holding a token's top-k experts, before capacity drops; from
//                  LayerStepReport.tokens_by_rank_count, n/a for reports without it);
//                  [bytes_per_token] bytes sent to other ranks per token (dispatch payload,
//                  summed over the layers: a token crosses every MoE layer);
//                  [inter_host_bytes_per_token] the same between hosts (runs on several hosts)
//   time           [moe_ms] MoE forward and [exchange_ms] exchange (dispatch + return
//                  alltoallv) time per step, the mean over ranks
//   quality        [loss] the mean over the steady steps and [loss_last] the last step's, where
//                  a run recorded one (RankReport.step_losses: train); rows only when some run did
// Series (Series.key; every step, warm-up included; the page shades it): [imbalance],
// [recv_imbalance], [exchange_ms], and [loss] where recorded.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "proto/report.pb.h"
#include "runtime/core/status.h"

namespace sy {

// One figure across the runs.
struct MetricRow {
  std::string key;             // stable id: the HTML chart's id ("bar-<key>"), the JSON field
  std::string title;           // for people: "receive imbalance (max/mean over ranks)"
  std::string unit;            // "", "%", "ms", "B", ...
  std::vector<double> values;  // one per run (Comparison.labels order); NaN = n/a
  int decimals = 2;
  bool lower_is_better = true;  // the renderers mark the best run of the row
  std::string group;            // "routing", "communication", "time", "quality", ...
};

// A line chart: per run, (x, y) points in x order (x is the step; NaN y = a gap).
// The index of the row's best run (lowest or highest by lower_is_better), -1 when fewer than
// two runs have a value or another run's value reads the same at r.decimals: what the
// renderers mark.
int metric_best_run(const MetricRow& r);
// v with r.decimals decimals, "n/a" for NaN.
std::string metric_value_text(const MetricRow& r, double v);
// "title (unit)", or the title alone without a unit.
std::string metric_title(const MetricRow& r);

struct Series {
  std::string key, title, unit;
  std::vector<std::vector<std::pair<double, double>>> per_run;  // [runs][points]
  std::string x_title = "step";
};

struct Comparison {
  std::vector<std::string> labels;  // one per run: column headers
  std::vector<MetricRow> rows;      // grouped by MetricRow.group, in order of first appearance
  std::vector<Series> series;
  // The inputs, per run, as given to compare_reports (null, or a report without its ranks'
  // reports: a run without load reports; its figures are n/a). Not owned.
  std::vector<const switchyard::ClusterReport*> reports;
  // Per run, the merge of the steady steps only (empty where reports[i] is null): the heat
  // maps and the traffic matrices of the page show these.
  std::vector<switchyard::ClusterReport> steady;
  int warmup_left_out = 0;           // steps asked to be left out of every run
  std::vector<int> left_out_of_run;  // per run, steps actually left out (fewer when it was short)
  // Per run, the first step the figures count (-1: none left out); the line charts shade the
  // steps before it, in any Series whose x is the step.
  std::vector<int64_t> first_steady_step;
  std::vector<std::string> notes;  // printed under the tables: warm-up, n/a reasons, ...
};

// Computes the rows and series above for runs reports[i] named labels[i] (same sizes), leaving
// out the first `warmup` (>= 0) steps of each. Errors: sizes that differ, a negative warmup, a
// run whose reports do not merge once the warm-up is removed (BadInput naming the label).
StatusOr<Comparison> compare_reports(const std::vector<std::string>& labels,
                                     const std::vector<const switchyard::ClusterReport*>& reports,
                                     int warmup);

// A run's folder (its --out) read and merged: load_rank_reports then merge_rank_reports, the
// reading's warnings (a .pb unreadable, its .json used) added to the report's warnings and,
// when read_warnings is not null, to it as well. Errors are those two's (BadInput naming the
// file, NotFound for a missing folder).
StatusOr<switchyard::ClusterReport> load_run_report(
    const std::string& dir, std::vector<std::string>* read_warnings = nullptr);

// Column labels for runs read from `dirs`: each run's router where the routers are distinct
// (routers[i]; "" when unknown), else each folder's name, else (names that repeat) the paths.
std::vector<std::string> comparison_labels(const std::vector<std::string>& dirs,
                                           const std::vector<std::string>& routers);

// A terminal table: one line per row, one column per run, grouped; the best run of each row
// marked with '*'; then the notes.
std::string comparison_text(const Comparison& c);

// The same as GitHub-flavoured Markdown tables (one per group), paste-ready, best in bold.
std::string comparison_markdown(const Comparison& c);

// A self-contained page (inline CSS and SVG, no scripts, no external resources): the table,
// one bar chart per MetricRow (one bar per run; <svg id="bar-<key>">), one line chart per
// Series (<svg id="line-<key>">), and per run with a report the per-layer expert-load heat map
// (layers x experts, <svg id="heat-<run>">) and the rank traffic matrix summed over layers
// (<svg id="traffic-<run>">), <run> the run's index. intro_html goes under the title as is.
std::string comparison_html(const Comparison& c, const std::string& title,
                            const std::string& intro_html = "");

// The table alone (an HTML <section>), for pages of their own: the single-run report.html
// shows a run's steady figures with it.
std::string comparison_table_html(const Comparison& c);

// Every chart id comparison_html(c, ...) writes, in page order (tests look them up).
std::vector<std::string> comparison_chart_ids(const Comparison& c);

}  // namespace sy
