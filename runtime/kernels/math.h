// Scalar and per-row math shared by the CPU kernels and the CUDA kernels (__host__
// __device__ under nvcc), so CPU tests exercise the same arithmetic the GPU runs.
// No allocation, no library calls beyond <cmath>.
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define SY_HD __host__ __device__
#else
#define SY_HD
#endif

namespace sy {

SY_HD inline float sigmoidf_(float x) {
  return 1.0f / (1.0f + expf(-x));
}
SY_HD inline float silu(float x) {
  return x * sigmoidf_(x);
}
// d/dx [x * sigmoid(x)] = s * (1 + x * (1 - s))
SY_HD inline float silu_grad(float x) {
  float s = sigmoidf_(x);
  return s * (1.0f + x * (1.0f - s));
}
// Exact GELU (erf form, PyTorch's default).
SY_HD inline float gelu(float x) {
  return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));
}
SY_HD inline float gelu_grad(float x) {
  const float cdf = 0.5f * (1.0f + erff(x * 0.70710678118654752f));
  const float pdf = 0.39894228040143268f * expf(-0.5f * x * x);
  return cdf + x * pdf;
}
SY_HD inline float softplus(float x) {
  return x > 20.0f ? x : log1pf(expf(x));
}

// p = softmax(s) over n entries, fp32, max-subtraction. -inf entries get probability 0; a row
// that is entirely -inf gets the uniform distribution (no NaN from 0/0). NaN in s propagates
// to p: callers check finiteness before routing, so a NaN never picks an expert.
SY_HD inline void softmax_row(const float* s, float* p, int n) {
  float m = -INFINITY;
  for (int i = 0; i < n; ++i) m = s[i] > m ? s[i] : m;
  if (m == -INFINITY) {
    for (int i = 0; i < n; ++i) p[i] = 1.0f / static_cast<float>(n);
    return;
  }
  float z = 0.0f;
  for (int i = 0; i < n; ++i) {
    p[i] = expf(s[i] - m);
    z += p[i];
  }
  const float inv = 1.0f / z;
  for (int i = 0; i < n; ++i) p[i] *= inv;
}

// log(sum(exp(s))) with max-subtraction; -inf for an all -inf row.
SY_HD inline float logsumexp_row(const float* s, int n) {
  float m = -INFINITY;
  for (int i = 0; i < n; ++i) m = s[i] > m ? s[i] : m;
  if (m == -INFINITY) return -INFINITY;
  float z = 0.0f;
  for (int i = 0; i < n; ++i) z += expf(s[i] - m);
  return m + logf(z);
}

// LayerNorm of one row s[0..D) (torch.nn.LayerNorm: biased variance): its mean and
// 1 / sqrt(var + eps), both accumulated in double over two passes and rounded to fp32 once,
// so forward and backward normalize with the same bits.
SY_HD inline void layernorm_row_stats(const float* s, int64_t D, float eps, float* mean,
                                      float* rstd) {
  double sum = 0.0;
  for (int64_t i = 0; i < D; ++i) sum += s[i];
  const double m = sum / static_cast<double>(D);
  double ss = 0.0;
  for (int64_t i = 0; i < D; ++i) {
    const double c = s[i] - m;
    ss += c * c;
  }
  *rstd = static_cast<float>(1.0 / sqrt(ss / static_cast<double>(D) + eps));
  *mean = static_cast<float>(m);
}

// Backward of y = (x - mean) rstd w + b for one row, from its input x (stats recomputed):
//   xhat = (x - mean) rstd, g = dy w,
//   dx  += rstd (g - mean(g) - xhat mean(g xhat)),  dw += dy xhat,  db += dy.
// Any of dx, dw, db may be null. The two row sums accumulate in double.
SY_HD inline void layernorm_backward_row(const float* x, const float* w, const float* dy, int64_t D,
                                         float eps, float* dx, float* dw, float* db) {
  float mean, rstd;
  layernorm_row_stats(x, D, eps, &mean, &rstd);
  double sg = 0.0, sgx = 0.0;
  for (int64_t i = 0; i < D; ++i) {
    const float xhat = (x[i] - mean) * rstd;
    const float g = dy[i] * w[i];
    sg += g;
    sgx += static_cast<double>(g) * xhat;
    if (dw) dw[i] += dy[i] * xhat;
    if (db) db[i] += dy[i];
  }
  if (!dx) return;
  const float mg = static_cast<float>(sg / static_cast<double>(D));
  const float mgx = static_cast<float>(sgx / static_cast<double>(D));
  for (int64_t i = 0; i < D; ++i) {
    const float xhat = (x[i] - mean) * rstd;
    dx[i] += rstd * (dy[i] * w[i] - mg - xhat * mgx);
  }
}

// The k largest of v[0..n) in descending order; ties go to the lower index; NaN ranks below
// every number (so ids stay in range even for a broken row). Insertion into a k-slot list:
// O(n) for the usual case, O(n*k) worst. Requires 1 <= k <= n.
SY_HD inline void topk_row(const float* v, int n, int k, int32_t* ids, float* vals) {
  int count = 0;
  for (int e = 0; e < n; ++e) {
    const float x = v[e];
    const float key = (x != x) ? -INFINITY : x;
    if (count == k) {
      const float last = (vals[k - 1] != vals[k - 1]) ? -INFINITY : vals[k - 1];
      if (!(key > last)) continue;
      --count;  // drop the last slot
    }
    // Insert after every slot whose key is >= key (keeps lower ids first on ties).
    int pos = count;
    while (pos > 0) {
      const float prev = (vals[pos - 1] != vals[pos - 1]) ? -INFINITY : vals[pos - 1];
      if (prev >= key) break;
      ids[pos] = ids[pos - 1];
      vals[pos] = vals[pos - 1];
      --pos;
    }
    ids[pos] = e;
    vals[pos] = x;
    ++count;
  }
}

}  // namespace sy
