// RMSNorm (Qwen2 / LLaMA): y = x / sqrt(mean(x^2) + eps) * w. Raw pointers, row-major [T, D].
#pragma once

#include <cstdint>

#include "runtime/kernels/math.h"

namespace sy {

// One row; returns 1/rms so backward can reuse it.
SY_HD inline float rmsnorm_row(const float* x, const float* w, float* y, int64_t D, float eps) {
  float ss = 0.0f;
  for (int64_t i = 0; i < D; ++i) ss += x[i] * x[i];
  const float rstd = 1.0f / sqrtf(ss / static_cast<float>(D) + eps);
  for (int64_t i = 0; i < D; ++i) y[i] = x[i] * rstd * w[i];
  return rstd;
}

// rstd_T may be null when backward is not needed.
void rmsnorm_forward(const float* x_TD, const float* w_D, float* y_TD, float* rstd_T, int64_t T,
                     int64_t D, float eps);
// dx_TD += d/dx, dw_D += d/dw (either may be null).
void rmsnorm_backward(const float* x_TD, const float* w_D, const float* rstd_T, const float* dy_TD,
                      float* dx_TD, float* dw_D, int64_t T, int64_t D);

}  // namespace sy
