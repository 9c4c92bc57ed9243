// mlp: s = W_2 GELU(W_1 x + b_1) + b_2, hidden H, exact (erf) GELU. Parameters in the
// Hugging Face layout: fc1.weight [H, D], fc1.bias [H], fc2.weight [E, H], fc2.bias [E].
// The arithmetic lives in mlp_block.h, shared with the hybrid router.
#include "routers/mlp_block.h"
#include "routers/registry.h"

namespace sy {
namespace {

class MlpRouter final : public Router {
 public:
  explicit MlpRouter(const RouterConfig& cfg) : Router(cfg) {
    const int64_t H = cfg.router_hidden();
    Param* w1 = add_param("fc1.weight", {H, cfg.d_model});
    Param* b1 = add_param("fc1.bias", {H});
    Param* w2 = add_param("fc2.weight", {cfg.num_experts, H});
    Param* b2 = add_param("fc2.bias", {cfg.num_experts});
    init_normal(w1, cfg.init_std);
    init_normal(w2, cfg.init_std);  // biases start at zero
    mlp_.bind(w1, b1, w2, b2);
  }
  // 2 x multiply-adds of the two GEMMs (D*H + H*E); bias adds and GELU not counted.
  int64_t flops_per_token() const override { return 2 * mlp_.madds_per_token(); }

 protected:
  void compute_scores(const float* x_TD, const int32_t*, int64_t T, float* s_TE) override {
    x_ = x_TD;
    mlp_.forward(ctx(), x_TD, T, s_TE);
  }
  void backward_scores(const float* ds_TE, float* dx_TD) override {
    mlp_.backward(ctx(), x_, ds_TE, dx_TD);
  }

 private:
  MlpBlock mlp_;
  // The caller keeps x alive between forward and backward (the MoE layer owns it).
  const float* x_ = nullptr;
};

std::unique_ptr<Router> make_mlp_router(const RouterConfig& cfg) {
  return std::make_unique<MlpRouter>(cfg);
}

}  // namespace

SY_REGISTER_ROUTER(mlp, 30, "s = W_2 GELU(W_1 x + b_1) + b_2", make_mlp_router, nullptr);

}  // namespace sy
