#include "runtime/kernels/layer_norm.h"

#include <cmath>

#include "runtime/kernels/math.h"

namespace sy {

void layernorm_forward(const float* x_TD, const float* w_D, const float* b_D, float* y_TD,
                       int64_t T, int64_t D, float eps) {
  for (int64_t t = 0; t < T; ++t) layernorm_row(x_TD + t * D, w_D, b_D, y_TD + t * D, D, eps);
}

void add_layernorm_forward(const float* a_TD, const float* r_TD, const float* w_D, const float* b_D,
                           float* y_TD, int64_t T, int64_t D, float eps) {
  for (int64_t t = 0; t < T; ++t)
    add_layernorm_row(a_TD + t * D, r_TD + t * D, w_D, b_D, y_TD + t * D, D, eps);
}

void layernorm_backward(const float* x_TD, const float* w_D, const float* dy_TD, float* dx_TD,
                        float* dw_D, float* db_D, int64_t T, int64_t D, float eps) {
  for (int64_t t = 0; t < T; ++t)
    layernorm_backward_row(x_TD + t * D, w_D, dy_TD + t * D, D, eps,
                           dx_TD ? dx_TD + t * D : nullptr, dw_D, db_D);
}

}  // namespace sy
