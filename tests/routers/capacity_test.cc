#include "runtime/kernels/capacity.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <set>
#include <vector>

#include "runtime/core/rng.h"

namespace sy {
namespace {

// Every token's slot 0 goes to expert 0; slot 1 to 1 + t % (E - 1). Probabilities random.
struct Skewed {
  int64_t T, E, K = 2;
  std::vector<int32_t> ids;
  std::vector<float> probs;
  Skewed(int64_t T_, int64_t E_, uint64_t seed) : T(T_), E(E_) {
    Rng rng(seed);
    for (int64_t t = 0; t < T; ++t) {
      ids.push_back(0);
      ids.push_back(static_cast<int32_t>(1 + t % (E - 1)));
      probs.push_back(static_cast<float>(0.5 + 0.5 * rng.uniform()));
      probs.push_back(static_cast<float>(0.5 * rng.uniform()));
    }
  }
};

CapacityConfig Cfg(double cf, DropPolicy p = DropPolicy::kProbs) {
  CapacityConfig c;
  c.capacity_factor = cf;
  c.policy = p;
  return c;
}

// Invariants every plan satisfies.
void ExpectConsistent(const CapacityPlan& p, const int32_t* ids) {
  ASSERT_EQ(p.offsets_E1.size(), static_cast<size_t>(p.E + 1));
  EXPECT_EQ(p.offsets_E1[0], 0);
  EXPECT_EQ(p.total_kept + p.total_dropped, p.total_routed);
  int64_t kept_flags = 0;
  for (uint8_t f : p.kept_TK) kept_flags += f;
  EXPECT_EQ(kept_flags, p.total_kept);
  for (int64_t e = 0; e < p.E; ++e) {
    EXPECT_EQ(p.kept_E[e] + p.dropped_E[e], p.routed_E[e]);
    EXPECT_LE(p.kept_E[e], p.capacity);
    EXPECT_EQ(p.offsets_E1[e + 1] - p.offsets_E1[e], p.kept_E[e]);
    for (int32_t r = p.offsets_E1[e]; r < p.offsets_E1[e + 1]; ++r) {
      const int32_t a = p.order_A[r];
      EXPECT_EQ(ids[a], e) << "row " << r << " is in expert " << e << "'s block";
      EXPECT_EQ(p.row_of_TK[a], r);
      EXPECT_TRUE(p.kept_TK[a]);
      if (r > p.offsets_E1[e]) {
        EXPECT_LT(p.order_A[r - 1], a) << "ascending (token, slot) within an expert";
      }
    }
  }
  for (size_t a = 0; a < p.kept_TK.size(); ++a)
    if (!p.kept_TK[a]) {
      EXPECT_EQ(p.row_of_TK[a], -1);
    }
}

TEST(Capacity, AllToOneExpertDropsExactlyRoutedMinusCapacity) {
  Skewed s(40, 8, 7);
  auto plan = plan_capacity(s.ids.data(), s.probs.data(), s.T, s.E, s.K, 16, Cfg(1.0));
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  const CapacityPlan& p = *plan;
  EXPECT_EQ(p.capacity, 10);  // ceil(1.0 * 40 * 2 / 8)
  EXPECT_EQ(p.routed_E[0], 40);
  EXPECT_EQ(p.kept_E[0], 10);
  EXPECT_EQ(p.dropped_E[0], 30);
  EXPECT_EQ(p.total_dropped, 30);
  for (int64_t e = 1; e < s.E; ++e) EXPECT_EQ(p.dropped_E[e], 0);
  ExpectConsistent(p, s.ids.data());

  // Kept are the 10 highest probabilities of expert 0; every dropped one is below every kept.
  float min_kept = INFINITY, max_dropped = -INFINITY;
  for (int64_t t = 0; t < s.T; ++t) {
    const float q = s.probs[t * 2];
    if (p.kept_TK[t * 2])
      min_kept = std::min(min_kept, q);
    else
      max_dropped = std::max(max_dropped, q);
  }
  EXPECT_GT(min_kept, max_dropped);
}

TEST(Capacity, SameDropSetOnRepeatedRunsAndSeeds) {
  for (uint64_t seed : {1u, 2u, 3u}) {
    Skewed s(64, 4, seed);
    auto a = plan_capacity(s.ids.data(), s.probs.data(), s.T, s.E, s.K, 8, Cfg(1.0));
    CapacityPlan reused;  // the in-place path, run twice on the same buffers
    for (int rep = 0; rep < 2; ++rep) {
      ASSERT_TRUE(plan_capacity_into(s.ids.data(), s.probs.data(), s.T, s.E, s.K, 8, Cfg(1.0),
                                     nullptr, &reused)
                      .ok());
      EXPECT_EQ(a->kept_TK, reused.kept_TK);
      EXPECT_EQ(a->order_A, reused.order_A);
      EXPECT_EQ(a->row_of_TK, reused.row_of_TK);
    }
  }
}

TEST(Capacity, TiesDropTheHigherTokenIndex) {
  const int64_t T = 12, E = 3, K = 1;
  std::vector<int32_t> ids(T, 1);
  std::vector<float> probs(T, 0.25f);
  probs[5] = 0.9f;                                                         // the one clear winner
  probs[9] = 0.1f;                                                         // the one clear loser
  auto p = plan_capacity(ids.data(), probs.data(), T, E, K, 4, Cfg(1.0));  // C = 4
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->capacity, 4);
  // Kept: token 5, then ties at 0.25 by token index: 0, 1, 2.
  EXPECT_EQ(p->order_A, (std::vector<int32_t>{0, 1, 2, 5}));
  EXPECT_EQ(p->dropped_E[1], 8);
  ExpectConsistent(*p, ids.data());
}

TEST(Capacity, NanRanksLowest) {
  const int64_t T = 4, E = 2, K = 1;
  std::vector<int32_t> ids(T, 0);
  std::vector<float> probs = {NAN, 0.1f, 0.2f, 0.3f};
  auto p = plan_capacity(ids.data(), probs.data(), T, E, K, 4, Cfg(1.0));  // C = 2
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->order_A, (std::vector<int32_t>{2, 3}));
}

