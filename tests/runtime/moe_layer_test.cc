#include "runtime/moe/moe_layer.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "routers/metrics.h"
#include "runtime/core/rng.h"
#include "runtime/moe/experts.h"
#include "tests/runtime/moe_test_util.h"

namespace sy {
namespace {

using testing_util::Make;
using testing_util::Normal;

constexpr int64_t kD = 8, kF = 6, kE = 4, kK = 2, kT = 16;

MoeLayerConfig SmallConfig() {
  MoeLayerConfig c;
  c.d_model = kD;
  c.ffn_hidden = kF;
  c.num_experts = kE;
  c.top_k = kK;
  c.capacity_factor = 0.0;  // dropless unless a test says otherwise
  c.init_std = 0.5f;
  c.router.name = "linear";
  c.router.init_std = 1.0f;  // wide top-k margins for finite differences
  c.seed = 42;
  return c;
}

double MaxAbs(const std::vector<double>& v) {
  double m = 0;
  for (double x : v) m = std::max(m, std::fabs(x));
  return m;
}

// Naive SwiGLU of expert e (or of the shared expert when e < 0), scalar loops in double.
void RefSwiGLU(MoeLayer& l, int64_t e, const float* x, double* out) {
  const bool shared = e < 0;
  const int64_t D = l.config().d_model;
  const int64_t F = shared ? l.config().shared_expert_hidden : l.config().ffn_hidden;
  const std::string p = shared ? "shared_expert." : "experts.";
  const std::string s = shared ? ".weight" : "";
  const int64_t off = shared ? 0 : e * F * D;
  const float* Wg = l.find_param(p + "gate_proj" + s)->value.ptr() + off;
  const float* Wu = l.find_param(p + "up_proj" + s)->value.ptr() + off;
  const float* Wd = l.find_param(p + "down_proj" + s)->value.ptr() + off;
  std::vector<double> a(static_cast<size_t>(F));
  for (int64_t f = 0; f < F; ++f) {
    double g = 0, u = 0;
    for (int64_t d = 0; d < D; ++d) {
      g += static_cast<double>(Wg[f * D + d]) * x[d];
      u += static_cast<double>(Wu[f * D + d]) * x[d];
    }
    a[f] = g / (1.0 + std::exp(-g)) * u;
  }
  for (int64_t d = 0; d < D; ++d) {
    double y = 0;
    for (int64_t f = 0; f < F; ++f) y += static_cast<double>(Wd[d * F + f]) * a[f];
    out[d] = y;
  }
}

// y_t = sum over kept slots of w * expert(x_t) (+ gated shared expert), per token.
std::vector<double> RefForward(MoeLayer& l, const float* x, int64_t T) {
  const int64_t D = l.config().d_model, K = l.config().top_k;
  const RouterOutput& ro = l.router_output();
  const CapacityPlan& plan = l.plan();
  std::vector<double> y(static_cast<size_t>(T * D), 0.0), o(static_cast<size_t>(D));
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t k = 0; k < K; ++k) {
      if (!plan.kept_TK[t * K + k]) continue;
      RefSwiGLU(l, ro.topk_ids_TK[t * K + k], x + t * D, o.data());
      for (int64_t d = 0; d < D; ++d) y[t * D + d] += ro.topk_weights_TK.at(t, k) * o[d];
    }
    if (l.shared_expert()) {
      const float* wg = l.find_param("shared_expert_gate.weight")->value.ptr();
      double z = 0;
      for (int64_t d = 0; d < D; ++d) z += static_cast<double>(wg[d]) * x[t * D + d];
      RefSwiGLU(l, -1, x + t * D, o.data());
      for (int64_t d = 0; d < D; ++d) y[t * D + d] += o[d] / (1.0 + std::exp(-z));
    }
  }
  return y;
}

void ExpectNearRef(const std::vector<float>& y, const std::vector<double>& ref) {
  ASSERT_EQ(y.size(), ref.size());
  const double tol = 1e-5 * (1.0 + MaxAbs(ref));
  for (size_t i = 0; i < y.size(); ++i) EXPECT_NEAR(y[i], ref[i], tol) << "index " << i;
}

