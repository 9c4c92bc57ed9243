// The two-layer GELU MLP shared by the `mlp` and `hybrid` routers:
//   y_TE = W_2 GELU(W_1 x + b_1) + b_2,   W_1: fc1.weight [H, D], b_1: fc1.bias [H],
//                                          W_2: fc2.weight [E, H], b_2: fc2.bias [E].
// One implementation, so both routers differentiate the same arithmetic. The owning router
// creates and initializes the parameters (add_param / init_normal are Router's) and binds
// them here; the block keeps the activations of the last forward for backward.
// Internal to routers/: not part of the router interface.
#pragma once

#include <cstdint>

#include "runtime/backend/ops.h"
#include "runtime/core/tensor.h"

namespace sy {

class MlpBlock {
 public:
  void bind(Param* w1_HD, Param* b1_H, Param* w2_EH, Param* b2_E) {
    w1_ = w1_HD;
    b1_ = b1_H;
    w2_ = w2_EH;
    b2_ = b2_E;
    E_ = w2_EH->value.dim(0);
    H_ = w1_HD->value.dim(0);
    D_ = w1_HD->value.dim(1);
  }

  // Multiply-adds of one token's forward (biases and GELU not counted).
  int64_t madds_per_token() const { return D_ * H_ + H_ * E_; }

  // y_TE = MLP(x) (overwrites y). Caches the pre-activation and the activation.
  void forward(const ExecContext& c, const float* x_TD, int64_t T, float* y_TE) {
    T_ = T;
    pre_TH_.resize({T, H_}, c.backend);
    act_TH_.resize({T, H_}, c.backend);
    // The biases go in first and the GEMMs accumulate onto them (beta = 1).
    ops::bias_broadcast_rows(c, b1_->value.ptr(), T, H_, pre_TH_.ptr());
    ops::linear_forward(c, x_TD, w1_->value.ptr(), pre_TH_.ptr(), T, D_, H_, /*beta=*/1.0f);
    ops::copy(c, act_TH_.ptr(), pre_TH_.ptr(), T * H_ * static_cast<int64_t>(sizeof(float)));
    ops::gelu_inplace(c, act_TH_.ptr(), T * H_);
    ops::bias_broadcast_rows(c, b2_->value.ptr(), T, E_, y_TE);
    ops::linear_forward(c, act_TH_.ptr(), w2_->value.ptr(), y_TE, T, H_, E_, /*beta=*/1.0f);
  }

  // dy_TE of the last forward -> parameter grads (+=) and dx_TD (+=, when non-null).
  void backward(const ExecContext& c, const float* x_TD, const float* dy_TE, float* dx_TD) {
    const int64_t T = T_;
    Tensor dact_TH({T, H_}, c.backend);
    ops::bias_backward_rows(c, dy_TE, T, E_, b2_->grad.ptr());
    ops::linear_backward(c, act_TH_.ptr(), w2_->value.ptr(), dy_TE, w2_->grad.ptr(), dact_TH.ptr(),
                         T, H_, E_, /*accumulate_dx=*/false);
    Tensor dpre_TH({T, H_}, c.backend);
    ops::gelu_backward(c, pre_TH_.ptr(), dact_TH.ptr(), dpre_TH.ptr(), T * H_);
    ops::bias_backward_rows(c, dpre_TH.ptr(), T, H_, b1_->grad.ptr());
    ops::linear_backward(c, x_TD, w1_->value.ptr(), dpre_TH.ptr(), w1_->grad.ptr(), dx_TD, T, D_,
                         H_,
                         /*accumulate_dx=*/true);
  }

 private:
  Param* w1_ = nullptr;  // [H, D]
  Param* b1_ = nullptr;  // [H]
  Param* w2_ = nullptr;  // [E, H]
  Param* b2_ = nullptr;  // [E]
  int64_t D_ = 0, H_ = 0, E_ = 0;
  int64_t T_ = 0;  // tokens of the last forward
  Tensor pre_TH_;  // W_1 x + b_1 of the last forward
  Tensor act_TH_;  // GELU(pre)
};

}  // namespace sy
