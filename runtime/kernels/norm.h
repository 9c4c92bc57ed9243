// RMSNorm (Qwen2 / LLaMA): y = x / sqrt(mean(x^2) + eps) * w. Raw pointers, row-major [T, D].
#pragma once

#include <cstdint>

#include "runtime/kernels/math.h"

namespace sy {

// 1 / rms from the row's sum of squares ss (fp32), and one output entry. Separate so that a
// block-per-row GPU kernel (runtime/backend/cuda/rows.cu), which sums ss in another order,
// finishes with the same formulas.
SY_HD inline float rmsnorm_rstd(float ss, int64_t D, float eps) {
  return 1.0f / sqrtf(ss / static_cast<float>(D) + eps);
}
SY_HD inline float rmsnorm_apply(float x, float rstd, float w) {
  return x * rstd * w;
}

// One row; returns 1/rms so backward can reuse it.
SY_HD inline float rmsnorm_row(const float* x, const float* w, float* y, int64_t D, float eps) {
  float ss = 0.0f;
  for (int64_t i = 0; i < D; ++i) ss += x[i] * x[i];
  const float rstd = rmsnorm_rstd(ss, D, eps);
  for (int64_t i = 0; i < D; ++i) y[i] = rmsnorm_apply(x[i], rstd, w[i]);
  return rstd;
}

// Backward, y_i = x_i r w_i with r = (mean x^2 + eps)^-1/2, dr/dx_j = -r^3 x_j / D:
//   dot = sum_i dy_i w_i x_i (fp32, index order; rmsnorm_backward_dot_term is one term),
//   dx_j += dy_j w_j r - c x_j with c = dot r^3 / D,   dw_j += dy_j x_j r (rows in order).
SY_HD inline float rmsnorm_backward_dot_term(float dy, float w, float x) {
  return dy * w * x;
}
SY_HD inline float rmsnorm_backward_coef(float dot, float r, int64_t D) {
  return dot * r * r * r / static_cast<float>(D);
}
SY_HD inline float rmsnorm_backward_dx(float dy, float w, float x, float r, float c) {
  return dy * w * r - c * x;
}
SY_HD inline float rmsnorm_backward_dw(float dy, float x, float r) {
  return dy * x * r;
}
// dx += the row's input gradient, from its saved r.
SY_HD inline void rmsnorm_backward_row_dx(const float* x, const float* w, float r, const float* dy,
                                          float* dx, int64_t D) {
  float dot = 0.0f;
  for (int64_t i = 0; i < D; ++i) dot += rmsnorm_backward_dot_term(dy[i], w[i], x[i]);
  const float c = rmsnorm_backward_coef(dot, r, D);
  for (int64_t i = 0; i < D; ++i) dx[i] += rmsnorm_backward_dx(dy[i], w[i], x[i], r, c);
}

// rstd_T may be null when backward is not needed.
void rmsnorm_forward(const float* x_TD, const float* w_D, float* y_TD, float* rstd_T, int64_t T,
                     int64_t D, float eps);
// dx_TD += d/dx, dw_D += d/dw (either may be null).
void rmsnorm_backward(const float* x_TD, const float* w_D, const float* rstd_T, const float* dy_TD,
                      float* dx_TD, float* dw_D, int64_t T, int64_t D);

}  // namespace sy
