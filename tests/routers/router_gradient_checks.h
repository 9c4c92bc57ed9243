// The generic gradient checks every learned router must pass: the analytic backward
// (parameters and x) against central finite differences of a scalar loss through the whole
// router (scores, softmax, top-k, optional renormalization):
//   L = sum c1 * topk_weights + sum c2 * probs + sum c3 * logits,
// with fixed random coefficients fed to backward as dweights_TK = c1, dprobs_TE = c2,
// dlogits_TE = c3; and backward with and without dx, accumulating.
//
// Defines the parameterized suite RouterGradientTest: include it in one source file of a test
// executable and instantiate it there, e.g. with default_grad_cases({"name"})
// (tests/routers/router_gradients_test.cc: every registered router; toy_router_test.cc).
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <ostream>
#include <string>
#include <vector>

#include "routers/registry.h"
#include "runtime/core/rng.h"

namespace sy {
namespace {

// Small shapes: D hidden, E experts, K top-k, H router hidden, T tokens.
constexpr int64_t kD = 6, kE = 5, kK = 2, kH = 4, kT = 3;
// Central differences with step 1e-3 on fp32 values. The loss is O(1) and its terms are
// rounded at ~1e-7 relative, so the difference quotient carries ~1e-4 of noise plus O(h^2)
// truncation; we accept |analytic - fd| <= 2e-3 + 2e-2 * max(|analytic|, |fd|).
constexpr float kStep = 1e-3f;
constexpr double kAbsTol = 2e-3, kRelTol = 2e-2;
// Tokens are redrawn until the K-th and (K+1)-th probabilities differ by at least this, so
// a perturbation of size kStep cannot change the chosen experts; coordinates where the ids
// change anyway are skipped and counted (and must stay rare).
constexpr float kMinMargin = 0.02f;

struct GradCase {
  std::string label;
  std::string router;
  int64_t num_heads = 1;
  float mix = 0.0f;  // hybrid only
  bool norm_topk_prob = false;
  bool training = false;  // Router::set_training (noise, balancing iterations)
};

// gtest prints the case by its label rather than as bytes.
void PrintTo(const GradCase& c, std::ostream* os) {
  *os << c.label;
}
// The test name suffix: the label.
inline std::string grad_case_name(const ::testing::TestParamInfo<GradCase>& info) {
  return info.param.label;
}

RouterConfig make_config(const GradCase& c) {
  RouterConfig cfg;
  cfg.name = c.router;
  cfg.d_model = kD;
  cfg.num_experts = kE;
  cfg.top_k = kK;
  cfg.hidden = kH;
  cfg.num_heads = c.num_heads;
  cfg.norm_topk_prob = c.norm_topk_prob;
  return cfg;
}

std::vector<float> random_vec(int64_t n, float std, uint64_t stream) {
  std::vector<float> v(static_cast<size_t>(n));
  fill_normal(v.data(), n, std, /*seed=*/77, stream);
  return v;
}

// Gap between the K-th and (K+1)-th largest probability of each token; +inf when K == E.
float min_topk_margin(const RouterOutput& out, int64_t t) {
  if (out.K >= out.E) return INFINITY;
  std::vector<float> p(out.probs_TE.row(t), out.probs_TE.row(t) + out.E);
  std::sort(p.begin(), p.end(), std::greater<float>());
  return p[static_cast<size_t>(out.K - 1)] - p[static_cast<size_t>(out.K)];
}

class RouterGradientTest : public ::testing::TestWithParam<GradCase> {
 protected:
  void SetUp() override {
    const GradCase& c = GetParam();
    auto made = make_router(make_config(c));
    ASSERT_TRUE(made.ok()) << made.status().ToString();
    router_ = std::move(made.value());
    router_->set_training(c.training);
    // O(1) weights (init_std 0.02 would make every score ~0 and the check trivial); biases
    // nonzero too so the forward exercises them.
    uint64_t stream = 1;
    for (Param& p : router_->params()) p.value.data = random_vec(p.value.numel(), 0.5f, stream++);
    if (Param* mix = router_->find_param("mix")) mix->value.data[0] = c.mix;

    K_ = router_->slots_per_token();  // E when the experts choose (every token offered)
    c1_ = random_vec(kT * K_, 1.0f, 101);
    c2_ = random_vec(kT * kE, 1.0f, 102);
    c3_ = random_vec(kT * kE, 1.0f, 103);

    // Redraw each token until its top-k choice has a clear margin (tokens are independent).
    x_ = random_vec(kT * kD, 1.0f, 200);
    for (int64_t t = 0; t < kT; ++t) {
      for (uint64_t attempt = 0;; ++attempt) {
        RouterOutput out;
        router_->forward(x_.data(), nullptr, kT, &out);
        if (min_topk_margin(out, t) >= kMinMargin) break;
        ASSERT_LT(attempt, 1000u) << "no token with a clear top-k margin";
        std::vector<float> row = random_vec(kD, 1.0f, 1000 + 100 * t + attempt);
        std::copy(row.begin(), row.end(), x_.begin() + t * kD);
      }
    }
  }

  double loss(const float* x, std::vector<int32_t>* ids) {
    RouterOutput out;
    router_->forward(x, nullptr, kT, &out);
    if (ids) *ids = out.topk_ids_TK;
    double L = 0.0;
    for (int64_t i = 0; i < kT * K_; ++i) L += double(c1_[i]) * out.topk_weights_TK.data[i];
    for (int64_t i = 0; i < kT * kE; ++i) L += double(c2_[i]) * out.probs_TE.data[i];
    for (int64_t i = 0; i < kT * kE; ++i) L += double(c3_[i]) * out.logits_TE.data[i];
    return L;
  }

