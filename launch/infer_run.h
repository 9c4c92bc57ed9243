// The distributed inference run behind `switchyard infer`: real text -> GPT-2 tokens, split
// across ranks in whole capacity groups -> a stack of MoE layers with experts sharded over the
// ranks -> routing metrics, per-rank load reports, and (optionally) the final hidden states
// gathered on rank 0 in global token order.
//
// Token split: shard_tokens (runtime/data/sequence_shard.h), whole capacity groups per rank, so
// the drops and the outputs do not depend on P. Load reports: runtime/report/load_report.h.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "comm/communicator.h"
#include "proto/config.pb.h"
#include "proto/report.pb.h"
#include "runtime/core/status.h"
#include "runtime/data/sequence_shard.h"
#include "runtime/report/load_report.h"

namespace sy::launch {

struct InferOptions {
  std::string out_dir;    // per-rank reports; empty: none
  std::string dump;       // .npy of the final hidden states (rank 0); empty: none
  std::string trace_dir;  // this rank's routing trace shard (runtime/trace); empty: none
  bool trace_probs = false;
  bool progress = true;  // rank 0 prints a progress line
};

// Every rank computes the same verdict from its own status; the worst exit code wins everywhere
// (allreduce max), so all ranks leave together with the same code and nobody waits in a
// collective. An error every rank hit alike is printed once, by rank 0, as "[switchyard] <what>:
// <status>"; otherwise each failing rank prints "[switchyard] rank r: <what>: <status>". Returns
// 0 when every rank is OK. Collective over comm.
int agree_status(Communicator& comm, const Status& s, const char* what);

// Every rank must run the same configuration: the hash of `config_text` all-reduced; a
// differing one is refused (exit 21 on every rank, each naming its rank) before any data moves.
// Returns 0 when all agree. Collective over comm.
int agree_config(Communicator& comm, const std::string& config_text);

// Collective over comm. `ids` are the global token ids (every rank holds the same list).
StatusOr<InferResult> run_inference(const switchyard::RunConfig& cfg,
                                    const std::vector<int32_t>& ids, int64_t vocab_size,
                                    Communicator* comm, const InferOptions& opt);

}  // namespace sy::launch
