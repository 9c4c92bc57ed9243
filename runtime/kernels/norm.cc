#include "runtime/kernels/norm.h"

namespace sy {

void rmsnorm_forward(const float* x_TD, const float* w_D, float* y_TD, float* rstd_T, int64_t T,
                     int64_t D, float eps) {
  for (int64_t t = 0; t < T; ++t) {
    const float r = rmsnorm_row(x_TD + t * D, w_D, y_TD + t * D, D, eps);
    if (rstd_T) rstd_T[t] = r;
  }
}

void rmsnorm_backward(const float* x_TD, const float* w_D, const float* rstd_T, const float* dy_TD,
                      float* dx_TD, float* dw_D, int64_t T, int64_t D) {
  for (int64_t t = 0; t < T; ++t) {
    const float* x = x_TD + t * D;
    const float* dy = dy_TD + t * D;
    const float r = rstd_T[t];
    // y_i = x_i r w_i, r = (mean x^2 + eps)^-1/2, dr/dx_j = -r^3 x_j / D
    float dot = 0.0f;  // sum_i dy_i w_i x_i
    for (int64_t i = 0; i < D; ++i) dot += dy[i] * w_D[i] * x[i];
    const float c = dot * r * r * r / static_cast<float>(D);
    for (int64_t i = 0; i < D; ++i) {
      if (dx_TD) dx_TD[t * D + i] += dy[i] * w_D[i] * r - c * x[i];
      if (dw_D) dw_D[i] += dy[i] * x[i] * r;
    }
  }
}

}  // namespace sy
