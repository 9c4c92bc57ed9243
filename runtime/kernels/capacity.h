// The capacity plan: which (token, slot) assignments each expert keeps, and the order in which
// kept rows are laid out grouped by expert. Pure (no MPI, no router state): the single-rank MoE
// layer and the multi-rank dispatcher build their permutations from the same plan, so P ranks
// drop exactly what 1 rank drops.
//
// Capacity (docs/routers.md): C = ceil(capacity_factor * T * K / E), the same for every
// expert, where T is the number of (unmasked) tokens in the GROUP passed to one call. The caller
// picks the group: the MoE layer passes the whole batch of one forward (all sequences
// together), so tokens of the whole batch compete for an expert; a dispatcher must pass the same
// global group on every rank (or plan per rank and say so). capacity_factor <= 0 is dropless.
//
// Drop rule, deterministic and independent of thread or rank count:
//   kProbs (default): an expert over capacity keeps its C assignments with the HIGHEST ranking
//     probability; the lowest are dropped first, ties dropped by higher token index first, then
//     by higher slot (so among equals the earlier token is kept). NaN ranks lowest.
//   kPosition: keeps the first C assignments in token order (token, then slot).
// A dropped assignment contributes zero to the output (the residual still carries the token);
// drops are counted per expert, never silent.
//
// Masked tokens (padding) take no capacity, are not counted as routed and are
// never dispatched.
//
// Count overflow: T*K and the largest possible row payload (T*K rows * D
// values) must fit an int, since MPI counts are ints. Larger problems are rejected with
// InvalidArgument before anything is allocated.
//
// Legend: T tokens, K top-k, E experts, D hidden, A kept assignments.
#pragma once

#include <cstdint>
#include <vector>

#include "runtime/core/memory.h"

#include "runtime/core/status.h"

namespace sy {

enum class DropPolicy { kProbs, kPosition };

const char* drop_policy_name(DropPolicy p);
// "probs" or "position"; anything else is InvalidArgument.
StatusOr<DropPolicy> parse_drop_policy(const char* name);

struct CapacityConfig {
  double capacity_factor = 1.25;  // <= 0: dropless
  DropPolicy policy = DropPolicy::kProbs;
  // Tokens per capacity group (a sequence). Tokens [g*G, (g+1)*G) of one call form group g and
  // compete only with each other, with C = ceil(capacity_factor * G_g * K / E) for the G_g
  // unmasked tokens of the group (the last group may be shorter). 0: the whole call is one
  // group. Ranks that hold whole groups then drop exactly what one rank holding every group
  // drops, whatever the number of ranks.
  int64_t group_tokens = 0;
  // Expert choice (routers/router.h experts_choose()), when > 0: topk_ids offers each token to
  // every expert (K == E slots) and each expert keeps, per group, its C = ceil(cf * G_g *
  // choice_k / E) offers of HIGHEST ranking probability, ties to the earlier token (the kProbs
  // rule, whatever `policy` says), cf = capacity_factor, or 1 when dropless. Offers not taken
  // are not assignments: routed_E counts the taken ones (= kept_E) and nothing is dropped.
  int64_t choice_k = 0;
  bool dropless() const { return !(capacity_factor > 0.0); }
};

// Counts are host vectors (the exchange and the stats read them on the host). The two index
// arrays the data-path ops consume (row_of_TK, order_A) live in the memory given at
// construction: the backend's, so a device backend's gather/combine read them in place (its
// capacity_plan copies them over; host memory by default).
struct CapacityPlan {
  CapacityPlan() = default;
  explicit CapacityPlan(Memory* index_memory) : row_of_TK(index_memory), order_A(index_memory) {}

  int64_t T = 0, E = 0, K = 0;
  int64_t capacity = 0;  // C per expert of the largest group; for dropless, the number of
                         // assignments (never binds)
  bool dropless = false;
  int64_t tokens = 0;  // unmasked tokens

