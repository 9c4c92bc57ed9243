#include "runtime/kernels/capacity_pipeline.h"

#include <algorithm>
#include <cstring>
#include <numeric>
#include <vector>

namespace sy {

CapacityPipelineShape capacity_pipeline_shape(int64_t T, int64_t E, int64_t K,
                                              const CapacityConfig& cfg) {
  CapacityPipelineShape s;
  s.T = T;
  s.E = E;
  s.K = K;
  s.A = T * K;
  s.G = capacity_group_size(cfg.group_tokens, T);
  s.num_groups = capacity_num_groups(T, s.G);
  s.factor = cfg.capacity_factor;
  s.dropless = cfg.dropless();
  s.by_probs = !s.dropless && cfg.policy == DropPolicy::kProbs;
  s.slots = cfg.choice_k > 0 ? cfg.choice_k : K;
  s.segment_end = capacity_segment_end(E, s.num_groups);
  return s;
}

Status capacity_pipeline_finish(const CapacityPipelineShape& s, bool choice, const int32_t* words,
                                const uint8_t* kept_A, CapacityPlan* plan) {
  const CapacityPacked pk{s.E, s.A};
  if (words[CapacityPacked::kBad] != 0) {
    const int64_t a = INT32_MAX - static_cast<int64_t>(words[CapacityPacked::kBad]);
    return capacity_id_error(a / s.K, a % s.K, words[CapacityPacked::kBadId], s.E);
  }
  CapacityPlan& p = *plan;
  const size_t E = static_cast<size_t>(s.E);
  p.T = s.T;
  p.E = s.E;
  p.K = s.K;
  p.dropless = s.dropless;
  p.tokens = words[CapacityPacked::kTokens];
  p.capacity = words[CapacityPacked::kCapacity];
  p.kept_TK.assign(kept_A, kept_A + s.A);
  const int32_t* off = words + pk.offsets();
  p.offsets_E1.assign(off, off + E + 1);
  p.kept_E.resize(E);
  for (size_t e = 0; e < E; ++e) p.kept_E[e] = off[e + 1] - off[e];
  // Dropless keeps everything routed; expert choice counts only the offers taken (capacity.h).
  if (s.dropless || choice) {
    p.routed_E = p.kept_E;
  } else {
    const int32_t* routed = words + pk.routed();
    p.routed_E.assign(routed, routed + E);
  }
  p.dropped_E.resize(E);
  p.total_routed = 0;
  for (size_t e = 0; e < E; ++e) {
    p.dropped_E[e] = p.routed_E[e] - p.kept_E[e];
    p.total_routed += p.routed_E[e];
  }
  p.total_kept = off[E];
  p.total_dropped = p.total_routed - p.total_kept;
  return Status::Ok();
}

namespace {

// CUB's DeviceRadixSort::SortPairs on the host: a stable sort of (key, value) pairs by key.
template <typename Key>
void stable_sort_pairs(const std::vector<Key>& keys_in, std::vector<Key>* keys_out,
                       const std::vector<int32_t>& values_in, std::vector<int32_t>* values_out) {
  std::vector<int32_t> perm(keys_in.size());
  std::iota(perm.begin(), perm.end(), 0);
  std::stable_sort(perm.begin(), perm.end(),
                   [&](int32_t x, int32_t y) { return keys_in[x] < keys_in[y]; });
  keys_out->resize(keys_in.size());
  values_out->resize(keys_in.size());
  for (size_t i = 0; i < perm.size(); ++i) {
    (*keys_out)[i] = keys_in[perm[i]];
    (*values_out)[i] = values_in[perm[i]];
  }
}

}  // namespace

Status plan_capacity_pipeline(const int32_t* topk_ids_TK, const float* rank_probs_TK, int64_t T,
                              int64_t E, int64_t K, int64_t D, const CapacityConfig& given,
                              const uint8_t* mask_T, CapacityPlan* plan) {
  SY_CHECK(plan != nullptr);
  CapacityConfig cfg;
  SY_RETURN_IF_ERROR(capacity_plan_config(topk_ids_TK, rank_probs_TK, T, E, K, D, given, &cfg));
  const CapacityPipelineShape s = capacity_pipeline_shape(T, E, K, cfg);
  const CapacityPacked pk{E, s.A};
  std::vector<int32_t> words(static_cast<size_t>(pk.words()), 0);
  std::vector<uint8_t> kept(static_cast<size_t>(s.A), 0);
  std::vector<int32_t> row_of(static_cast<size_t>(s.A), -1);
  std::vector<int32_t> order;
  if (s.A > 0) {
    const size_t A = static_cast<size_t>(s.A);
    // 1. keys
    std::vector<uint64_t> segment(A);
    std::vector<uint32_t> rank(A), fin(A);
    std::vector<int32_t> index(A);
    for (int64_t a = 0; a < s.A; ++a)
      if (capacity_keys_step(s, a, topk_ids_TK, rank_probs_TK, mask_T, segment.data(), rank.data(),
                             fin.data(), index.data()))
        words[CapacityPacked::kBad] = std::max(words[CapacityPacked::kBad], capacity_bad_code(a));
    // 2. groups
    std::vector<int32_t> capacity_G(static_cast<size_t>(s.num_groups));
    for (int64_t g = 0; g < s.num_groups; ++g) {
      int64_t tokens = 0;
      for (int64_t t = capacity_group_first(s, g); t < capacity_group_last(s, g); ++t)
        tokens += capacity_token_real(mask_T, t);
      const int64_t c = capacity_of_group(s, tokens);
      capacity_G[static_cast<size_t>(g)] = static_cast<int32_t>(c);
      words[CapacityPacked::kTokens] += static_cast<int32_t>(tokens);
      words[CapacityPacked::kCapacity] =
          std::max(words[CapacityPacked::kCapacity], static_cast<int32_t>(c));
    }
    std::vector<uint64_t> segment_S;
    if (!s.dropless) {
      // 3. sort A: by ranking key, then (stably) by segment
      std::vector<int32_t> index_S;
      if (s.by_probs) {
        std::vector<uint32_t> rank_S;
        std::vector<int32_t> index_R;
        stable_sort_pairs(rank, &rank_S, index, &index_R);
        std::vector<uint64_t> segment_R(A);
        for (size_t i = 0; i < A; ++i) segment_R[i] = segment[static_cast<size_t>(index_R[i])];
        stable_sort_pairs(segment_R, &segment_S, index_R, &index_S);
      } else {
        stable_sort_pairs(segment, &segment_S, index, &index_S);
      }
      // 4. rank
      for (int64_t i = 0; i < s.A; ++i)
        capacity_rank_step(s, i, segment_S.data(), index_S.data(), capacity_G.data(), fin.data());
    }
    // 5. sort B
    std::vector<uint32_t> fin_S;
    stable_sort_pairs(fin, &fin_S, index, &order);
    // 6. rows
    for (int64_t r = 0; r < s.A; ++r)
      capacity_row_step(s, r, fin_S.data(), order.data(), row_of.data(), kept.data());
    // 7. counts
    for (int64_t e = 0; e <= s.E; ++e)
      capacity_count_step(s, e, fin_S.data(), s.dropless ? nullptr : segment_S.data(),
                          words.data() + pk.offsets(), words.data() + pk.routed());
    if (words[CapacityPacked::kBad] != 0)
      words[CapacityPacked::kBadId] =
          topk_ids_TK[INT32_MAX - static_cast<int64_t>(words[CapacityPacked::kBad])];
  }
  SY_RETURN_IF_ERROR(
      capacity_pipeline_finish(s, cfg.choice_k > 0, words.data(), kept.data(), plan));
  plan->row_of_TK.copy_from_host(row_of.data(), row_of.size());
  plan->order_A.copy_from_host(order.data(), static_cast<size_t>(plan->total_kept));
  return Status::Ok();
}

}  // namespace sy
