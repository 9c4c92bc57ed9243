// Per-element pieces of the capacity plan (capacity.h), shared by the CPU plan
// (capacity.cc), the CPU reference of the data-parallel pipeline (capacity_pipeline.h) and the
// CUDA kernels that run that pipeline (runtime/backend/cuda/capacity.cu): SY_HD, integer logic
// only (the capacity formula's one double product is IEEE on both sides), so the device drops
// exactly what the host drops.
//
// The pipeline, one step per function below (capacity_pipeline.h runs it on the host):
//   1. keys     per assignment a = t*K+k: the segment key (expert, group) or the sentinel for
//               masked tokens (and out-of-range ids, which are flagged), the ranking key, and
//               the expert as the final sort's key (E = not an assignment).
//   2. groups   per group: its unmasked tokens and its capacity C_g.
//   3. sort A   (kProbs, not dropless) a stable sort by ranking key, then a stable sort by
//               segment key: each (expert, group) segment in the drop rule's preference order
//               (kPosition: the stable sort by segment key alone leaves token order). Dropless:
//               no sort A (everything routed is kept).
//   4. rank     per sorted position: rank = position - start of its segment (a lower bound);
//               rank >= C_g drops it (its final key becomes E).
//   5. sort B   a stable sort of all assignments by final key: the kept rows grouped by expert,
//               ascending (token, slot) within one, then the rest.
//   6. rows     per row r of sort B with a kept key: row_of_TK[order[r]] = r, kept_TK = 1.
//   7. counts   per expert: offsets_E1[e] = lower bound of e in sort B's keys; routed_E[e] from
//               sort A's segment keys (dropless: routed = kept).
// Legend as in capacity.h: T tokens, K slots, E experts, G tokens per group, A = T*K
// assignments (<= INT_MAX, checked before planning).
#pragma once

#include <cstdint>
#include <cstring>

#include "runtime/kernels/math.h"

