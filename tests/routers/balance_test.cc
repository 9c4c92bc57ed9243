// Balancing losses: gradients against central finite differences (losses are returned in
// double, so the checks are limited by the step), the uniform and degenerate corners
// (zero-initialized router, collapsed router), and a descent step that lowers the load imbalance.
#include "runtime/kernels/balance.h"

#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <vector>

#include "routers/metrics.h"
#include "routers/registry.h"
#include "runtime/core/rng.h"
#include "runtime/kernels/cpu_kernels.h"

namespace sy {
namespace {

std::vector<float> random_logits(int64_t T, int64_t E, float scale, uint64_t seed) {
  std::vector<float> s(static_cast<size_t>(T * E));
  Rng rng(seed);
  for (float& v : s) v = static_cast<float>(rng.normal()) * scale;
  return s;
}

struct Routed {
  std::vector<float> probs;
  std::vector<int32_t> ids;
};

Routed route(const std::vector<float>& logits, int64_t T, int64_t E, int64_t K) {
  Routed r;
  r.probs.resize(logits.size());
  r.ids.resize(static_cast<size_t>(T * K));
  std::vector<float> vals(static_cast<size_t>(T * K));
  softmax_rows(logits.data(), r.probs.data(), T, E);
  topk_rows(r.probs.data(), T, E, K, r.ids.data(), vals.data());
  return r;
}

// Central difference of f at x[i], using the step actually representable in float.
template <typename Vec>
double central_diff(Vec* x, size_t i, double h, const std::function<double()>& f) {
  const float x0 = (*x)[i];
  (*x)[i] = static_cast<float>(x0 + h);
  const double up = (*x)[i];
  const double fp = f();
  (*x)[i] = static_cast<float>(x0 - h);
  const double dn = (*x)[i];
  const double fm = f();
  (*x)[i] = x0;
  return (fp - fm) / (up - dn);
}

TEST(SwitchAuxLoss, GradientMatchesFiniteDifferences) {
  const int64_t T = 12, E = 6, K = 2;
  Routed r = route(random_logits(T, E, 1.5f, 7), T, E, K);
  std::vector<float> grad(static_cast<size_t>(T * E), 0.0f);
  const float alpha = 0.01f;
  switch_aux_loss(r.probs.data(), r.ids.data(), T, E, K, alpha, grad.data(), false);
  // f stays fixed (the ids do not move): exactly the gradient the function documents.
  auto loss = [&] {
    return switch_aux_loss(r.probs.data(), r.ids.data(), T, E, K, alpha, nullptr, false);
  };
  for (size_t i = 0; i < grad.size(); ++i)
    EXPECT_NEAR(central_diff(&r.probs, i, 1e-3, loss), grad[i], 1e-6 + 1e-5 * std::fabs(grad[i]))
        << "entry " << i;
}

TEST(SwitchAuxLoss, AccumulateAdds) {
  const int64_t T = 5, E = 4, K = 1;
  Routed r = route(random_logits(T, E, 1.0f, 3), T, E, K);
  std::vector<float> once(static_cast<size_t>(T * E), 0.0f), twice(once.size(), 0.5f);
  switch_aux_loss(r.probs.data(), r.ids.data(), T, E, K, 1.0f, once.data(), false);
  switch_aux_loss(r.probs.data(), r.ids.data(), T, E, K, 1.0f, twice.data(), true);
  for (size_t i = 0; i < once.size(); ++i) EXPECT_FLOAT_EQ(twice[i], once[i] + 0.5f);
}

TEST(SwitchAuxLoss, SequenceFormGradientAndReduction) {
  const int64_t S = 4, B = 3, T = S * B, E = 5, K = 2;
  Routed r = route(random_logits(T, E, 2.0f, 11), T, E, K);
  std::vector<float> grad(static_cast<size_t>(T * E), 0.0f);
  const float alpha = 0.1f;
  const double L =
      switch_aux_loss_seq(r.probs.data(), r.ids.data(), T, S, E, K, alpha, grad.data(), false);
  auto loss = [&] {
    return switch_aux_loss_seq(r.probs.data(), r.ids.data(), T, S, E, K, alpha, nullptr, false);
  };
  for (size_t i = 0; i < grad.size(); ++i)
    EXPECT_NEAR(central_diff(&r.probs, i, 1e-3, loss), grad[i], 1e-6 + 1e-5 * std::fabs(grad[i]));
  // The mean of the per-sequence batch losses.
  double mean = 0.0;
  for (int64_t b = 0; b < B; ++b)
    mean += switch_aux_loss(r.probs.data() + b * S * E, r.ids.data() + b * S * K, S, E, K, alpha,
                            nullptr, false);
  EXPECT_NEAR(L, mean / B, 1e-12);
  // S == T is the batch form.
  EXPECT_NEAR(switch_aux_loss_seq(r.probs.data(), r.ids.data(), T, T, E, K, alpha, nullptr, false),
              switch_aux_loss(r.probs.data(), r.ids.data(), T, E, K, alpha, nullptr, false), 1e-12);
}

TEST(SwitchAuxLoss, SequenceFormSeesImbalanceInsideSequences) {
  // Two sequences of 4 tokens, E=2, K=1: sequence 0 all to expert 0, sequence 1 all to
  // expert 1. The batch is balanced (loss alpha); each sequence is collapsed (loss ~2 alpha).
  const int64_t S = 4, T = 8, E = 2, K = 1;
  std::vector<float> probs(T * E);
  std::vector<int32_t> ids(T);
  for (int64_t t = 0; t < T; ++t) {
    const int32_t e = t < S ? 0 : 1;
    ids[t] = e;
    probs[t * E + e] = 1.0f;
    probs[t * E + 1 - e] = 0.0f;
  }
  EXPECT_DOUBLE_EQ(switch_aux_loss(probs.data(), ids.data(), T, E, K, 1.0f, nullptr, false), 1.0);
  EXPECT_DOUBLE_EQ(switch_aux_loss_seq(probs.data(), ids.data(), T, S, E, K, 1.0f, nullptr, false),
                   2.0);
}

TEST(SwitchAuxLoss, PerfectBalanceGivesAlphaExactly) {
  for (int64_t E : {2, 4, 8, 60}) {
    const int64_t K = 2, T = 3 * E;
    std::vector<float> probs(static_cast<size_t>(T * E), 1.0f / static_cast<float>(E));
    std::vector<int32_t> ids(static_cast<size_t>(T * K));
    for (int64_t t = 0; t < T; ++t)
      for (int64_t k = 0; k < K; ++k) ids[t * K + k] = static_cast<int32_t>((t + k) % E);
    const float alpha = 0.01f;
    const double L = switch_aux_loss(probs.data(), ids.data(), T, E, K, alpha, nullptr, false);
    if ((E & (E - 1)) == 0) {
      EXPECT_EQ(L, static_cast<double>(alpha)) << "E=" << E;  // 1/E is exact in float
    } else {
      EXPECT_NEAR(L, alpha, 1e-7 * alpha) << "E=" << E;  // float(1/60) is not
    }
  }
}

TEST(SwitchAuxLoss, DegenerateRouterCostsMore) {
  const int64_t T = 32, E = 8, K = 1;
  std::vector<float> balanced(T * E), collapsed(T * E);
  std::vector<int32_t> ids_bal(T), ids_col(T, 0);
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t e = 0; e < E; ++e) {
      balanced[t * E + e] = e == t % E ? 0.9f : 0.1f / (E - 1);
      collapsed[t * E + e] = e == 0 ? 0.9f : 0.1f / (E - 1);
    }
    ids_bal[t] = static_cast<int32_t>(t % E);
  }
  const double lb = switch_aux_loss(balanced.data(), ids_bal.data(), T, E, K, 1.0f, nullptr, 0);
  const double lc = switch_aux_loss(collapsed.data(), ids_col.data(), T, E, K, 1.0f, nullptr, 0);
  EXPECT_NEAR(lb, 1.0, 1e-6);
  EXPECT_NEAR(lc, 8.0 * 0.9, 1e-6);  // alpha * E * f_0 * P_0 = 8 * 1 * 0.9
  EXPECT_GT(lc, lb);
}

