#include "runtime/kernels/loss.h"

#include <algorithm>
#include <cmath>

#include "runtime/core/check.h"

namespace sy {

namespace {

// A target outside [-1, V) is a data-pipeline bug, not bad input: the tokenizer and the corpus
// reader validate ids against the vocabulary first.
void check_target(int32_t target, int64_t t, int64_t V) {
  SY_CHECK(target >= -1 && target < V)
      << "cross-entropy: target " << target << " at row " << t << " outside [-1, " << V << ")";
}

}  // namespace

double cross_entropy_sum(const float* logits_TV, const int32_t* target_T, int64_t T, int64_t V,
                         int64_t* count) {
  double sum = 0.0;
  int64_t n = 0;
  for (int64_t t = 0; t < T; ++t) {
    const int32_t y = target_T[t];
    check_target(y, t, V);
    if (y < 0) continue;
    const float* row = logits_TV + t * V;
    // Max-subtracted log-sum-exp in double: the loss is summed over many rows and all-reduced,
    // so keep its per-row error well below fp32 rounding of the logits themselves.
    const float mx = loss_row_max(row, V);
    const double z = loss_row_sum_exp(row, V, mx);
    sum += static_cast<double>(mx) + std::log(z) - static_cast<double>(row[y]);
    ++n;
  }
  if (count) *count = n;
  return sum;
}

void cross_entropy_backward(const float* logits_TV, const int32_t* target_T, int64_t T, int64_t V,
                            float scale, float* dlogits_TV) {
  for (int64_t t = 0; t < T; ++t) {
    const int32_t y = target_T[t];
    check_target(y, t, V);
    float* d = dlogits_TV + t * V;
    if (y < 0) {
      std::fill(d, d + V, 0.0f);
      continue;
    }
    // softmax(row) - onehot(y), times scale: the exponentials in fp32 (exp_poly), their sum in
    // double. A row of -inf only gets the uniform distribution (softmax_row's rule).
    const float* row = logits_TV + t * V;
    const float mx = loss_row_max(row, V);
    float inv;
    if (mx == -INFINITY) {
      std::fill(d, d + V, 1.0f);
      inv = 1.0f / static_cast<float>(V);
    } else {
      inv = static_cast<float>(1.0 / loss_row_exp(row, V, mx, d));
    }
    const float py = d[y];
    loss_row_scale(d, V, inv, scale);
    d[y] = (py * inv - 1.0f) * scale;
  }
}

}  // namespace sy
