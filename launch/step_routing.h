// The routing of one training step over all ranks, for progress lines (train, study): drops
// and the worst MoE layer's max/mean expert load, from each layer's counters (MoeStepStats
// summed over the step's forwards) all-reduced once and put through the routing metrics' math.
#pragma once

#include <cstdint>
#include <vector>

#include "comm/communicator.h"
#include "runtime/model/model.h"

namespace sy::launch {

struct StepRouting {
  double drop_fraction = 0;
  double imbalance = 0;
  std::vector<int> collapsed;     // MoE layers whose max/mean load passes the collapse threshold
  double collapse_threshold = 0;  // routers/metrics.h (the first layer's)
};
// COLLECTIVE (one all-reduce tagged "train.routing", step).
StepRouting GlobalRouting(const std::vector<MoeLayer*>& layers, Communicator& comm, int64_t step);

}  // namespace sy::launch
