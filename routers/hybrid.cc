// hybrid: s = W x + g * MLP(x), MLP(x) = W_2 GELU(W_1 x + b_1) + b_2 (mlp_block.h).
// `weight` [E, D] has the name and layout of the linear router's weight, and the scalar
// g = `mix` [1] starts at 0, so a hybrid made from a trained linear gate (init_from(gate), or
// set_param("weight", W)) routes exactly like it at step 0: W x + 0 * m == W x bitwise for
// finite m, computed by the same linear_forward call as the linear router. The MLP weights
// are still drawn at random, so dL/dg = sum ds * MLP(x) is nonzero and g can move off 0
// (while g == 0 the MLP parameters receive zero gradient).
#include "routers/mlp_block.h"
#include "routers/registry.h"
#include "runtime/backend/ops.h"

namespace sy {
namespace {

class HybridRouter final : public Router {
 public:
  explicit HybridRouter(const RouterConfig& cfg) : Router(cfg) {
    const int64_t H = cfg.router_hidden();
    W_ = add_param("weight", {cfg.num_experts, cfg.d_model});
    Param* w1 = add_param("fc1.weight", {H, cfg.d_model});
    Param* b1 = add_param("fc1.bias", {H});
    Param* w2 = add_param("fc2.weight", {cfg.num_experts, H});
    Param* b2 = add_param("fc2.bias", {cfg.num_experts});
    mix_ = add_param("mix", {1});  // g = 0
    init_normal(W_, cfg.init_std);
    init_normal(w1, cfg.init_std);
    init_normal(w2, cfg.init_std);  // biases start at zero
    mlp_.bind(w1, b1, w2, b2);
  }
  // 2 x multiply-adds of the linear gate (E*D) and the MLP (D*H + H*E); the g * m add, the
  // biases and GELU are not counted.
  int64_t flops_per_token() const override {
    return 2 * (cfg_.num_experts * cfg_.d_model + mlp_.madds_per_token());
  }
  // From a linear gate: its W, g = 0 (the header comment: bitwise its routing).
  bool init_from(const Router& other) override {
    const Param* w = other.linear_gate();
    if (!w || w->value.shape != W_->value.shape) return false;
    W_->value.data = w->value.data;  // keeps this router's memory
    mix_->value.zero();
    return true;
  }
  bool routes_like(const Router& other) const override {
    const Param* w = other.linear_gate();
    return w && mix_->value.data.to_host()[0] == 0.0f && w->value.data == W_->value.data;
  }

 protected:
  void compute_scores(const float* x_TD, const int32_t*, int64_t T, float* s_TE) override {
    x_ = x_TD;
    T_ = T;
    const int64_t E = cfg_.num_experts;
    m_TE_.resize({T, E}, mem());
    mlp_.forward(ctx(), x_TD, T, m_TE_.ptr());
    ops::linear_forward(ctx(), x_TD, W_->value.ptr(), s_TE, T, cfg_.d_model, E);
    // s += g m, g read where it lives (no host round trip).
    ops::axpy(ctx(), mix_->value.ptr(), m_TE_.ptr(), s_TE, T * E, /*accumulate=*/true);
  }
  void backward_scores(const float* ds_TE, float* dx_TD) override {
    const int64_t E = cfg_.num_experts, n = T_ * E;
    ops::linear_backward(ctx(), x_, W_->value.ptr(), ds_TE, W_->grad.ptr(), dx_TD, T_, cfg_.d_model,
                         E,
                         /*accumulate_dx=*/true);
    // dg += ds . m (a sum over T*E terms, in double); dm = g ds.
    ops::dot_add(ctx(), ds_TE, m_TE_.ptr(), n, mix_->grad.ptr());
    Tensor dm_TE({T_, E}, mem());
    ops::axpy(ctx(), mix_->value.ptr(), ds_TE, dm_TE.ptr(), n, /*accumulate=*/false);
    mlp_.backward(ctx(), x_, dm_TE.ptr(), dx_TD);
  }

 private:
  Param* W_;    // [E, D]
  Param* mix_;  // [1]
  MlpBlock mlp_;
  // The caller keeps x alive between forward and backward (the MoE layer owns it).
  const float* x_ = nullptr;
  int64_t T_ = 0;
  Tensor m_TE_;  // MLP(x) of the last forward
};

std::unique_ptr<Router> make_hybrid_router(const RouterConfig& cfg) {
  return std::make_unique<HybridRouter>(cfg);
}

}  // namespace

SY_REGISTER_ROUTER(hybrid, 40, "s = W x + g * MLP(x), g learned from 0 (starts as the linear gate)",
                   make_hybrid_router, nullptr);

}  // namespace sy
