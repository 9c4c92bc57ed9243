// Capacity per group: planning several groups in one call keeps exactly what planning each
// group alone keeps, so the drops do not depend on how groups are spread over ranks.
#include <gtest/gtest.h>

#include <vector>

#include "runtime/core/rng.h"
#include "runtime/kernels/capacity.h"

namespace sy {
namespace {

TEST(CapacityGroups, OneCallEqualsEachGroupAlone) {
  for (uint64_t seed = 0; seed < 20; ++seed) {
    Rng rng(seed);
    const int64_t E = 2 + rng.below(7), K = 1 + rng.below(E), G = 1 + rng.below(24);
    const int64_t groups = 1 + rng.below(5), T = G * groups - rng.below(G);  // last may be short
    std::vector<int32_t> ids(T * K);
    std::vector<float> p(T * K);
    std::vector<uint8_t> mask(T, 1);
    for (int64_t t = 0; t < T; ++t) {
      // Skewed: expert 0 is popular, and every token's K ids are distinct.
      for (int64_t k = 0; k < K; ++k)
        ids[t * K + k] = static_cast<int32_t>((t % 3 == 0 ? 0 : t + k * 7) % E);
      for (int64_t k = 0; k < K; ++k) ids[t * K + k] = static_cast<int32_t>((ids[t * K] + k) % E);
      for (int64_t k = 0; k < K; ++k) p[t * K + k] = static_cast<float>(rng.below(4)) / 4.0f;
      mask[t] = rng.below(8) != 0;
    }
    for (DropPolicy policy : {DropPolicy::kProbs, DropPolicy::kPosition}) {
      CapacityConfig cfg;
      cfg.capacity_factor = 1.0;
      cfg.policy = policy;
      cfg.group_tokens = G;
      auto all = plan_capacity(ids.data(), p.data(), T, E, K, 8, cfg, mask.data());
      ASSERT_TRUE(all.ok()) << all.status().ToString();
      cfg.group_tokens = 0;
      int64_t dropped = 0;
      for (int64_t t0 = 0; t0 < T; t0 += G) {
        const int64_t n = std::min(G, T - t0);
        auto one = plan_capacity(ids.data() + t0 * K, p.data() + t0 * K, n, E, K, 8, cfg,
                                 mask.data() + t0);
        ASSERT_TRUE(one.ok());
        for (int64_t i = 0; i < n * K; ++i)
          ASSERT_EQ(all->kept_TK[t0 * K + i], one->kept_TK[i])
              << "seed " << seed << " group " << t0 / G << " assignment " << i;
        dropped += one->total_dropped;
      }
      EXPECT_EQ(all->total_dropped, dropped);
      // Rows stay grouped by expert and in ascending (token, slot) order within an expert.
      for (int64_t e = 0; e < E; ++e)
        for (int32_t r = all->offsets_E1[e] + 1; r < all->offsets_E1[e + 1]; ++r)
          ASSERT_LT(all->order_A[r - 1], all->order_A[r]);
    }
  }
}

TEST(CapacityGroups, NegativeGroupSizeIsAnError) {
  CapacityConfig cfg;
  cfg.group_tokens = -1;
  const int32_t ids[2] = {0, 1};
  const float p[2] = {0.5f, 0.5f};
  EXPECT_FALSE(plan_capacity(ids, p, 2, 2, 1, 4, cfg).ok());
}

}  // namespace
}  // namespace sy