TEST(MoeLayer, ForwardMatchesNaiveReference) {
  for (int64_t shared : {0, 5}) {
    for (double cf : {0.0, 1.0}) {
      MoeLayerConfig c = SmallConfig();
      c.shared_expert_hidden = shared;
      c.capacity_factor = cf;
      auto l = Make(c);
      std::vector<float> x = Normal(kT * kD, 1), y(kT * kD, -7.0f);
      ASSERT_TRUE(l->forward(x.data(), nullptr, kT, y.data()).ok());
      // The linear router's choice, recomputed naively: top-k of W x in double.
      const float* W = l->find_param("gate.weight")->value.ptr();
      for (int64_t t = 0; t < kT; ++t) {
        std::vector<std::pair<double, int>> s;
        for (int e = 0; e < kE; ++e) {
          double v = 0;
          for (int64_t d = 0; d < kD; ++d) v += static_cast<double>(W[e * kD + d]) * x[t * kD + d];
          s.push_back({-v, e});
        }
        std::sort(s.begin(), s.end());
        for (int64_t k = 0; k < kK; ++k)
          EXPECT_EQ(l->router_output().topk_ids_TK[t * kK + k], s[k].second);
      }
      ExpectNearRef(y, RefForward(*l, x.data(), kT));
      if (cf > 0) {
        EXPECT_EQ(l->plan().capacity, 8);  // ceil(16 * 2 / 4)
      }
    }
  }
}

TEST(MoeLayer, IdentityExpertsGiveWeightedSumOfInputs) {
  MoeLayerConfig c = SmallConfig();
  c.expert_kind = ExpertKind::kIdentity;
  c.ffn_hidden = 0;
  c.router.norm_topk_prob = true;
  auto l = Make(c);
  EXPECT_TRUE(l->experts().params().empty());
  std::vector<float> x = Normal(kT * kD, 2), y(kT * kD);
  ASSERT_TRUE(l->forward(x.data(), nullptr, kT, y.data()).ok());
  EXPECT_EQ(l->plan().total_dropped, 0);
  for (int64_t t = 0; t < kT; ++t) {
    const float* w = l->router_output().topk_weights_TK.row(t);
    for (int64_t d = 0; d < kD; ++d) {
      float ref = w[0] * x[t * kD + d];
      for (int64_t k = 1; k < kK; ++k) ref += w[k] * x[t * kD + d];
      EXPECT_NEAR(y[t * kD + d], ref, 1e-6f * std::fabs(ref)) << t << "," << d;
      EXPECT_NEAR(y[t * kD + d], x[t * kD + d], 1e-5f * (1 + std::fabs(x[t * kD + d])));
    }
  }
}

// A linear router whose row 0 wins for every token: x[0] > 0 always and W[0][0] is large.
struct Forced {
  std::unique_ptr<MoeLayer> layer;
  std::vector<float> x;
  Forced(int64_t K, ExpertKind kind, uint64_t xseed) {
    MoeLayerConfig c = SmallConfig();
    c.top_k = K;
    c.capacity_factor = 1.0;
    c.expert_kind = kind;
    layer = Make(c);
    Tensor W({kE, kD});
    fill_normal(W.ptr(), W.numel(), 0.1f, 5, 5);
    W.at(0, 0) = 4.0f;  // wins clearly, yet p_0 still differs between tokens
    SY_CHECK_OK(layer->router().set_param("weight", W));
    x = Normal(kT * kD, xseed);
    for (int64_t t = 0; t < kT; ++t) x[t * kD] = 1.0f + 0.05f * static_cast<float>(t % 7);
  }
};

