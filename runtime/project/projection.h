// `switchyard project`: what a recorded routing (runtime/trace/) does to communication and load
// at P ranks, counted exactly from the trace, then timed with a cluster model (cluster.h).
//
// Replay. The trace's tokens are cut into UNITS, the capacity groups the runtime planned drops
// over: a sequence (token_index / group_tokens, within one step) when the trace's group_tokens
// > 0, else one rank's forward (rank, step). Units are ordered by first token. Drops are
// recomputed per unit with the runtime's own capacity plan (runtime/kernels/capacity.h, policy
// probs, ranked by the chosen probabilities: the trace's probs when recorded, else its top-k
// weights, which are those probabilities unless the router renormalizes), so they match the
// runtime for the same tokens and are independent of P. At P ranks each rank gets u whole units
// (u = tokens_per_rank / mean unit size, at least 1), rank q units q*u .. q*u+u-1 in trace
// order (or, interleaved, units q, q+P, ..., q+(u-1)P), cyclically when P * u exceeds the
// trace (the same units then recur on other ranks).
// With the trace's own units and order this is how the synthetic stack deals groups to ranks
// (runtime/data/sequence_shard.h), so a trace recorded at P = 1 projected to P = 2 counts what
// a real P = 2 run moves.
//
// Ranks. P <= E: P expert-parallel ranks. P > E: E expert-parallel ranks times P / E
// data-parallel replicas of the expert group (E must divide P); `dp` multiplies either. Global
// rank q = replica * EP + expert-parallel rank; node = q / gpus_per_node. A token goes only to
// its own replica's ranks. Placement: contiguous (expert e on rank e / (E/EP)), or a placement
// (comm/placement.h) that may hold replicas; a token's assignment to a replicated expert goes
// to replica token_index % copies.
//
// Counts (exact): per rank and layer, rows sent and received split into same-rank / same-node /
// other-node (one row per kept assignment, as the dispatcher sends them; bytes = rows * D *
// 4, the rank itself 0: comm/dispatcher.h ExchangeLoad), the distinct peers messaged, rows
// received (load per rank), routed assignments per placed expert (load per expert), drops, and
// the distinct ranks and nodes each token's kept rows go to. O(tokens * K) per layer and P; a
// rank-pair matrix only up to pairs_max_ranks ranks (for validation against load reports).
//
// Exchanges: a rank's units go out in batches of units_per_exchange (the runtime's forwards);
// every count is a total over them, every time the mean over them of one exchange's time.
//
// Time (a model): dispatch = max over ranks of max(send, receive) time, each the self copy
// (own rows / same_rank bandwidth) plus the sum over the two link tiers of latency * messages +
// bytes / bandwidth, with messages = the peers of the
// count exchange (every peer of the expert group) plus the peers that get rows; return (called
// combine in the output, DeepEP's name) the same without the count exchange; expert compute =
// max over ranks of rows * 6 * D * F / flops (a SwiGLU expert's three GEMMs).
//
// Legend: N token rows, K top-k, E experts, P ranks, D hidden, F expert hidden, L MoE layers.
#pragma once

#include <cstdint>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "comm/placement.h"
#include "runtime/core/status.h"
#include "runtime/project/cluster.h"
#include "runtime/trace/trace_format.h"

