// attention: the token asks a query of learned expert keys.
//   q_TH = x_TD W_q^T          query.weight W_q [H, D]
//   s_TE = sum over heads h of (K_e,h . q_h) / sqrt(H / num_heads)      keys K [E, H]
// The head split: H heads of H/num_heads each, their scores summed. Because every head
// shares the same scale, the sum of per-head dot products is the full dot product K_e . q:
// s = K q / sqrt(H / num_heads). So the heads change only the temperature of the scores, not
// what the router can express; we compute it as one GEMM (identical in exact arithmetic to
// looping over heads). With one head this is K q / sqrt(H).
#include <cmath>
#include <string>

#include "routers/registry.h"
#include "runtime/backend/ops.h"

namespace sy {
namespace {

Status validate_attention_router(const RouterConfig& cfg);  // H % num_heads == 0

class AttentionRouter final : public Router {
 public:
  explicit AttentionRouter(const RouterConfig& cfg) : Router(cfg), H_(cfg.router_hidden()) {
    SY_CHECK_OK(validate_attention_router(cfg));  // make_router checked it; direct calls too
    scale_ = 1.0f / std::sqrt(static_cast<float>(H_ / cfg.num_heads));
    Wq_ = add_param("query.weight", {H_, cfg.d_model});
    K_ = add_param("keys", {cfg.num_experts, H_});
    init_normal(Wq_, cfg.init_std);
    init_normal(K_, cfg.init_std);
  }
  // 2 x multiply-adds: the query (D*H) and the E dot products with the keys (H*E).
  int64_t flops_per_token() const override {
    return 2 * (cfg_.d_model * H_ + H_ * cfg_.num_experts);
  }

 protected:
  void compute_scores(const float* x_TD, const int32_t*, int64_t T, float* s_TE) override {
    x_ = x_TD;
    T_ = T;
    const int64_t E = cfg_.num_experts;
    q_TH_.resize({T, H_}, mem());
    ops::linear_forward(ctx(), x_TD, Wq_->value.ptr(), q_TH_.ptr(), T, cfg_.d_model, H_);
    // s_TE = scale * q_TH K_EH^T
    ops::gemm(ctx(), false, true, T, E, H_, scale_, q_TH_.ptr(), H_, K_->value.ptr(), H_, 0.0f,
              s_TE, E);
  }
  void backward_scores(const float* ds_TE, float* dx_TD) override {
    const int64_t E = cfg_.num_experts;
    // dK_EH += scale * ds^T q ;  dq_TH = scale * ds K
    ops::gemm(ctx(), true, false, E, H_, T_, scale_, ds_TE, E, q_TH_.ptr(), H_, 1.0f,
              K_->grad.ptr(), H_);
    Tensor dq_TH({T_, H_}, mem());
    ops::gemm(ctx(), false, false, T_, H_, E, scale_, ds_TE, E, K_->value.ptr(), H_, 0.0f,
              dq_TH.ptr(), H_);
    ops::linear_backward(ctx(), x_, Wq_->value.ptr(), dq_TH.ptr(), Wq_->grad.ptr(), dx_TD, T_,
                         cfg_.d_model, H_,
                         /*accumulate_dx=*/true);
  }

 private:
  int64_t H_;
  float scale_ = 1.0f;  // 1 / sqrt(head dim)
  Param* Wq_;           // [H, D]
  Param* K_;            // [E, H]
  // The caller keeps x alive between forward and backward (the MoE layer owns it).
  const float* x_ = nullptr;
  int64_t T_ = 0;
  Tensor q_TH_;  // queries of the last forward
};

Status validate_attention_router(const RouterConfig& cfg) {
  const int64_t H = cfg.router_hidden();
  if (cfg.num_heads < 1)
    return InvalidArgument("router '" + cfg.name + "': num_heads must be >= 1 (got " +
                           std::to_string(cfg.num_heads) + ")");
  if (H % cfg.num_heads != 0)
    return InvalidArgument("router '" + cfg.name + "': router hidden (" + std::to_string(H) +
                           ") must be divisible by num_heads (" + std::to_string(cfg.num_heads) +
                           ")");
  return Status::Ok();
}

std::unique_ptr<Router> make_attention_router(const RouterConfig& cfg) {
  return std::make_unique<AttentionRouter>(cfg);
}

}  // namespace

SY_REGISTER_ROUTER(attention, 20,
                   "s = K (W_q x) / sqrt(H/heads): learned expert keys, heads summed",
                   make_attention_router, validate_attention_router);

}  // namespace sy
