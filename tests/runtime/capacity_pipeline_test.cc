// The data-parallel capacity pipeline (runtime/kernels/capacity_pipeline.h: the steps the CUDA
// backend runs, on the host with stable sorts) against the CPU plan (plan_capacity_into), field
// by field and bitwise, over random cases: both drop policies, dropless and several capacity
// factors, whole-call and per-group capacity (short last groups), padding masks, ties in
// probability, NaN / infinite / signed-zero probabilities, skewed routing, out-of-range ids, and
// expert choice.
#include "runtime/kernels/capacity_pipeline.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "runtime/backend/backend.h"
#include "runtime/backend/ops.h"
#include "runtime/kernels/capacity.h"
#include "runtime/kernels/capacity_math.h"

namespace sy {
namespace {

struct Case {
  int64_t T = 0, E = 1, K = 1;
  CapacityConfig cfg;
  std::vector<int32_t> ids;
  std::vector<float> probs;
  std::vector<uint8_t> mask;
  bool with_probs = true, with_mask = false;
  std::string describe() const {
    return "T=" + std::to_string(T) + " E=" + std::to_string(E) + " K=" + std::to_string(K) +
           " cf=" + std::to_string(cfg.capacity_factor) +
           " policy=" + drop_policy_name(cfg.policy) +
           " group=" + std::to_string(cfg.group_tokens) +
           " choice_k=" + std::to_string(cfg.choice_k) + (with_mask ? " masked" : "") +
           (with_probs ? "" : " no-probs");
  }
};

// Device copies of a case's inputs (freed with it).
struct Uploaded {
  Backend* b;
  void* ids = nullptr;
  void* probs = nullptr;
  void* mask = nullptr;
  template <typename T>
  void* up(const std::vector<T>& v) {
    if (v.empty()) return nullptr;
    void* p = b->alloc(static_cast<int64_t>(v.size() * sizeof(T)));
    b->copy_from_host(p, v.data(), static_cast<int64_t>(v.size() * sizeof(T)));
    return p;
  }
  Uploaded(Backend* backend, const Case& c) : b(backend) {
    ids = up(c.ids);
    if (c.with_probs) probs = up(c.probs);
    if (c.with_mask) mask = up(c.mask);
  }
  ~Uploaded() {
    b->free(ids);
    b->free(probs);
    b->free(mask);
  }
};

// Compares every field of plan_capacity_into's plan with the pipeline's: the host reference,
// or with `device` the backend's capacity_plan on device copies of the inputs. Counts in *errors
// the cases both refused (same code, same message).
void ExpectSamePlan(const Case& c, int* errors, const ExecContext* device = nullptr) {
  CapacityPlan want;
  CapacityPlan got = device ? CapacityPlan(device->backend) : CapacityPlan();
  const float* probs = c.with_probs ? c.probs.data() : nullptr;
  const uint8_t* mask = c.with_mask ? c.mask.data() : nullptr;
  const Status sw = plan_capacity_into(c.ids.data(), probs, c.T, c.E, c.K, 16, c.cfg, mask, &want);
  Status sg;
  if (device) {
    const Uploaded d(device->backend, c);
    // A reused plan's stale rows must not leak through.
    got.order_A.assign(5, 77);
    got.row_of_TK.assign(3, 77);
    // A case with tokens and a null device pointer would be a different case: keep null where
    // the host input is empty (T = 0) or absent.
    sg = ops::capacity_plan(*device, static_cast<const int32_t*>(d.ids),
                            static_cast<const float*>(d.probs), c.T, c.E, c.K, 16, c.cfg,
                            static_cast<const uint8_t*>(d.mask), &got);
  } else {
    sg = plan_capacity_pipeline(c.ids.data(), probs, c.T, c.E, c.K, 16, c.cfg, mask, &got);
  }
  ASSERT_EQ(sw.ok(), sg.ok()) << c.describe() << ": " << sw.ToString() << " vs " << sg.ToString();
  if (!sw.ok()) {
    EXPECT_EQ(sw.code(), sg.code()) << c.describe();
    EXPECT_EQ(sw.message(), sg.message()) << c.describe();
    ++*errors;
    return;
  }
  const std::string d = c.describe();
  EXPECT_EQ(want.T, got.T) << d;
  EXPECT_EQ(want.E, got.E) << d;
  EXPECT_EQ(want.K, got.K) << d;
  EXPECT_EQ(want.capacity, got.capacity) << d;
  EXPECT_EQ(want.dropless, got.dropless) << d;
  EXPECT_EQ(want.tokens, got.tokens) << d;
  EXPECT_EQ(want.kept_TK, got.kept_TK) << d;
  EXPECT_EQ(want.row_of_TK.to_host(), got.row_of_TK.to_host()) << d;
  EXPECT_EQ(want.routed_E, got.routed_E) << d;
  EXPECT_EQ(want.kept_E, got.kept_E) << d;
  EXPECT_EQ(want.dropped_E, got.dropped_E) << d;
  EXPECT_EQ(want.offsets_E1, got.offsets_E1) << d;
  EXPECT_EQ(want.order_A.to_host(), got.order_A.to_host()) << d;
  EXPECT_EQ(want.total_routed, got.total_routed) << d;
  EXPECT_EQ(want.total_kept, got.total_kept) << d;
  EXPECT_EQ(want.total_dropped, got.total_dropped) << d;
}

// Probabilities from a small set (ties everywhere, NaN, infinities, both zeros, a subnormal)
// or continuous.
float DrawProb(std::mt19937_64& rng, int style) {
  static const float kSpecial[] = {0.0f,
                                   -0.0f,
                                   0.25f,
                                   0.5f,
                                   0.5f,
                                   1.0f,
                                   std::numeric_limits<float>::quiet_NaN(),
                                   -std::numeric_limits<float>::quiet_NaN(),
                                   std::numeric_limits<float>::infinity(),
                                   -std::numeric_limits<float>::infinity(),
                                   std::numeric_limits<float>::denorm_min(),
                                   -1.0f};
  std::uniform_real_distribution<float> u(0.0f, 1.0f);
  switch (style) {
    case 0:
      return u(rng);
    case 1:  // coarse: many exact ties
      return static_cast<float>(rng() % 4) * 0.25f;
    case 2:
      return kSpecial[rng() % (sizeof kSpecial / sizeof kSpecial[0])];
    default:  // all equal: only the index decides
      return 0.5f;
  }
}

Case RandomCase(std::mt19937_64& rng, int i) {
  Case c;
  const bool choice = i % 7 == 3;
  if (choice) {
    c.E = 1 + static_cast<int64_t>(rng() % 40);
    c.K = c.E;
  } else {
    const int64_t e_pick = rng() % 4;
    c.E = e_pick == 0   ? 1 + static_cast<int64_t>(rng() % 4)
          : e_pick == 1 ? 1 + static_cast<int64_t>(rng() % 300)
                        : 1 + static_cast<int64_t>(rng() % 64);
    c.K = 1 + static_cast<int64_t>(rng() % std::min<int64_t>(8, c.E));
  }
  const int64_t t_pick = rng() % 10;
  c.T = t_pick == 0   ? 0
        : t_pick <= 5 ? static_cast<int64_t>(rng() % 64)
        : t_pick <= 8 ? static_cast<int64_t>(rng() % 600)
                      : static_cast<int64_t>(rng() % 3000);
  if (choice) c.T = std::min<int64_t>(c.T, 400);
  static const double kFactors[] = {0.0, -1.0, 0.1, 0.5, 1.0, 1.25, 2.0, 1e30};
  c.cfg.capacity_factor = kFactors[rng() % (sizeof kFactors / sizeof kFactors[0])];
  if (rng() % 40 == 0) c.cfg.capacity_factor = std::numeric_limits<double>::infinity();
  c.cfg.policy = rng() % 2 ? DropPolicy::kProbs : DropPolicy::kPosition;
  const int64_t g_pick = rng() % 4;
  c.cfg.group_tokens = g_pick <= 1   ? 0
                       : g_pick == 2 ? 1 + static_cast<int64_t>(rng() % 8)
                                     : 1 + static_cast<int64_t>(rng() % (c.T + 8));
  if (choice) c.cfg.choice_k = 1 + static_cast<int64_t>(rng() % c.E);
  // Routing: uniform, or skewed onto a few hot experts (drops), or slot k -> expert k.
  const int route = static_cast<int>(rng() % 3);
  const int64_t A = c.T * c.K;
  c.ids.resize(static_cast<size_t>(A));
  for (int64_t t = 0; t < c.T; ++t)
    for (int64_t k = 0; k < c.K; ++k) {
      int32_t e;
      if (choice) {
        e = static_cast<int32_t>(k);
      } else if (route == 0) {
        e = static_cast<int32_t>(rng() % c.E);
      } else if (route == 1) {
        e = static_cast<int32_t>(rng() % 3 == 0 ? rng() % c.E : rng() % std::min<int64_t>(3, c.E));
      } else {
        e = static_cast<int32_t>((k + t % 2) % c.E);
      }
      c.ids[static_cast<size_t>(t * c.K + k)] = e;
    }
  const int style = static_cast<int>(rng() % 4);
  c.probs.resize(static_cast<size_t>(A));
  for (float& p : c.probs) p = DrawProb(rng, style);
  c.with_probs = !(rng() % 8 == 0 && (c.cfg.policy == DropPolicy::kPosition || c.cfg.dropless()));
  c.with_mask = rng() % 3 == 0;
  if (c.with_mask) {
    const int density = static_cast<int>(rng() % 4);  // 0: all masked
    c.mask.resize(static_cast<size_t>(c.T));
    for (uint8_t& m : c.mask) m = density == 0 ? 0 : (rng() % 4 < static_cast<uint64_t>(density));
  }
  // Now and then an out-of-range id (negative or >= E), maybe on a masked token (ignored).
  if (A > 0 && rng() % 25 == 0) {
    const int bad = 1 + static_cast<int>(rng() % 3);
    for (int b = 0; b < bad; ++b)
      c.ids[static_cast<size_t>(rng() % A)] =
          rng() % 2 ? -1 - static_cast<int32_t>(rng() % 5) : static_cast<int32_t>(c.E + rng() % 3);
  }
  return c;
}

TEST(CapacityPipeline, MatchesThePlanOnRandomCases) {
  std::mt19937_64 rng(20240514);
  const int kCases = 4000;
  int errors = 0, dropping = 0, choice = 0;
  for (int i = 0; i < kCases; ++i) {
    const Case c = RandomCase(rng, i);
    ExpectSamePlan(c, &errors);
    if (::testing::Test::HasFailure()) {
      ADD_FAILURE() << "first failing case #" << i << ": " << c.describe();
      return;
    }
    CapacityPlan p;
    if (plan_capacity_into(c.ids.data(), c.with_probs ? c.probs.data() : nullptr, c.T, c.E, c.K, 16,
                           c.cfg, c.with_mask ? c.mask.data() : nullptr, &p)
            .ok()) {
      dropping += p.total_dropped > 0;
      choice += c.cfg.choice_k > 0 && p.total_kept < p.tokens * c.K;
    }
  }
  // The cases exercise what they are meant to.
  EXPECT_GT(errors, 20);
  EXPECT_GT(dropping, kCases / 5);
  EXPECT_GT(choice, 100);
  std::printf(
      "[capacity pipeline] %d cases: %d refused alike, %d with drops, %d expert choice "
      "with offers declined\n",
      kCases, errors, dropping, choice);
}

// The same random cases through the CUDA backend's capacity_plan (the pipeline on the device),
// where one is visible; skipped elsewhere.
TEST(CapacityPipeline, DevicePlanMatchesOnRandomCases) {
  const ExecContext* device = make_context("cuda", false);
  if (device == nullptr)
    GTEST_SKIP() << "no cuda device: "
                 << (backend_unavailable("cuda").empty() ? std::string("not built with CUDA")
                                                         : backend_unavailable("cuda"));
  std::mt19937_64 rng(20240514);
  const int kCases = 1500;
  int errors = 0;
  for (int i = 0; i < kCases; ++i) {
    const Case c = RandomCase(rng, i);
    ExpectSamePlan(c, &errors, device);
    if (::testing::Test::HasFailure()) {
      ADD_FAILURE() << "first failing case #" << i << ": " << c.describe();
      return;
    }
  }
  EXPECT_GT(errors, 5);
}

// The tie rules spelled out: NaN ranks with -inf (lowest), -0 with +0, then the earlier token.
TEST(CapacityPipeline, TieRules) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  EXPECT_EQ(capacity_rank_key(nan), capacity_rank_key(-inf));
  EXPECT_EQ(capacity_rank_key(-nan), capacity_rank_key(-inf));
  EXPECT_EQ(capacity_rank_key(-0.0f), capacity_rank_key(0.0f));
  EXPECT_LT(capacity_rank_key(inf), capacity_rank_key(1.0f));
  EXPECT_LT(capacity_rank_key(1.0f), capacity_rank_key(0.5f));
  EXPECT_LT(capacity_rank_key(std::numeric_limits<float>::denorm_min()), capacity_rank_key(0.0f));
  EXPECT_LT(capacity_rank_key(0.0f), capacity_rank_key(-std::numeric_limits<float>::denorm_min()));
  EXPECT_LT(capacity_rank_key(-1.0f), capacity_rank_key(-inf));