TEST(RouterZLoss, GradientMatchesFiniteDifferences) {
  const int64_t T = 6, E = 7;
  std::vector<float> s = random_logits(T, E, 3.0f, 5);
  s[3] = -INFINITY;  // a masked entry: zero gradient, no effect on the others' FD
  std::vector<float> grad(s.size(), 0.0f);
  const float coef = 1e-3f;
  router_z_loss(s.data(), T, E, coef, grad.data(), false);
  auto loss = [&] { return router_z_loss(s.data(), T, E, coef, nullptr, false); };
  for (size_t i = 0; i < s.size(); ++i) {
    if (std::isinf(s[i])) {
      EXPECT_EQ(grad[i], 0.0f);
      continue;
    }
    EXPECT_NEAR(central_diff(&s, i, 1e-3, loss), grad[i], 1e-9 + 1e-5 * std::fabs(grad[i]))
        << "entry " << i;
  }
}

TEST(RouterZLoss, HugeAndInfiniteLogitsStayFinite) {
  const int64_t T = 4, E = 4;
  const float inf = INFINITY;
  std::vector<float> s = {1e4f,  -1e4f, 1e4f,  0.0f,   // two tied maxima
                          -1e4f, -1e4f, -1e4f, -1e4f,  // all very negative
                          -inf,  2.0f,  -inf,  1.0f,   // -inf mixed with finite
                          -inf,  -inf,  -inf,  -inf};  // fully masked row
  std::vector<float> grad(s.size(), 7.0f);
  const double L = router_z_loss(s.data(), T, E, 1.0f, grad.data(), false);
  const double lse0 = 1e4 + std::log(2.0);
  const double lse1 = -1e4 + std::log(4.0);
  const double lse2 = 2.0 + std::log1p(std::exp(-1.0));
  EXPECT_NEAR(L, (lse0 * lse0 + lse1 * lse1 + lse2 * lse2) / T, 1e-6 * L);
  for (float g : grad) EXPECT_TRUE(std::isfinite(g));
  EXPECT_NEAR(grad[0], 2.0 * lse0 * 0.5 / T, 1e-3);
  EXPECT_EQ(grad[1], 0.0f);
  for (int e = 0; e < E; ++e) EXPECT_EQ(grad[12 + e], 0.0f);  // masked row written as 0
  EXPECT_EQ(grad[8], 0.0f);
}

