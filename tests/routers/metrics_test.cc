// Routing metrics on hand-computed cases.
#include "routers/metrics.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

namespace sy {
namespace {

// T tokens; token t routes to experts (t*K + k) % E: every expert gets T*K/E when E | T*K.
std::vector<int32_t> round_robin(int64_t T, int64_t E, int64_t K) {
  std::vector<int32_t> ids(static_cast<size_t>(T * K));
  for (int64_t t = 0; t < T; ++t)
    for (int64_t k = 0; k < K; ++k) ids[t * K + k] = static_cast<int32_t>((t * K + k) % E);
  return ids;
}

TEST(RoutingMetrics, UniformProbsAndBalancedLoads) {
  const int64_t T = 16, E = 8, K = 2;
  std::vector<float> probs(T * E, 1.0f / E);
  const std::vector<int32_t> ids = round_robin(T, E, K);
  const RoutingMetrics m = routing_metrics_compute(probs.data(), ids.data(), nullptr, T, E, K);
  EXPECT_EQ(m.tokens, T);
  EXPECT_NEAR(m.entropy, std::log(8.0), 1e-6);
  EXPECT_NEAR(m.entropy_norm, 1.0, 1e-6);
  EXPECT_NEAR(m.effective_experts, 8.0, 1e-5);
  EXPECT_NEAR(m.topk_mass, 2.0 / 8.0, 1e-7);
  for (int64_t l : m.load_E) EXPECT_EQ(l, T * K / E);
  EXPECT_EQ(m.routed, T * K);
  EXPECT_DOUBLE_EQ(m.imbalance, 1.0);
  EXPECT_DOUBLE_EQ(m.load_cv, 0.0);
  EXPECT_NEAR(m.load_entropy_norm, 1.0, 1e-12);
  EXPECT_DOUBLE_EQ(m.utilization, 1.0);
  EXPECT_EQ(m.dropped, 0);
  EXPECT_DOUBLE_EQ(m.drop_fraction, 0.0);
  EXPECT_FALSE(m.collapsed);
}

TEST(RoutingMetrics, OneHotProbsAllOnOneExpert) {
  const int64_t T = 10, E = 5, K = 1;
  std::vector<float> probs(T * E, 0.0f);
  std::vector<int32_t> ids(T, 3);
  for (int64_t t = 0; t < T; ++t) probs[t * E + 3] = 1.0f;
  const RoutingMetrics m = routing_metrics_compute(probs.data(), ids.data(), nullptr, T, E, K);
  EXPECT_DOUBLE_EQ(m.entropy, 0.0);
  EXPECT_DOUBLE_EQ(m.entropy_norm, 0.0);
  EXPECT_DOUBLE_EQ(m.effective_experts, 1.0);
  EXPECT_DOUBLE_EQ(m.topk_mass, 1.0);
  EXPECT_EQ(m.load_E, (std::vector<int64_t>{0, 0, 0, 10, 0}));
  EXPECT_DOUBLE_EQ(m.utilization, 1.0 / E);
  EXPECT_DOUBLE_EQ(m.imbalance, static_cast<double>(E));  // max/mean = T / (T/E)
  // loads {0,0,0,T,0}: mean T/E, std = T/E * sqrt(E-1)
  EXPECT_NEAR(m.load_cv, std::sqrt(E - 1.0), 1e-12);
  EXPECT_DOUBLE_EQ(m.load_entropy_norm, 0.0);
  EXPECT_TRUE(m.collapsed);
}

TEST(RoutingMetrics, HandComputedMixedCase) {
  // E=3, K=1, two tokens: p0 = (0.5, 0.5, 0) -> expert 0; p1 = (0.2, 0.3, 0.5) -> expert 2.
  const int64_t T = 2, E = 3, K = 1;
  const std::vector<float> probs = {0.5f, 0.5f, 0.0f, 0.2f, 0.3f, 0.5f};
  const std::vector<int32_t> ids = {0, 2};
  const std::vector<uint8_t> kept = {1, 0};
  const RoutingMetrics m = routing_metrics_compute(probs.data(), ids.data(), kept.data(), T, E, K);
  const double H0 = std::log(2.0);
  const double H1 = -(0.2 * std::log(0.2) + 0.3 * std::log(0.3) + 0.5 * std::log(0.5));
  EXPECT_NEAR(m.entropy, (H0 + H1) / 2, 1e-7);
  EXPECT_NEAR(m.entropy_norm, (H0 + H1) / 2 / std::log(3.0), 1e-7);
  EXPECT_NEAR(m.effective_experts, (std::exp(H0) + std::exp(H1)) / 2, 1e-6);
  EXPECT_NEAR(m.topk_mass, 0.5, 1e-7);
  EXPECT_EQ(m.load_E, (std::vector<int64_t>{1, 0, 1}));
  EXPECT_EQ(m.dropped_E, (std::vector<int64_t>{0, 0, 1}));
  EXPECT_EQ(m.dropped, 1);
  EXPECT_DOUBLE_EQ(m.drop_fraction, 0.5);
  EXPECT_NEAR(m.utilization, 2.0 / 3.0, 1e-15);
  EXPECT_DOUBLE_EQ(m.imbalance, 1.5);  // max 1, mean 2/3
  // loads {1,0,1}, mean 2/3, var = (1/9 + 4/9 + 1/9)/3 = 2/9
  EXPECT_NEAR(m.load_cv, std::sqrt(2.0 / 9.0) / (2.0 / 3.0), 1e-12);
  EXPECT_NEAR(m.load_entropy_norm, std::log(2.0) / std::log(3.0), 1e-12);
  EXPECT_TRUE(m.have_drops);
}

TEST(RoutingMetrics, MaskedTokensAreLeftOut) {
  const int64_t T = 4, E = 2, K = 1;
  const std::vector<float> probs = {1, 0, 0, 1, 1, 0, 1, 0};
  const std::vector<int32_t> ids = {0, 1, 0, 0};
  const std::vector<uint8_t> kept = {1, 1, 0, 0};  // tokens 2, 3 are padding, not drops
  const std::vector<uint8_t> mask = {1, 1, 0, 0};
  const RoutingMetrics m =
      routing_metrics_compute(probs.data(), ids.data(), kept.data(), T, E, K, {}, mask.data());
  EXPECT_EQ(m.tokens, 2);
  EXPECT_EQ(m.load_E, (std::vector<int64_t>{1, 1}));
  EXPECT_EQ(m.dropped, 0);
  EXPECT_DOUBLE_EQ(m.imbalance, 1.0);
}

TEST(RoutingMetrics, EmptyBatchIsFinite) {
  const RoutingMetrics m = routing_metrics_compute(nullptr, nullptr, nullptr, 0, 4, 2);
  EXPECT_EQ(m.tokens, 0);
  for (double v : {m.entropy, m.entropy_norm, m.effective_experts, m.topk_mass, m.drop_fraction,
                   m.load_entropy_norm, m.utilization, m.imbalance, m.load_cv})
    EXPECT_TRUE(std::isfinite(v));
  EXPECT_FALSE(m.collapsed);
}

TEST(RoutingMetrics, MergeEqualsOneBatch) {
  // Two "ranks" with skewed halves that are balanced together.
  const int64_t T = 8, E = 4, K = 1;
  std::vector<float> probs(T * E);
  for (int64_t i = 0; i < T * E; ++i)
    probs[i] = 0.1f + 0.2f * static_cast<float>(i % E == i / E % E);
  for (int64_t t = 0; t < T; ++t) {  // normalize rows
    float s = 0;
    for (int64_t e = 0; e < E; ++e) s += probs[t * E + e];
    for (int64_t e = 0; e < E; ++e) probs[t * E + e] /= s;
  }
  const std::vector<int32_t> ids = {0, 0, 1, 1, 2, 2, 3, 3};
  const std::vector<uint8_t> kept = {1, 0, 1, 1, 1, 1, 0, 1};
  const RoutingMetrics all =
      routing_metrics_compute(probs.data(), ids.data(), kept.data(), T, E, K);
  const RoutingMetrics a = routing_metrics_compute(probs.data(), ids.data(), kept.data(), 4, E, K);
  const RoutingMetrics b =
      routing_metrics_compute(probs.data() + 4 * E, ids.data() + 4, kept.data() + 4, 4, E, K);
  EXPECT_DOUBLE_EQ(a.imbalance, 2.0);  // {2,2,0,0}
  EXPECT_DOUBLE_EQ(a.utilization, 0.5);
  RoutingMetrics merged;
  routing_metrics_merge(a, &merged);
  routing_metrics_merge(b, &merged);
  EXPECT_EQ(merged.load_E, all.load_E);
  EXPECT_EQ(merged.dropped_E, all.dropped_E);
  EXPECT_EQ(merged.tokens, all.tokens);
  EXPECT_DOUBLE_EQ(merged.imbalance, 1.0);
  EXPECT_DOUBLE_EQ(merged.utilization, 1.0);
  EXPECT_DOUBLE_EQ(merged.load_cv, 0.0);
  EXPECT_NEAR(merged.entropy, all.entropy, 1e-12);
  EXPECT_NEAR(merged.effective_experts, all.effective_experts, 1e-12);
  EXPECT_NEAR(merged.topk_mass, all.topk_mass, 1e-12);
  EXPECT_DOUBLE_EQ(merged.drop_fraction, 0.25);
}

TEST(RoutingMetrics, CollapseThresholdIsConfigurable) {
  RoutingMetricsConfig cfg;
  EXPECT_DOUBLE_EQ(cfg.collapse_threshold(60, 4), 8.0);  // 1 + 0.5 * (15 - 1)
  EXPECT_DOUBLE_EQ(cfg.collapse_threshold(16, 2), 4.5);
  EXPECT_DOUBLE_EQ(cfg.collapse_threshold(4, 4), 1.0);
  EXPECT_TRUE(cfg.validate().ok());
  // loads {3,1,0,0} with K=1: max/mean = 3 / 1 = 3 > 1 + 0.5 * 3 = 2.5
  const int64_t T = 4, E = 4, K = 1;
  const std::vector<float> probs(T * E, 0.25f);
  const std::vector<int32_t> ids = {0, 0, 0, 1};
  EXPECT_TRUE(routing_metrics_compute(probs.data(), ids.data(), nullptr, T, E, K, cfg).collapsed);
  cfg.collapse_imbalance = 3.5;
  EXPECT_FALSE(routing_metrics_compute(probs.data(), ids.data(), nullptr, T, E, K, cfg).collapsed);
  cfg.collapse_fraction = 1.5;
  EXPECT_FALSE(cfg.validate().ok());
}

}  // namespace
}  // namespace sy
