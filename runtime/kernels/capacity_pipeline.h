// The capacity plan (capacity.h) as a pipeline of data-parallel steps (capacity_math.h lists
// them): what the CUDA backend runs on the device (runtime/backend/cuda/capacity.cu), here on
// the host with std::stable_sort in place of CUB's stable radix sort and the same SY_HD step
// functions. tests/runtime/capacity_pipeline_test.cc checks that it plans bitwise what
// plan_capacity_into plans, so the device's steps are checked on every CPU build.
//
// Both ends share the packing of the pipeline's results (one device-to-host copy on the GPU)
// and the host code that turns them into the plan's counts.
#pragma once

#include <cstdint>

#include "runtime/core/status.h"
#include "runtime/kernels/capacity.h"
#include "runtime/kernels/capacity_math.h"

namespace sy {

// The shape of the pipeline for config cfg as capacity_plan_config returns it (checked, expert
// choice applied).
CapacityPipelineShape capacity_pipeline_shape(int64_t T, int64_t E, int64_t K,
                                              const CapacityConfig& cfg);

// The packed results, int32 words then bytes:
//   [0] bad code: the largest capacity_bad_code(a) of the unmasked assignments whose id is out of
//       range, 0 when none;  [1] that assignment's id;  [2] unmasked tokens;  [3] capacity (the
//       largest group's); then offsets_E1[E+1], routed_E[E] (unused when dropless: routed =
//       kept); then kept_A[A] bytes.
struct CapacityPacked {
  static constexpr int64_t kBad = 0, kBadId = 1, kTokens = 2, kCapacity = 3, kHeader = 4;
  int64_t E = 0, A = 0;
  SY_HD int64_t offsets() const { return kHeader; }
  SY_HD int64_t routed() const { return kHeader + E + 1; }
  SY_HD int64_t words() const { return kHeader + 2 * E + 1; }
  SY_HD int64_t bytes() const { return words() * 4 + A; }  // kept_A at byte words()*4
};
SY_HD inline int32_t capacity_bad_code(int64_t a) {
  return static_cast<int32_t>(INT32_MAX - a);  // a < A <= INT_MAX: >= 1; the smallest a wins
}

// The plan's host fields (T, E, K, capacity, dropless, tokens, kept_TK, routed_E, kept_E,
// dropped_E, offsets_E1, totals) from the packed results; InvalidArgument (capacity_id_error's)
// when an id was out of range. The index arrays are the caller's.
Status capacity_pipeline_finish(const CapacityPipelineShape& s, bool choice, const int32_t* words,
                                const uint8_t* kept_A, CapacityPlan* plan);

// The pipeline on the host: the same plan as plan_capacity_into (bitwise), the same errors.
Status plan_capacity_pipeline(const int32_t* topk_ids_TK, const float* rank_probs_TK, int64_t T,
                              int64_t E, int64_t K, int64_t D, const CapacityConfig& cfg,
                              const uint8_t* mask_T, CapacityPlan* plan);

}  // namespace sy
