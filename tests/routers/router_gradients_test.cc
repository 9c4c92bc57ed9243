// Gradient checks (tests/routers/router_gradient_checks.h) for every registered learned
// router, and variants of two. Also: a hybrid built from a linear gate routes exactly like it at
// mix = 0, and its mix still gets a gradient there.
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "routers/registry.h"
#include "tests/routers/router_gradient_checks.h"
#include "tests/routers/router_test_util.h"

namespace sy {
namespace {

// Every registered learned router with its defaults (attention: 1 head; hybrid: mix 0), and
// attention with 2 heads, hybrid at mix 0.7, noisy_topk and sinkhorn in training mode.
std::vector<GradCase> all_cases() {
  std::vector<GradCase> base;
  for (const std::string& r : testing::learned_router_names()) base.push_back({r, r});
  base.push_back({"attention_2heads", "attention", 2});
  base.push_back({"hybrid_mix07", "hybrid", 1, 0.7f});
  // Routers that differ while training: noise held fixed by its counter, Sinkhorn's choice.
  base.push_back({"noisy_topk_training", "noisy_topk", 1, 0.0f, false, true});
  base.push_back({"sinkhorn_training", "sinkhorn", 1, 0.0f, false, true});
  return with_norm_variants(base);
}

INSTANTIATE_TEST_SUITE_P(Learned, RouterGradientTest, ::testing::ValuesIn(all_cases()),
                         grad_case_name);

// A hybrid made from a trained linear gate routes exactly like it while mix == 0: the same
// ids and bitwise the same probabilities and weights.
TEST(HybridRouter, FromLinearGateRoutesIdentically) {
  constexpr int64_t D = 16, E = 8, K = 2, T = 50;
  for (bool norm : {false, true}) {
    RouterConfig lin_cfg;
    lin_cfg.d_model = D;
    lin_cfg.num_experts = E;
    lin_cfg.top_k = K;
    lin_cfg.norm_topk_prob = norm;
    RouterConfig hyb_cfg = lin_cfg;
    hyb_cfg.name = "hybrid";
    hyb_cfg.hidden = 8;
    auto lin = make_router(lin_cfg);
    auto hyb = make_router(hyb_cfg);
    ASSERT_TRUE(lin.ok() && hyb.ok());
    Tensor W({E, D});
    W.data = random_vec(E * D, 1.0f, 300);  // a "trained" gate: not the init draw
    ASSERT_TRUE((*lin)->set_param("weight", W).ok());
    ASSERT_TRUE((*hyb)->set_param("weight", W).ok());
    EXPECT_EQ((*hyb)->find_param("mix")->value.data[0], 0.0f);

    const std::vector<float> x = random_vec(T * D, 1.0f, 301);
    RouterOutput a, b;
    (*lin)->forward(x.data(), nullptr, T, &a);
    (*hyb)->forward(x.data(), nullptr, T, &b);
    EXPECT_EQ(a.topk_ids_TK, b.topk_ids_TK);
    ASSERT_EQ(a.probs_TE.numel(), b.probs_TE.numel());
    EXPECT_EQ(0, std::memcmp(a.probs_TE.ptr(), b.probs_TE.ptr(), sizeof(float) * T * E));
    EXPECT_EQ(0,
              std::memcmp(a.topk_weights_TK.ptr(), b.topk_weights_TK.ptr(), sizeof(float) * T * K));

    // It is not frozen there (issue 12 saw hybrid fine-tune like linear): the task-loss gradient
    // alone reaches mix (dL/dg = ds . MLP(x)), while the MLP's weights get none until g != 0.
    const std::vector<float> dw = random_vec(T * K, 1.0f, 302);
    std::vector<float> dx(T * D, 0.0f);
    (*hyb)->zero_grad();
    RouterGrads g;
    g.dweights_TK = dw.data();
    g.dx_TD = dx.data();
    (*hyb)->backward(g);
    EXPECT_NE((*hyb)->find_param("mix")->grad.data[0], 0.0f);
    for (const char* mlp : {"fc1.weight", "fc2.weight"})
      for (float v : (*hyb)->find_param(mlp)->grad.data) ASSERT_EQ(v, 0.0f) << mlp;
  }
}

}  // namespace
}  // namespace sy
