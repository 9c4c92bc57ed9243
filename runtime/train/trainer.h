// One data-parallel + expert-parallel optimizer step of a Qwen2-MoE model (issue 5), and the
// held-out loss. Every rank of `comm` passes its OWN sequences (the same count on every rank;
// an empty sequence is allowed as padding); the model runs with replicated tokens off, so the
// MoE layers exchange every rank's tokens with the experts' owners.
//
//   loss      = sum over all ranks' target tokens of cross-entropy / their number
//   gradients: replicated parameters (embeddings, attention, norms, dense MLPs, LM head) are
//              all-reduced (summed) here; the MoE layers already sum their routers' and shared
//              experts' over the ranks; routed experts' stay local (each rank owns E/P);
//   clipping:  by the job-wide norm (replicated parts once, expert parts summed over ranks);
//   update:    AdamW (adamw.h) on every trained parameter; frozen ones are never touched.
// Targets are the next token of each sequence (the last position has none).
#pragma once

#include <cstdint>
#include <vector>

#include "comm/communicator.h"
#include "runtime/core/status.h"
#include "runtime/model/qwen2_moe.h"
#include "runtime/train/adamw.h"

namespace sy {

struct TrainStepResult {
  double loss = 0;       // mean over all ranks' target tokens
  int64_t tokens = 0;    // target tokens over all ranks
  double grad_norm = 0;  // before clipping
  double lr = 0;
  double clip = 1;  // factor applied
};

class Trainer {
 public:
  // comm may be null (one rank). The model must have been loaded with train != kNone and
  // comm (the same communicator).
  Trainer(Qwen2MoeModel& model, Communicator* comm, const AdamWConfig& cfg);

  // COLLECTIVE. seqs: this rank's sequences for the step (the same count on every rank).
  StatusOr<TrainStepResult> step(const std::vector<std::vector<int32_t>>& seqs);
  // COLLECTIVE. Mean next-token loss over every rank's sequences, no gradients kept.
  StatusOr<double> eval(const std::vector<std::vector<int32_t>>& seqs);

  AdamW& optimizer() { return opt_; }

 private:
  // Forward (+ backward when grad_scale > 0) of one sequence; adds its loss sum and count.
  Status run(const std::vector<int32_t>& ids, float grad_scale, double* loss_sum, int64_t* count);
  Qwen2MoeModel& model_;
  Communicator* comm_;
  AdamW opt_;
  Tensor logits_;
  std::vector<float> dlogits_;
  std::vector<int32_t> targets_;
};

}  // namespace sy
