// Expert parallelism for models whose attention is replicated: every rank of the group holds
// the same T tokens (the same hidden states, computed identically), and the MoE FFN must not
// run all T on every rank. Rank r takes the contiguous slice [r*S, min(T, (r+1)*S)) of
// S = ceil(T / P) tokens, the MoeLayer exchanges those rows with the experts' owners, and an
// allgather returns all T outputs to every rank. The layer and the allgather are COLLECTIVE
// over the layer's communicator: every rank calls this with the same T (also T = 0).
//
// The result equals the P = 1 forward of the same tokens exactly when the expert GEMMs are
// row-stable (a deterministic ExecContext) and the capacity is dropless (a capacity limit would be
// applied per slice, not per T): the Hugging Face semantics of a loaded checkpoint.
//
// With replicated = false the ranks hold DIFFERENT tokens (each its own sequences: data
// parallelism outside the MoE, as in DeepSeek-style serving) and forward() hands them to the
// layer as they are: no slicing, no allgather; T may differ between ranks (also 0).
#pragma once

#include <cstdint>
#include <vector>

#include "runtime/core/status.h"
#include "runtime/moe/moe_layer.h"

namespace sy {

class TokenShardedMoe {
 public:
  // comm: the layer's expert-parallel group (null: one rank, the slice is everything).
  explicit TokenShardedMoe(Communicator* comm, bool replicated = true)
      : comm_(comm), replicated_(replicated) {}
  bool replicated() const { return replicated_; }
  void set_replicated(bool r) { replicated_ = r; }

  // x_TD, ids_T (may be null for non-hash routers) -> y_TD [T, D] written on every rank.
  Status forward(MoeLayer& layer, const float* x_TD, const int32_t* ids_T, int64_t T, int64_t D,
                 float* y_TD);
  // Backward of the last forward: dy_TD [T, D] (the same on every rank when replicated) ->
  // dx_TD [T, D] written on every rank. Accumulates the layer's parameter gradients (the layer
  // all-reduces its replicated ones). COLLECTIVE like forward().
  // aux: auxiliary-loss gradients of the layer's router over the tokens it routed on this rank
  // (its router_output(): the slice when replicated), or null.
  void backward(MoeLayer& layer, const float* dy_TD, int64_t T, int64_t D, float* dx_TD,
                const MoeAuxGrads* aux = nullptr);
  // backward() plus, when aux_alpha > 0 and the router is differentiable, the Switch
  // load-balancing loss of the layer's last routing (runtime/kernels/balance.h) on this rank's
  // tokens; returns that loss (0 when none). dprobs: scratch for its gradient.
  double backward_with_balance(MoeLayer& layer, const float* dy_TD, int64_t T, int64_t D,
                               float* dx_TD, float aux_alpha, DeviceArray<float>* dprobs);
  // This rank's slice of the last forward: tokens [begin, begin + count).
  int64_t slice_begin() const { return begin_; }
  int64_t slice_count() const { return count_; }

 private:
  Communicator* comm_;
  bool replicated_;
  int64_t begin_ = 0, count_ = 0;
  DeviceArray<float> y_slice_, y_all_;
};

}  // namespace sy
