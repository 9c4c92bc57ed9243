#include "routers/metrics.h"

#include <algorithm>
#include <cmath>
#include <sstream>

#include "runtime/core/check.h"

namespace sy {

Status RoutingMetricsConfig::validate() const {
  std::ostringstream err;
  if (!(collapse_fraction >= 0.0 && collapse_fraction <= 1.0))
    err << "collapse_fraction must be in [0, 1] (got " << collapse_fraction << "); ";
  if (!(collapse_imbalance >= 0.0))
    err << "collapse_imbalance must be >= 0 (got " << collapse_imbalance << "); ";
  const std::string e = err.str();
  if (!e.empty()) return InvalidArgument("routing metrics: " + e.substr(0, e.size() - 2));
  return Status::Ok();
}

double RoutingMetricsConfig::collapse_threshold(int64_t E, int64_t K) const {
  if (collapse_imbalance > 0.0) return collapse_imbalance;
  if (E < 1 || K < 1) return 1.0;
  return 1.0 + collapse_fraction * (static_cast<double>(E) / static_cast<double>(K) - 1.0);
}

namespace {

// Per-token sums of the unmasked tokens into *m (E, K, load_E, dropped_E set up). With
// count_load, also counts each assignment into load_E (and dropped_E where kept_TK says so).
void add_token_sums(const float* probs_TE, const int32_t* topk_ids_TK, const uint8_t* kept_TK,
                    int64_t T, const uint8_t* mask_T, bool count_load, RoutingMetrics* m) {
  const int64_t E = m->E, K = m->K;
  for (int64_t t = 0; t < T; ++t) {
    if (mask_T && !mask_T[t]) continue;
    const float* p = probs_TE + t * E;
    const int32_t* ids = topk_ids_TK + t * K;
    double H = 0.0;
    for (int64_t e = 0; e < E; ++e) {
      const double pe = p[e];
      if (pe > 0.0) H -= pe * std::log(pe);  // 0 log 0 = 0; NaN fails the test
    }
    // Rounding can make H a hair negative for a one-hot row; entropy is never below 0.
    H = std::max(H, 0.0);
    m->entropy_sum += H;
    m->exp_entropy_sum += std::exp(H);
    double mass = 0.0;
    for (int64_t k = 0; k < K; ++k) {
      const int32_t e = ids[k];
      SY_CHECK(e >= 0 && e < E) << "expert id " << e << " out of range [0, " << E << ") at token "
                                << t << " slot " << k;
      mass += p[e];
      if (!count_load) continue;
      ++m->load_E[static_cast<size_t>(e)];
      if (kept_TK && !kept_TK[t * K + k]) ++m->dropped_E[static_cast<size_t>(e)];
    }
    m->topk_mass_sum += mass;
    ++m->tokens;
  }
}

RoutingMetrics empty_metrics(const float* probs_TE, const int32_t* topk_ids_TK, int64_t T,
                             int64_t E, int64_t K) {
  SY_CHECK(T >= 0 && E >= 1 && K >= 1 && K <= E)
      << "routing metrics sizes T=" << T << " E=" << E << " K=" << K;
  SY_CHECK(T == 0 || (probs_TE != nullptr && topk_ids_TK != nullptr));
  RoutingMetrics m;
  m.E = E;
  m.K = K;
  m.load_E.assign(static_cast<size_t>(E), 0);
  m.dropped_E.assign(static_cast<size_t>(E), 0);
  return m;
}

}  // namespace

RoutingMetrics routing_metrics_compute(const float* probs_TE, const int32_t* topk_ids_TK,
                                       const uint8_t* kept_TK, int64_t T, int64_t E, int64_t K,
                                       const RoutingMetricsConfig& cfg, const uint8_t* mask_T) {
  RoutingMetrics m = empty_metrics(probs_TE, topk_ids_TK, T, E, K);
  m.have_drops = kept_TK != nullptr;
  add_token_sums(probs_TE, topk_ids_TK, kept_TK, T, mask_T, /*count_load=*/true, &m);
  routing_metrics_finalize(&m, cfg);
  return m;
}

RoutingMetrics routing_metrics_from_counts(const float* probs_TE, const int32_t* topk_ids_TK,
                                           int64_t T, int64_t E, int64_t K, const int64_t* routed_E,
                                           const int64_t* dropped_E,
                                           const RoutingMetricsConfig& cfg, const uint8_t* mask_T) {
  RoutingMetrics m = empty_metrics(probs_TE, topk_ids_TK, T, E, K);
  SY_CHECK(routed_E != nullptr);
  m.have_drops = dropped_E != nullptr;
  m.load_E.assign(routed_E, routed_E + E);
  if (dropped_E) m.dropped_E.assign(dropped_E, dropped_E + E);
  add_token_sums(probs_TE, topk_ids_TK, nullptr, T, mask_T, /*count_load=*/false, &m);
  routing_metrics_finalize(&m, cfg);
  return m;
}

void routing_metrics_finalize(RoutingMetrics* m, const RoutingMetricsConfig& cfg) {
  SY_CHECK(m != nullptr);
  const int64_t E = m->E;
  SY_CHECK_EQ(static_cast<int64_t>(m->load_E.size()), E);
  SY_CHECK_EQ(static_cast<int64_t>(m->dropped_E.size()), E);
  const double logE = E > 1 ? std::log(static_cast<double>(E)) : 0.0;
  const double n = static_cast<double>(m->tokens);

  m->entropy = m->tokens > 0 ? m->entropy_sum / n : 0.0;
  m->entropy_norm = E > 1 ? m->entropy / logE : 1.0;
  m->effective_experts = m->tokens > 0 ? m->exp_entropy_sum / n : 0.0;
  m->topk_mass = m->tokens > 0 ? m->topk_mass_sum / n : 0.0;

  m->routed = 0;
  m->dropped = 0;
  int64_t max_load = 0, used = 0;
  for (int64_t e = 0; e < E; ++e) {
    const int64_t l = m->load_E[static_cast<size_t>(e)];
    m->routed += l;
    m->dropped += m->dropped_E[static_cast<size_t>(e)];
    max_load = std::max(max_load, l);
    used += l > 0 ? 1 : 0;
  }
  m->drop_fraction =
      m->routed > 0 ? static_cast<double>(m->dropped) / static_cast<double>(m->routed) : 0.0;
  m->utilization = E > 0 ? static_cast<double>(used) / static_cast<double>(E) : 0.0;

  m->load_entropy_norm = 0.0;
  m->imbalance = 0.0;
  m->load_cv = 0.0;
  if (m->routed > 0) {
    const double total = static_cast<double>(m->routed);
    const double mean = total / static_cast<double>(E);
    double H = 0.0, var = 0.0;
    for (int64_t e = 0; e < E; ++e) {
      const double l = static_cast<double>(m->load_E[static_cast<size_t>(e)]);
      if (l > 0.0) H -= (l / total) * std::log(l / total);
      var += (l - mean) * (l - mean);
    }
    var /= static_cast<double>(E);
    m->load_entropy_norm = E > 1 ? std::max(H, 0.0) / logE : 1.0;
    m->imbalance = static_cast<double>(max_load) / mean;
    m->load_cv = std::sqrt(var) / mean;
  }
  m->collapse_threshold = cfg.collapse_threshold(E, m->K);
  m->collapsed = m->imbalance > m->collapse_threshold;
}

void routing_metrics_merge(const RoutingMetrics& part, RoutingMetrics* total,
                           const RoutingMetricsConfig& cfg) {
  SY_CHECK(total != nullptr);
  if (total->E == 0) {
    total->E = part.E;
    total->K = part.K;
    total->load_E.assign(static_cast<size_t>(part.E), 0);
    total->dropped_E.assign(static_cast<size_t>(part.E), 0);
  }
  SY_CHECK(total->E == part.E && total->K == part.K)
      << "merging metrics of E=" << part.E << " K=" << part.K << " into E=" << total->E
      << " K=" << total->K;
  SY_CHECK_EQ(part.load_E.size(), total->load_E.size());
  SY_CHECK_EQ(part.dropped_E.size(), total->dropped_E.size());
  total->tokens += part.tokens;
  total->entropy_sum += part.entropy_sum;
  total->exp_entropy_sum += part.exp_entropy_sum;
  total->topk_mass_sum += part.topk_mass_sum;
  for (size_t e = 0; e < part.load_E.size(); ++e) {
    total->load_E[e] += part.load_E[e];
    total->dropped_E[e] += part.dropped_E[e];
  }
  total->have_drops = total->have_drops || part.have_drops;
  routing_metrics_finalize(total, cfg);
}

}  // namespace sy
