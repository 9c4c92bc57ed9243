#include "runtime/kernels/bias.h"

#include <cstring>

namespace sy {

void bias_broadcast_rows(const float* b_N, int64_t R, int64_t N, float* y_RN) {
  const size_t row_bytes = static_cast<size_t>(N) * sizeof(float);
  for (int64_t r = 0; r < R; ++r) {
    if (b_N)
      std::memcpy(y_RN + r * N, b_N, row_bytes);
    else
      std::memset(y_RN + r * N, 0, row_bytes);
  }
}

void bias_backward_rows(const float* dy_RN, int64_t R, int64_t N, float* db_N) {
  for (int64_t r = 0; r < R; ++r)
    for (int64_t n = 0; n < N; ++n) db_N[n] += dy_RN[r * N + n];
}

}  // namespace sy
