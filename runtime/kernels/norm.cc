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
    if (dx_TD) rmsnorm_backward_row_dx(x, w_D, r, dy, dx_TD + t * D, D);
    if (dw_D)
      for (int64_t i = 0; i < D; ++i) dw_D[i] += rmsnorm_backward_dw(dy[i], x[i], r);
  }
}

}  // namespace sy