TEST(Capacity, DroplessDropsNothing) {
  Skewed s(100, 8, 3);
  for (double cf : {0.0, -1.0}) {
    auto p = plan_capacity(s.ids.data(), s.probs.data(), s.T, s.E, s.K, 16, Cfg(cf));
    ASSERT_TRUE(p.ok());
    EXPECT_TRUE(p->dropless);
    EXPECT_EQ(p->total_dropped, 0);
    EXPECT_EQ(p->total_kept, 200);
    EXPECT_EQ(p->kept_E[0], 100);
    ExpectConsistent(*p, s.ids.data());
  }
}

TEST(Capacity, PositionPolicyKeepsTokenOrder) {
  Skewed s(40, 8, 11);
  auto p = plan_capacity(s.ids.data(), nullptr, s.T, s.E, s.K, 16, Cfg(1.0, DropPolicy::kPosition));
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  for (int64_t t = 0; t < s.T; ++t) EXPECT_EQ(p->kept_TK[t * 2], t < 10 ? 1 : 0) << t;
  ExpectConsistent(*p, s.ids.data());
  // kProbs with no probabilities is an error, not a crash.
  EXPECT_FALSE(plan_capacity(s.ids.data(), nullptr, s.T, s.E, s.K, 16, Cfg(1.0)).ok());
}