// A linear router whose weights are all zero: uniform probabilities, every token on experts
// 0..K-1 (ties to the lower id). Losses and gradients must be finite.
TEST(BalanceLosses, ZeroInitializedRouterIsFinite) {
  RouterConfig cfg;
  cfg.d_model = 8;
  cfg.num_experts = 6;
  cfg.top_k = 2;
  cfg.init_std = 0.0f;
  auto router = make_router(cfg);
  ASSERT_TRUE(router.ok()) << router.status().ToString();
  const int64_t T = 10, E = 6, K = 2;
  std::vector<float> x = random_logits(T, cfg.d_model, 1.0f, 9);
  RouterOutput out;
  (*router)->forward(x.data(), nullptr, T, &out);
  std::vector<float> dprobs(T * E), dlogits(T * E);
  const double aux =
      switch_aux_loss(out.probs_TE.ptr(), out.topk_ids_TK.data(), T, E, K, 0.01f, dprobs.data(), 0);
  const double z = router_z_loss(out.logits_TE.ptr(), T, E, 1e-3f, dlogits.data(), false);
  EXPECT_NEAR(aux, 0.01, 1e-8);  // P uniform: alpha whatever f is
  EXPECT_NEAR(z, 1e-3 * std::log(6.0) * std::log(6.0), 1e-9);
  for (size_t i = 0; i < dprobs.size(); ++i) {
    EXPECT_TRUE(std::isfinite(dprobs[i]));
    EXPECT_TRUE(std::isfinite(dlogits[i]));
  }
  RouterGrads g;
  g.dprobs_TE = dprobs.data();
  g.dlogits_TE = dlogits.data();
  (*router)->backward(g);
  const Param& W = (*router)->params().front();
  EXPECT_TRUE(all_finite(W.grad.ptr(), W.grad.numel()));
}

