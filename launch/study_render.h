// `switchyard study`'s figures and outputs (launch/cmd_study.cc runs the study):
//   - study_figures: one router's per-layer routing, load and traffic figures from the merged
//     load reports of its measured pass and from its routing trace replayed through the
//     runtime's capacity plan (runtime/project/projection.h);
//   - study.json (proto/study.proto's Study, canonical JSON), study.md (Markdown tables, one
//     column per router, ready to paste) and study.html (runtime/report/compare.h's page: one bar
//     chart per figure, loss curves, per-layer expert-load heat maps and traffic matrices).
#pragma once

#include <string>
#include <vector>

#include "proto/report.pb.h"
#include "proto/study.pb.h"
#include "runtime/core/status.h"
#include "runtime/project/projection.h"

namespace sy::launch {

// The mean over tokens of the distinct ranks a token's KEPT rows went to, per MoE layer, from
// the measured pass's trace (expert e on rank e / (E/P)): an expert-choice router offers each
// token to every expert, and only what the experts took moves.
std::vector<double> kept_ranks_per_token(const Trace& trace, int P);

// Fills out->layers (matched by position: the i-th MoE layer; the latency fields are kept)
// and out->overall from the merged report `cr` of the measured pass, its ranks per token
// (kept_ranks_per_token) and two replays of its trace at the pass's P, at capacity factors
// 1.0 and 1.25 (drops). BadInput when their layers do not line up.
Status study_figures(const switchyard::ClusterReport& cr,
                     const std::vector<double>& ranks_per_token, const RouterProjection& c100,
                     const RouterProjection& c125, double collapse_threshold,
                     switchyard::RouterStudy* out);

// The terminal summary: one line per router.
std::string study_text(const switchyard::Study& s);

// Writes dir/study.json, dir/study.md and dir/study.html (each atomically). The page and the
// tables read each router's load reports again (dir/<report_dir>).
Status write_study(const std::string& dir, const switchyard::Study& s);

}  // namespace sy::launch
