// The cluster report: every rank's load report (report_io.h) merged into one picture per MoE
// layer, summed over steps (proto/report.proto ClusterReport):
//   - load per expert: rows each expert received, from its owner's received_per_local_expert
//     placed at local_expert_begin; routed and dropped per expert summed over senders
//   - the P x P traffic matrix, bytes and rows, [i * P + j] = sent by rank i to rank j
//     (dispatch payload; the diagonal is what a rank keeps for its own experts)
//   - imbalance over experts' received load: max/mean and (max - mean)/mean (0 with no load)
//   - time per phase: each rank's total over steps, then the mean and the max over ranks
//   - routing metrics merged exactly from the per-rank sums (routers/metrics.h)
//   - each rank's host (rank_hosts) and the traffic split by tier, per layer and over all
//     layers: same rank (the diagonal), intra-host (another rank on the same host) and
//     inter-host, in bytes, rows, share of the rows and bytes per routed token. Hosts are the
//     ranks' RankReport.host strings, equal strings meaning one host; ranks of a host need not
//     be contiguous. A report without a host (an older or foreign producer: proto3 reads the
//     absent field as "") is merged all the same, with the split left out and a warning naming
//     the ranks, since guessing the hosts would misstate what crossed them.
//
// Consistency (a violation is BadInput naming the layer, and the ranks or the expert):
//   - sum over ranks of rows received == sum routed - sum dropped, per layer and per expert
//   - rows_sent_to_peer of i -> j == rows_recv_from_peer of j <- i (and the same for bytes),
//     summed over the layer's steps
// plus everything check_rank_report / check_rank_report_set ask of the inputs.
//
// Renderers: a text table for the terminal and a self-contained HTML page (inline CSS and
// hand-built SVG, no scripts, no external resources).
#pragma once

#include <string>
#include <vector>

#include "proto/report.pb.h"
#include "routers/metrics.h"
#include "runtime/core/status.h"

namespace sy {

// Checks the reports (each, then as a set) and merges them. sources[i] names reports[i] in
// messages (may be empty). The result's ranks are the inputs, sorted by rank; its layers are
// sorted by layer (only layers with entries).
StatusOr<switchyard::ClusterReport> merge_rank_reports(
    const std::vector<switchyard::RankReport>& reports,
    const std::vector<std::string>& sources = {});

// Plain-text tables, one block per layer: load per expert (one line with a bar per expert, or
// a compact grid when E > 64), the traffic matrix in MiB (per-rank totals when P > 16),
// imbalance, drops, routing metrics, and phase times mean / max over ranks.
std::string render_cluster_text(const switchyard::ClusterReport& c);

// Routing metrics (routers/metrics.h) into their report message, sums included so reports of
// several ranks can be merged exactly.
void metrics_to_report(const RoutingMetrics& m, switchyard::RoutingMetricsReport* out);

// A self-contained HTML page: summary table, per-rank stacked bars of phase time, and per
// layer a bar chart of load per expert (kept vs dropped) and a heat map of the traffic matrix.
// extra_html goes in as is after the summary tiles (switchyard report: the steady figures).
std::string render_cluster_html(const switchyard::ClusterReport& c,
                                const std::string& extra_html = "");

// The hosts of a cluster report's ranks: names in order of first appearance by rank, and each
// rank's index into them. Both empty when the split is unavailable (num_hosts 0).
// Sorted ranks as compact ranges, e.g. "0-3, 8" (two in a row: "4, 5").
std::string rank_ranges(const std::vector<int>& ranks);

struct RankHosts {
  std::vector<std::string> names;
  std::vector<int> of_rank;  // [P]
  // The ranks on host h as compact ranges, e.g. "0-3, 8".
  std::string ranks_of(int h) const;
};
RankHosts rank_hosts(const switchyard::ClusterReport& c);

// The P x P heat map of s's dispatch bytes (row = sender, column = receiver; host strips when
// `hosts` is known) as one <svg> element, with the given element id and aria-label when not
// empty (the label defaults to "Traffic matrix, layer <s.layer>").
std::string render_traffic_svg(const switchyard::ClusterReport::LayerSummary& s, int P,
                               const RankHosts& hosts, const std::string& id = "",
                               const std::string& label = "");

// The seven phases of PhaseTimes, in pipeline order, as {name, seconds}.
struct PhaseValue {
  const char* name;
  double seconds;
};
std::vector<PhaseValue> phase_values(const switchyard::PhaseTimes& t);

// Each rank's seconds per phase summed over the steps of `layer` (every layer when -1), read
// from c.ranks(): [P][7], phases in phase_values() order, ranks by position in c.ranks().
std::vector<std::vector<double>> rank_phase_seconds(const switchyard::ClusterReport& c,
                                                    int layer = -1);

}  // namespace sy
