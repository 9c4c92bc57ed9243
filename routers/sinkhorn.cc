// sinkhorn: balanced assignment by Sinkhorn iterations for the CHOICE, softmax for the weights
// (Clark et al. 2022, "Unified Scaling Laws for Routed Language Models", S-BASE; Megatron-core's
// `sinkhorn` load balancing).
//
//   scores   s = W x (`weight` [E, D], the linear gate's name and layout)
//   choice   while training: the K largest entries of each row of the Sinkhorn-balanced matrix
//            A = diag(d0) exp(s) diag(d1), whose rows sum to 1/T and columns to 1/E (every
//            expert gets an equal share of the forward's T tokens); at inference and in eval:
//            the K largest p, as the linear router (Megatron-core does the same: Sinkhorn only
//            in training), so decoding one token at a time works.
//   weights  the chosen p = softmax(s) (renormalized only with norm_topk_prob)
// No gradient flows through the iterations (the choice is discrete); the weights, probs and
// scores carry it as for the linear router.
//
// Iterations (Megatron-core's, in double on the host): d0 = d1 = 1;
//   d0_t = (1/T) / (sum_e d1_e c_te + 1e-8),  d1_e = (1/E) / (sum_t d0_t c_te + 1e-8),
// with c = exp(s - max of row t) (an exact rescaling: the row factor absorbs it), until the mean
// |change of d1| is below kTolerance = 1e-4, at most kMaxIterations = 100 times (Megatron has no
// cap). Rows with a non-finite score leave the matrix out of balance; when any score is not
// finite the choice falls back to plain top-k of p.
//
// The balanced group is one forward call: in training one sequence (runtime/train/trainer.h), so
// P ranks choose exactly what 1 rank chooses.
#include <algorithm>
#include <cmath>

#include "routers/linear_scores.h"
#include "routers/registry.h"

namespace sy {
namespace {

constexpr double kTolerance = 1e-4;
constexpr int kMaxIterations = 100;
constexpr double kEps = 1e-8;

class SinkhornRouter final : public LinearScoresRouter {
 public:
  // flops_per_token: the gate's multiply-adds; the iterations (about 4 E multiply-adds per token
  // and iteration, training only) are not counted.
  explicit SinkhornRouter(const RouterConfig& cfg) : LinearScoresRouter(cfg) {}
  bool batch_dependent() const override { return training(); }
  bool takes_balance_bias() const override { return false; }  // it balances by its own iterations

 protected:
  void route(const float* x_TD, const int32_t* token_ids_T, int64_t T, RouterOutput* out) override {
    if (!training()) return Router::route(x_TD, token_ids_T, T, out);
    const int64_t E = cfg_.num_experts;
    compute_scores(x_TD, token_ids_T, T, out->logits_TE.ptr());
    out->finite = ops::all_finite(ctx(), out->logits_TE.ptr(), T * E);
    ops::softmax_rows(ctx(), out->logits_TE.ptr(), out->probs_TE.ptr(), T, E);
    // The matrix the choice ranks: balanced when the scores are finite, else p.
    const float* rank_TE = out->probs_TE.ptr();
    if (out->finite && T > 0) {
      balanced_TE_.resize({T, E}, mem());
      from_host(balanced_TE_.ptr(), balance(to_host(out->logits_TE.ptr(), T * E), T, E));
      rank_TE = balanced_TE_.ptr();
    }
    choose_by(rank_TE, T, cfg_.norm_topk_prob, out);
  }

 private:
  // diag(d0) exp(s) diag(d1) by the iterations above (finite s).
  static std::vector<float> balance(const std::vector<float>& s, int64_t T, int64_t E) {
    std::vector<double> c(s.size()), d0(static_cast<size_t>(T), 1.0),
        d1(static_cast<size_t>(E), 1.0), col(static_cast<size_t>(E));
    for (int64_t t = 0; t < T; ++t) {
      const float* st = s.data() + t * E;
      const float m = *std::max_element(st, st + E);
      for (int64_t e = 0; e < E; ++e) c[static_cast<size_t>(t * E + e)] = std::exp(st[e] - m);
    }
    for (int it = 0; it < kMaxIterations; ++it) {
      for (int64_t t = 0; t < T; ++t) {
        double r = 0;
        for (int64_t e = 0; e < E; ++e)
          r += d1[static_cast<size_t>(e)] * c[static_cast<size_t>(t * E + e)];
        d0[static_cast<size_t>(t)] = (1.0 / static_cast<double>(T)) / (r + kEps);
      }
      std::fill(col.begin(), col.end(), 0.0);
      for (int64_t t = 0; t < T; ++t)
        for (int64_t e = 0; e < E; ++e)
          col[static_cast<size_t>(e)] +=
              d0[static_cast<size_t>(t)] * c[static_cast<size_t>(t * E + e)];
      double err = 0;
      for (int64_t e = 0; e < E; ++e) {
        const double v = (1.0 / static_cast<double>(E)) / (col[static_cast<size_t>(e)] + kEps);
        err += std::fabs(v - d1[static_cast<size_t>(e)]);
        d1[static_cast<size_t>(e)] = v;
      }
      if (err / static_cast<double>(E) < kTolerance) break;
    }
    std::vector<float> a(s.size());
    for (int64_t t = 0; t < T; ++t)
      for (int64_t e = 0; e < E; ++e) {
        const size_t i = static_cast<size_t>(t * E + e);
        a[i] = static_cast<float>(d0[static_cast<size_t>(t)] * c[i] * d1[static_cast<size_t>(e)]);
      }
    return a;
  }

  Tensor balanced_TE_;
};

std::unique_ptr<Router> make_sinkhorn_router(const RouterConfig& cfg) {
  return std::make_unique<SinkhornRouter>(cfg);
}

}  // namespace

SY_REGISTER_ROUTER(sinkhorn, 95,
                   "s = W x; choice by Sinkhorn-balanced scores while training, weights softmax "
                   "(S-BASE, Megatron)",
                   make_sinkhorn_router, nullptr);

}  // namespace sy
