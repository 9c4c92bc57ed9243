#include "runtime/kernels/gemm_rowstable.h"

namespace sy {
namespace {

constexpr int kLanes = 8;

// The one definition of a dot product used for every element (do not specialize it: a second
// variant with other arithmetic would break the row-stability promise).
inline float dot_fixed(const float* a, const float* b, int64_t K) {
  float acc[kLanes] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t k = 0;
  for (; k + kLanes <= K; k += kLanes)
    for (int l = 0; l < kLanes; ++l) acc[l] += a[k + l] * b[k + l];
  float s = ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]));
  for (; k < K; ++k) s += a[k] * b[k];
  return s;
}

// Four W rows against one x row: the same arithmetic per element as dot_fixed, with the x row
// loaded once.
inline void dot4_fixed(const float* a, const float* b0, const float* b1, const float* b2,
                       const float* b3, int64_t K, float* out) {
  float c0[kLanes] = {0}, c1[kLanes] = {0}, c2[kLanes] = {0}, c3[kLanes] = {0};
  int64_t k = 0;
  for (; k + kLanes <= K; k += kLanes)
    for (int l = 0; l < kLanes; ++l) {
      const float x = a[k + l];
      c0[l] += x * b0[k + l];
      c1[l] += x * b1[k + l];
      c2[l] += x * b2[k + l];
      c3[l] += x * b3[k + l];
    }
  float* cs[4] = {c0, c1, c2, c3};
  const float* bs[4] = {b0, b1, b2, b3};
  for (int j = 0; j < 4; ++j) {
    const float* c = cs[j];
    float s = ((c[0] + c[4]) + (c[2] + c[6])) + ((c[1] + c[5]) + (c[3] + c[7]));
    for (int64_t t = k; t < K; ++t) s += a[t] * bs[j][t];
    out[j] = s;
  }
}

}  // namespace

void gemm_nt_rowstable(const float* x_MK, const float* W_NK, float* y_MN, int64_t M, int64_t N,
                       int64_t K, float alpha, float beta) {
  // Block over W rows so a block of W stays in cache while every x row passes by.
  constexpr int64_t kNB = 64;
  for (int64_t n0 = 0; n0 < N; n0 += kNB) {
    const int64_t n1 = n0 + kNB < N ? n0 + kNB : N;
    for (int64_t m = 0; m < M; ++m) {
      const float* a = x_MK + m * K;
      float* y = y_MN + m * N;
      int64_t n = n0;
      float out[4];
      for (; n + 4 <= n1; n += 4) {
        dot4_fixed(a, W_NK + n * K, W_NK + (n + 1) * K, W_NK + (n + 2) * K, W_NK + (n + 3) * K, K,
                   out);
        for (int j = 0; j < 4; ++j)
          y[n + j] = beta == 0.0f ? alpha * out[j] : alpha * out[j] + beta * y[n + j];
      }
      for (; n < n1; ++n) {
        const float s = dot_fixed(a, W_NK + n * K, K);
        y[n] = beta == 0.0f ? alpha * s : alpha * s + beta * y[n];
      }
    }
  }
}

void gemm_nn_rowstable(const float* x_MK, const float* W_KN, float* y_MN, int64_t M, int64_t N,
                       int64_t K, float alpha, float beta) {
  for (int64_t m = 0; m < M; ++m) {
    float* y = y_MN + m * N;
    const float* a = x_MK + m * K;
    // Sum over k in order into y; scale at the end: the same operations for every row.
    if (beta == 0.0f) {
      for (int64_t n = 0; n < N; ++n) y[n] = 0.0f;
    } else {
      for (int64_t n = 0; n < N; ++n) y[n] *= beta / alpha;  // alpha != 0 (checked by caller)
    }
    for (int64_t k = 0; k < K; ++k) {
      const float xk = a[k];
      const float* w = W_KN + k * N;
      for (int64_t n = 0; n < N; ++n) y[n] += xk * w[n];
    }
    if (alpha != 1.0f)
      for (int64_t n = 0; n < N; ++n) y[n] *= alpha;
  }
}

}  // namespace sy