TEST(MoeLayer, ForcedSkewDropsRoutedMinusCapacityDeterministically) {
  for (int64_t K : {1, 2}) {
    std::vector<uint8_t> first_kept;
    for (uint64_t run = 0; run < 3; ++run) {
      Forced f(K, ExpertKind::kSwiGLU, 3);
      MoeLayer& l = *f.layer;
      std::vector<float> y(kT * kD);
      ASSERT_TRUE(l.forward(f.x.data(), nullptr, kT, y.data()).ok());
      const CapacityPlan& p = l.plan();
      const int64_t C = (kT * K + kE - 1) / kE;  // capacity_factor 1.0
      EXPECT_EQ(p.capacity, C);
      EXPECT_EQ(p.routed_E[0], kT);
      EXPECT_EQ(p.dropped_E[0], kT - C);
      if (K == 1) {
        EXPECT_EQ(p.total_dropped, kT - C);
      }
      for (int64_t t = 0; t < kT; ++t) ASSERT_EQ(l.router_output().topk_ids_TK[t * K], 0);
      EXPECT_EQ(l.counters().dropped_E[0], kT - C);
      if (run == 0)
        first_kept = p.kept_TK;
      else
        EXPECT_EQ(p.kept_TK, first_kept) << "drop set must not change between runs";
      ExpectNearRef(y, RefForward(l, f.x.data(), kT));  // the reference skips dropped slots
      if (K == 1) {
        for (int64_t t = 0; t < kT; ++t) {
          if (p.kept_TK[t]) continue;
          for (int64_t d = 0; d < kD; ++d)
            EXPECT_EQ(y[t * kD + d], 0.0f) << "a dropped token's expert output is exactly 0";
        }
      }
    }
  }
}

TEST(MoeLayer, SharedExpertAddsSigmoidGatedOutput) {
  MoeLayerConfig c = SmallConfig();
  auto off = Make(c);
  c.shared_expert_hidden = 5;
  auto on = Make(c);
  EXPECT_EQ(on->num_params() - off->num_params(), 3 * 5 * kD + kD);
  std::vector<float> x = Normal(kT * kD, 4), y0(kT * kD), y1(kT * kD);
  ASSERT_TRUE(off->forward(x.data(), nullptr, kT, y0.data()).ok());
  ASSERT_TRUE(on->forward(x.data(), nullptr, kT, y1.data()).ok());
  const float* wg = on->find_param("shared_expert_gate.weight")->value.ptr();
  std::vector<double> o(kD);
  for (int64_t t = 0; t < kT; ++t) {
    double z = 0;
    for (int64_t d = 0; d < kD; ++d) z += static_cast<double>(wg[d]) * x[t * kD + d];
    RefSwiGLU(*on, -1, x.data() + t * kD, o.data());
    for (int64_t d = 0; d < kD; ++d)
      EXPECT_NEAR(y1[t * kD + d] - y0[t * kD + d], o[d] / (1 + std::exp(-z)), 1e-5);
  }
}

// Loss = sum c.y + sum q.probs + sum z.logits, with the aux terms fed through MoeAuxGrads.
struct FdCase {
  std::vector<float> x, c, q, z;
  double Loss(MoeLayer& l, std::vector<int32_t>* sig) {
    std::vector<float> y(x.size());
    SY_CHECK_OK(l.forward(x.data(), nullptr, kT, y.data()));
    double L = 0;
    for (size_t i = 0; i < y.size(); ++i) L += static_cast<double>(c[i]) * y[i];
    for (size_t i = 0; i < q.size(); ++i)
      L += static_cast<double>(q[i]) * l.router_output().probs_TE.data[i] +
           static_cast<double>(z[i]) * l.router_output().logits_TE.data[i];
    sig->assign(l.router_output().topk_ids_TK.begin(), l.router_output().topk_ids_TK.end());
    sig->insert(sig->end(), l.plan().kept_TK.begin(), l.plan().kept_TK.end());
    return L;
  }
  // Central difference at *v; NaN when the routing or the drop set flips within the step.
  double Numeric(MoeLayer& l, float* v, const std::vector<int32_t>& sig0) {
    const float h = 1e-2f, v0 = *v;
    std::vector<int32_t> sp, sm;
    *v = v0 + h;
    const double lp = Loss(l, &sp);
    *v = v0 - h;
    const double lm = Loss(l, &sm);
    *v = v0;
    if (sp != sig0 || sm != sig0) return NAN;
    return (lp - lm) / (2.0 * h);
  }
};

