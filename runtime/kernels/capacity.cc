#include "runtime/kernels/capacity.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstring>
#include <sstream>

#include "runtime/kernels/capacity_math.h"

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
  return capacity_for_tokens(cfg.capacity_factor, cfg.dropless(), tokens, E, K);
}

Status capacity_plan_config(const int32_t* topk_ids_TK, const float* rank_probs_TK, int64_t T,
                            int64_t E, int64_t K, int64_t D, const CapacityConfig& given,
                            CapacityConfig* cfg) {
  // Expert choice is this plan with every token offered to every expert and the drop rule as
  // the experts' choice (capacity.h, choice_k).
  *cfg = given;
  if (given.choice_k > 0) {
    if (K != E)
      return InvalidArgument("capacity plan: expert choice needs every expert offered (K " +
                             std::to_string(K) + " != E " + std::to_string(E) + ")");
    if (given.choice_k > E)
      return InvalidArgument("capacity plan: expert choice top_k " +
                             std::to_string(given.choice_k) + " > E " + std::to_string(E));
    cfg->policy = DropPolicy::kProbs;
    if (cfg->dropless()) cfg->capacity_factor = 1.0;
  }
  SY_RETURN_IF_ERROR(check_capacity_sizes(T, E, K, D));
  if (T > 0 && topk_ids_TK == nullptr) return InvalidArgument("capacity plan: topk_ids is null");
  if (T > 0 && cfg->policy == DropPolicy::kProbs && !cfg->dropless() && rank_probs_TK == nullptr)
    return InvalidArgument("capacity plan: drop policy 'probs' needs the ranking probabilities");
  if (cfg->group_tokens < 0) return InvalidArgument("capacity plan: group_tokens must be >= 0");
  return Status::Ok();
}

Status capacity_id_error(int64_t t, int64_t k, int32_t e, int64_t E) {
  std::ostringstream m;
  m << "capacity plan: token " << t << " slot " << k << " routed to expert " << e
    << ", outside [0, " << E << ")";
  return InvalidArgument(m.str());
}

namespace {

// Ranking key: NaN ranks below every number.
inline float rank_key(float p) {
  return std::isnan(p) ? -INFINITY : p;
}

}  // namespace

void assign_plan(const CapacityPlan& h, CapacityPlan* plan) {
  plan->T = h.T;
  plan->E = h.E;
  plan->K = h.K;
  plan->capacity = h.capacity;
  plan->dropless = h.dropless;
  plan->tokens = h.tokens;
  plan->kept_TK = h.kept_TK;
  plan->row_of_TK.copy_from_host(h.row_of_TK.data(), h.row_of_TK.size());
  plan->routed_E = h.routed_E;
  plan->kept_E = h.kept_E;
  plan->dropped_E = h.dropped_E;
  plan->offsets_E1 = h.offsets_E1;
  plan->order_A.copy_from_host(h.order_A.data(), h.order_A.size());
  plan->total_routed = h.total_routed;
  plan->total_kept = h.total_kept;
  plan->total_dropped = h.total_dropped;
}

Status plan_capacity_into(const int32_t* topk_ids_TK, const float* rank_probs_TK, int64_t T,
                          int64_t E, int64_t K, int64_t D, const CapacityConfig& given,
                          const uint8_t* mask_T, CapacityPlan* plan) {
  SY_CHECK(plan != nullptr);
  CapacityConfig cfg;
  SY_RETURN_IF_ERROR(capacity_plan_config(topk_ids_TK, rank_probs_TK, T, E, K, D, given, &cfg));
  const bool choice = cfg.choice_k > 0;
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

  const int64_t G = capacity_group_size(cfg.group_tokens, T);
  const int64_t num_groups = (T + G - 1) / G;

  // Pass 1: count routed assignments per expert (unmasked tokens only), unmasked tokens per
  // group, and validate ids.
  std::vector<int64_t>& cap_g = p.scratch_capacity_G_;
  cap_g.assign(static_cast<size_t>(num_groups), 0);
  for (int64_t t = 0; t < T; ++t) {
    if (mask_T && !mask_T[t]) continue;
    ++cap_g[static_cast<size_t>(t / G)];
    for (int64_t k = 0; k < K; ++k) {
      const int32_t e = topk_ids_TK[t * K + k];
      if (e < 0 || e >= E) return capacity_id_error(t, k, e, E);
      ++p.routed_E[static_cast<size_t>(e)];
    }
  }
  p.capacity = 0;
  p.tokens = 0;
  for (int64_t& c : cap_g) {
    p.tokens += c;
    c = expert_capacity(cfg, c, E, choice ? cfg.choice_k : K);  // group's tokens -> capacity
    p.capacity = std::max(p.capacity, c);
  }

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

  // Pass 3: per expert and group (a contiguous run of the token-ordered segment), choose the
  // kept set and compact it, in ascending (token, slot) order, to the front of the segment.
  auto better = [rank_probs_TK](int32_t a, int32_t b) {
    // Strict total order: higher probability first, then lower flat index (token, slot).
    const float ka = rank_key(rank_probs_TK[a]), kb = rank_key(rank_probs_TK[b]);
    return ka > kb || (ka == kb && a < b);
  };
  const int64_t GK = G * K;
  for (int64_t e = 0; e < E; ++e) {
    int32_t* seg = all.data() + ro[e];
    const int32_t n = p.routed_E[e];
    int32_t kept = 0;
    for (int32_t i0 = 0; i0 < n;) {
      const int64_t g = seg[i0] / GK;
      int32_t i1 = i0 + 1;
      while (i1 < n && seg[i1] / GK == g) ++i1;
      const int32_t run = i1 - i0;
      const int32_t keep =
          static_cast<int32_t>(std::min<int64_t>(run, cap_g[static_cast<size_t>(g)]));
      int32_t* r = seg + i0;
      if (keep < run && keep > 0 && cfg.policy == DropPolicy::kProbs) {
        std::nth_element(r, r + keep - 1, r + run, better);
        std::sort(r, r + keep);
      }
      // kPosition (or no overflow): the first `keep` of the token-ordered run.
      if (keep > 0) std::memmove(seg + kept, r, static_cast<size_t>(keep) * sizeof(int32_t));
      kept += keep;
      i0 = i1;
    }
    p.kept_E[e] = kept;
    p.dropped_E[e] = n - kept;
  }

  // Grouped row offsets and the kept rows in order.
  p.offsets_E1[0] = 0;
  for (int64_t e = 0; e < E; ++e) p.offsets_E1[e + 1] = p.offsets_E1[e] + p.kept_E[e];
  p.total_routed = routed;
  p.total_kept = p.offsets_E1[static_cast<size_t>(E)];
  p.total_dropped = routed - p.total_kept;
  if (choice) {  // offers an expert did not take are not assignments
    p.routed_E = p.kept_E;
    std::fill(p.dropped_E.begin(), p.dropped_E.end(), 0);
    p.total_routed = p.total_kept;
    p.total_dropped = 0;
  }
  p.order_A.resize(static_cast<size_t>(p.total_kept));
  for (int64_t e = 0; e < E; ++e) {
    int32_t* out = p.order_A.data() + p.offsets_E1[e];
    if (p.kept_E[e] > 0)  // both pointers may be null when nothing is kept
      std::memcpy(out, all.data() + ro[e], static_cast<size_t>(p.kept_E[e]) * sizeof(int32_t));
    for (int32_t i = 0; i < p.kept_E[e]; ++i) {
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
