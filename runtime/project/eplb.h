// EPLB: a hierarchical expert load balancer in the style of DeepSeek's (github.com/deepseek-ai/
// EPLB, eplb.py), for `switchyard project --placement eplb` and, without replicas, for a
// `moe.placement` file the runtime can run. From the load of each expert (the trace's
// assignments per expert) it
//   1. packs experts onto nodes, E / nodes each, balancing the nodes' loads;
//   2. within each node, adds the node's share of the R redundant replicas one at a time to the
//      expert with the highest load per copy (at most one copy per rank of the node);
//   3. packs the node's copies onto its ranks, (E + R) / P each, balancing load per rank
//      (a copy carries load / copies), never two copies of one expert on one rank.
// Each packing is greedy in order of decreasing load (longest processing time first) onto the
// least loaded bin with room. Deterministic: ties go to the lower expert, node and rank id.
// With R = 0 the result is a balanced permutation (validate(false) passes); with R > 0,
// validate(true). Experts are their own groups (no group-limited routing here); when the nodes
// do not divide E, step 1 is skipped and all ranks form one pool, as eplb.py does.
// Legend: E experts, P ranks, R redundant replicas.
#pragma once

#include <cstdint>
#include <vector>

#include "comm/placement.h"
#include "runtime/core/status.h"

namespace sy {

// load_E [E]: load per expert (>= 0). P ranks, ranks_per_node per node (P <= ranks_per_node is
// one node of P ranks; otherwise ranks_per_node must divide P). redundant: R >= 0 extra copies,
// with P | (E + R) and at most ranks_per_node copies of an expert. InvalidArgument otherwise.
StatusOr<ExpertPlacement> eplb_placement(const std::vector<int64_t>& load_E, int P,
                                         int ranks_per_node, int64_t redundant);

}  // namespace sy