  std::vector<uint8_t> kept_TK;    // 1 kept, 0 dropped or masked
  DeviceArray<int32_t> row_of_TK;  // row in the grouped layout, -1 when not kept
  std::vector<int32_t> routed_E;   // assignments routed to e (unmasked tokens)
  std::vector<int32_t>
      kept_E;  // kept_E[e]: the sum over groups of min(routed in the group, capacity)
  std::vector<int32_t> dropped_E;   // routed_E - kept_E
  std::vector<int32_t> offsets_E1;  // [E+1]: expert e owns rows [offsets[e], offsets[e+1])
  DeviceArray<int32_t> order_A;     // row -> flat assignment t*K+k; within an expert, ascending
                                    // (token, slot)
  int64_t total_routed = 0, total_kept = 0, total_dropped = 0;

  int64_t rows() const { return total_kept; }
  int32_t token_of_row(int64_t r) const { return order_A[static_cast<size_t>(r)] / K; }
  int32_t slot_of_row(int64_t r) const { return order_A[static_cast<size_t>(r)] % K; }

  // Scratch reused across calls (no allocation in steady state).
  std::vector<int32_t> scratch_routed_A_;  // every routed assignment, grouped by expert
  std::vector<int32_t> scratch_offsets_E1_;
  std::vector<int64_t> scratch_capacity_G_;  // per group: unmasked tokens, then capacity
};

// Checks the sizes (non-negative, K <= E, overflow rules above) without allocating.
Status check_capacity_sizes(int64_t T, int64_t E, int64_t K, int64_t D);

// The capacity C for `tokens` unmasked tokens (dropless: tokens * K).
int64_t expert_capacity(const CapacityConfig& cfg, int64_t tokens, int64_t E, int64_t K);

// The checks plan_capacity_into runs before it plans, in its order (expert choice's K == E and
// choice_k <= E, the sizes, null ids, null probabilities where the drop rule needs them,
// group_tokens >= 0), and in *cfg the config it plans with (expert choice: kProbs, factor 1 when
// dropless). Shared with the device plans, so they refuse exactly what the CPU refuses.
Status capacity_plan_config(const int32_t* topk_ids_TK, const float* rank_probs_TK, int64_t T,
                            int64_t E, int64_t K, int64_t D, const CapacityConfig& given,
                            CapacityConfig* cfg);

// The InvalidArgument of an out-of-range id e at (token t, slot k): the first one in (token,
// slot) order among unmasked tokens is the one reported.
Status capacity_id_error(int64_t t, int64_t k, int32_t e, int64_t E);

// Builds the plan into *plan, reusing its buffers. On error *plan is unspecified (the size
// checks run first, so an overflow leaves it untouched).
//   topk_ids_TK:   [T, K] expert ids in [0, E) (checked; an out-of-range id is InvalidArgument)
//   rank_probs_TK: [T, K] the probabilities used for ranking drops (the router's chosen p, not
//                  renormalized weights); may be null for kPosition or dropless
//   mask_T:        [T] 1 = real token, 0 = padding; null = all real
//   D:             hidden size of one row, for the overflow check only
Status plan_capacity_into(const int32_t* topk_ids_TK, const float* rank_probs_TK, int64_t T,
                          int64_t E, int64_t K, int64_t D, const CapacityConfig& cfg,
                          const uint8_t* mask_T, CapacityPlan* plan);

// *plan = host, field by field, keeping plan's index memory: the index arrays are copied into
// it (how a device backend that plans on the host hands the plan to its data-path ops).
void assign_plan(const CapacityPlan& host, CapacityPlan* plan);

// Same, returning a fresh plan.
StatusOr<CapacityPlan> plan_capacity(const int32_t* topk_ids_TK, const float* rank_probs_TK,
                                     int64_t T, int64_t E, int64_t K, int64_t D,
                                     const CapacityConfig& cfg, const uint8_t* mask_T = nullptr);

}  // namespace sy