void CheckGradients(double cf, int64_t shared, bool train_experts) {
  MoeLayerConfig cfg = SmallConfig();
  cfg.capacity_factor = cf;
  cfg.shared_expert_hidden = shared;
  cfg.train_experts = train_experts;
  auto l = Make(cfg);
  FdCase fc{Normal(kT * kD, 11), Normal(kT * kD, 12), Normal(kT * kE, 13),
            Normal(kT * kE, 14, 0.1f)};
  std::vector<int32_t> sig0;
  fc.Loss(*l, &sig0);
  if (cf > 0) {
    EXPECT_GT(l->plan().total_dropped, 0) << "the case should exercise drops";
  }
  std::vector<float> dx(kT * kD, 123.0f);
  MoeAuxGrads aux{fc.q.data(), fc.z.data()};
  l->zero_grad();
  l->backward(fc.c.data(), dx.data(), &aux);

  int checked = 0, skipped = 0;
  auto check = [&](float* v, double analytic, const std::string& what) {
    const double num = fc.Numeric(*l, v, sig0);
    if (std::isnan(num)) {
      ++skipped;
      return;
    }
    ++checked;
    EXPECT_NEAR(analytic, num, 2e-3 * (1.0 + std::fabs(num))) << what;
  };
  for (int64_t i = 0; i < kT * kD; i += 3) check(&fc.x[i], dx[i], "dx[" + std::to_string(i) + "]");
  std::vector<std::string> names = {"gate.weight"};
  if (train_experts) {
    for (const char* n : {"experts.gate_proj", "experts.up_proj", "experts.down_proj"})
      names.push_back(n);
    if (shared)
      for (const char* n : {"shared_expert.gate_proj.weight", "shared_expert.up_proj.weight",
                            "shared_expert.down_proj.weight", "shared_expert_gate.weight"})
        names.push_back(n);
  }
  for (const std::string& n : names) {
    Param* p = l->find_param(n);
    ASSERT_NE(p, nullptr) << n;
    ASSERT_EQ(p->grad.numel(), p->value.numel()) << n;
    for (int64_t i = 0; i < p->value.numel(); i += std::max<int64_t>(1, p->value.numel() / 7))
      check(&p->value.data[i], p->grad.data[i], n + "[" + std::to_string(i) + "]");
  }
  if (!train_experts) {
    EXPECT_TRUE(l->find_param("experts.gate_proj")->grad.empty());
  }
  EXPECT_GT(checked, 5 * skipped + 20) << "too many coordinates flip the routing";
}

TEST(MoeLayer, BackwardMatchesFiniteDifferencesDropless) {
  CheckGradients(0.0, 0, true);
}
TEST(MoeLayer, BackwardMatchesFiniteDifferencesWithDrops) {
  CheckGradients(1.0, 0, true);
}
TEST(MoeLayer, BackwardMatchesFiniteDifferencesSharedExpert) {
  CheckGradients(1.0, 5, true);
}
TEST(MoeLayer, BackwardFrozenExpertsStillPropagatesDx) {
  CheckGradients(1.0, 5, false);
}

TEST(MoeLayer, FrozenExpertsGiveTheSameDx) {
  MoeLayerConfig cfg = SmallConfig();
  cfg.capacity_factor = 1.0;
  auto a = Make(cfg);
  cfg.train_experts = false;
  auto b = Make(cfg);
  std::vector<float> x = Normal(kT * kD, 21), dy = Normal(kT * kD, 22), y(kT * kD);
  std::vector<float> dxa(kT * kD), dxb(kT * kD);
  ASSERT_TRUE(a->forward(x.data(), nullptr, kT, y.data()).ok());
  a->backward(dy.data(), dxa.data());
  ASSERT_TRUE(b->forward(x.data(), nullptr, kT, y.data()).ok());
  b->backward(dy.data(), dxb.data());
  EXPECT_EQ(dxa, dxb);
  EXPECT_EQ(a->find_param("gate.weight")->grad.data, b->find_param("gate.weight")->grad.data);
}