TEST(Capacity, OverflowRejectedWithoutAllocating) {
  CapacityPlan p;
  // Null pointers: any read of the inputs or write of outputs would crash.
  Status st =
      plan_capacity_into(nullptr, nullptr, int64_t{1} << 40, 64, 8, 2048, Cfg(1.0), nullptr, &p);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("INT_MAX"), std::string::npos) << st.message();
  // T*K fits an int, rows * D does not.
  st = plan_capacity_into(nullptr, nullptr, int64_t{1} << 20, 8, 8, 4096, Cfg(1.0), nullptr, &p);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("d_model"), std::string::npos) << st.message();
  EXPECT_EQ(p.kept_TK.capacity(), 0u);
  EXPECT_EQ(p.order_A.capacity(), 0u);
  // The largest sizes that fit are accepted by the size check.
  EXPECT_TRUE(check_capacity_sizes(INT_MAX / 4, 8, 4, 1).ok());
  EXPECT_FALSE(check_capacity_sizes(INT_MAX / 4 + 1, 8, 4, 1).ok());
}

// An infinite factor never binds, also for a group of padding only: inf * 0 tokens is NaN, which
// must take the clamp (converting it to an integer is undefined; found by fuzz/fuzz_capacity.cc).
TEST(Capacity, InfiniteFactorWithNoRealTokens) {
  EXPECT_EQ(expert_capacity(Cfg(INFINITY), 0, 4, 2), 0);
  EXPECT_EQ(expert_capacity(Cfg(INFINITY), 3, 4, 2), 6);
  EXPECT_EQ(expert_capacity(Cfg(1e300), 0, 4, 2), 0);
  const int64_t T = 4, E = 2, K = 1;
  std::vector<int32_t> ids = {0, 1, 0, 0};
  std::vector<float> probs(T, 0.5f);
  std::vector<uint8_t> mask = {0, 0, 1, 1};  // group 0 (tokens 0, 1) is all padding
  CapacityConfig cfg = Cfg(INFINITY);
  cfg.group_tokens = 2;
  auto p = plan_capacity(ids.data(), probs.data(), T, E, K, 4, cfg, mask.data());
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_EQ(p->capacity, 2);  // group 1's 2 assignments: nothing dropped
  EXPECT_EQ(p->total_kept, 2);
  EXPECT_EQ(p->total_dropped, 0);
  ExpectConsistent(*p, ids.data());
  // The whole batch padding: no capacity anywhere.
  std::vector<uint8_t> none(T, 0);
  cfg.group_tokens = 0;
  p = plan_capacity(ids.data(), probs.data(), T, E, K, 4, cfg, none.data());
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_EQ(p->capacity, 0);
  EXPECT_EQ(p->rows(), 0);
}

TEST(Capacity, BadSizesAndIdsAreErrors) {
  EXPECT_FALSE(check_capacity_sizes(4, 2, 3, 8).ok());   // K > E
  EXPECT_FALSE(check_capacity_sizes(-1, 2, 1, 8).ok());  // negative T
  EXPECT_FALSE(check_capacity_sizes(4, 0, 1, 8).ok());
  std::vector<int32_t> ids = {0, 5};
  std::vector<float> probs = {0.5f, 0.5f};
  auto p = plan_capacity(ids.data(), probs.data(), 2, 4, 1, 8, Cfg(1.0));
  EXPECT_EQ(p.status().code(), StatusCode::kInvalidArgument);
}

TEST(Capacity, ZeroTokens) {
  auto p = plan_capacity(nullptr, nullptr, 0, 4, 2, 8, Cfg(1.0));
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->rows(), 0);
  EXPECT_EQ(p->offsets_E1, std::vector<int32_t>(5, 0));
}

