#include "runtime/kernels/layer_norm.h"

#include <cmath>

#include "runtime/kernels/math.h"

namespace sy {
namespace {

// One row from its (already summed) input s; y may alias s.
void layernorm_row(const float* s, const float* w, const float* b, float* y, int64_t D, float eps) {
  float m, rstd;
  layernorm_row_stats(s, D, eps, &m, &rstd);
  for (int64_t i = 0; i < D; ++i) y[i] = (s[i] - m) * rstd * w[i] + b[i];
}

}  // namespace

void layernorm_forward(const float* x_TD, const float* w_D, const float* b_D, float* y_TD,
                       int64_t T, int64_t D, float eps) {
  for (int64_t t = 0; t < T; ++t) layernorm_row(x_TD + t * D, w_D, b_D, y_TD + t * D, D, eps);
}

void add_layernorm_forward(const float* a_TD, const float* r_TD, const float* w_D, const float* b_D,
                           float* y_TD, int64_t T, int64_t D, float eps) {
  for (int64_t t = 0; t < T; ++t) {
    float* y = y_TD + t * D;
    const float* a = a_TD + t * D;
    const float* r = r_TD + t * D;
    for (int64_t i = 0; i < D; ++i) y[i] = a[i] + r[i];
    layernorm_row(y, w_D, b_D, y, D, eps);
  }
}

void layernorm_backward(const float* x_TD, const float* w_D, const float* dy_TD, float* dx_TD,
                        float* dw_D, float* db_D, int64_t T, int64_t D, float eps) {
  for (int64_t t = 0; t < T; ++t)
    layernorm_backward_row(x_TD + t * D, w_D, dy_TD + t * D, D, eps,
                           dx_TD ? dx_TD + t * D : nullptr, dw_D, db_D);
}

}  // namespace sy
