// What a routing trace (trace_format.h) says about load and communication, per MoE layer:
//   load per expert      assignments routed to each expert, and kept after capacity;
//   co-activation        for each pair of experts, the tokens that chose both (the top pairs);
//   send fan-out at P    with experts placed contiguously over P expert-parallel ranks (expert e
//                        on rank e / (E/P)), how many distinct ranks a token's kept assignments
//                        go to: the number of messages a token's row is copied into.
// `switchyard trace stats DIR [--ep P] [--json]` prints these (launch/cmd_trace.cc).
//
// Legend: E experts, K top-k, P expert-parallel ranks.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "runtime/core/status.h"
#include "runtime/trace/trace_format.h"

namespace sy {

struct ExpertPair {
  int32_t a = 0, b = 0;  // a < b
  int64_t tokens = 0;    // tokens that chose both
};

struct TraceLayerStats {
  int64_t layer = 0;        // MoE layer index in the trace
  int64_t model_layer = 0;  // the model's layer index
  int64_t tokens = 0;
  std::vector<int64_t> routed_E, kept_E;  // [E]
  int64_t routed = 0, kept = 0;
  double max_over_mean = 0;           // routed load: max / mean over experts (1 = perfectly even)
  std::vector<ExpertPair> top_pairs;  // by tokens, descending; ties by (a, b)
  int64_t pairs_nonzero = 0;          // pairs chosen together at least once
  // fanout_hist[f]: tokens whose kept assignments span f distinct ranks (f = 0 .. min(K, P);
  // 0: every assignment dropped).
  std::vector<int64_t> fanout_hist;
  double fanout_mean = 0;
};

struct TraceStats {
  int ep = 1;  // P
  std::vector<TraceLayerStats> layers;
};

// P must divide E (contiguous placement), else InvalidArgument; top: pairs kept per layer.
StatusOr<TraceStats> trace_stats(const Trace& t, int ep, int64_t top);

// Did two traces route the same tokens the same way, whatever the ranks and steps they ran in
// (a trace recorded at P = 2 against one at P = 1)? The same token indices (each at most once
// per trace: a single pass over the data), the same layers, E and K, and per token and layer the
// same token id, expert ids, weights (bitwise), kept flags, and probabilities when both hold
// them. "" when they agree, else the first difference; BadInput when a token occurs twice.
StatusOr<std::string> trace_diff(const Trace& a, const Trace& b);

std::string trace_stats_text(const Trace& t, const TraceStats& s);
std::string trace_stats_json(const Trace& t, const TraceStats& s);  // one JSON object

}  // namespace sy
