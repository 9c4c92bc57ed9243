#include "runtime/kernels/cpu_kernels.h"

#include <cblas.h>

#include <cmath>

#include "runtime/core/check.h"
#include "runtime/kernels/gemm_rowstable.h"
#include "runtime/kernels/math.h"

namespace sy {

void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
          int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc,
          bool deterministic) {
  if (M == 0 || N == 0) return;
  if (K == 0) {  // cblas leaves C untouched for K == 0 only in some builds: make it explicit
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j) C[i * ldc + j] = beta == 0.0f ? 0.0f : beta * C[i * ldc + j];
    return;
  }
  // Deterministic mode: token rows (op(A) = A, contiguous) go through the row-stable kernels.
  if (deterministic && !trans_a && lda == K && alpha != 0.0f) {
    if (trans_b && ldb == K && ldc == N) return gemm_nt_rowstable(A, B, C, M, N, K, alpha, beta);
    if (!trans_b && ldb == N && ldc == N) return gemm_nn_rowstable(A, B, C, M, N, K, alpha, beta);
  }
  SY_CHECK(M <= INT32_MAX && N <= INT32_MAX && K <= INT32_MAX) << "gemm dims exceed int";
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
              trans_b ? CblasTrans : CblasNoTrans, static_cast<int>(M), static_cast<int>(N),
              static_cast<int>(K), alpha, A, static_cast<int>(lda), B, static_cast<int>(ldb), beta,
              C, static_cast<int>(ldc));
}

void linear_forward(const float* x_TI, const float* W_OI, float* y_TO, int64_t T, int64_t I,
                    int64_t O, float beta, bool deterministic) {
  gemm(false, true, T, O, I, 1.0f, x_TI, I, W_OI, I, beta, y_TO, O, deterministic);
}

void linear_backward(const float* x_TI, const float* W_OI, const float* dy_TO, float* dW_OI,
                     float* dx_TI, int64_t T, int64_t I, int64_t O, bool accumulate_dx,
                     bool deterministic) {
  if (dW_OI) gemm(true, false, O, I, T, 1.0f, dy_TO, O, x_TI, I, 1.0f, dW_OI, I, deterministic);
  if (dx_TI)
    gemm(false, false, T, I, O, 1.0f, dy_TO, O, W_OI, I, accumulate_dx ? 1.0f : 0.0f, dx_TI, I,
         deterministic);
}

float dot_f32(const float* x, const float* y, int64_t n) {
  if (n <= 0) return 0.0f;
  SY_CHECK(n <= INT32_MAX) << "dot length exceeds int";
  return cblas_sdot(static_cast<int>(n), x, 1, y, 1);
}

void softmax_rows(const float* s, float* p, int64_t rows, int64_t n) {
  for (int64_t r = 0; r < rows; ++r) softmax_row(s + r * n, p + r * n, static_cast<int>(n));
}

void logsumexp_rows(const float* s, float* out, int64_t rows, int64_t n) {
  for (int64_t r = 0; r < rows; ++r) out[r] = logsumexp_row(s + r * n, static_cast<int>(n));
}

void topk_rows(const float* v, int64_t rows, int64_t n, int64_t k, int32_t* ids, float* vals) {
  SY_CHECK(k >= 1 && k <= n) << "top-k " << k << " of " << n;
  for (int64_t r = 0; r < rows; ++r)
    topk_row(v + r * n, static_cast<int>(n), static_cast<int>(k), ids + r * k, vals + r * k);
}

void softmax_backward_rows(const float* p, const float* dp, float* ds, int64_t rows, int64_t n,
                           bool accumulate) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* pr = p + r * n;
    const float* dpr = dp + r * n;
    float* dsr = ds + r * n;
    double dot = 0.0;
    for (int64_t i = 0; i < n; ++i) dot += static_cast<double>(pr[i]) * dpr[i];
    for (int64_t i = 0; i < n; ++i) {
      const float g = pr[i] * (dpr[i] - static_cast<float>(dot));
      dsr[i] = accumulate ? dsr[i] + g : g;
    }
  }
}

void silu_inplace(float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] = silu(x[i]);
}
void gelu_inplace(float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] = gelu(x[i]);
}
void gelu_backward(const float* x, const float* dy, float* dx, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dx[i] = dy[i] * gelu_grad(x[i]);
}
void silu_backward(const float* x, const float* dy, float* dx, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dx[i] = dy[i] * silu_grad(x[i]);
}

void swiglu_rows(const float* g, const float* u, float* a, int64_t n) {
  for (int64_t i = 0; i < n; ++i) a[i] = silu(g[i]) * u[i];
}

void swiglu_backward_rows(const float* g, const float* u, const float* da, float* dg, float* du,
                          int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float x = g[i], d = da[i];
    const float s = sigmoidf_(x);
    du[i] = d * x * s;
    dg[i] = d * u[i] * (s * (1.0f + x * (1.0f - s)));
  }
}

bool all_finite(const float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i)
    if (!std::isfinite(x[i])) return false;
  return true;
}

}  // namespace sy