TEST(MoeLayer, ZeroTokens) {
  MoeLayerConfig cfg = SmallConfig();
  cfg.shared_expert_hidden = 3;
  cfg.capacity_factor = 1.25;
  auto l = Make(cfg);
  ASSERT_TRUE(l->forward(nullptr, nullptr, 0, nullptr).ok());
  EXPECT_EQ(l->plan().rows(), 0);
  l->backward(nullptr, nullptr);
  std::vector<float> x = Normal(kT * kD, 1), y(kT * kD);  // and it still works afterwards
  ASSERT_TRUE(l->forward(x.data(), nullptr, kT, y.data()).ok());
  ASSERT_TRUE(l->forward(x.data(), nullptr, 0, y.data()).ok());
}

TEST(MoeLayer, MaskedTokensGetZeroAndTakeNoCapacity) {
  MoeLayerConfig cfg = SmallConfig();
  cfg.capacity_factor = 1.0;
  cfg.shared_expert_hidden = 3;
  auto l = Make(cfg);
  std::vector<float> x = Normal(kT * kD, 31), y(kT * kD), dx(kT * kD);
  std::vector<uint8_t> mask(kT);
  for (int64_t t = 0; t < kT; ++t) mask[t] = t % 2;
  ASSERT_TRUE(l->forward(x.data(), nullptr, kT, y.data(), mask.data()).ok());
  EXPECT_EQ(l->plan().total_routed, kT / 2 * kK);
  EXPECT_EQ(l->plan().capacity, 4);  // ceil(8 * 2 / 4): only real tokens count
  for (int64_t t = 0; t < kT; t += 2)
    for (int64_t d = 0; d < kD; ++d) EXPECT_EQ(y[t * kD + d], 0.0f);
  std::vector<float> dy = Normal(kT * kD, 32);
  l->backward(dy.data(), dx.data());
  // A padded row's x only reaches the router; with no kept slot its dweights are 0, so dx = 0.
  for (int64_t t = 0; t < kT; t += 2)
    for (int64_t d = 0; d < kD; ++d) EXPECT_EQ(dx[t * kD + d], 0.0f);
}

