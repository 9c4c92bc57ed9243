// Routing traces on disk: what every router did to every token, one safetensors shard per rank.
// `infer --trace DIR` and `train --trace DIR` write DIR/rank-<r>.safetensors; `switchyard trace
// stats DIR` and the projection read them back (read_trace).
//
// Format "switchyard.trace", version 1. A shard holds N token rows (this rank's tokens over all
// recorded steps, in the order they ran) and, per MoE layer l (0 .. L-1, in model order):
//   step                I64 [N]     the step the row ran in (infer: token batch or sequence
//                                   round; train: optimizer step)
//   token_index         I64 [N]     the token's global index: its position in the run's token
//                                   stream (infer), or in the training token stream (train)
//   token_id            I32 [N]     its vocabulary id
//   layer.<l>.topk_ids      I32 [N, K]  chosen experts (global ids < E), by descending probability
//   layer.<l>.topk_weights  F32 [N, K]  their combine weights
//   layer.<l>.kept          U8  [N, K]  1: the assignment was kept after capacity (the capacity
//                                       plan's kept_TK), 0: dropped
//   layer.<l>.probs         F32 [N, E]  the full router probabilities (only with --trace-probs)
// Every layer has the same N rows: a rank's MoE layers route the same tokens. The rank that held
// the token is the shard's `rank`. Metadata (safetensors' "__metadata__", string values):
//   format "switchyard.trace", version "1", source "infer" | "train", model (checkpoint folder,
//   or "synthetic" for the configured stack), router, synthetic_routing "1" when the router is
//   randomly initialised (the synthetic stack, a replaced router with parameters at
//   inference; a hash router has none), experts (E),
//   top_k (K), layers (JSON list: the model layer index of each MoE layer), capacity_factor
//   (<= 0: dropless), group_tokens (capacity group, 0: the whole forward), probs "0" | "1",
//   rank, world_size, host, first_step and steps (rows have first_step <= step <
//   first_step + steps), tokens (N).
// Weights and probabilities are stored as computed: a step with non-finite router scores (train
// --on-nonfinite skip) keeps its NaNs; ids stay in range regardless.
//
// Reading is as defensive as reading a checkpoint: the safetensors reader's checks (header,
// offsets, truncation), then every metadata field parsed and range-checked, the exact tensor
// schema (no missing, extra or mis-shaped tensor), ids < E and distinct within a row, kept in
// {0, 1}, steps in range, no (step, token_index) twice, and across shards the same run settings
// and ranks 0 .. world_size-1 each exactly once. Errors are kBadInput (exit 22) naming the file
// and the field; a missing folder or shard is kNotFound (also exit 22).
//
// Legend: N token rows, K top-k, E experts, L MoE layers.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "runtime/core/status.h"

namespace sy {

constexpr const char* kTraceFormat = "switchyard.trace";
constexpr int kTraceVersion = 1;
// Bounds the reader accepts (a hostile header cannot make it allocate beyond the file anyway).
constexpr int64_t kTraceMaxExperts = 1 << 16;
constexpr int64_t kTraceMaxLayers = 4096;

// The run settings a shard records (every shard of a trace carries the same, except rank and
// host).
struct TraceMeta {
  std::string source;  // "infer" | "train"
  std::string model;   // checkpoint folder, or "synthetic"
  std::string router;
  bool synthetic_routing = false;
  int64_t experts = 0;               // E
  int64_t top_k = 0;                 // K
  std::vector<int64_t> model_layer;  // [L] the model layer index of MoE layer l
  double capacity_factor = 0;        // <= 0: dropless
  int64_t group_tokens = 0;
  bool probs = false;
  int rank = 0, world_size = 1;
  std::string host;
  int64_t first_step = 0, steps = 0;

  int64_t layers() const { return static_cast<int64_t>(model_layer.size()); }
};

struct TraceLayer {
  std::vector<int32_t> topk_ids_NK;
  std::vector<float> topk_weights_NK;
  std::vector<uint8_t> kept_NK;
  std::vector<float> probs_NE;  // empty unless meta.probs
};

// One rank's part.
struct TraceShard {
  TraceMeta meta;
  std::vector<int64_t> step_N, token_index_N;
  std::vector<int32_t> token_id_N;
  std::vector<TraceLayer> layers;  // [L]

  int64_t tokens() const { return static_cast<int64_t>(step_N.size()); }
};

// A whole trace: shards[r] is rank r's.
struct Trace {
  std::string dir;
  std::vector<TraceShard> shards;

  const TraceMeta& meta() const { return shards.front().meta; }
  int64_t tokens() const;
};

// "rank-<r>.safetensors"
std::string trace_shard_name(int rank);

// Writes the shard atomically (safetensors_write). InvalidArgument when its arrays do not match
// its meta (a caller bug or an inconsistent recording).
Status write_trace_shard(const std::string& path, const TraceShard& shard);
// DIR/rank-<meta.rank>.safetensors, creating DIR.
Status write_trace_shard_to_dir(const std::string& dir, const TraceShard& shard);

// One shard, every check above that does not need the other shards.
StatusOr<TraceShard> read_trace_shard(const std::string& path);
// Every rank-<r>.safetensors under dir, cross-checked.
StatusOr<Trace> read_trace(const std::string& dir);

}  // namespace sy
