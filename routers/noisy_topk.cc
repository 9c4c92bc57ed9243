// noisy_topk: s = W x + eps * softplus(W_n x), eps ~ N(0, 1) per token and expert, only while
// training (Router::training()); at inference and in eval s = W x, exactly the linear router's
// scores (Shazeer et al. 2017, "Outrageously Large Neural Networks"). Softmax and top-k as usual.
//
// The noise is counter-based (runtime/core/rng.h): eps for token t, expert e is
// normal_at(hash(seed, layer), hash("noisy_topk/noise", step), t * E + e), with the layer and
// step of Router::set_position and t the token's index in the forward call. So the same step
// draws the same noise on every run, every rank layout and every backend, and a finite-difference
// test sees a fixed eps. In training each forward is one sequence (runtime/train/trainer.h), so t
// is the position in the sequence: P ranks route exactly like 1 rank; the sequences of one step
// share the noise by position (a correlation the choice does not care about).
//
// Parameters: `weight` [E, D] (the linear gate's name and layout, init N(0, init_std^2)) and
// `noise.weight` [E, D] (init 0, as in the paper: softplus(0) = ln 2 sets the starting noise).
// Gradients: through W x and, while training, through softplus(W_n x) with eps held fixed.
#include <cmath>

#include "routers/linear_scores.h"
#include "routers/registry.h"
#include "runtime/backend/ops.h"
#include "runtime/core/rng.h"

namespace sy {
namespace {

class NoisyTopkRouter final : public LinearScoresRouter {
 public:
  explicit NoisyTopkRouter(const RouterConfig& cfg) : LinearScoresRouter(cfg) {
    Wn_ = add_param("noise.weight", {cfg.num_experts, cfg.d_model});  // zero
  }
  // Both projections while training (2 x 2 E D), the gate's alone at inference.
  int64_t flops_per_token() const override {
    return (training() ? 4 : 2) * cfg_.num_experts * cfg_.d_model;
  }

 protected:
  void compute_scores(const float* x_TD, const int32_t* ids_T, int64_t T, float* s_TE) override {
    const int64_t D = cfg_.d_model, E = cfg_.num_experts;
    noisy_ = training();
    LinearScoresRouter::compute_scores(x_TD, ids_T, T, s_TE);  // W x
    if (!noisy_ || T == 0) return;
    Tensor n_TE({T, E}, mem());
    ops::linear_forward(ctx(), x_TD, Wn_->value.ptr(), n_TE.ptr(), T, D, E);
    n_ = to_host(n_TE.ptr(), T * E);
    std::vector<float> s = to_host(s_TE, T * E);
    eps_.resize(static_cast<size_t>(T * E));
    const uint64_t seed = hash_combine(cfg_.seed, static_cast<uint64_t>(layer_));
    const uint64_t stream = hash_combine(fnv1a64("noisy_topk/noise"), static_cast<uint64_t>(step_));
    for (size_t i = 0; i < s.size(); ++i) {
      eps_[i] = static_cast<float>(normal_at(seed, stream, i));
      s[i] += eps_[i] * softplus(n_[i]);
    }
    from_host(s_TE, s);
  }
  void backward_scores(const float* ds_TE, float* dx_TD) override {
    const int64_t D = cfg_.d_model, E = cfg_.num_experts;
    LinearScoresRouter::backward_scores(ds_TE, dx_TD);
    if (!noisy_ || T_ == 0) return;
    // d(W_n x) = ds * eps * sigmoid(W_n x), softplus' = sigmoid.
    std::vector<float> dn = to_host(ds_TE, T_ * E);
    for (size_t i = 0; i < dn.size(); ++i) dn[i] *= eps_[i] / (1.0f + std::exp(-n_[i]));
    Tensor dn_TE({T_, E}, mem());
    from_host(dn_TE.ptr(), dn);
    ops::linear_backward(ctx(), x_, Wn_->value.ptr(), dn_TE.ptr(), Wn_->grad.ptr(), dx_TD, T_, D, E,
                         /*accumulate_dx=*/true);
  }

 private:
  static float softplus(float v) { return v > 20.0f ? v : std::log1p(std::exp(v)); }

  Param* Wn_;
  bool noisy_ = false;          // the last forward drew noise
  std::vector<float> n_, eps_;  // host: W_n x and eps of the last noisy forward
};

std::unique_ptr<Router> make_noisy_topk_router(const RouterConfig& cfg) {
  return std::make_unique<NoisyTopkRouter>(cfg);
}

}  // namespace

SY_REGISTER_ROUTER(noisy_topk, 70,
                   "s = W x + eps * softplus(W_n x), eps ~ N(0,1) while training (Shazeer 2017)",
                   make_noisy_topk_router, nullptr);

}  // namespace sy
