#include "runtime/kernels/cpu_kernels.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>

#include "runtime/core/check.h"
#include "runtime/kernels/gemm_rowstable.h"
#include "runtime/kernels/math.h"

namespace sy {
namespace {

// Top-k of a row that holds no NaN (the softmax of finite scores), with exactly topk_row's
// result (math.h): the k largest in descending order, ties to the lower id. topk_row pays for
// its NaN handling on every element, and its insertion scan mispredicts a branch each time the
// running threshold rises: at E=60, K=4 it cost more than the softmax. This one is ~2.3x faster
// there (bench/router_benchmark.cc). tests/routers/router_route_test.cc and the backend
// conformance test check it against the plain scan.

// Inserts (x, e) into the descending list of `*count` <= k entries after every entry >= x,
// dropping the last one when full. *last is vals[*count - 1].
inline void topk_insert(float x, int e, int k, int* count, float* last, int32_t* ids, float* vals) {
  if (*count == k) {
    if (!(x > *last)) return;
    --*count;
  }
  int pos = *count;
  while (pos > 0 && vals[pos - 1] < x) {
    ids[pos] = ids[pos - 1];
    vals[pos] = vals[pos - 1];
    --pos;
  }
  ids[pos] = e;
  vals[pos] = x;
  *last = vals[*count];
  ++*count;
}

void topk_row_no_nan(const float* v, int n, int k, int32_t* ids, float* vals) {
  int count = 0;
  float last = 0.0f;
  // Short rows and k = 1 (measured): the plain insertion scan.
  if (n < 32 || k < 2 || k > 8) {
    for (int e = 0; e < n; ++e) topk_insert(v[e], e, k, &count, &last, ids, vals);
    return;
  }
  // Split the row into 8 disjoint strided lanes. The k largest lane maxima are k distinct
  // elements, so the k-th largest lane maximum is a lower bound on the row's k-th largest value:
  // nothing below it can be chosen. A branch-free pass marks the elements >= the bound, and the
  // insertion runs on those only, in index order, so ties resolve as in the full scan.
  float m[8];
  for (int j = 0; j < 8; ++j) m[j] = v[j];
  int e = 8;
  for (; e + 8 <= n; e += 8)  // 8 independent chains: no loop-carried dependency
    for (int j = 0; j < 8; ++j) m[j] = v[e + j] > m[j] ? v[e + j] : m[j];
  for (; e < n; ++e) m[e & 7] = v[e] > m[e & 7] ? v[e] : m[e & 7];
  for (int i = 1; i < 8; ++i) {  // sort the 8 maxima descending
    const float x = m[i];
    int j = i;
    for (; j > 0 && m[j - 1] < x; --j) m[j] = m[j - 1];
    m[j] = x;
  }
  const float bound = m[k - 1];
  for (int base = 0; base < n; base += 64) {
    const int len = std::min(64, n - base);
    uint64_t mask = 0;
    for (int j = 0; j < len; ++j) mask |= static_cast<uint64_t>(v[base + j] >= bound) << j;
    for (; mask != 0; mask &= mask - 1) {
      const int i = base + __builtin_ctzll(mask);
      topk_insert(v[i], i, k, &count, &last, ids, vals);
    }
  }
}

}  // namespace

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
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = v + r * n;
    bool nan = false;  // branch-free scan; NaN rows take topk_row's NaN-aware path
    for (int64_t i = 0; i < n; ++i) nan |= row[i] != row[i];
    if (nan)
      topk_row(row, static_cast<int>(n), static_cast<int>(k), ids + r * k, vals + r * k);
    else
      topk_row_no_nan(row, static_cast<int>(n), static_cast<int>(k), ids + r * k, vals + r * k);
  }
}

void softmax_backward_rows(const float* p, const float* dp, float* ds, int64_t rows, int64_t n,
                           bool accumulate) {
  for (int64_t r = 0; r < rows; ++r)
    softmax_backward_row(p + r * n, dp + r * n, ds + r * n, n, accumulate);
}

void gelu_inplace(float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] = gelu(x[i]);
}
void gelu_backward(const float* x, const float* dy, float* dx, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dx[i] = dy[i] * gelu_grad(x[i]);
}

bool all_finite(const float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i)
    if (!std::isfinite(x[i])) return false;
  return true;
}

}  // namespace sy
