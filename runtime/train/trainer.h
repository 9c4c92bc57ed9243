// One data-parallel + expert-parallel optimizer step of a model (model.h: Qwen2-MoE decoders,
// BERT-MoE encoders), and the held-out loss. Every rank of `comm` passes its OWN sequences (the
// same count on every rank; an empty sequence is allowed as padding); the model runs with
// replicated tokens off, so the MoE layers exchange every rank's tokens with the experts' owners.
//
//   loss      = sum over all ranks' target tokens of cross-entropy / their number
//   gradients: replicated parameters (embeddings, attention, norms, dense MLPs, LM head) are
//              all-reduced (summed) here; the MoE layers already sum their routers' and shared
//              experts' over the ranks; routed experts' stay local (each rank owns E/P);
//   clipping:  by the job-wide norm (replicated parts once, expert parts summed over ranks);
//   update:    AdamW (adamw.h) on every trained parameter; frozen ones are never touched;
//              then Router::after_step for routers that move with the step's load (summed
//              over the ranks: the same on every rank).
// Routers run in training mode (Router::set_training) during step() only: not in eval() nor
// after step() returns.
// The objective: a decoder's next-token loss (targets: the next token of each sequence, the last
// position has none), or with set_masked_lm() BERT's masked-language-model loss (runtime/train/
// mlm.h: inputs masked, targets the original tokens at the chosen positions only). Either way a
// sequence becomes (inputs, targets with -1 = no loss there) and the rest is the same.
//
// Non-finite values (NaN, Inf). Before the optimizer update every rank checks, in the
// order the data flows: each MoE layer's router scores and the logits after every forward, the
// loss of every sequence, every trained gradient BEFORE the cross-rank sums (so the rank that
// produced a NaN is the one named, not every rank it spread to) and, when nothing was found
// locally, the summed gradients after them. Each rank keeps its first finding as one int64
// (stage, rank, item); one kMin all-reduce per step ("train.nonfinite") gives every rank the
// same first offender: the earliest stage, then the lowest rank, then the first layer or
// parameter. The decision depends on that record only (a NaN loss or norm after the sums is
// a fallback, identical on every rank), so all ranks decide the same at the same step:
//   kSkip: no update on any rank: gradients zeroed, AdamW's step count and moments NOT advanced
//          (the learning-rate schedule follows updates done, so it does not advance either);
//          TrainStepResult::skipped with the description. After max_consecutive_skips skipped
//          steps in a row (0 = no limit) the step fails as kStop does.
//   kStop:  step() returns kNonFinite (exit code 24) with the same message on every rank:
//          "non-finite <what> on rank R, layer L, step S[ (<parameter>[, after the all-reduce])]"
//          what: router scores | logits | loss | gradient (| "loss or gradient norm", the
//          fallback, rank 0); layer: the model layer (MoE router, experts, "model.layers.{i}."
//          or "bert.encoder.layer.{i}." parameters), -1 for logits, loss, embeddings, final
//          norm and LM / MLM head.
//
// Fault injection (comm/fault.h, SY_FAULT; or set_faults() in tests), at step index s on rank r:
//   nan_logits@rank=r,step=s           the LM logits of every forward of the step become NaN
//                                      (first entry), after the forward, before the loss.
//   nan_logits@rank=r,step=s,layer=l   MoE layer l's router scores become NaN on rank r: one
//                                      router weight of rank r's replica is NaN during the
//                                      step's forwards and restored bitwise after each, so the
//                                      NaN scores take the real path (top-k, exchange) and
//                                      weights are unchanged when the step is skipped.
//   inf_grad@rank=r,step=s[,layer=l]   after the last backward and BEFORE the all-reduces, the
//                                      first entry of MoE layer l's first router gradient (no
//                                      layer: the first MoE layer) on rank r becomes +Inf, so it
//                                      spreads to every rank as a real one would.
#pragma once

#include <algorithm>
#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "comm/communicator.h"
#include "comm/fault.h"
#include "runtime/core/status.h"
#include "runtime/model/model.h"
#include "runtime/train/adamw.h"
#include "runtime/train/mlm.h"

