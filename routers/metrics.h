// Routing metrics that every run reports per layer and step (docs/routers.md; a collapsed
// router shows here): how sure the router is (entropy, effective experts, top-k mass), how the
// load spreads over experts (load entropy, utilization, max/mean, coefficient of variation), how
// much was dropped, and a collapse flag.
//
// Raw pointers in, a plain struct out; no MPI. For several ranks, each rank computes its own
// RoutingMetrics, the sums (the `*_sum` fields, `tokens`, `load_E`, `dropped_E`) are added up
// (routing_metrics_merge here, or an all-reduce of the same fields) and
// routing_metrics_finalize() recomputes every derived field from the sums. So the merged
// metrics of P ranks equal the metrics of all their tokens computed at once (up to the order
// of the floating-point sums).
//
// Legend: T tokens, E experts, K top-k.
#pragma once

#include <cstdint>
#include <vector>

#include "runtime/core/status.h"

namespace sy {

struct RoutingMetricsConfig {
  // Collapse flag: set when the load imbalance (max/mean) exceeds
  //   1 + collapse_fraction * (E / K - 1),
  // i.e. the given fraction of the way from perfect balance (1) to total collapse (E / K,
  // every token sends one of its K assignments to the same expert). The default 0.5 fires when
  // the busiest expert gets about half of all tokens (E=60, K=4: max/mean > 8; E=16, K=2: > 4.5;
  // E=8, K=2: > 2.5). It never fires when E == K (every token uses every expert).
  double collapse_fraction = 0.5;
  // When > 0, used as the max/mean threshold instead of the fraction above.
  double collapse_imbalance = 0.0;

  Status validate() const;
  // The max/mean threshold for E experts and top-K.
  double collapse_threshold(int64_t E, int64_t K) const;
};

struct RoutingMetrics {
  int64_t E = 0, K = 0;

  // ---- sums over tokens (merge by adding) ----
  int64_t tokens = 0;              // tokens counted (masked tokens are excluded)
  double entropy_sum = 0.0;        // sum_t H(p_t), H = -sum_e p log p, natural log
  double exp_entropy_sum = 0.0;    // sum_t exp(H(p_t))
  double topk_mass_sum = 0.0;      // sum_t sum_{k} p_t[topk_ids[t, k]]
  std::vector<int64_t> load_E;     // [E] assignments routed to e (before capacity drops)
  std::vector<int64_t> dropped_E;  // [E] of those, dropped (all 0 without kept flags)
  bool have_drops = false;         // kept flags were given (on any merged part)

  // ---- derived by routing_metrics_finalize() ----
  double entropy = 0.0;       // mean_t H(p_t), nats
  double entropy_norm = 0.0;  // entropy / log E: 1 uniform, 0 one-hot (E == 1: 1)
  // mean_t exp(H(p_t)): the per-token "number of experts the token spreads over", averaged
  // (not exp(mean H), which is never larger; that one is exp(entropy)).
  double effective_experts = 0.0;
  double topk_mass = 0.0;          // mean_t of the chosen probability mass
  int64_t routed = 0;              // sum_e load_E = tokens * K
  int64_t dropped = 0;             // sum_e dropped_E
  double drop_fraction = 0.0;      // dropped / routed (0 when nothing was routed)
  double load_entropy_norm = 0.0;  // H(load / routed) / log E: 1 balanced (E == 1: 1)
  double utilization = 0.0;        // share of experts with at least one assignment
  double imbalance = 0.0;          // max_e load / mean_e load (1 balanced; 0 when no tokens)
  double load_cv = 0.0;            // population std / mean of load_E (0 balanced or no tokens)
  double collapse_threshold = 0.0;
  bool collapsed = false;  // imbalance > collapse_threshold
};

// Metrics of one batch.
//   probs_TE:    [T, E] router probabilities (softmax); entries <= 0 (or NaN) add no entropy
//   topk_ids_TK: [T, K] chosen experts, ids in [0, E) (checked: out of range is a bug)
//   kept_TK:     [T, K] 1 kept, 0 dropped (CapacityPlan::kept_TK); null = nothing dropped
//   mask_T:      [T] 1 real token, 0 padding; padding is left out of every metric (a padded
//                token's kept flags are 0 but it is not a drop); null = all real
RoutingMetrics routing_metrics_compute(const float* probs_TE, const int32_t* topk_ids_TK,
                                       const uint8_t* kept_TK, int64_t T, int64_t E, int64_t K,
                                       const RoutingMetricsConfig& cfg = {},
                                       const uint8_t* mask_T = nullptr);

// Metrics of one batch whose per-expert counts are known already (an MoE layer's step stats,
// which take them from the capacity plan): the per-token sums from probs_TE and topk_ids_TK as
// above, load_E and dropped_E copied from routed_E and dropped_E [E] (counted over the unmasked
// tokens; dropped_E may be null: nothing dropped). With the plan's counts of the same tokens
// this equals routing_metrics_compute with the plan's kept_TK.
RoutingMetrics routing_metrics_from_counts(const float* probs_TE, const int32_t* topk_ids_TK,
                                           int64_t T, int64_t E, int64_t K, const int64_t* routed_E,
                                           const int64_t* dropped_E,
                                           const RoutingMetricsConfig& cfg = {},
                                           const uint8_t* mask_T = nullptr);

// Recomputes the derived fields of *m from its sums.
void routing_metrics_finalize(RoutingMetrics* m, const RoutingMetricsConfig& cfg = {});

// Adds the sums of `part` into *total (per-rank load counts and per-token sums) and
// re-finalizes. An empty *total (E == 0) takes part's E and K; otherwise they must match.
void routing_metrics_merge(const RoutingMetrics& part, RoutingMetrics* total,
                           const RoutingMetricsConfig& cfg = {});

}  // namespace sy