TEST(MoeLayer, ConfigErrorsAreClear) {
  struct Case {
    void (*edit)(MoeLayerConfig*);
    const char* needle;
  };
  const Case cases[] = {
      {[](MoeLayerConfig* c) { c->top_k = 5; }, "top_k (5) must be <= num_experts (4)"},
      {[](MoeLayerConfig* c) { c->num_experts = 0; }, "num_experts must be >= 1"},
      {[](MoeLayerConfig* c) { c->d_model = -3; }, "d_model must be >= 1"},
      {[](MoeLayerConfig* c) { c->ffn_hidden = 0; }, "ffn_hidden must be >= 1"},
      {[](MoeLayerConfig* c) { c->shared_expert_hidden = -1; }, "shared_expert_hidden"},
      {[](MoeLayerConfig* c) { c->capacity_factor = NAN; }, "capacity_factor must be finite"},
      {[](MoeLayerConfig* c) { c->router.name = "nope"; }, "unknown router 'nope'"},
  };
  for (const Case& k : cases) {
    MoeLayerConfig c = SmallConfig();
    k.edit(&c);
    auto l = MoeLayer::create(c);
    ASSERT_FALSE(l.ok()) << k.needle;
    EXPECT_EQ(l.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(l.status().message().find(k.needle), std::string::npos) << l.status().message();
  }
  auto l = Make(SmallConfig());
  Status st = l->forward(nullptr, nullptr, int64_t{1} << 40, nullptr);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << "overflow rejected up front";
}

// Unset SY_EXCHANGE_CHUNKS: overlap across hosts, and on one host only for large experts
// (moe_layer.h says why): the default model and the small benchmark shape stay blocking, the
// Qwen1.5-MoE shape overlaps.
TEST(MoeLayer, DefaultOverlapIsAcrossHostsOrForLargeExperts) {
  EXPECT_EQ(default_exchange_chunks(false, 256, 256), 1);
  EXPECT_EQ(default_exchange_chunks(false, 256, 512), 1);
  EXPECT_EQ(default_exchange_chunks(false, 1024, 1023), 1);
  EXPECT_EQ(default_exchange_chunks(false, 1024, 1024), kExchangeChunksAcrossHosts);
  EXPECT_EQ(default_exchange_chunks(false, 2048, 1408), kExchangeChunksAcrossHosts);
  EXPECT_EQ(default_exchange_chunks(true, 256, 256), kExchangeChunksAcrossHosts);
  EXPECT_EQ(default_exchange_chunks(false, int64_t{1} << 40, int64_t{1} << 40),
            kExchangeChunksAcrossHosts);  // no int64_t overflow
}

TEST(MoeLayer, CountersAndTimesAccumulate) {
  MoeLayerConfig cfg = SmallConfig();
  cfg.capacity_factor = 1.0;
  auto l = Make(cfg);
  std::vector<float> x = Normal(kT * kD, 41), y(kT * kD);
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(l->forward(x.data(), nullptr, kT, y.data()).ok());
  EXPECT_EQ(l->counters().forwards, 3);
  EXPECT_EQ(l->counters().tokens, 3 * kT);
  EXPECT_EQ(l->counters().routed, 3 * kT * kK);
  EXPECT_EQ(l->counters().kept + l->counters().dropped, l->counters().routed);
  EXPECT_GE(l->last_stats().forward.total_s(), 0.0);
  EXPECT_TRUE(l->last_finite());
  l->reset_counters();
  EXPECT_EQ(l->counters().routed, 0);
}

// One source per number: a forward's MoeStepStats are the capacity plan's counts, one rank
// reports its own kept rows as its exchange, the counters are the stats summed, and routing
// metrics fed the stats' counts equal metrics counted from the plan's kept flags.
TEST(MoeLayer, StepStatsAreThePlansCounts) {
  MoeLayerConfig cfg = SmallConfig();
  cfg.capacity_factor = 0.5;  // C = ceil(0.5 * 14 * 2 / 4) = 4 of 28 assignments: drops
  cfg.shared_expert_hidden = 5;
  auto l = Make(cfg);
  std::vector<float> x = Normal(kT * kD, 43), y(kT * kD), dx(kT * kD);
  std::vector<uint8_t> mask(kT, 1);
  mask[3] = mask[10] = 0;
  ASSERT_TRUE(l->forward(x.data(), nullptr, kT, y.data(), mask.data()).ok());
  const MoeStepStats& st = l->last_stats();
  const CapacityPlan& plan = l->plan();
  EXPECT_EQ(st.T, kT);
  EXPECT_EQ(st.tokens, kT - 2);
  EXPECT_EQ(st.routed, st.tokens * kK);
  EXPECT_EQ(st.routed, plan.total_routed);
  EXPECT_EQ(st.kept, plan.total_kept);
  EXPECT_EQ(st.dropped, plan.total_dropped);
  EXPECT_EQ(st.kept + st.dropped, st.routed);
  EXPECT_GT(st.dropped, 0);
  ASSERT_EQ(st.routed_E.size(), static_cast<size_t>(kE));
  ASSERT_EQ(st.kept_E.size(), static_cast<size_t>(kE));
  ASSERT_EQ(st.dropped_E.size(), static_cast<size_t>(kE));
  int64_t sums[3] = {0, 0, 0};
  for (int64_t e = 0; e < kE; ++e) {
    EXPECT_EQ(st.routed_E[e], plan.routed_E[e]) << e;
    EXPECT_EQ(st.kept_E[e], plan.kept_E[e]) << e;
    EXPECT_EQ(st.dropped_E[e], plan.dropped_E[e]) << e;
    EXPECT_EQ(st.kept_E[e] + st.dropped_E[e], st.routed_E[e]) << e;
    sums[0] += st.routed_E[e];
    sums[1] += st.kept_E[e];
    sums[2] += st.dropped_E[e];
  }
  EXPECT_EQ(sums[0], st.routed);
  EXPECT_EQ(sums[1], st.kept);
  EXPECT_EQ(sums[2], st.dropped);

  // One rank: its kept rows "sent to" and "received from" itself, no bytes on the wire, and its
  // local experts (all E) receive what the plan keeps.
  const ExchangeLoad& xl = st.exchange;
  EXPECT_EQ(xl.rows_sent_P, std::vector<int64_t>{st.kept});
  EXPECT_EQ(xl.rows_recv_P, std::vector<int64_t>{st.kept});
  EXPECT_EQ(xl.bytes_sent_P, std::vector<int64_t>{0});
  EXPECT_EQ(xl.bytes_recv_P, std::vector<int64_t>{0});
  EXPECT_EQ(xl.rows_recv_e, st.kept_E);
  EXPECT_EQ(st.bandwidth_gbps, 0.0);
  EXPECT_EQ(
      st.forward.count_exchange_s + st.forward.dispatch_exchange_s + st.forward.return_exchange_s,
      0.0);
  EXPECT_GE(st.forward.total_s(), 0.0);
  EXPECT_EQ(st.backward.total_s(), 0.0) << "no backward yet";

  // Metrics from the stats' counts = metrics counted from the plan's kept flags.
  const RouterOutput& ro = l->router_output();
  const RoutingMetrics a =
      routing_metrics_from_counts(ro.probs_TE.ptr(), ro.topk_ids_TK.data(), kT, kE, kK,
                                  st.routed_E.data(), st.dropped_E.data(), {}, l->last_mask());
  const RoutingMetrics b = routing_metrics_compute(
      ro.probs_TE.ptr(), ro.topk_ids_TK.data(), plan.kept_TK.data(), kT, kE, kK, {}, mask.data());
  EXPECT_EQ(a.load_E, b.load_E);
  EXPECT_EQ(a.dropped_E, b.dropped_E);
  EXPECT_EQ(a.tokens, b.tokens);
  EXPECT_EQ(a.entropy_sum, b.entropy_sum);
  EXPECT_EQ(a.topk_mass_sum, b.topk_mass_sum);
  EXPECT_EQ(a.imbalance, b.imbalance);
  EXPECT_EQ(a.drop_fraction, b.drop_fraction);

  // Backward fills the backward times and leaves the forward's record alone.
  const MoeStepStats before = st;
  std::vector<float> dy = Normal(kT * kD, 44);
  l->backward(dy.data(), dx.data());
  EXPECT_EQ(st.forward.total_s(), before.forward.total_s());
  EXPECT_EQ(st.routed_E, before.routed_E);
  EXPECT_GE(st.backward.total_s(), 0.0);

  // Counters: the sum of the forwards' stats.
  ASSERT_TRUE(l->forward(x.data(), nullptr, kT, y.data()).ok());
  const MoeLayerCounters& c = l->counters();
  EXPECT_EQ(c.forwards, 2);
  EXPECT_EQ(c.tokens, before.tokens + st.tokens);
  EXPECT_EQ(c.routed, before.routed + st.routed);
  EXPECT_EQ(c.dropped, before.dropped + st.dropped);
  for (int64_t e = 0; e < kE; ++e) {
    EXPECT_EQ(c.routed_E[e], before.routed_E[e] + st.routed_E[e]) << e;
    EXPECT_EQ(c.kept_E[e], before.kept_E[e] + st.kept_E[e]) << e;
    EXPECT_EQ(c.dropped_E[e], before.dropped_E[e] + st.dropped_E[e]) << e;
  }
}

// The SwiGLU experts' forward and backward on the cpu backend (expert by expert:
// Backend::groups_experts is false there) against one swiglu_forward + swiglu_backward per
// expert: dx and the weight gradients (accumulated onto non-zero ones) bit for bit, with an
// expert without rows and a first row offset > 0; then without weight gradients: the same dx,
// the gradients untouched. The grouped path (per weight one grouped_linear_forward/backward,
// one elementwise pass over all rows) runs on devsim, whose layers, backward and trainer steps
// devsim_layers_test compares with the cpu backend's bit for bit.
TEST(RoutedExperts, SwigluBackwardIsBitwiseOneSwigluBackwardPerExpert) {
  ExpertsConfig cfg;
  cfg.d_model = kD;
  cfg.ffn_hidden = kF;
  cfg.num_experts = kE;
  cfg.init_std = 0.5f;
  cfg.seed = 5;
  RoutedExperts ex(cfg);
  const std::vector<int32_t> off = {2, 7, 7, 14, 17};
  const int64_t R = off[kE] - off[0];
  const std::vector<float> x = Normal(R * kD, 11), dy = Normal(R * kD, 12);
  std::vector<Param*> w;  // gate, up, down
  for (const char* name : {"experts.gate_proj", "experts.up_proj", "experts.down_proj"})
    for (Param& p : ex.params())
      if (p.name == name) w.push_back(&p);
  ASSERT_EQ(w.size(), 3u);
  std::vector<std::vector<float>> grads0;
  for (size_t i = 0; i < w.size(); ++i) {
    grads0.push_back(Normal(w[i]->grad.numel(), 20 + i));
    w[i]->grad.data = grads0.back();
  }
  std::vector<float> y(static_cast<size_t>(R * kD)), dx(static_cast<size_t>(R * kD));
  ex.forward(x.data(), off.data(), y.data());
  ex.backward(dy.data(), dx.data(), /*weight_grads=*/true);

  const ExecContext& c = default_context();
  std::vector<float> g(static_cast<size_t>(R * kF)), u(g.size()), a(g.size()), da(g.size()),
      du(g.size()), yr(y.size()), dxr(dx.size());
  std::vector<std::vector<float>> gr = grads0;
  const float *Wg = w[0]->value.ptr(), *Wu = w[1]->value.ptr(), *Wd = w[2]->value.ptr();
  for (int64_t e = 0; e < kE; ++e) {
    const int64_t o = off[e] - off[0], n = off[e + 1] - off[e];
    if (n == 0) continue;
    const int64_t wf = e * kF * kD;  // gate/up [F, D] and down [D, F] of expert e
    swiglu_forward(c, x.data() + o * kD, Wg + wf, Wu + wf, Wd + wf, n, kD, kF, g.data() + o * kF,
                   u.data() + o * kF, a.data() + o * kF, yr.data() + o * kD);
    swiglu_backward(c, x.data() + o * kD, Wg + wf, Wu + wf, Wd + wf, g.data() + o * kF,
                    u.data() + o * kF, a.data() + o * kF, dy.data() + o * kD, n, kD, kF,
                    gr[0].data() + wf, gr[1].data() + wf, gr[2].data() + wf, dxr.data() + o * kD,
                    /*accumulate_dx=*/false, da.data() + o * kF, du.data() + o * kF);
  }
  const auto same = [](const std::vector<float>& p, const std::vector<float>& q) {
    return p.size() == q.size() && std::memcmp(p.data(), q.data(), p.size() * sizeof(float)) == 0;
  };
  EXPECT_TRUE(same(y, yr)) << "forward";
  EXPECT_TRUE(same(dx, dxr)) << "dx";
  for (size_t i = 0; i < w.size(); ++i) {
    EXPECT_TRUE(same(w[i]->grad.data.to_host(), gr[i])) << w[i]->name << " grad";
    EXPECT_FALSE(same(gr[i], grads0[i])) << w[i]->name << " grad unchanged";
  }

  std::vector<float> dx2(dx.size());
  ex.backward(dy.data(), dx2.data(), /*weight_grads=*/false);
  EXPECT_TRUE(same(dx2, dxr)) << "dx without weight gradients";
  for (size_t i = 0; i < w.size(); ++i)
    EXPECT_TRUE(same(w[i]->grad.data.to_host(), gr[i])) << w[i]->name << " grad touched";
}

}  // namespace
}  // namespace sy
