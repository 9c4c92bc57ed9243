#include "runtime/train/trainer.h"

#include <cmath>

#include "runtime/kernels/loss.h"

namespace sy {

Trainer::Trainer(Qwen2MoeModel& model, Communicator* comm, const AdamWConfig& cfg)
    : model_(model), comm_(comm), opt_(cfg) {
  model_.set_replicated_tokens(false);
  model_.set_defer_moe_grad_allreduce(true);  // several backward() calls per step
}

Status Trainer::run(const std::vector<int32_t>& ids, float grad_scale, double* loss_sum,
                    int64_t* count) {
  const int64_t T = static_cast<int64_t>(ids.size()), V = model_.config().vocab_size;
  targets_.assign(ids.begin() + (T > 0 ? 1 : 0), ids.end());
  if (T > 0) targets_.push_back(-1);
  model_.reset_cache();
  SY_RETURN_IF_ERROR(model_.forward(ids.data(), T, &logits_, /*all_logits=*/true));
  int64_t n = 0;
  if (T > 0) *loss_sum += cross_entropy_sum(logits_.ptr(), targets_.data(), T, V, &n);
  *count += n;
  if (grad_scale <= 0) return Status::Ok();
  dlogits_.resize(logits_.data.size());
  if (T > 0)
    cross_entropy_backward(logits_.ptr(), targets_.data(), T, V, grad_scale, dlogits_.data());
  return model_.backward(dlogits_.data());
}

StatusOr<TrainStepResult> Trainer::step(const std::vector<std::vector<int32_t>>& seqs) {
  // The loss is a mean over the job's target tokens: count them first.
  int64_t mine = 0;
  for (const auto& s : seqs) mine += s.empty() ? 0 : static_cast<int64_t>(s.size()) - 1;
  int64_t total = mine;
  if (comm_) comm_->allreduce(&total, 1, ReduceOp::kSum, {"train.tokens"});
  if (total == 0) return InvalidArgument("train step: no target tokens on any rank");
  const float scale = 1.0f / static_cast<float>(total);

  model_.zero_grad();
  double loss_sum = 0;
  int64_t count = 0;
  for (const auto& s : seqs) SY_RETURN_IF_ERROR(run(s, scale, &loss_sum, &count));
  model_.allreduce_moe_grads();  // routers and shared experts: summed over the ranks once
  if (comm_) comm_->allreduce(&loss_sum, 1, ReduceOp::kSum, {"train.loss"});

  // Gradients: sum the replicated ones over the ranks, then the job-wide norm.
  std::vector<TrainParam> params;
  double sq_replicated = 0, sq_expert = 0;
  for (Qwen2MoeParam& p : model_.parameters()) {
    if (!p.grad) continue;
    if (comm_ && !p.expert && !p.moe_summed)
      comm_->allreduce(p.grad->ptr(), p.grad->numel(), ReduceOp::kSum, {"train.grad"});
    const double sq = AdamW::grad_sq_sum({{p.name, p.value, p.grad}});
    (p.expert ? sq_expert : sq_replicated) += sq;
    params.push_back({p.name, p.value, p.grad});
  }
  if (comm_) comm_->allreduce(&sq_expert, 1, ReduceOp::kSum, {"train.grad_norm"});
  TrainStepResult r;
  r.loss = loss_sum / static_cast<double>(total);
  r.tokens = total;
  r.grad_norm = std::sqrt(sq_replicated + sq_expert);
  r.lr = opt_.lr_at(opt_.step());
  r.clip = opt_.update(params, sq_replicated + sq_expert);
  return r;
}

StatusOr<double> Trainer::eval(const std::vector<std::vector<int32_t>>& seqs) {
  double loss_sum = 0;
  int64_t count = 0;
  for (const auto& s : seqs) SY_RETURN_IF_ERROR(run(s, 0.0f, &loss_sum, &count));
  if (comm_) {
    comm_->allreduce(&loss_sum, 1, ReduceOp::kSum, {"eval.loss"});
    comm_->allreduce(&count, 1, ReduceOp::kSum, {"eval.tokens"});
  }
  if (count == 0) return InvalidArgument("eval: no target tokens");
  return loss_sum / static_cast<double>(count);
}

}  // namespace sy
