#include "routers/capacity.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstring>
#include <sstream>

namespace sy {

const char* drop_policy_name(DropPolicy p) {
  return p == DropPolicy::kPosition ? "position" : "probs";
}

StatusOr<DropPolicy> parse_drop_policy(const char* name) {
  const std::string n = name ? name : "";
  if (n == "probs") return DropPolicy::kProbs;
  if (n == "position") return DropPolicy::kPosition;
  return InvalidArgument("unknown drop policy '" + n + "' (known: probs, position)");
}

Status check_capacity_sizes(int64_t T, int64_t E, int64_t K, int64_t D) {
  std::ostringstream err;
  if (T < 0) err << "tokens must be >= 0 (got " << T << "); ";
  if (E < 1) err << "num_experts must be >= 1 (got " << E << "); ";
  if (K < 1) err << "top_k must be >= 1 (got " << K << "); ";
  if (E >= 1 && K > E) err << "top_k (" << K << ") must be <= num_experts (" << E << "); ";
  if (D < 0) err << "d_model must be >= 0 (got " << D << "); ";
  if (E > INT_MAX) err << "num_experts " << E << " exceeds int; ";
  std::string e = err.str();
  if (!e.empty()) return InvalidArgument("capacity plan: " + e.substr(0, e.size() - 2));
  // Divisions, not products, so the check itself cannot overflow.
  if (T > INT_MAX / K) {
    err << "capacity plan: tokens*top_k = " << T << "*" << K
        << " exceeds INT_MAX (MPI counts are int); split the batch";
    return InvalidArgument(err.str());
  }
  if (D > 0 && T * K > INT_MAX / D) {
    err << "capacity plan: rows*d_model = " << T * K << "*" << D
        << " exceeds INT_MAX (MPI counts are int); split the batch";
    return InvalidArgument(err.str());
  }
  return Status::Ok();
}

int64_t expert_capacity(const CapacityConfig& cfg, int64_t tokens, int64_t E, int64_t K) {
  if (cfg.dropless()) return tokens * K;
  // tokens*K <= INT_MAX, so the double product is exact before the ceil; clamp for huge factors.
  const double c =
      std::ceil(cfg.capacity_factor * static_cast<double>(tokens * K) / static_cast<double>(E));
  return c >= static_cast<double>(tokens * K) ? tokens * K : static_cast<int64_t>(c);
}

namespace {

// Ranking key: NaN ranks below every number.
inline float rank_key(float p) {
  return std::isnan(p) ? -INFINITY : p;
}

}  // namespace

Status plan_capacity_into(const int32_t* topk_ids_TK, const float* rank_probs_TK, int64_t T,
                          int64_t E, int64_t K, int64_t D, const CapacityConfig& cfg,
                          const uint8_t* mask_T, CapacityPlan* plan) {
  SY_CHECK(plan != nullptr);
  SY_RETURN_IF_ERROR(check_capacity_sizes(T, E, K, D));
  if (T > 0 && topk_ids_TK == nullptr) return InvalidArgument("capacity plan: topk_ids is null");
  if (T > 0 && cfg.policy == DropPolicy::kProbs && !cfg.dropless() && rank_probs_TK == nullptr)
    return InvalidArgument("capacity plan: drop policy 'probs' needs the ranking probabilities");
  const int64_t TK = T * K;
  CapacityPlan& p = *plan;
  p.T = T;
  p.E = E;
  p.K = K;
  p.dropless = cfg.dropless();
  p.kept_TK.assign(static_cast<size_t>(TK), 0);
  p.row_of_TK.assign(static_cast<size_t>(TK), -1);
  p.routed_E.assign(static_cast<size_t>(E), 0);
  p.kept_E.assign(static_cast<size_t>(E), 0);
  p.dropped_E.assign(static_cast<size_t>(E), 0);
  p.offsets_E1.assign(static_cast<size_t>(E + 1), 0);

  // Pass 1: count routed assignments per expert (unmasked tokens only) and validate ids.
  int64_t valid_tokens = 0;
  for (int64_t t = 0; t < T; ++t) {
    if (mask_T && !mask_T[t]) continue;
    ++valid_tokens;
    for (int64_t k = 0; k < K; ++k) {
      const int32_t e = topk_ids_TK[t * K + k];
      if (e < 0 || e >= E) {
        std::ostringstream m;
        m << "capacity plan: token " << t << " slot " << k << " routed to expert " << e
          << ", outside [0, " << E << ")";
        return InvalidArgument(m.str());
      }
      ++p.routed_E[static_cast<size_t>(e)];
    }
  }
  p.capacity = expert_capacity(cfg, valid_tokens, E, K);

  // Pass 2: counting sort of the routed assignments by expert; (token, slot) order within each
  // expert comes for free from the loop order.
  std::vector<int32_t>& ro = p.scratch_offsets_E1_;
  ro.assign(static_cast<size_t>(E + 1), 0);
  for (int64_t e = 0; e < E; ++e) ro[static_cast<size_t>(e + 1)] = ro[e] + p.routed_E[e];
  const int64_t routed = ro[static_cast<size_t>(E)];
  std::vector<int32_t>& all = p.scratch_routed_A_;
  all.resize(static_cast<size_t>(routed));
  {
    // Fill cursors live in offsets_E1 for now; it is rewritten below.
    std::copy(ro.begin(), ro.end() - 1, p.offsets_E1.begin());
    for (int64_t t = 0; t < T; ++t) {
      if (mask_T && !mask_T[t]) continue;
      for (int64_t k = 0; k < K; ++k) {
        const int32_t e = topk_ids_TK[t * K + k];
        all[static_cast<size_t>(p.offsets_E1[e]++)] = static_cast<int32_t>(t * K + k);
      }
    }
  }

  // Kept counts and the grouped row offsets.
  p.offsets_E1[0] = 0;
  for (int64_t e = 0; e < E; ++e) {
    const int32_t r = p.routed_E[e];
    const int32_t kept = static_cast<int32_t>(std::min<int64_t>(r, p.capacity));
    p.kept_E[e] = kept;
    p.dropped_E[e] = r - kept;
    p.offsets_E1[e + 1] = p.offsets_E1[e] + kept;
  }
  p.total_routed = routed;
  p.total_kept = p.offsets_E1[static_cast<size_t>(E)];
  p.total_dropped = routed - p.total_kept;
  p.order_A.resize(static_cast<size_t>(p.total_kept));

  // Pass 3: per expert, choose the kept set and write it in ascending (token, slot) order.
  for (int64_t e = 0; e < E; ++e) {
    int32_t* seg = all.data() + ro[e];
    const int32_t n = p.routed_E[e], keep = p.kept_E[e];
    if (keep < n && cfg.policy == DropPolicy::kProbs) {
      // Strict total order: higher probability first, then lower flat index (token, slot).
      auto better = [rank_probs_TK](int32_t a, int32_t b) {
        const float ka = rank_key(rank_probs_TK[a]), kb = rank_key(rank_probs_TK[b]);
        return ka > kb || (ka == kb && a < b);
      };
      if (keep > 0) {
        std::nth_element(seg, seg + keep - 1, seg + n, better);
        std::sort(seg, seg + keep);
      }
    }
    // kPosition (or no overflow): the first `keep` of the token-ordered segment.
    int32_t* out = p.order_A.data() + p.offsets_E1[e];
    std::memcpy(out, seg, static_cast<size_t>(keep) * sizeof(int32_t));
    for (int32_t i = 0; i < keep; ++i) {
      p.kept_TK[static_cast<size_t>(out[i])] = 1;
      p.row_of_TK[static_cast<size_t>(out[i])] = p.offsets_E1[e] + i;
    }
  }
  return Status::Ok();
}

StatusOr<CapacityPlan> plan_capacity(const int32_t* topk_ids_TK, const float* rank_probs_TK,
                                     int64_t T, int64_t E, int64_t K, int64_t D,
                                     const CapacityConfig& cfg, const uint8_t* mask_T) {
  CapacityPlan plan;
  SY_RETURN_IF_ERROR(
      plan_capacity_into(topk_ids_TK, rank_probs_TK, T, E, K, D, cfg, mask_T, &plan));
  return plan;
}

}  // namespace sy
