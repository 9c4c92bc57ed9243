// linear: s = W x, W in R^{E x D}. The gate of Switch, Mixtral and Qwen-MoE; the parameter
// `weight` has the layout of Hugging Face's `mlp.gate.weight` ([E, D]) and loads as is.
#include "routers/registry.h"
#include "runtime/backend/ops.h"

namespace sy {
namespace {

class LinearRouter final : public Router {
 public:
  explicit LinearRouter(const RouterConfig& cfg) : Router(cfg) {
    W_ = add_param("weight", {cfg.num_experts, cfg.d_model});
    init_normal(W_, cfg.init_std);
  }
  int64_t flops_per_token() const override { return 2 * cfg_.num_experts * cfg_.d_model; }
  const Param* linear_gate() const override { return W_; }

 protected:
  void compute_scores(const float* x_TD, const int32_t*, int64_t T, float* s_TE) override {
    x_ = x_TD;
    T_ = T;
    ops::linear_forward(ctx(), x_TD, W_->value.ptr(), s_TE, T, cfg_.d_model, cfg_.num_experts);
  }
  void backward_scores(const float* ds_TE, float* dx_TD) override {
    ops::linear_backward(ctx(), x_, W_->value.ptr(), ds_TE, W_->grad.ptr(), dx_TD, T_, cfg_.d_model,
                         cfg_.num_experts, /*accumulate_dx=*/true);
  }

 private:
  Param* W_;
  // The caller keeps x alive between forward and backward (the MoE layer owns it).
  const float* x_ = nullptr;
  int64_t T_ = 0;
};

std::unique_ptr<Router> make_linear_router(const RouterConfig& cfg) {
  return std::make_unique<LinearRouter>(cfg);
}

}  // namespace

SY_REGISTER_ROUTER(linear, 10, "s = W x (Switch / Mixtral / Qwen-MoE gate)", make_linear_router,
                   nullptr);

}  // namespace sy
