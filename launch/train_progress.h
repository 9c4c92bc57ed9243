// Progress lines shared by the commands that train routers (train, study, infer --router).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "comm/communicator.h"
#include "runtime/model/model.h"
#include "runtime/train/distill.h"
#include "runtime/train/trainer.h"

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

// Balance calibration (train and study --calibrate-balance): n passes of
// Trainer::balance_pass over batch(i) (this rank's sequences of pass i), each pass's status
// agreed over the ranks. *first / *last: the worst MoE layer's max/mean load of the first and the
// last pass; on_pass(i, worst) after each pass (rank-local; may be null). Returns 0, or the
// exit code of the first failed pass (every rank). Nothing runs when no router moves after a
// step (returns 0 with *first = *last = 0).
int balance_calibration(Trainer& trainer, Model& model, Communicator& comm, int64_t n,
                        const std::function<std::vector<std::vector<int32_t>>(int64_t)>& batch,
                        double* first, double* last,
                        const std::function<void(int64_t, double)>& on_pass = nullptr);
// True when some MoE layer's router moves after each step (a balance bias).
bool has_balance_bias(Model& model);

// A distillation progress callback: rank 0 prints "<prefix>distilled layer l (i/n): KL a -> b,
// t s, ETA e s" after each layer; other ranks print nothing.
DistillProgress distill_progress_printer(int rank, std::string prefix = "  ");

}  // namespace sy::launch