  // One expert, capacity 2 of 6 tokens (cf = 1/3): -0 and +0 tie (the earlier kept), NaN loses.
  Case c;
  c.T = 6;
  c.E = 1;
  c.K = 1;
  c.cfg.capacity_factor = 1.0 / 3.0;
  c.ids.assign(6, 0);
  c.probs = {nan, -0.0f, -inf, 0.0f, -1.0f, nan};
  int errors = 0;
  ExpectSamePlan(c, &errors);
  CapacityPlan p;
  ASSERT_TRUE(
      plan_capacity_pipeline(c.ids.data(), c.probs.data(), 6, 1, 1, 16, c.cfg, nullptr, &p).ok());
  EXPECT_EQ(p.capacity, 2);
  EXPECT_EQ(p.order_A.to_host(), (std::vector<int32_t>{1, 3}));
}

TEST(CapacityPipeline, EmptyAndAllMasked) {
  int errors = 0;
  for (int64_t T : {0, 5})
    for (double cf : {0.0, 1.0})
      for (int64_t group : {0, 2}) {
        Case c;
        c.T = T;
        c.E = 3;
        c.K = 2;
        c.cfg.capacity_factor = cf;
        c.cfg.group_tokens = group;
        c.ids.assign(static_cast<size_t>(T * 2), 1);
        c.probs.assign(static_cast<size_t>(T * 2), 0.5f);
        c.mask.assign(static_cast<size_t>(T), 0);
        c.with_mask = T > 0;
        ExpectSamePlan(c, &errors);
      }
  EXPECT_EQ(errors, 0);
}

// The same errors, same messages: the first bad id in (token, slot) order among real tokens.
TEST(CapacityPipeline, RefusesAlike) {
  Case c;
  c.T = 4;
  c.E = 3;
  c.K = 2;
  c.ids = {0, 1, 9, -2, 2, 7, 0, 0};
  c.probs.assign(8, 0.5f);
  c.mask = {1, 0, 1, 1};
  c.with_mask = true;
  int errors = 0;
  ExpectSamePlan(c, &errors);  // token 1 is padding: token 2 slot 0 (id 2) ok, slot 1 id 7
  EXPECT_EQ(errors, 1);
  c.cfg.group_tokens = -1;
  ExpectSamePlan(c, &errors);
  c.cfg.group_tokens = 0;
  c.with_probs = false;
  ExpectSamePlan(c, &errors);
  c.cfg.choice_k = 2;
  ExpectSamePlan(c, &errors);
  EXPECT_EQ(errors, 4);
}

}  // namespace
}  // namespace sy
