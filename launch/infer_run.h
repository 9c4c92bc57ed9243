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
#include "comm/fault.h"
#include "proto/config.pb.h"
#include "proto/report.pb.h"
#include "runtime/core/status.h"
#include "runtime/data/sequence_shard.h"
#include "runtime/io/hf_checkpoint.h"
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

// One setting that must be the same on every rank: a name ("moe.d_model", "model identity")
// and its value as text.
struct Setting {
  std::string name, value;
};

// The fields of a protobuf text-format config as settings: nested messages flattened to
// "a.b.c", the n-th value of a repeated field named "f[n]".
std::vector<Setting> config_settings(const std::string& config_text);

// Every rank must hold the same settings: their hash is all-reduced before any data moves.
// When the ranks differ, every rank returns `exit_code` and rank 0 prints "[switchyard] <what>
// differs between ranks:" and, for each differing setting (up to 20), its name and each value
// with the ranks that hold it. Returns 0 when all agree. Collective over comm (two all-reduces;
// on a mismatch also two all-gathers of the settings' text, at most 16 KiB per rank).
int agree_settings(Communicator& comm, const std::vector<Setting>& settings, const char* what,
                   int exit_code = kExitConfig);

// agree_settings over config_settings(config_text): the whole config (every command-line
// setting resolves into it), exit 21 on a mismatch.
int agree_config(Communicator& comm, const std::string& config_text);

// Every rank must have opened the same model (HfCheckpoint::identity) and, when resuming, the
// same checkpoint step (resume_step >= 0): agree_settings over both, exit 23 (a checkpoint
// mismatch, docs/RELIABILITY.md E6) when resuming, else 21. Collective over comm.
int agree_model(Communicator& comm, const HfCheckpoint& ck, const char* what,
                int64_t resume_step = -1);

// Every rank must hold the same token list (its length and FNV-1a hash): agree_settings, exit
// 21. Collective over comm.
int agree_tokens(Communicator& comm, const std::vector<int32_t>& ids, const char* what);

// The SY_FAULT kinds each command carries out (comm/fault.h check_faults_supported): the
// process faults at its steps, corrupt_count in every exchange, enospc on report writes, and
// train's and study's optimizer and checkpoint faults.
std::vector<FaultKind> infer_fault_kinds();
std::vector<FaultKind> study_fault_kinds();
std::vector<FaultKind> train_fault_kinds();

// Collective over comm. `ids` are the global token ids (every rank holds the same list).
StatusOr<InferResult> run_inference(const switchyard::RunConfig& cfg,
                                    const std::vector<int32_t>& ids, int64_t vocab_size,
                                    Communicator* comm, const InferOptions& opt);

}  // namespace sy::launch
