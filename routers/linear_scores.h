// The base of `linear` and of the routers whose scores start from the linear gate's, u = W x
// (`weight` [E, D], Hugging Face's `mlp.gate.weight` layout, init N(0, init_std^2)), and that
// differ in what they add to u (noisy_topk), how they map it (sigmoid_bias) or how they choose
// (expert_choice, sinkhorn). compute_scores() writes u and keeps x for backward_scores(), which
// takes du. linear_gate() stays null here (their scores are not exactly W x in every mode);
// `linear` returns W.
#pragma once

#include "routers/router.h"
#include "runtime/backend/ops.h"

namespace sy {

class LinearScoresRouter : public Router {
 public:
  explicit LinearScoresRouter(const RouterConfig& cfg) : Router(cfg) {
    W_ = add_param("weight", {cfg.num_experts, cfg.d_model});
    init_normal(W_, cfg.init_std);
  }
  int64_t flops_per_token() const override { return 2 * cfg_.num_experts * cfg_.d_model; }

 protected:
  void compute_scores(const float* x_TD, const int32_t*, int64_t T, float* u_TE) override {
    x_ = x_TD;
    T_ = T;
    ops::linear_forward(ctx(), x_TD, W_->value.ptr(), u_TE, T, cfg_.d_model, cfg_.num_experts);
  }
  void backward_scores(const float* du_TE, float* dx_TD) override {
    ops::linear_backward(ctx(), x_, W_->value.ptr(), du_TE, W_->grad.ptr(), dx_TD, T_, cfg_.d_model,
                         cfg_.num_experts, /*accumulate_dx=*/true);
  }

  Param* W_;
  // The caller keeps x alive between forward and backward (the MoE layer owns it).
  const float* x_ = nullptr;
  int64_t T_ = 0;
};

}  // namespace sy