TEST(Capacity, MaskedTokensTakeNoCapacity) {
  // Unpadded batch: 20 tokens; padded: the same 20 interleaved with 20 pads routed to expert 0.
  Skewed s(20, 4, 5);
  auto ref = plan_capacity(s.ids.data(), s.probs.data(), s.T, s.E, s.K, 8, Cfg(1.0));
  std::vector<int32_t> ids;
  std::vector<float> probs;
  std::vector<uint8_t> mask;
  for (int64_t t = 0; t < s.T; ++t) {
    ids.insert(ids.end(), {0, 1});
    probs.insert(probs.end(), {1.0f, 1.0f});  // pads would win every tie if they counted
    mask.push_back(0);
    ids.insert(ids.end(), {s.ids[t * 2], s.ids[t * 2 + 1]});
    probs.insert(probs.end(), {s.probs[t * 2], s.probs[t * 2 + 1]});
    mask.push_back(1);
  }
  auto pad = plan_capacity(ids.data(), probs.data(), 2 * s.T, s.E, s.K, 8, Cfg(1.0), mask.data());
  ASSERT_TRUE(pad.ok());
  EXPECT_EQ(pad->capacity, ref->capacity);
  EXPECT_EQ(pad->kept_E, ref->kept_E);
  EXPECT_EQ(pad->dropped_E, ref->dropped_E);
  EXPECT_EQ(pad->routed_E, ref->routed_E);
  for (int64_t t = 0; t < s.T; ++t) {
    EXPECT_FALSE(pad->kept_TK[(2 * t) * 2] || pad->kept_TK[(2 * t) * 2 + 1]);
    EXPECT_EQ(pad->kept_TK[(2 * t + 1) * 2], ref->kept_TK[t * 2]);
    EXPECT_EQ(pad->kept_TK[(2 * t + 1) * 2 + 1], ref->kept_TK[t * 2 + 1]);
  }
}

// Property test against a brute-force reference: for each expert, sort its assignments by
// (p desc, flat index asc) and keep the first C.
TEST(Capacity, RandomRoutingMatchesBruteForce) {
  for (uint64_t seed = 0; seed < 50; ++seed) {
    Rng rng(seed, 99);
    const int64_t E = 1 + static_cast<int64_t>(rng.below(12));
    const int64_t K = 1 + static_cast<int64_t>(rng.below(static_cast<uint64_t>(E)));
    const int64_t T = static_cast<int64_t>(rng.below(129));
    const double cf = rng.uniform() < 0.2 ? 0.0 : 0.25 + 2.0 * rng.uniform();
    const bool skew = rng.uniform() < 0.5;
    std::vector<int32_t> ids;
    std::vector<float> probs;
    for (int64_t t = 0; t < T; ++t) {
      std::vector<int32_t> perm(static_cast<size_t>(E));
      for (int64_t e = 0; e < E; ++e) perm[e] = static_cast<int32_t>(e);
      for (int64_t e = E - 1; e > 0; --e)
        std::swap(perm[e], perm[rng.below(static_cast<uint64_t>(e + 1))]);
      if (skew) std::sort(perm.begin(), perm.begin() + K);  // favour low ids
      for (int64_t k = 0; k < K; ++k) {
        ids.push_back(perm[k]);
        probs.push_back(static_cast<float>(rng.below(8)) / 8.0f);  // many ties
      }
    }
    auto p = plan_capacity(ids.data(), probs.data(), T, E, K, 32, Cfg(cf));
    ASSERT_TRUE(p.ok()) << "seed " << seed;
    ExpectConsistent(*p, ids.data());
    const int64_t C = cf > 0 ? static_cast<int64_t>(std::ceil(cf * static_cast<double>(T * K) /
                                                              static_cast<double>(E)))
                             : T * K;
    for (int64_t e = 0; e < E; ++e) {
      std::vector<int32_t> all;
      for (int64_t a = 0; a < T * K; ++a)
        if (ids[a] == e) all.push_back(static_cast<int32_t>(a));
      std::stable_sort(all.begin(), all.end(),
                       [&](int32_t x, int32_t y) { return probs[x] > probs[y]; });
      all.resize(std::min<size_t>(all.size(), static_cast<size_t>(C)));
      std::sort(all.begin(), all.end());
      std::vector<int32_t> got(p->order_A.begin() + p->offsets_E1[e],
                               p->order_A.begin() + p->offsets_E1[e + 1]);
      EXPECT_EQ(got, all) << "seed " << seed << " expert " << e;
    }
  }
}

}  // namespace
}  // namespace sy