namespace sy {

// The expert placement of an expert group of P ranks, from the load per expert (all layers).
using PlacementFn =
    std::function<StatusOr<ExpertPlacement>(const std::vector<int64_t>& load_E, int P)>;

struct ProjectOptions {
  std::vector<int> ranks = {8, 16, 32, 64, 128, 256, 512, 1024};  // P values
  int dp = 1;  // extra data-parallel replicas of every P
  double capacity_factor = std::numeric_limits<double>::quiet_NaN();  // NaN: the trace's
  int64_t tokens_per_rank = 0;  // 0: trace tokens / the largest rank count (at least one unit)
  // Tokens per rank in one exchange (one forward of the runtime: its batch), rounded to whole
  // units; 0: a rank's tokens_per_rank in one exchange. Times are per exchange.
  int64_t tokens_per_exchange = 0;
  // Units dealt to ranks interleaved (rank q: units q, q + P, ...; how `infer --model
  // --seq-len` and `train` deal sequences) instead of in contiguous blocks (the synthetic stack).
  bool interleaved = false;
  int64_t hidden = 0;      // D (> 0)
  int64_t ffn_hidden = 0;  // F (> 0)
  ClusterModel cluster;    // gpus_per_node included
  std::string placement_name = "contiguous";
  PlacementFn placement;  // null: contiguous
  int pairs_max_ranks = 64;
  // Called now and then with assignments replayed so far and in all (progress lines).
  std::function<void(int64_t done, int64_t total)> progress;
};

struct LayerProjection {
  int64_t layer = 0, model_layer = 0;
  // [ranks * 3]: rows per rank to / from the same rank, the same node, other nodes.
  std::vector<int64_t> sent_R3, recv_R3;
  std::vector<int64_t> peers_sent_R3, peers_recv_R3;  // distinct peers in one exchange, max
  std::vector<int64_t> pair_rows_RR;  // [ranks * ranks] src-major; empty beyond pairs_max_ranks
  std::vector<int64_t> routed_E, dropped_E;  // [E] over all replicas
  std::vector<int64_t> instance_routed;      // routed assignments per placed expert copy
  int64_t routed = 0, dropped = 0;
  std::vector<int64_t> fanout_ranks_hist, fanout_nodes_hist;  // [K+1] tokens by distinct dests
  double rank_load_max_over_mean = 0;                         // rows received per rank
  double expert_load_max_over_mean = 0;                       // routed per placed copy
  int64_t exchanges = 1;  // exchanges the counts are summed over; the times are their mean
  double dispatch_s = 0, combine_s = 0, compute_s = 0, compute_mean_s = 0;
};

// A real run's load reports (`--measured DIR`) beside the projection at its P.
struct MeasuredPoint {
  std::string dir;
  int64_t numbers_compared = 0;  // rows and bytes per rank pair, loads and drops per expert
  std::string first_difference;  // empty: every number equal
  // Per layer: the run's exchange time per forward (count exchange + dispatch + return; each
  // phase the min over ranks, the rank that arrived last and so waited least; median over
  // forwards) and expert time (max over ranks, median over forwards).
  std::vector<double> exchange_s, compute_s;
  double mean_exchange_s() const;  // means over layers
  double mean_compute_s() const;
};

struct PointProjection {
  int ranks = 0, ep = 0, dp = 0, nodes = 0;
  int64_t units_per_rank = 0, tokens = 0;  // tokens: over all ranks
  int64_t units_per_exchange = 0;          // 0: all of a rank's units in one exchange
  std::vector<LayerProjection> layers;
  std::vector<MeasuredPoint> measured;  // runs at this P, when given
  double time_s() const;  // sum over layers of dispatch + compute + combine (one exchange)
};

struct RouterProjection {
  std::string trace_dir, router, model;
  bool synthetic_routing = false;
  int64_t trace_tokens = 0, units = 0;
  double mean_unit_tokens = 0;
  std::string unit_kind;     // "sequence" or "forward"
  bool interleaved = false;  // units dealt to ranks interleaved (ProjectOptions::interleaved)
  double capacity_factor = 0;
  int64_t drop_mismatch = -1;  // recomputed vs recorded kept flags; -1: c differs from the trace
  int64_t drop_compared = 0;
  std::vector<PointProjection> points;
};

// Checks the options against the trace first (InvalidArgument, exit 21: P that does not divide
// E without replicas, E that does not divide P beyond E, sizes <= 0).
StatusOr<RouterProjection> project_trace(const Trace& t, const ProjectOptions& opt);

// The table of one router (all P).
std::string projection_text(const RouterProjection& r, const ProjectOptions& opt);
// projection.json (schema: README "Projecting to 1,024 ranks").
std::string projection_json(const std::vector<RouterProjection>& rs, const ProjectOptions& opt);
// projection.html: one self-contained page (inline CSS and SVG, no scripts): line charts against
// P (log2 axis) of exchange time per layer, max/mean load per rank and other-node bytes per rank
// per layer, one line per router; the settings and every router's table. Names are escaped.
std::string projection_html(const std::vector<RouterProjection>& rs, const ProjectOptions& opt);

// A measured run beside the projection at its P (the table, projection.json and the page): means
// over layers, the model's error against the run, and the counts' verdict in words.
struct MeasuredSummary {
  double exchange_s = 0, projected_exchange_s = 0, exchange_error_pct = 0;
  double compute_s = 0, projected_compute_s = 0, compute_error_pct = 0;
  std::string counts;  // "equal (N numbers)" or "DIFFER: <the first difference>"
};
MeasuredSummary measured_summary(const MeasuredPoint& m, const PointProjection& pt);

// One P of the table, over its layers: means per layer except where it says max.
struct PointSummary {
  double rows_per_rank = 0;               // rows sent per rank per layer (all tiers)
  double pct[3] = {0, 0, 0};              // % of rows to the same rank, the same node, other nodes
  double other_max_bytes = 0;             // other-node bytes sent by one rank in one layer, max
  double other_mean_bytes = 0;            // other-node bytes sent per rank per layer, mean
  double rank_load = 0, expert_load = 0;  // max/mean, max over layers
  double drop_pct = 0, fanout_ranks = 0, fanout_nodes = 0;
  double dispatch_s = 0, compute_s = 0, combine_s = 0;  // per layer (each max over ranks)
};
PointSummary point_summary(const PointProjection& pt, const ProjectOptions& opt);
// "free" or "<bandwidth> GB/s": the cluster's self copy, for the tables.
std::string self_copy_text(const ClusterModel& c);

}  // namespace sy
