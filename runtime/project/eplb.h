// A hierarchical expert load balancer in the style of DeepSeek's EPLB, for `switchyard project
// --placement eplb --redundant-experts R`: from the load per expert of a trace, replicate the
// experts with the highest load per replica (R extra copies in all), pack groups of experts onto
// nodes, then the replicas onto ranks, so that the projection can separate the imbalance
// replication can fix from the imbalance built into the router.
//
// Legend: E experts, P expert-parallel ranks, R redundant experts (replicas beyond one per
// expert).
#pragma once

#include <cstdint>
#include <vector>

#include "comm/placement.h"
#include "runtime/core/status.h"

namespace sy {

// load_E [E]: assignments routed to each expert (a trace's load statistics). P ranks in nodes of
// ranks_per_node (the last node may be partial), redundant >= 0 extra replicas; every rank gets
// (E + redundant) / P experts, so P must divide E + redundant. The result passes
// ExpertPlacement::validate(/*allow_replicas=*/true). InvalidArgument (exit 21) naming the
// setting when the sizes do not fit (P that does not divide E + R, negative R, R > E * (P - 1)).
StatusOr<ExpertPlacement> eplb_placement(const std::vector<int64_t>& load_E, int P,
                                         int ranks_per_node, int64_t redundant);

}  // namespace sy
