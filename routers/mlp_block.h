// The two-layer GELU MLP shared by the `mlp` and `hybrid` routers:
//   y_TE = W_2 GELU(W_1 x + b_1) + b_2,   W_1: fc1.weight [H, D], b_1: fc1.bias [H],
//                                          W_2: fc2.weight [E, H], b_2: fc2.bias [E].
// One implementation, so both routers differentiate the same arithmetic. The owning router
// creates and initializes the parameters (add_param / init_normal are Router's) and binds
// them here; the block keeps the activations of the last forward for backward.
// Internal to routers/: not part of the router interface.
#pragma once

#include <algorithm>
#include <cstdint>

#include "runtime/core/tensor.h"
#include "runtime/kernels/cpu_kernels.h"

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
  void forward(const float* x_TD, int64_t T, float* y_TE) {
    T_ = T;
    pre_TH_.resize({T, H_});
    act_TH_.resize({T, H_});
    // The biases go in first and the GEMMs accumulate onto them (beta = 1).
    for (int64_t t = 0; t < T; ++t) std::copy_n(b1_->value.ptr(), H_, pre_TH_.row(t));
    linear_forward(x_TD, w1_->value.ptr(), pre_TH_.ptr(), T, D_, H_, /*beta=*/1.0f);
    act_TH_.data = pre_TH_.data;
    gelu_inplace(act_TH_.ptr(), T * H_);
    for (int64_t t = 0; t < T; ++t) std::copy_n(b2_->value.ptr(), E_, y_TE + t * E_);
    linear_forward(act_TH_.ptr(), w2_->value.ptr(), y_TE, T, H_, E_, /*beta=*/1.0f);
  }

  // dy_TE of the last forward -> parameter grads (+=) and dx_TD (+=, when non-null).
  void backward(const float* x_TD, const float* dy_TE, float* dx_TD) {
    const int64_t T = T_;
    Tensor dact_TH({T, H_});
    add_column_sums(dy_TE, T, E_, b2_->grad.ptr());
    linear_backward(act_TH_.ptr(), w2_->value.ptr(), dy_TE, w2_->grad.ptr(), dact_TH.ptr(), T, H_,
                    E_, /*accumulate_dx=*/false);
    Tensor dpre_TH({T, H_});
    gelu_backward(pre_TH_.ptr(), dact_TH.ptr(), dpre_TH.ptr(), T * H_);
    add_column_sums(dpre_TH.ptr(), T, H_, b1_->grad.ptr());
    linear_backward(x_TD, w1_->value.ptr(), dpre_TH.ptr(), w1_->grad.ptr(), dx_TD, T, D_, H_,
                    /*accumulate_dx=*/true);
  }

 private:
  // out_N += sum over rows of a_RN (the gradient of a bias broadcast over rows).
  static void add_column_sums(const float* a_RN, int64_t R, int64_t N, float* out_N) {
    for (int64_t r = 0; r < R; ++r)
      for (int64_t n = 0; n < N; ++n) out_N[n] += a_RN[r * N + n];
  }

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
