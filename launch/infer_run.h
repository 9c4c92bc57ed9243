// The distributed inference run behind `switchyard infer`: real text -> GPT-2 tokens, split
// across ranks in whole capacity groups -> a stack of MoE layers with experts sharded over the
// ranks -> routing metrics, per-rank load reports, and (optionally) the final hidden states
// gathered on rank 0 in global token order.
//
// Token split: the corpus' first max_tokens tokens form n = ceil(T / G) groups of G tokens
// (the last may be shorter); rank r holds groups [r*n/P, (r+1)*n/P), a contiguous range of
// tokens. Every step each rank runs its next batch_groups groups; ranks that ran out take part
// with zero tokens. Because capacity is per group and each group lives on one rank, the drops
// and the outputs do not depend on P.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "comm/communicator.h"
#include "proto/config.pb.h"
#include "proto/report.pb.h"
#include "routers/metrics.h"
#include "runtime/core/status.h"
#include "runtime/moe/moe_layer.h"

namespace sy::launch {

struct TokenShard {
  int64_t group_begin = 0, group_end = 0;  // this rank's groups
  int64_t token_begin = 0, token_end = 0;  // their tokens (global indices)
  int64_t steps = 0;                       // the same on every rank
};
// Pure: the shard of `rank` of P for T tokens in groups of G, batch_groups groups per step.
TokenShard shard_tokens(int64_t T, int64_t G, int64_t batch_groups, int rank, int P);

struct InferOptions {
  std::string out_dir;   // per-rank reports; empty: none
  std::string dump;      // .npy of the final hidden states (rank 0); empty: none
  bool progress = true;  // rank 0 prints a progress line
};

struct InferResult {
  std::string router;
  int64_t tokens = 0;                     // global
  double seconds = 0;                     // wall, rank 0
  std::vector<RoutingMetrics> per_layer;  // merged over ranks and steps
};

// One LayerStepReport (load report entry) from the layer's last forward of `tokens` tokens on
// this rank, whose routing metrics are m.
void fill_layer_step(MoeLayer& layer, int l, int64_t step, int64_t tokens, const RoutingMetrics& m,
                     switchyard::LayerStepReport* r);
// Sums this rank's routing metrics of layer `layer` with every other rank's and finalizes them
// (every rank gets the total). A rank without tokens passes an empty RoutingMetrics. Collective.
RoutingMetrics merge_routing_metrics(Communicator* comm, RoutingMetrics m, int layer, int64_t E,
                                     int64_t K);
// Writes rank-<r>.{pb,json} under dir; a failure is a warning (reports are not critical).
void write_report_or_warn(const std::string& dir, const switchyard::RankReport& report, int rank);
// The routing table infer prints at the end (rank 0).
void print_routing_table(const std::vector<InferResult>& runs, int P);

// Every rank computes the same verdict from its own status; the worst exit code wins everywhere
// (allreduce max), so all ranks leave together with the same code and nobody waits in a
// collective. A failed status is printed as "[switchyard] rank r: <what>: <status>". Returns 0
// when every rank is OK. Collective over comm.
int agree_status(Communicator& comm, const Status& s, const char* what);

// Collective over comm. `ids` are the global token ids (every rank holds the same list).
StatusOr<InferResult> run_inference(const switchyard::RunConfig& cfg,
                                    const std::vector<int32_t>& ids, int64_t vocab_size,
                                    Communicator* comm, const InferOptions& opt);

}  // namespace sy::launch
