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