namespace sy {

// Seconds per part of one step() on this rank: laps of one clock, so the parts add up to
// total_s but for the few statements between them. Timing only: nothing is synchronized for it.
struct TrainStepTimes {
  double setup_s = 0;          // targets, zero_grad, per-sequence buffers, routers' load
  double forward_s = 0;        // Model::forward, every sequence
  double after_forward_s = 0;  // the set_after_forward callback (load reports, traces)
  double checks_s = 0;         // non-finite checks: router scores, logits, local gradients
  double loss_s = 0;           // cross-entropy over the vocabulary: the loss
  double loss_backward_s = 0;  // cross-entropy: its gradient dlogits
  double backward_s = 0;       // Model::backward, every sequence
  // Every all-reduce of the step and the waits in them: gradients (MoE-summed, replicated),
  // the token count, loss, norm and the non-finite agreement.
  double allreduce_s = 0;
  double optimizer_s = 0;  // the gradient norm, the AdamW update, Router::after_step
  double total_s = 0;
};

struct TrainStepResult {
  double loss = 0;       // mean over all ranks' target tokens (language-model loss only)
  double aux_loss = 0;   // the load-balancing loss added to it (set_router_aux_loss), all ranks
  int64_t tokens = 0;    // target tokens over all ranks
  double grad_norm = 0;  // before clipping
  double lr = 0;
  double clip = 1;   // factor applied
  int64_t step = 0;  // this step's index (Trainer::step_index() when it was called)
  // Non-finite values were found (on some rank) and the policy is kSkip: no update was made on
  // any rank. nonfinite describes the first offender (the message kStop would return).
  bool skipped = false;
  std::string nonfinite;
  TrainStepTimes times;  // this rank's
};

enum class NonFinitePolicy { kSkip, kStop };
const char* nonfinite_policy_name(NonFinitePolicy p);  // "skip", "stop"
// "skip" or "stop" (kInvalidArgument otherwise), for --on-nonfinite.
StatusOr<NonFinitePolicy> parse_nonfinite_policy(const std::string& text);

class Trainer {
 public:
  // comm may be null (one rank). The model must be loaded with train != kNone and comm (the
  // same communicator); an encoder needs set_masked_lm() before the first step.
  Trainer(Model& model, Communicator* comm, const AdamWConfig& cfg);

  // The masked-LM objective instead of the next-token one (validated: kInvalidArgument).
  Status set_masked_lm(const MlmConfig& c);
  bool masked_lm() const { return mlm_set_; }

  // COLLECTIVE. seqs: this rank's sequences for the step (the same count on every rank). Every
  // collective of the step, the MoE layers' included (Model::set_step), is tagged step_index().
  // seq_ids: each sequence's global index in the step (the masked LM draws from it); empty:
  // k * P + rank for this rank's k-th sequence (rank r holds sequences r, r + P, ...).
  StatusOr<TrainStepResult> step(const std::vector<std::vector<int32_t>>& seqs,
                                 const std::vector<int64_t>& seq_ids = {});
  // COLLECTIVE. Mean loss over every rank's sequences (the masked LM masks them as step -1),
  // no gradients kept. Its collectives are tagged step -1 (not a training step).
  StatusOr<double> eval(const std::vector<std::vector<int32_t>>& seqs);

  // COLLECTIVE. A balance-calibration pass: eval()'s forwards over seqs (inference mode, no
  // gradients, no optimizer step), then every router that moves after a step
  // (Router::after_step: balance biases) moves with this pass's load summed over the ranks.
  // With the weights fixed the biases settle where the load on such data is even, which a
  // training run whose hidden states still move each step does not reach. Returns the worst MoE
  // layer's max/mean expert load of the pass (before the move); 0 without such routers.
  StatusOr<double> balance_pass(const std::vector<std::vector<int32_t>>& seqs);

  AdamW& optimizer() { return opt_; }
  // Switch load-balancing loss (runtime/kernels/balance.h) with this coefficient in every MoE
  // layer, per sequence, weighted by its share of the step's tokens; 0 (default): none.
  void set_router_aux_loss(double coef) { aux_coef_ = coef; }
  // The routers' learning rate as a multiple of the schedule's (default 1): a linear gate's
  // logits move by about lr * sum |x| per Adam step, which at lr 2e-3 swings the favourite
  // expert of every token at once; a smaller scale lets the balancing loss spread the load.
  void set_router_lr_scale(double s) { router_lr_scale_ = s; }
  double router_aux_loss() const { return aux_coef_; }
  // Called after every training forward (each sequence of a step, on this rank), while the MoE
  // layers still hold that forward's routing: load reports and routing metrics.
  void set_after_forward(std::function<void()> f) { after_forward_ = std::move(f); }

