// Router::forward's default routing (softmax + top-k, with its NaN-free top-k fast path) gives
// exactly what the reference kernels give: softmax_rows then topk_rows on the same scores.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "routers/registry.h"
#include "runtime/core/rng.h"
#include "runtime/kernels/cpu_kernels.h"

namespace sy {
namespace {

void expect_matches_reference(const RouterOutput& out, bool norm) {
  const int64_t T = out.T, E = out.E, K = out.K;
  std::vector<float> p(static_cast<size_t>(T * E)), vals(static_cast<size_t>(T * K));
  std::vector<int32_t> ids(static_cast<size_t>(T * K));
  softmax_rows(out.logits_TE.ptr(), p.data(), T, E);
  topk_rows(p.data(), T, E, K, ids.data(), vals.data());
  ASSERT_EQ(out.probs_TE.data.size(), p.size());
  for (size_t i = 0; i < p.size(); ++i) {
    if (std::isnan(p[i])) {
      EXPECT_TRUE(std::isnan(out.probs_TE.data[i]));
    } else {
      EXPECT_EQ(out.probs_TE.data[i], p[i]) << i;
    }
  }
  EXPECT_EQ(out.topk_ids_TK, ids);
  if (norm) return;
  for (size_t i = 0; i < vals.size(); ++i) {
    if (std::isnan(vals[i])) continue;
    EXPECT_EQ(out.topk_weights_TK.data[i], vals[i]) << i;
  }
}

TEST(RouterRoute, DefaultRoutingEqualsReferenceKernels) {
  // E >= 32 with 2 <= K <= 8 takes the lane-bound path; E = 130 spans two 64-bit masks.
  for (int64_t E : {1, 2, 16, 33, 60, 130}) {
    for (int64_t K : {int64_t{1}, int64_t{2}, int64_t{4}, int64_t{8}, E}) {
      if (K > E) continue;
      for (float wscale : {0.0f, 0.02f, 1.0f, 100.0f}) {  // 0: all tied; 100: many p == 0
        RouterConfig cfg;
        cfg.d_model = 8;
        cfg.num_experts = E;
        cfg.top_k = K;
        cfg.init_std = wscale;
        auto r = make_router(cfg);
        ASSERT_TRUE(r.ok()) << r.status().ToString();
        // Duplicate expert rows make exact ties between different experts.
        Param& W = (*r)->params().front();
        for (int64_t e = 1; e < E; e += 3)
          for (int64_t d = 0; d < 8; ++d) W.value.at(e, d) = W.value.at(e - 1, d);
        const int64_t T = 37;
        std::vector<float> x(static_cast<size_t>(T * 8));
        fill_normal(x.data(), T * 8, 1.0f, 5, static_cast<uint64_t>(E * 100 + K));
        RouterOutput out;
        (*r)->forward(x.data(), nullptr, T, &out);
        EXPECT_TRUE(out.finite);
        expect_matches_reference(out, false);
      }
    }
  }
}

TEST(RouterRoute, NonFiniteScoresTakeTheReferencePath) {
  RouterConfig cfg;
  cfg.d_model = 4;
  cfg.num_experts = 6;
  cfg.top_k = 3;
  cfg.init_std = 0.5f;
  auto r = make_router(cfg);
  ASSERT_TRUE(r.ok());
  std::vector<float> x(4 * 4);
  fill_normal(x.data(), 16, 1.0f, 1, 2);
  x[5] = NAN;  // token 1 gets NaN scores
  x[8] = INFINITY;
  RouterOutput out;
  (*r)->forward(x.data(), nullptr, 4, &out);
  EXPECT_FALSE(out.finite);
  expect_matches_reference(out, false);
  for (int32_t id : out.topk_ids_TK) EXPECT_TRUE(id >= 0 && id < 6);
}

TEST(RouterRoute, RenormalizedWeightsUseTheSameChoice) {
  RouterConfig cfg;
  cfg.d_model = 8;
  cfg.num_experts = 16;
  cfg.top_k = 4;
  cfg.init_std = 0.5f;
  cfg.norm_topk_prob = true;
  auto r = make_router(cfg);
  ASSERT_TRUE(r.ok());
  const int64_t T = 20;
  std::vector<float> x(static_cast<size_t>(T * 8));
  fill_normal(x.data(), T * 8, 1.0f, 3, 4);
  RouterOutput out;
  (*r)->forward(x.data(), nullptr, T, &out);
  expect_matches_reference(out, true);
  for (int64_t t = 0; t < T; ++t) {
    float s = 0.0f;
    for (int64_t k = 0; k < 4; ++k) s += out.topk_weights_TK.at(t, k);
    EXPECT_NEAR(s, 1.0f, 1e-6f);
  }
}

// forward() reuses the caller's buffers without clearing them: a reused RouterOutput must end
// up equal to a fresh one, for every registered router.
TEST(RouterRoute, ReusedOutputEqualsFreshOutput) {
  for (const RouterInfo& info : router_registry()) {
    RouterConfig cfg;
    cfg.name = info.name;
    cfg.d_model = 8;
    cfg.num_experts = 6;
    cfg.top_k = 2;
    cfg.vocab_size = 50;
    cfg.init_std = 0.5f;
    auto r = make_router(cfg);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    const int64_t T = 9;
    std::vector<float> x1(T * 8), x2(T * 8);
    fill_normal(x1.data(), T * 8, 1.0f, 1, 1);
    fill_normal(x2.data(), T * 8, 1.0f, 1, 2);
    std::vector<int32_t> ids1(T), ids2(T);
    for (int64_t t = 0; t < T; ++t) {
      ids1[t] = static_cast<int32_t>(t * 5 % 50);
      ids2[t] = static_cast<int32_t>(t * 7 % 50);
    }
    x1[3] = NAN;  // the first call leaves non-finite values and finite == false behind
    RouterOutput reused, fresh;
    (*r)->forward(x1.data(), ids1.data(), T, &reused);
    (*r)->forward(x2.data(), ids2.data(), T, &reused);
    (*r)->forward(x2.data(), ids2.data(), T, &fresh);
    EXPECT_EQ(reused.logits_TE.data, fresh.logits_TE.data) << info.name;
    EXPECT_EQ(reused.probs_TE.data, fresh.probs_TE.data) << info.name;
    EXPECT_EQ(reused.topk_ids_TK, fresh.topk_ids_TK) << info.name;
    EXPECT_EQ(reused.topk_weights_TK.data, fresh.topk_weights_TK.data) << info.name;
    EXPECT_EQ(reused.finite, fresh.finite) << info.name;
  }
}

}  // namespace
}  // namespace sy
