// Which rank holds which experts. The runtime's default is contiguous: expert e on rank
// e / (E/P), E/P experts per rank. A placement file (`moe.placement`) gives any map with the
// same count per rank (the dispatcher sends a row to the rank holding its expert); projections
// (runtime/project/) may also place replicas: one expert on several ranks, which share its
// tokens. Files are JSON, parsed defensively like every untrusted input:
//   {"format": "switchyard.placement", "version": 1, "num_experts": E, "ranks": P,
//    "experts_of_rank": [[e, ...], ...]}        P lists of global expert ids (replicas repeat)
// Legend: E experts, P expert-parallel ranks.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "runtime/core/status.h"

namespace sy {

struct ExpertPlacement {
  int64_t num_experts = 0;  // E
  int ranks = 1;            // P
  // experts_of_rank[r]: the global expert ids rank r holds, in its local order (the runtime
  // lays a rank's local experts out in this order).
  std::vector<std::vector<int32_t>> experts_of_rank;

  // E/P experts per rank, in order (P must divide E; checked).
  static ExpertPlacement contiguous(int64_t E, int P);
  // ranks_of_expert()[e]: the ranks holding expert e (ascending).
  std::vector<std::vector<int32_t>> ranks_of_expert() const;
  int64_t replicas() const;  // placed copies beyond one per expert (0: no replicas)
  // Every id in [0, E), every expert placed at least once, no rank holding one expert twice;
  // with !allow_replicas also: each expert exactly once and E/P per rank (what the runtime
  // runs). InvalidArgument naming the first offence.
  Status validate(bool allow_replicas) const;
  bool operator==(const ExpertPlacement& o) const {
    return num_experts == o.num_experts && ranks == o.ranks && experts_of_rank == o.experts_of_rank;
  }
};

// The file format above; errors name the file and the field (BadInput, exit 22).
StatusOr<ExpertPlacement> read_placement_file(const std::string& path);
Status write_placement_file(const std::string& path, const ExpertPlacement& p);
std::string placement_to_json(const ExpertPlacement& p);

}  // namespace sy
