// sigmoid_bias: DeepSeek-V3's gate with auxiliary-loss-free balancing (DeepSeek-AI 2024,
// "DeepSeek-V3 Technical Report", section 2.1.2; Wang et al. 2024, "Auxiliary-Loss-Free Load
// Balancing Strategy for Mixture-of-Experts").
//
//   affinities a = sigmoid(W x)
//   choice     the K largest a_e + b_e (ties to the lower id): b [E] shifts the CHOICE only
//   weights    the chosen a, normalized over the chosen (always: norm_topk_prob is forced on)
//   scores     s = log a = log sigmoid(W x) (logits_TE), so probs_TE = softmax(s) = a / sum_e a_e:
//              the affinities as a distribution, and the weights are the chosen probabilities
//              renormalized. The interface's softmax, its backward, the auxiliary losses, the
//              metrics and distillation all apply unchanged.
//
// b (`bias`, [E], starts at 0) is not learned by gradient (Router::add_state: no grad, never
// touched by an optimizer). After every optimizer step the trainer calls after_step() with the
// step's load over every rank (the same on every rank) and (Router::after_step)
//   b_e += gamma * sign(mean_e' load_e' - load_e),
// gamma = kBiasRate = 0.001 (DeepSeek-V3's; RouterConfig::balance_rate, meant for the proportional
// update in score units, does not apply to this bias in affinity units),
// so an overloaded expert becomes less likely to be chosen and an idle one more. b is a
// parameter of the router, so checkpoints save it and a resume restores it bitwise.
// The ids of a token are ordered by a + b, not by probability. DeepSeek-V3's group-limited
// (node-limited) top-k is not implemented.
//
// Gradients: ds -> d(W x) = ds * (1 - a) (d log sigmoid(u) / du = 1 - sigmoid(u)); b gets none.
#include <cmath>

#include "routers/linear_scores.h"
#include "routers/registry.h"

namespace sy {
namespace {

// gamma of the bias update (DeepSeek-V3 used 0.001 for most of its training).
constexpr float kBiasRate = 0.001f;

class SigmoidBiasRouter final : public LinearScoresRouter {
 public:
  explicit SigmoidBiasRouter(const RouterConfig& cfg) : LinearScoresRouter(cfg) {
    cfg_.norm_topk_prob = true;  // the weights are the chosen affinities, normalized
    add_balance_bias("bias", kBiasRate, /*by_sign=*/true);
  }
  // Its own bias, in affinity units, is its balance bias; RouterConfig::balance_rate adds none.
  bool takes_balance_bias() const override { return false; }

 protected:
  // s = log sigmoid(W x); caches a = sigmoid(W x) on the host for the choice and the backward.
  void compute_scores(const float* x_TD, const int32_t* ids_T, int64_t T, float* s_TE) override {
    const int64_t E = cfg_.num_experts;
    LinearScoresRouter::compute_scores(x_TD, ids_T, T, s_TE);  // u = W x
    std::vector<float> s = to_host(s_TE, T * E);
    a_.resize(s.size());
    for (size_t i = 0; i < s.size(); ++i) {
      const float u = s[i];
      a_[i] = 1.0f / (1.0f + std::exp(-u));
      // log sigmoid(u) = -softplus(-u), without overflow for either sign.
      s[i] = u >= 0.0f ? -std::log1p(std::exp(-u)) : u - std::log1p(std::exp(u));
    }
    from_host(s_TE, s);
  }
  void backward_scores(const float* ds_TE, float* dx_TD) override {
    const int64_t E = cfg_.num_experts;
    std::vector<float> du = to_host(ds_TE, T_ * E);
    for (size_t i = 0; i < du.size(); ++i) du[i] *= 1.0f - a_[i];
    Tensor du_TE({T_, E}, mem());
    from_host(du_TE.ptr(), du);
    LinearScoresRouter::backward_scores(du_TE.ptr(), dx_TD);
  }
  void route(const float* x_TD, const int32_t* token_ids_T, int64_t T, RouterOutput* out) override {
    const int64_t E = cfg_.num_experts;
    compute_scores(x_TD, token_ids_T, T, out->logits_TE.ptr());
    out->finite = ops::all_finite(ctx(), out->logits_TE.ptr(), T * E);
    ops::softmax_rows(ctx(), out->logits_TE.ptr(), out->probs_TE.ptr(), T, E);
    // The choice: top-k of a + b.
    const std::vector<float> b = to_host(balance_b_->value.ptr(), E);
    std::vector<float> biased(a_.size());
    for (int64_t t = 0; t < T; ++t)
      for (int64_t e = 0; e < E; ++e) {
        const size_t i = static_cast<size_t>(t * E + e);
        biased[i] = a_[i] + b[static_cast<size_t>(e)];
      }
    biased_TE_.resize({T, E}, mem());
    from_host(biased_TE_.ptr(), biased);
    choose_by(biased_TE_.ptr(), T, /*normalize=*/true, out);
  }

 private:
  std::vector<float> a_;  // host: sigmoid(W x) of the last forward
};

std::unique_ptr<Router> make_sigmoid_bias_router(const RouterConfig& cfg) {
  return std::make_unique<SigmoidBiasRouter>(cfg);
}

}  // namespace

SY_REGISTER_ROUTER(sigmoid_bias, 80,
                   "log sigmoid(W x); top-k of sigmoid + b, b moved toward balance after each "
                   "step (DeepSeek-V3, aux-loss-free)",
                   make_sigmoid_bias_router, nullptr);

}  // namespace sy