  // Central difference in *v; returns false when the chosen experts change under it.
  bool finite_difference(float* v, const std::vector<int32_t>& base_ids, double* fd) {
    const float saved = *v;
    std::vector<int32_t> ids_plus, ids_minus;
    *v = saved + kStep;
    const double Lp = loss(x_.data(), &ids_plus);
    *v = saved - kStep;
    const double Lm = loss(x_.data(), &ids_minus);
    *v = saved;
    *fd = (Lp - Lm) / (2.0 * kStep);
    return ids_plus == base_ids && ids_minus == base_ids;
  }

  void expect_close(double analytic, double fd, const std::string& what) {
    const double tol = kAbsTol + kRelTol * std::max(std::fabs(analytic), std::fabs(fd));
    EXPECT_NEAR(analytic, fd, tol) << what;
  }

  std::unique_ptr<Router> router_;
  int64_t K_ = kK;  // slots per token of the router's output
  std::vector<float> x_, c1_, c2_, c3_;
};

TEST_P(RouterGradientTest, MatchesFiniteDifferences) {
  // Analytic: dx starts at 0.25 to check that backward accumulates into it.
  constexpr float kDxFill = 0.25f;
  router_->zero_grad();
  RouterOutput out;
  router_->forward(x_.data(), nullptr, kT, &out);
  const std::vector<int32_t> base_ids = out.topk_ids_TK;
  std::vector<float> dx(static_cast<size_t>(kT * kD), kDxFill);
  RouterGrads g;
  g.dweights_TK = c1_.data();
  g.dprobs_TE = c2_.data();
  g.dlogits_TE = c3_.data();
  g.dx_TD = dx.data();
  router_->backward(g);

  int checked = 0, skipped = 0;
  double grad_mass = 0.0;
  for (Param& p : router_->params()) {
    if (p.grad.numel() == 0) continue;  // state moved without gradients (Router::add_state)
    const Tensor analytic = p.grad;
    for (int64_t i = 0; i < p.value.numel(); ++i) {
      double fd = 0.0;
      if (!finite_difference(&p.value.data[i], base_ids, &fd)) {
        ++skipped;
        continue;
      }
      ++checked;
      grad_mass += std::fabs(analytic.data[i]);
      expect_close(analytic.data[i], fd, p.name + "[" + std::to_string(i) + "]");
    }
  }
  for (int64_t i = 0; i < kT * kD; ++i) {
    double fd = 0.0;
    if (!finite_difference(&x_[i], base_ids, &fd)) {
      ++skipped;
      continue;
    }
    ++checked;
    expect_close(dx[i] - kDxFill, fd, "x[" + std::to_string(i) + "]");
  }
  EXPECT_GT(grad_mass, 1e-3) << "all parameter gradients ~0: the check would be vacuous";
  EXPECT_LE(skipped * 20, checked + skipped) << "too many coordinates changed the top-k choice";
  RecordProperty("checked", checked);
  RecordProperty("skipped", skipped);

  // At mix = 0 the MLP branch gets no gradient, but g itself must (else it never moves).
  if (const Param* mix = router_->find_param("mix"); mix && GetParam().mix == 0.0f) {
    EXPECT_GT(std::fabs(mix->grad.data[0]), 1e-4f);
  }
}

TEST_P(RouterGradientTest, NullDxGivesSameParamGradsAndGradsAccumulate) {
  RouterGrads g;
  g.dweights_TK = c1_.data();
  g.dprobs_TE = c2_.data();
  g.dlogits_TE = c3_.data();
  std::vector<float> dx(static_cast<size_t>(kT * kD), 0.0f);
  RouterOutput out;
  router_->zero_grad();
  router_->forward(x_.data(), nullptr, kT, &out);
  g.dx_TD = dx.data();
  router_->backward(g);
  std::vector<Tensor> with_dx;
  for (const Param& p : router_->params()) with_dx.push_back(p.grad);

  router_->zero_grad();
  router_->forward(x_.data(), nullptr, kT, &out);
  g.dx_TD = nullptr;
  router_->backward(g);
  size_t j = 0;
  for (const Param& p : router_->params()) EXPECT_EQ(p.grad.data, with_dx[j++].data) << p.name;

  router_->backward(g);  // a second backward adds the same amount again
  j = 0;
  for (const Param& p : router_->params()) {
    const Tensor& once = with_dx[j++];
    for (int64_t i = 0; i < p.grad.numel(); ++i)
      EXPECT_NEAR(p.grad.data[i], 2.0f * once.data[i], 1e-5f + 1e-5f * std::fabs(once.data[i]))
          << p.name << "[" << i << "]";
  }
}

// Each case without and with norm_topk_prob (labels get _nonorm / _norm).
inline std::vector<GradCase> with_norm_variants(const std::vector<GradCase>& base) {
  std::vector<GradCase> cases;
  for (bool norm : {false, true})
    for (GradCase c : base) {
      c.norm_topk_prob = norm;
      c.label += norm ? "_norm" : "_nonorm";
      cases.push_back(c);
    }
  return cases;
}

// One case per router with its defaults (label = name), with the norm variants.
inline std::vector<GradCase> default_grad_cases(const std::vector<std::string>& routers) {
  std::vector<GradCase> base;
  for (const std::string& r : routers) base.push_back({r, r});
  return with_norm_variants(base);
}

}  // namespace
}  // namespace sy
