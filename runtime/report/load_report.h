// Assembling load reports (proto/report.proto) and routing metrics from the MoE layers of a
// run: one LayerStepReport per layer and step from the layer's last forward, the metrics merged
// over the ranks, and the table `switchyard infer` and `train` print. The synthetic stack
// (launch/infer_run.h) and the models (RoutingCollector over Model::sparse_layers()) both fill
// them here, so a report means the same whoever wrote it.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "comm/communicator.h"
#include "proto/report.pb.h"
#include "routers/metrics.h"
#include "runtime/moe/moe_layer.h"

namespace sy {

// The routing of one run (one router) over all ranks.
struct InferResult {
  std::string router;
  int64_t tokens = 0;                     // global
  double seconds = 0;                     // wall, rank 0
  std::vector<RoutingMetrics> per_layer;  // merged over ranks and steps
};

// The routing metrics of the layer's last forward on this rank: per-token sums from its router
// output, per-expert load and drops from its MoeStepStats (the capacity plan's counts).
RoutingMetrics layer_step_metrics(const MoeLayer& layer);
// One LayerStepReport (load report entry) from the layer's last forward on this rank (its
// MoeStepStats), whose routing metrics are m.
void fill_layer_step(const MoeLayer& layer, int l, int64_t step, const RoutingMetrics& m,
                     switchyard::LayerStepReport* r);
// The header of this rank's report: rank, world size, host, router and sizes and this rank's
// experts (from the first MoE layer), the number of MoE layers, config_text and the version.
// The host is gethostname() (network-namespace hosts set theirs with `unshare --uts`, see
// MULTIHOST.md); `switchyard report` takes ranks with equal hosts to share one host when it
// splits the traffic into intra-host and inter-host.
void fill_rank_header(const MoeLayer& first, int num_layers, const std::string& config_text,
                      const Communicator& comm, switchyard::RankReport* r);
// Sums this rank's routing metrics of layer `layer` with every other rank's and finalizes them
// (every rank gets the total). A rank without tokens passes an empty RoutingMetrics. Collective.
RoutingMetrics merge_routing_metrics(Communicator* comm, RoutingMetrics m, int layer, int64_t E,
                                     int64_t K);
// Every rank writes its rank-<r>.{pb,json} under dir; a failure is a warning on that rank
// (reports are not worth losing a run for), and the failures are counted over the ranks: rank 0
// names the ranks whose report is missing. Returns that count (every rank). Collective.
int write_rank_reports(Communicator& comm, const std::string& dir,
                       const switchyard::RankReport& report);
// The routing table infer prints at the end (rank 0).
void print_routing_table(const std::vector<InferResult>& runs, int P);

// Times one step on this rank (proto StepTime): its wall time from construction to stop(), and
// the part of it spent inside the communicator's collectives.
class StepTimer {
 public:
  explicit StepTimer(const Communicator& comm);
  switchyard::StepTime stop(int64_t step) const;

 private:
  const Communicator& comm_;
  std::chrono::steady_clock::time_point t0_;
  double collective0_;
};

// Routing metrics and load reports of a model's MoE layers over one or more forwards:
// add_step() after each forward (every rank, collective-free), finish() merges over the ranks
// (collective), prints the table on rank 0 and writes each rank's report under `out`.
class RoutingCollector {
 public:
  // moe: the model's MoE layers (no nulls); config_text goes into each report.
  RoutingCollector(std::vector<MoeLayer*> moe, const std::string& config_text, Communicator& comm,
                   std::string out);
  // The last forward of every MoE layer: this rank's tokens (a slice, or its own sequence).
  // Several forwards of one step (train's batch of sequences) add up into one entry per layer
  // and step: counts and times summed, metrics merged from their sums.
  void add_step(int64_t step);
  // The loss of a logged step (train; the same on every rank), for reports that compare runs.
  void add_loss(int64_t step, double loss);
  // The time of a step that has entries (StepTimer), and the training steps skipped so far.
  void add_step_time(const switchyard::StepTime& t) { *report_.add_step_times() = t; }
  void set_skipped_steps(int64_t n) { report_.set_skipped_steps(n); }
  // Collective. tokens: over all ranks; seconds: the wall time they took. Rank 0 prints title,
  // the routing table and where the reports went; a null title prints nothing.
  void finish(int64_t tokens, double seconds, const char* title);

 private:
  std::vector<MoeLayer*> moe_;
  Communicator& comm_;
  std::string out_;
  switchyard::RankReport report_;
  std::vector<RoutingMetrics> mine_;
  // The entry of (layer, step) in report_ and its metrics so far, for forwards of one step.
  std::map<std::pair<int, int64_t>, std::pair<int, RoutingMetrics>> entry_of_;
};

}  // namespace sy
