// mlp_hadamard: s = W_o (SiLU(W_g x) ⊙ (W_u x)), hidden H: two branches joined by an
// element-wise product (a gated MLP, as in the SwiGLU feed-forward). Parameters:
// gate_proj.weight W_g [H, D], up_proj.weight W_u [H, D], out.weight W_o [E, H]; no biases.
// The paper (docs/routers.md) reports structured, sparse routing for this router; the metrics
// measure that, nothing here assumes it.
#include "routers/registry.h"
#include "runtime/backend/ops.h"

namespace sy {
namespace {

class MlpHadamardRouter final : public Router {
 public:
  explicit MlpHadamardRouter(const RouterConfig& cfg) : Router(cfg), H_(cfg.router_hidden()) {
    Wg_ = add_param("gate_proj.weight", {H_, cfg.d_model});
    Wu_ = add_param("up_proj.weight", {H_, cfg.d_model});
    Wo_ = add_param("out.weight", {cfg.num_experts, H_});
    init_normal(Wg_, cfg.init_std);
    init_normal(Wu_, cfg.init_std);
    init_normal(Wo_, cfg.init_std);
  }
  // 2 x multiply-adds of the three GEMMs (2*D*H + H*E); SiLU and the product not counted.
  int64_t flops_per_token() const override {
    return 2 * (2 * cfg_.d_model * H_ + H_ * cfg_.num_experts);
  }

 protected:
  void compute_scores(const float* x_TD, const int32_t*, int64_t T, float* s_TE) override {
    x_ = x_TD;
    T_ = T;
    const int64_t D = cfg_.d_model, n = T * H_;
    gate_TH_.resize({T, H_}, mem());
    up_TH_.resize({T, H_}, mem());
    act_TH_.resize({T, H_}, mem());
    ops::linear_forward(ctx(), x_TD, Wg_->value.ptr(), gate_TH_.ptr(), T, D, H_);
    ops::linear_forward(ctx(), x_TD, Wu_->value.ptr(), up_TH_.ptr(), T, D, H_);
    ops::swiglu(ctx(), gate_TH_.ptr(), up_TH_.ptr(), act_TH_.ptr(), n);
    ops::linear_forward(ctx(), act_TH_.ptr(), Wo_->value.ptr(), s_TE, T, H_, cfg_.num_experts);
  }
  void backward_scores(const float* ds_TE, float* dx_TD) override {
    const int64_t D = cfg_.d_model, n = T_ * H_;
    Tensor dact_TH({T_, H_}, mem());
    ops::linear_backward(ctx(), act_TH_.ptr(), Wo_->value.ptr(), ds_TE, Wo_->grad.ptr(),
                         dact_TH.ptr(), T_, H_, cfg_.num_experts, /*accumulate_dx=*/false);
    // a = SiLU(g) * u:  dg = da * u * SiLU'(g),  du = da * SiLU(g)
    Tensor dgate_TH({T_, H_}, mem()), dup_TH({T_, H_}, mem());
    ops::swiglu_backward(ctx(), gate_TH_.ptr(), up_TH_.ptr(), dact_TH.ptr(), dgate_TH.ptr(),
                         dup_TH.ptr(), n);
    ops::linear_backward(ctx(), x_, Wg_->value.ptr(), dgate_TH.ptr(), Wg_->grad.ptr(), dx_TD, T_, D,
                         H_,
                         /*accumulate_dx=*/true);
    ops::linear_backward(ctx(), x_, Wu_->value.ptr(), dup_TH.ptr(), Wu_->grad.ptr(), dx_TD, T_, D,
                         H_,
                         /*accumulate_dx=*/true);
  }

 private:
  int64_t H_;
  Param* Wg_;  // [H, D]
  Param* Wu_;  // [H, D]
  Param* Wo_;  // [E, H]
  // The caller keeps x alive between forward and backward (the MoE layer owns it).
  const float* x_ = nullptr;
  int64_t T_ = 0;
  Tensor gate_TH_;  // W_g x of the last forward
  Tensor up_TH_;    // W_u x
  Tensor act_TH_;   // SiLU(gate) * up
};

std::unique_ptr<Router> make_mlp_hadamard_router(const RouterConfig& cfg) {
  return std::make_unique<MlpHadamardRouter>(cfg);
}

}  // namespace

SY_REGISTER_ROUTER(mlp_hadamard, 50, "s = W_o (SiLU(W_g x) * W_u x): gated MLP",
                   make_mlp_hadamard_router, nullptr);

}  // namespace sy