// Through the linear router: the z-loss gradient on W against finite differences of W.
TEST(BalanceLosses, ZLossThroughLinearRouterMatchesFiniteDifferences) {
  RouterConfig cfg;
  cfg.d_model = 5;
  cfg.num_experts = 4;
  cfg.top_k = 2;
  cfg.init_std = 0.5f;
  auto router = make_router(cfg);
  ASSERT_TRUE(router.ok());
  Router& r = **router;
  const int64_t T = 6, E = 4;
  std::vector<float> x = random_logits(T, cfg.d_model, 1.0f, 21);
  RouterOutput out;
  r.forward(x.data(), nullptr, T, &out);
  std::vector<float> dlogits(T * E);
  router_z_loss(out.logits_TE.ptr(), T, E, 0.1f, dlogits.data(), false);
  RouterGrads g;
  g.dlogits_TE = dlogits.data();
  r.zero_grad();
  r.backward(g);
  Param& W = r.params().front();
  const std::vector<float> grad = W.grad.data.to_host();
  auto loss = [&] {
    RouterOutput o;
    r.forward(x.data(), nullptr, T, &o);
    return router_z_loss(o.logits_TE.ptr(), T, E, 0.1f, nullptr, false);
  };
  for (size_t i = 0; i < grad.size(); ++i)
    EXPECT_NEAR(central_diff(&W.value.data, i, 1e-2, loss), grad[i],
                2e-5 + 1e-3 * std::fabs(grad[i]));
}

// Router collapse: starting from a router that sends every token to expert 0, steps along the
// aux-loss gradient (through the router's backward) lower the aux loss and the max/mean load.
TEST(BalanceLosses, AuxGradientStepLowersImbalance) {
  RouterConfig cfg;
  cfg.d_model = 16;
  cfg.num_experts = 8;
  cfg.top_k = 2;
  cfg.init_std = 0.3f;
  auto router = make_router(cfg);
  ASSERT_TRUE(router.ok());
  Router& r = **router;
  const int64_t T = 256, E = 8, K = 2, D = 16;
  std::vector<float> x = random_logits(T, D, 1.0f, 33);
  for (int64_t t = 0; t < T; ++t) x[t * D] = 1.0f;  // a constant feature acts as a bias
  Param& W = r.params().front();
  W.value.at(0, 0) = 4.0f;  // expert 0 wins for every token
  W.value.at(1, 0) = 2.0f;

  auto step = [&](float lr, double* loss, RoutingMetrics* m) {
    RouterOutput out;
    r.forward(x.data(), nullptr, T, &out);
    std::vector<float> dprobs(T * E);
    *loss = switch_aux_loss(out.probs_TE.ptr(), out.topk_ids_TK.data(), T, E, K, 1.0f,
                            dprobs.data(), false);
    *m = routing_metrics_compute(out.probs_TE.ptr(), out.topk_ids_TK.data(), nullptr, T, E, K);
    RouterGrads g;
    g.dprobs_TE = dprobs.data();
    r.zero_grad();
    r.backward(g);
    for (int64_t i = 0; i < W.value.numel(); ++i) W.value.data[i] -= lr * W.grad.data[i];
    return out;
  };
  double loss0;
  RoutingMetrics m0;
  const RouterOutput out0 = step(/*lr=*/2.0f, &loss0, &m0);
  EXPECT_GT(m0.imbalance, 3.5);  // E/K = 4 is total collapse
  EXPECT_TRUE(m0.collapsed);

  // The step lowers the loss it differentiates (f held at the routing of step 0).
  RouterOutput moved;
  r.forward(x.data(), nullptr, T, &moved);
  EXPECT_LT(
      switch_aux_loss(moved.probs_TE.ptr(), out0.topk_ids_TK.data(), T, E, K, 1.0f, nullptr, false),
      loss0);

  // Repeated steps: loss and imbalance fall together while far from balance, then settle.
  double loss = loss0;
  RoutingMetrics m = m0;
  for (int i = 0; i < 30; ++i) {
    double l;
    RoutingMetrics mi;
    step(2.0f, &l, &mi);
    if (i < 8) {
      EXPECT_LT(l, loss) << "step " << i;
      EXPECT_LE(mi.imbalance, m.imbalance) << "step " << i;
    }
    loss = l;
    m = mi;
  }
  EXPECT_LT(m.imbalance, 1.25);
  EXPECT_FALSE(m.collapsed);
  EXPECT_NEAR(loss, 1.0, 0.01);  // alpha: the balanced value
}

}  // namespace
}  // namespace sy
