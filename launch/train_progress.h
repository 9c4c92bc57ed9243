// Progress lines shared by the commands that train routers (train, study, infer --router).
#pragma once

#include <cstdint>
#include <vector>

#include <string>

#include "comm/communicator.h"
#include "runtime/model/model.h"
#include "runtime/train/distill.h"

namespace sy::launch {

// The routing of one training step over all ranks: drops and the worst MoE layer's max/mean
// expert load, from each layer's counters (MoeStepStats summed over the step's forwards)
// all-reduced once and put through the routing metrics' math.
struct StepRouting {
  double drop_fraction = 0;
  double imbalance = 0;
  std::vector<int> collapsed;     // MoE layers whose max/mean load passes the collapse threshold
  double collapse_threshold = 0;  // routers/metrics.h (the first layer's)
};
// COLLECTIVE (one all-reduce tagged "train.routing", step).
StepRouting GlobalRouting(const std::vector<MoeLayer*>& layers, Communicator& comm, int64_t step);

// A distillation progress callback: rank 0 prints "<prefix>distilled layer l (i/n): KL a -> b,
// t s, ETA e s" after each layer; other ranks print nothing.
DistillProgress distill_progress_printer(int rank, std::string prefix = "  ");

}  // namespace sy::launch