  // What a step with non-finite values does (see the top of this file); default kSkip with no
  // limit on consecutive skips. Set the same on every rank.
  void set_nonfinite_policy(NonFinitePolicy p, int64_t max_consecutive_skips = 0) {
    policy_ = p;
    max_consecutive_skips_ = max_consecutive_skips;
  }
  NonFinitePolicy nonfinite_policy() const { return policy_; }
  // The index the next step() gets (faults and messages name it). It advances on every step()
  // that returns OK, skipped or not; set it when resuming (the checkpoint's step count).
  int64_t step_index() const { return step_index_; }
  void set_step_index(int64_t s) { step_index_ = s; }
  int64_t skipped_steps() const { return skipped_total_; }  // since construction
  // Tests: use these faults instead of SY_FAULT's (active_faults()) for this trainer.
  void set_faults(std::vector<FaultSpec> faults) {
    faults_ = std::move(faults);
    faults_set_ = true;
  }

 private:
  // This rank's first non-finite finding of the step, packed so that kMin over the ranks picks
  // the earliest stage, then the lowest rank, then the first layer / parameter.
  enum Stage : int64_t { kRouter = 0, kLogits, kLoss, kGradLocal, kGradSummed, kTotals };
  static constexpr int64_t kNoFinding = INT64_MAX;
  static int64_t nonfinite_code(Stage stage, int rank, int64_t item);
  void note_nonfinite(Stage stage, int64_t item) {
    nonfinite_ = std::min(nonfinite_, nonfinite_code(stage, rank(), item));
  }
  std::string describe_nonfinite(int64_t code, const std::vector<ModelParam>& params) const;
  int rank() const { return comm_ ? comm_->rank() : 0; }
  // The first fault of `kind` for this rank at this step, any layer; nullptr when none.
  const FaultSpec* fault(FaultKind kind) const;
  void inject_inf_grad(const FaultSpec& f, std::vector<ModelParam>& params);

  // Sequence k of this rank's seqs as the objective sees it: inputs and targets (-1: no loss).
  void make_targets(const std::vector<int32_t>& ids, int64_t step, int64_t seq,
                    std::vector<int32_t>* inputs, std::vector<int32_t>* targets) const;
  // Every MoE layer's router: Router::set_training (steps: true, eval: false).
  void set_routers_training(bool training);
  // The counters of every MoE layer whose router moves after a step (empty for the others).
  std::vector<std::vector<int64_t>> router_loads_before();
  // After an optimizer update: Router::after_step with the step's load summed over the ranks,
  // for the layers whose counters were taken before the step (load_before[i] non-empty).
  // Returns the worst such layer's max/mean load (0: none).
  double routers_after_step(const std::vector<std::vector<int64_t>>& load_before);
  // Forward (+ backward when grad_scale > 0) of one sequence; adds its loss sum and count.
  // check: record non-finite router scores, logits and loss (training steps).
  // times: the step's parts, added to (null: not timed).
  Status run(const std::vector<int32_t>& ids, const std::vector<int32_t>& targets, float grad_scale,
             double* loss_sum, int64_t* count, bool check = false, TrainStepTimes* times = nullptr);
  Model& model_;
  Communicator* comm_;
  AdamW opt_;
  NonFinitePolicy policy_ = NonFinitePolicy::kSkip;
  int64_t max_consecutive_skips_ = 0;
  int64_t step_index_ = 0, skipped_total_ = 0, skipped_in_row_ = 0;
  int64_t nonfinite_ = kNoFinding;  // this step's local finding (nonfinite_code)
  std::vector<FaultSpec> faults_;
  bool faults_set_ = false;
  std::function<void()> after_forward_;
  double router_lr_scale_ = 1.0;
  double aux_coef_ = 0, aux_sum_ = 0;
  Tensor logits_;
  DeviceArray<float> dlogits_;  // where the model runs
  MlmConfig mlm_;
  bool mlm_set_ = false;
  std::vector<std::vector<int32_t>> inputs_, targets_;  // host, one per sequence of the step
  DeviceArray<int32_t> targets_dev_;                    // where the model runs
};

}  // namespace sy
