// What is specific to the four routers beyond the paper (the generic tests cover their forward,
// backward and P ranks = 1 rank): noisy_topk's counter-based noise, sigmoid_bias's biased choice
// and bias update, sinkhorn's balanced choice, expert_choice's choice by the experts in the MoE
// layer. (The trainer's after_step call and the decode refusal: tests/runtime/trainer_test.cc.)
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "routers/registry.h"
#include "runtime/core/rng.h"
#include "runtime/moe/moe_layer.h"

namespace sy {
namespace {

constexpr int64_t kD = 8, kE = 6, kK = 2, kT = 40;

RouterConfig Config(const std::string& name, float init_std = 0.5f, float balance_rate = 0.0f) {
  RouterConfig cfg;
  cfg.name = name;
  cfg.d_model = kD;
  cfg.num_experts = kE;
  cfg.top_k = kK;
  cfg.init_std = init_std;
  cfg.balance_rate = balance_rate;
  cfg.vocab_size = 100;
  return cfg;
}

std::unique_ptr<Router> Make(const std::string& name, float init_std = 0.5f,
                             float balance_rate = 0.0f) {
  auto r = make_router(Config(name, init_std, balance_rate));
  EXPECT_TRUE(r.ok()) << r.status().ToString();
  return std::move(r).value();
}

std::vector<float> X(uint64_t stream) {
  std::vector<float> x(static_cast<size_t>(kT * kD));
  fill_normal(x.data(), kT * kD, 1.0f, 9, stream);
  return x;
}

std::vector<int64_t> Load(const RouterOutput& out) {
  std::vector<int64_t> load(static_cast<size_t>(out.E), 0);
  for (int32_t id : out.topk_ids_TK) ++load[static_cast<size_t>(id)];
  return load;
}

// Skews r's gate toward expert 0 (s_0 = the sum of x), then runs `steps` forwards of the same
// tokens X(stream), each followed by after_step with its load: the spread of the load (max - min
// over the experts) must shrink to at most 4 assignments.
void ExpectBalancedAfterSteps(Router* r, uint64_t stream, int steps) {
  Param* W = r->find_param("weight");
  ASSERT_NE(W, nullptr);
  for (int64_t d = 0; d < kD; ++d) W->value.at(0, d) = 1.0f;
  const std::vector<float> x = X(stream);
  const auto spread = [](const std::vector<int64_t>& l) {
    return *std::max_element(l.begin(), l.end()) - *std::min_element(l.begin(), l.end());
  };
  RouterOutput out;
  r->forward(x.data(), nullptr, kT, &out);
  const int64_t before = spread(Load(out));
  for (int step = 0; step < steps; ++step) {
    r->forward(x.data(), nullptr, kT, &out);
    r->after_step(Load(out).data());
  }
  r->forward(x.data(), nullptr, kT, &out);
  EXPECT_LT(spread(Load(out)), before);
  EXPECT_LE(spread(Load(out)), 4);
}

TEST(NoisyTopk, InferenceIsTheLinearGateAndTrainingNoiseIsReproducible) {
  auto noisy = Make("noisy_topk");
  auto lin = Make("linear");
  ASSERT_TRUE(lin->set_param("weight", noisy->find_param("weight")->value).ok());
  const std::vector<float> x = X(1);
  RouterOutput a, b, c, d, e;
  noisy->forward(x.data(), nullptr, kT, &a);
  lin->forward(x.data(), nullptr, kT, &b);
  EXPECT_EQ(a.logits_TE.data, b.logits_TE.data);  // no noise at inference, bitwise
  EXPECT_EQ(a.topk_ids_TK, b.topk_ids_TK);

  noisy->set_training(true);
  noisy->set_position(/*layer=*/3, /*step=*/7);
  noisy->forward(x.data(), nullptr, kT, &c);
  noisy->forward(x.data(), nullptr, kT, &d);
  EXPECT_NE(c.logits_TE.data, a.logits_TE.data);  // noise while training
  EXPECT_EQ(c.logits_TE.data, d.logits_TE.data);  // the same (layer, step): the same noise
  // Noise of scale softplus(0) = ln 2 around W x.
  double sq = 0;
  for (size_t i = 0; i < c.logits_TE.data.size(); ++i) {
    const double n = c.logits_TE.data[i] - a.logits_TE.data[i];
    sq += n * n;
  }
  const double sd = std::sqrt(sq / static_cast<double>(kT * kE));
  EXPECT_NEAR(sd, std::log(2.0), 0.15);
  noisy->set_position(3, 8);
  noisy->forward(x.data(), nullptr, kT, &e);
  EXPECT_NE(e.logits_TE.data, c.logits_TE.data);  // another step, other noise
  noisy->set_training(false);
  noisy->forward(x.data(), nullptr, kT, &e);
  EXPECT_EQ(e.logits_TE.data, a.logits_TE.data);
}

TEST(SigmoidBias, BiasMovesTheChoiceNotTheWeights) {
  auto r = Make("sigmoid_bias");
  const std::vector<float> x = X(2);
  RouterOutput a, b;
  r->forward(x.data(), nullptr, kT, &a);
  for (int64_t t = 0; t < kT; ++t) {
    float sum = 0;
    for (int64_t k = 0; k < kK; ++k) sum += a.topk_weights_TK.at(t, k);
    EXPECT_NEAR(sum, 1.0f, 1e-6f);
    // weights = chosen sigmoid(W x) = exp(s), normalized over the chosen
    const float s0 = std::exp(a.logits_TE.at(t, a.topk_ids_TK[t * kK]));
    const float s1 = std::exp(a.logits_TE.at(t, a.topk_ids_TK[t * kK + 1]));
    EXPECT_NEAR(a.topk_weights_TK.at(t, 0), s0 / (s0 + s1), 1e-5f);
  }
  // A large bias on the last expert: every token chooses it, with its unbiased weight.
  Param* bias = r->find_param("bias");
  ASSERT_NE(bias, nullptr);
  EXPECT_EQ(bias->grad.numel(), 0);  // not learned by gradient
  bias->value.data[kE - 1] = 2.0f;
  r->forward(x.data(), nullptr, kT, &b);
  EXPECT_EQ(b.logits_TE.data, a.logits_TE.data);
  EXPECT_EQ(b.probs_TE.data, a.probs_TE.data);
  for (int64_t t = 0; t < kT; ++t) {
    EXPECT_EQ(b.topk_ids_TK[t * kK], kE - 1);
    const float st = std::exp(b.logits_TE.at(t, kE - 1));
    const float so = std::exp(b.logits_TE.at(t, b.topk_ids_TK[t * kK + 1]));
    EXPECT_NEAR(b.topk_weights_TK.at(t, 0), st / (st + so), 1e-5f);
  }
}

TEST(SigmoidBias, AfterStepMovesBiasTowardBalance) {
  auto r = Make("sigmoid_bias");
  ASSERT_TRUE(r->updates_after_step());
  const int64_t load[kE] = {10, 0, 5, 5, 6, 4};  // mean 5
  r->after_step(load);
  r->after_step(load);
  const std::vector<float> want = {-0.002f, 0.002f, 0.0f, 0.0f, -0.002f, 0.002f};
  EXPECT_EQ(r->find_param("bias")->value.data, want);
  // Repeated steps balance a skewed router.
  auto s = Make("sigmoid_bias");
  ExpectBalancedAfterSteps(s.get(), 3, 3000);
}

// The balance bias any choosing router takes (RouterConfig::balance_rate): it moves the choice,
// top-k of s + b, never the scores, probabilities or weights, and after_step moves it toward
// balance; routers that do not choose by top-k of their scores ignore the rate.
TEST(BalanceBias, MovesTheChoiceOfEveryChoosingRouter) {
  const std::vector<float> x = X(4);
  for (const std::string& name : router_names()) {
    SCOPED_TRACE(name);
    auto plain = make_router(Config(name));
    ASSERT_TRUE(plain.ok());
    if (name == "sigmoid_bias") {  // its own bias at its own gamma, whatever balance_rate says
      auto r = Make(name, 0.5f, 0.25f);
      ASSERT_EQ(r->balance_bias(), r->find_param("bias"));
      EXPECT_EQ(r->find_param(kBalanceBiasName), nullptr);
      const int64_t load[kE] = {10, 0, 5, 5, 6, 4};
      r->after_step(load);
      EXPECT_EQ(r->find_param("bias")->value.data,
                (std::vector<float>{-0.001f, 0.001f, 0.0f, 0.0f, -0.001f, 0.001f}));
      continue;
    }
    if (!(*plain)->takes_balance_bias()) {  // hash, expert_choice, sinkhorn: the rate is ignored
      auto r = make_router(Config(name, 0.5f, 0.01f));
      ASSERT_TRUE(r.ok()) << r.status().ToString();
      EXPECT_EQ((*r)->balance_bias(), nullptr);
      EXPECT_FALSE((*r)->updates_after_step());
      continue;
    }
    EXPECT_EQ((*plain)->balance_bias(), nullptr);
    EXPECT_FALSE((*plain)->updates_after_step());
    auto r = Make(name, 0.5f, 0.125f);
    Param* b = r->find_param(kBalanceBiasName);
    ASSERT_NE(b, nullptr);
    EXPECT_EQ(b->grad.numel(), 0);  // state, not learned by gradient
    EXPECT_EQ(b->value.data, std::vector<float>(kE, 0.0f));
    ASSERT_TRUE(r->updates_after_step());
    // A zero bias routes bitwise like the router without one (same seed, same weights).
    RouterOutput a, c, d;
    (*plain)->forward(x.data(), nullptr, kT, &a);
    r->forward(x.data(), nullptr, kT, &c);
    EXPECT_EQ(a.topk_ids_TK, c.topk_ids_TK);
    EXPECT_EQ(a.topk_weights_TK.data, c.topk_weights_TK.data);
    // A large bias on the last expert: every token chooses it; the scores and probabilities
    // stay, the weights are the chosen probabilities.
    b->value.data[kE - 1] = 100.0f;
    r->forward(x.data(), nullptr, kT, &d);
    EXPECT_EQ(d.logits_TE.data, c.logits_TE.data);
    EXPECT_EQ(d.probs_TE.data, c.probs_TE.data);
    for (int64_t t = 0; t < kT; ++t) {
      EXPECT_EQ(d.topk_ids_TK[t * kK], kE - 1);
      if (!r->config().norm_topk_prob) {
        EXPECT_EQ(d.topk_weights_TK.at(t, 0), d.probs_TE.at(t, kE - 1));
      }
    }
    // after_step: gamma * (mean - load) / mean; nothing for a step without tokens.
    b->value.data.assign(kE, 0.0f);
    const int64_t load[kE] = {10, 0, 5, 5, 6, 4};  // mean 5
    r->after_step(load);
    EXPECT_EQ(b->value.data, (std::vector<float>{-0.125f, 0.125f, 0.0f, 0.0f, -0.025f, 0.025f}));
    const int64_t none[kE] = {};
    r->after_step(none);
    EXPECT_EQ(b->value.data[1], 0.125f);
  }
}

TEST(BalanceBias, BalancesASkewedLinearGateAndCopiesToAWarmStartedRouter) {
  auto r = Make("linear", 0.5f, 0.01f);
  ExpectBalancedAfterSteps(r.get(), 5, 2000);
  // A router with a balance bias in the same units takes this one's; sigmoid_bias's (affinity
  // units) and a router without one take nothing.
  auto mlp = Make("mlp", 0.5f, 0.01f);
  mlp->copy_balance_bias(*r);
  EXPECT_EQ(mlp->balance_bias()->value.data, r->balance_bias()->value.data);
  auto sig = Make("sigmoid_bias");
  sig->copy_balance_bias(*r);
  EXPECT_EQ(sig->balance_bias()->value.data, std::vector<float>(kE, 0.0f));
  // Out of range: refused with the field named.
  for (float bad : {-0.1f, 2.0f, std::nanf("")}) {
    auto z = make_router(Config("linear", 0.5f, bad));
    ASSERT_FALSE(z.ok());
    EXPECT_NE(z.status().message().find("balance_rate"), std::string::npos);
  }
}

TEST(Sinkhorn, TrainingChoiceIsBalancedInferenceIsTopk) {
  auto r = Make("sinkhorn");
  EXPECT_FALSE(r->batch_dependent());
  // Skewed gate: expert 0 scores high for most tokens.
  Param* W = r->find_param("weight");
  for (int64_t d = 0; d < kD; ++d) W->value.at(0, d) = 0.8f;
  std::vector<float> x = X(4);
  for (int64_t t = 0; t < kT; ++t) x[static_cast<size_t>(t * kD)] = std::fabs(x[t * kD]) + 1.0f;
  RouterOutput inf, tr;
  r->forward(x.data(), nullptr, kT, &inf);
  r->set_training(true);
  EXPECT_TRUE(r->batch_dependent());
  r->forward(x.data(), nullptr, kT, &tr);
  EXPECT_EQ(inf.probs_TE.data, tr.probs_TE.data);  // the same scores and softmax
  const std::vector<int64_t> li = Load(inf), lt = Load(tr);
  const int64_t mi = *std::max_element(li.begin(), li.end());
  const int64_t mt = *std::max_element(lt.begin(), lt.end());
  std::printf("sinkhorn max load: top-k %lld, balanced %lld (mean %lld)\n",
              static_cast<long long>(mi), static_cast<long long>(mt),
              static_cast<long long>(kT * kK / kE));
  EXPECT_LT(mt, mi);
  EXPECT_LE(mt, 2 * kT * kK / kE);
  // Weights are the chosen softmax probabilities whatever chose them.
  for (int64_t t = 0; t < kT; ++t)
    for (int64_t k = 0; k < kK; ++k)
      EXPECT_EQ(tr.topk_weights_TK.at(t, k), tr.probs_TE.at(t, tr.topk_ids_TK[t * kK + k]));
}

// Each expert takes exactly its C = ceil(cf * G * K / E) tokens of highest p in each group
// (masked tokens never), a token gets 0..E experts, and with identity experts the layer's
// output is y_t = sum over the experts that took t of p_te x_t. Nothing counts as dropped.
TEST(ExpertChoice, EachExpertTakesItsTopCTokensOfTheGroup) {
  constexpr int64_t G = 16, T = 2 * G + 9;  // two whole groups and a short one
  for (double cf : {1.0, 2.0, 0.0}) {
    for (bool masked : {false, true}) {
      SCOPED_TRACE("cf " + std::to_string(cf) + (masked ? " masked" : ""));
      MoeLayerConfig lc;
      lc.d_model = kD;
      lc.num_experts = kE;
      lc.top_k = kK;
      lc.expert_kind = ExpertKind::kIdentity;
      lc.capacity_factor = cf;
      lc.group_tokens = G;
      lc.router.name = "expert_choice";
      lc.router.init_std = 0.5f;
      auto made = MoeLayer::create(lc);
      ASSERT_TRUE(made.ok()) << made.status().ToString();
      MoeLayer& layer = **made;
      EXPECT_TRUE(layer.router().experts_choose());
      EXPECT_TRUE(layer.router().batch_dependent());
      std::vector<float> x(static_cast<size_t>(T * kD)), y(static_cast<size_t>(T * kD));
      fill_normal(x.data(), T * kD, 1.0f, 9, 77);
      std::vector<uint8_t> mask(static_cast<size_t>(T), 1);
      if (masked)
        for (int64_t t = 0; t < T; t += 5) mask[static_cast<size_t>(t)] = 0;
      ASSERT_TRUE(layer.forward(x.data(), nullptr, T, y.data(), mask.data()).ok());
      const RouterOutput& ro = layer.router_output();
      ASSERT_EQ(ro.K, kE);
      const CapacityPlan& plan = layer.plan();
      // Reference: per group and expert, the C unmasked tokens of highest p (ties: earlier).
      std::vector<std::vector<uint8_t>> took(static_cast<size_t>(T),
                                             std::vector<uint8_t>(static_cast<size_t>(kE), 0));
      int64_t taken = 0, tokens = 0;
      for (int64_t g0 = 0; g0 < T; g0 += G) {
        const int64_t g1 = std::min(T, g0 + G);
        int64_t n = 0;
        for (int64_t t = g0; t < g1; ++t) n += mask[static_cast<size_t>(t)];
        tokens += n;
        const double f = cf > 0 ? cf : 1.0;
        const int64_t C = std::min<int64_t>(
            n, static_cast<int64_t>(std::ceil(f * static_cast<double>(n * kK) / kE)));
        for (int64_t e = 0; e < kE; ++e) {
          std::vector<int64_t> cand;
          for (int64_t t = g0; t < g1; ++t)
            if (mask[static_cast<size_t>(t)]) cand.push_back(t);
          std::stable_sort(cand.begin(), cand.end(), [&](int64_t a, int64_t b) {
            return ro.probs_TE.at(a, e) > ro.probs_TE.at(b, e);
          });
          for (int64_t i = 0; i < C; ++i) took[static_cast<size_t>(cand[i])][e] = 1;
          taken += C;
        }
      }
      EXPECT_EQ(plan.total_kept, taken);
      EXPECT_EQ(plan.total_routed, taken);
      EXPECT_EQ(plan.total_dropped, 0);
      EXPECT_EQ(layer.last_stats().tokens, tokens);
      int64_t fewer = 0, more = 0;  // tokens with fewer / more than top_k experts
      for (int64_t t = 0; t < T; ++t) {
        std::vector<double> want(static_cast<size_t>(kD), 0.0);
        int64_t got = 0;
        for (int64_t k = 0; k < kE; ++k) {
          const int32_t e = ro.topk_ids_TK[t * kE + k];
          const bool kept = plan.kept_TK[static_cast<size_t>(t * kE + k)] != 0;
          EXPECT_EQ(kept, took[static_cast<size_t>(t)][e] != 0) << "token " << t << " expert " << e;
          if (!kept) continue;
          ++got;
          for (int64_t d = 0; d < kD; ++d) want[d] += ro.probs_TE.at(t, e) * x[t * kD + d];
        }
        if (mask[static_cast<size_t>(t)]) {
          fewer += got < kK;
          more += got > kK;
        }
        for (int64_t d = 0; d < kD; ++d) EXPECT_NEAR(y[t * kD + d], want[d], 1e-5) << t;
      }
      if (cf == 1.0) {  // not K per token: the experts chose
        EXPECT_GT(fewer, 0);
        EXPECT_GT(more, 0);
      }
    }
  }
}

}  // namespace
}  // namespace sy
