// LayerNorm (BERT, GPT-2): y = (x - mean(x)) / sqrt(var(x) + eps) * w + b per row, with the
// biased variance (divide by D), as torch.nn.LayerNorm. Raw pointers, row-major [T, D].
#pragma once

#include <cstdint>

#include "runtime/kernels/math.h"

namespace sy {

// One output entry from the row's statistics (layernorm_row_stats in math.h).
SY_HD inline float layernorm_apply(float s, float mean, float rstd, float w, float b) {
  return (s - mean) * rstd * w + b;
}
// One row from its (already summed) input s; y may alias s.
SY_HD inline void layernorm_row(const float* s, const float* w, const float* b, float* y, int64_t D,
                                float eps) {
  float m, rstd;
  layernorm_row_stats(s, D, eps, &m, &rstd);
  for (int64_t i = 0; i < D; ++i) y[i] = layernorm_apply(s[i], m, rstd, w[i], b[i]);
}
// y = LayerNorm(a + r) for one row: the fp32 sum is written to y first (y may alias a or r).
SY_HD inline void add_layernorm_row(const float* a, const float* r, const float* w, const float* b,
                                    float* y, int64_t D, float eps) {
  for (int64_t i = 0; i < D; ++i) y[i] = a[i] + r[i];
  layernorm_row(y, w, b, y, D, eps);
}

// y_TD may alias x_TD (in place). Mean and variance accumulate in double (two passes), so the
// result does not depend on D's rounding drift; the normalization itself is fp32.
void layernorm_forward(const float* x_TD, const float* w_D, const float* b_D, float* y_TD,
                       int64_t T, int64_t D, float eps);

// y_TD = LayerNorm(a_TD + r_TD): the post-norm residual join of BERT. y may alias a or r.
void add_layernorm_forward(const float* a_TD, const float* r_TD, const float* w_D, const float* b_D,
                           float* y_TD, int64_t T, int64_t D, float eps);

// Backward of layernorm_forward from its input x_TD (mean and rstd recomputed as the forward
// computes them): dx_TD +=, dw_D +=, db_D += (each may be null; rows in t order).
void layernorm_backward(const float* x_TD, const float* w_D, const float* dy_TD, float* dx_TD,
                        float* dw_D, float* db_D, int64_t T, int64_t D, float eps);

}  // namespace sy
