// Distillation warm start of replaced routers (issue 5, "router replacement"): before router
// fine-tuning swaps a trained gate for another router kind, fit the new router (the student)
// to the old one (the teacher) on the hidden states the model really routes, so fine-tuning
// starts from the teacher's routing instead of from random assignments.
//
//   per MoE layer l, on the router inputs x_t (the RMS-normalized FFN input) of N tokens:
//     p_t = softmax(s_teacher(x_t)),  q_t = softmax(s_student(x_t))
//     loss = (1/N) sum_t KL(p_t || q_t) = (1/N) sum_t sum_e p_te (log p_te - log q_te)
//     d loss / d s_student,t = (q_t - p_t) / N      (passed to Router::backward as dlogits_TE)
//   N iterations of full-batch Adam (adamw.h: no weight decay, no clipping, cosine to 0.1 lr).
//
// Data and ranks: every rank runs its OWN sequences (the model in per-rank-tokens mode, as the
// Trainer runs it), N counts the tokens of every rank, and the student's parameter gradients
// are all-reduced (summed) over comm before each update, so every rank applies the same update
// and P ranks fit what one rank fits on all the sequences (up to the order of the float sums).
//
// Skipped (reported, not fitted): a hybrid student made from a linear teacher (it already
// routes exactly like it: mix g = 0, Qwen2MoeModel::replace_routers) and routers without a
// gradient (hash). Teachers may be any router, hash included (its p is 1/K on its K experts).
//
// Legend: T tokens (this rank), N tokens (all ranks), D hidden, E experts, K top-k.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "comm/communicator.h"
#include "routers/router.h"
#include "runtime/core/status.h"
#include "runtime/model/model.h"

namespace sy {

struct DistillConfig {
  int64_t iterations = 300;  // Adam steps per layer (full batch)
  double lr = 1e-2;          // peak; cosine decay to 0.1 lr
  // Router inputs fitted on, per rank: the first max_tokens tokens of its sequences (0 = all).
  // Equal splits across ranks keep P ranks equal to 1 rank.
  int64_t max_tokens = 4096;
  Status validate() const;
};

// Agreement of the student's routing with the teacher's, over all ranks' tokens.
struct RoutingAgreement {
  double kl = 0;            // mean over tokens of KL(p_teacher || q_student), nats
  double top1 = 0;          // fraction of tokens whose top-1 expert is the teacher's
  double topk_overlap = 0;  // mean |student top-K  ∩  teacher top-K| / K
};

struct DistillLayerReport {
  int layer = 0;
  RoutingAgreement before, after;
  int64_t iterations = 0;  // 0 when skipped
  std::string skipped;     // why no fitting happened (empty when fitted)
};

struct DistillReport {
  std::string teacher, student;  // router kinds
  int64_t tokens = 0;            // N: router inputs fitted on, all ranks
  int ranks = 1;
  DistillConfig config;
  double seconds = 0;  // capture + fitting, this rank
  std::vector<DistillLayerReport> layers;
};

// Fits `student` to `teacher` on x_TD (this rank's T router inputs; token_ids_T for routers
// that need them, else may be null). Both are HOST arrays (what the model's input capture
// gives); they are copied to where the routers run. COLLECTIVE over comm (may be null): every rank
// calls it with its own tokens (T may differ, also 0). Changes only the student's parameters; their
// gradients are left zero. `layer` names the layer in the report and collective tags.
StatusOr<DistillLayerReport> distill_router(Router& teacher, Router& student, const float* x_TD,
                                            const int32_t* token_ids_T, int64_t T,
                                            Communicator* comm, const DistillConfig& cfg,
                                            int layer = 0);

// The routing agreement of student with teacher on x_TD (COLLECTIVE over comm, like above).
RoutingAgreement measure_agreement(Router& teacher, Router& student, const float* x_TD,
                                   const int32_t* token_ids_T, int64_t T, Communicator* comm,
                                   int layer = 0);

// The train command's warm start. `model` was loaded with its checkpoint's routers (the
// teachers) and train != kNone (kRouters usually), with comm. Runs the model forward on this
// rank's sequences `my_seqs` (the same count on every rank; real token ids) capturing each MoE
// layer's router inputs (Model::set_moe_input_capture; a model without it is kInvalidArgument),
// then replaces every router with a fresh `router` (seed, hidden: Model::replace_routers) and
// fits each to its old one. Any Model: Qwen2-MoE decoders, BERT-MoE encoders (an encoder's
// sequences run whole, as its forward does). On return the model routes with
// the fitted students (config().router names them) and is in per-rank-tokens mode
// (set_replicated_tokens(false)), router gradients zero. COLLECTIVE over comm; a bad config or
// token id on any rank is an error on every rank.
// on_layer (may be null) is called on every rank after each layer is fitted, with the layers
// done and in all and the seconds so far (progress lines: distillation takes minutes).
using DistillProgress =
    std::function<void(const DistillLayerReport& layer, size_t done, size_t total, double seconds)>;
StatusOr<DistillReport> warm_start_routers(Model& model, Communicator* comm,
                                           const std::string& router, uint64_t seed, int64_t hidden,
                                           const std::vector<std::vector<int32_t>>& my_seqs,
                                           const DistillConfig& cfg,
                                           const DistillProgress& on_layer = nullptr);

// The report as text, one line per MoE layer; print_distill_report writes it to stdout on
// rank 0 of comm (every rank when comm is null).
std::string format_distill_report(const DistillReport& r);
void print_distill_report(const DistillReport& r, Communicator* comm);

}  // namespace sy