namespace sy {

// Tokens per capacity group for group_tokens (>= 0) and T tokens: the whole call when 0, and
// never more than the call (at least 1, so that T = 0 has no group).
SY_HD inline int64_t capacity_group_size(int64_t group_tokens, int64_t T) {
  const int64_t whole = T > 1 ? T : 1;
  return group_tokens > 0 ? (group_tokens < whole ? group_tokens : whole) : whole;
}
SY_HD inline int64_t capacity_num_groups(int64_t T, int64_t G) {
  return (T + G - 1) / G;
}

// C = ceil(factor * tokens * K / E), clamped to tokens*K (dropless: tokens*K). tokens*K <=
// INT_MAX, so the double product is exact before the ceil; an infinite factor times no tokens
// is NaN and the comparison sends it to the clamp (converting NaN to an integer is undefined).
// K is the slots each token fills: top-k, or expert choice's choice_k.
SY_HD inline int64_t capacity_for_tokens(double factor, bool dropless, int64_t tokens, int64_t E,
                                         int64_t K) {
  const int64_t limit = tokens * K;
  if (dropless) return limit;
  const double c = ceil(factor * static_cast<double>(limit) / static_cast<double>(E));
  return c < static_cast<double>(limit) ? static_cast<int64_t>(c) : limit;
}

SY_HD inline bool capacity_id_valid(int32_t e, int64_t E) {
  return e >= 0 && e < E;
}
SY_HD inline bool capacity_token_real(const uint8_t* mask_T, int64_t t) {
  return mask_T == nullptr || mask_T[t] != 0;
}

// The ranking key of a probability: sorting keys ASCENDING gives probabilities DESCENDING. NaN
// ranks lowest (as -inf, tied with it), -0 equals +0, every other pair of floats keeps its order
// and equal floats get equal keys (ties then go to the lower flat index t*K+k: the earlier token,
// then the earlier slot, by the sorts' stability). Bit logic only: no float compares, so FTZ/DAZ
// modes cannot change it.
SY_HD inline uint32_t capacity_rank_key(float p) {
  uint32_t u;
  memcpy(&u, &p, sizeof u);
  const uint32_t mag = u & 0x7fffffffu;
  if (mag > 0x7f800000u)
    u = 0xff800000u;  // NaN -> -inf
  else if (mag == 0)
    u = 0;  // -0 -> +0
  // Order-preserving map to unsigned (negative floats flip), then reversed.
  const uint32_t ascending = (u & 0x80000000u) ? ~u : (u | 0x80000000u);
  return ~ascending;
}

// The segment of an assignment to expert e from a token of group g: expert-major, then group.
// Masked tokens (and out-of-range ids) get capacity_segment_end = E * groups, past every real
// segment. E <= INT_MAX and groups <= T <= INT_MAX, so it fits 63 bits.
SY_HD inline uint64_t capacity_segment(int32_t e, int64_t g, int64_t num_groups) {
  return static_cast<uint64_t>(e) * static_cast<uint64_t>(num_groups) + static_cast<uint64_t>(g);
}
SY_HD inline uint64_t capacity_segment_end(int64_t E, int64_t num_groups) {
  return static_cast<uint64_t>(E) * static_cast<uint64_t>(num_groups);
}
// Bits a radix sort needs for keys in [0, max_key] (at least 1).
SY_HD inline int capacity_key_bits(uint64_t max_key) {
  int b = 1;
  while (b < 64 && (max_key >> b) != 0) ++b;
  return b;
}

// First index in the ascending v[0, n) whose value is >= x (n when none).
template <typename V>
SY_HD inline int64_t capacity_lower_bound(const V* v, int64_t n, V x) {
  int64_t lo = 0, hi = n;
  while (lo < hi) {
    const int64_t mid = lo + (hi - lo) / 2;
    if (v[mid] < x)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

// What every step needs (small: kernels take it by value).
struct CapacityPipelineShape {
  int64_t T = 0, E = 0, K = 0;
  int64_t A = 0;             // T*K
  int64_t G = 1;             // tokens per group
  int64_t num_groups = 0;    // ceil(T / G)
  double factor = 0.0;       // capacity factor (expert choice: 1 when dropless)
  bool dropless = false;     // keep everything routed: no ranking, no sort A
  bool by_probs = false;     // sort A ranks by probability first (kProbs with drops possible)
  int64_t slots = 0;         // slots per token in the capacity formula: K, or choice_k
  uint64_t segment_end = 0;  // capacity_segment_end(E, num_groups)
};

// Step 1 for assignment a. Writes segment_A[a] (sentinel when masked or invalid), rank_A[a]
// (0 unless by_probs), final_A[a] (its expert when routed, else E: dropless keeps it so) and
// index_A[a] = a. Returns true when a's token is real and its id is outside [0, E) (the caller
// reports the smallest such a).
SY_HD inline bool capacity_keys_step(const CapacityPipelineShape& s, int64_t a,
                                     const int32_t* ids_A, const float* probs_A,
                                     const uint8_t* mask_T, uint64_t* segment_A, uint32_t* rank_A,
                                     uint32_t* final_A, int32_t* index_A) {
  const int64_t t = a / s.K;
  const int32_t e = capacity_token_real(mask_T, t) ? ids_A[a] : -1;
  const bool routed = capacity_token_real(mask_T, t) && capacity_id_valid(e, s.E);
  if (segment_A) segment_A[a] = routed ? capacity_segment(e, t / s.G, s.num_groups) : s.segment_end;
  if (rank_A) rank_A[a] = s.by_probs ? capacity_rank_key(probs_A[a]) : 0u;
  final_A[a] = routed ? static_cast<uint32_t>(e) : static_cast<uint32_t>(s.E);
  index_A[a] = static_cast<int32_t>(a);
  return capacity_token_real(mask_T, t) && !routed;
}

// Step 2's range: group g holds tokens [first, last).
SY_HD inline int64_t capacity_group_first(const CapacityPipelineShape& s, int64_t g) {
  return g * s.G;
}
SY_HD inline int64_t capacity_group_last(const CapacityPipelineShape& s, int64_t g) {
  return (g + 1) * s.G < s.T ? (g + 1) * s.G : s.T;
}
// Step 2: the capacity of a group of `tokens` unmasked tokens.
SY_HD inline int64_t capacity_of_group(const CapacityPipelineShape& s, int64_t tokens) {
  return capacity_for_tokens(s.factor, s.dropless, tokens, s.E, s.slots);
}

// Step 4 for position i of sort A (segment_S ascending, index_S its assignments): drops the
// assignment when its rank in its segment reaches the group's capacity.
SY_HD inline void capacity_rank_step(const CapacityPipelineShape& s, int64_t i,
                                     const uint64_t* segment_S, const int32_t* index_S,
                                     const int32_t* capacity_G, uint32_t* final_A) {
  const uint64_t seg = segment_S[i];
  if (seg >= s.segment_end) return;  // masked or invalid: already not an assignment
  const int64_t rank = i - capacity_lower_bound(segment_S, i, seg);
  const int64_t g = static_cast<int64_t>(seg % static_cast<uint64_t>(s.num_groups));
  if (rank >= capacity_G[g]) final_A[index_S[i]] = static_cast<uint32_t>(s.E);
}

// Step 6 for row r of sort B (final_S ascending, order_S its assignments).
SY_HD inline void capacity_row_step(const CapacityPipelineShape& s, int64_t r,
                                    const uint32_t* final_S, const int32_t* order_S,
                                    int32_t* row_of_A, uint8_t* kept_A) {
  if (final_S[r] >= static_cast<uint32_t>(s.E)) return;
  const int32_t a = order_S[r];
  row_of_A[a] = static_cast<int32_t>(r);
  kept_A[a] = 1;
}

// Step 7 for e in [0, E]: offsets_E1[e], and routed_E[e] (e < E) when sort A ran.
SY_HD inline void capacity_count_step(const CapacityPipelineShape& s, int64_t e,
                                      const uint32_t* final_S, const uint64_t* segment_S,
                                      int32_t* offsets_E1, int32_t* routed_E) {
  offsets_E1[e] =
      static_cast<int32_t>(capacity_lower_bound(final_S, s.A, static_cast<uint32_t>(e)));
  if (e < s.E && segment_S != nullptr) {
    const int64_t lo = capacity_lower_bound(
        segment_S, s.A, capacity_segment(static_cast<int32_t>(e), 0, s.num_groups));
    const int64_t hi = capacity_lower_bound(
        segment_S, s.A, capacity_segment(static_cast<int32_t>(e), s.num_groups, s.num_groups));
    routed_E[e] = static_cast<int32_t>(hi - lo);
  }
}

}  // namespace sy
