// Scalar and per-row math shared by the CPU kernels and the CUDA kernels (__host__
// __device__ under nvcc), so CPU tests exercise the same arithmetic the GPU runs.
// No allocation, no library calls beyond <cmath> (and memcpy for a bit cast).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define SY_HD __host__ __device__
#else
#define SY_HD
#endif

namespace sy {

SY_HD inline float sigmoidf_(float x) {
  return 1.0f / (1.0f + expf(-x));
}

// e^x for the SiLU / SwiGLU activations, from float +, *, compares and conversions only, so a
// loop of it vectorizes (runtime/kernels/vector_rows.cc) where expf, a library call, does
// not: SiLU(g) * u over an expert's rows ran at ~2.6 ns per value, mostly in expf. Cody-Waite
// range reduction x = n ln2 + r (|r| <= ln2 / 2, ln2 split in two so n * C1 is exact), e^r by
// the degree-6 polynomial of Cephes' expf, times 2^n made from its exponent bits. Every vector
// width gives the same bits as this scalar code as long as nothing is fused into an FMA (the
// file that vectorizes it is built with -ffp-contract=off). Within 2 ulp of glibc's expf on
// [-87, 88] (kernels_test). x is clamped to [-87, 88] first: +inf gives e^88 (finite), -inf
// e^-87; NaN stays NaN.
SY_HD inline float exp_poly(float x) {
  x = x > 88.0f ? 88.0f : x;  // written so that NaN passes both clamps unchanged
  x = x < -87.0f ? -87.0f : x;
  float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;  // round(x / ln2)
  n = n == n ? n : 0.0f;  // NaN: any n will do (r stays NaN), but a NaN must not reach the int
  float r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  const float z = r * r;
  const float p = (((((1.9875691500e-4f * r + 1.3981999507e-3f) * r + 8.3334519073e-3f) * r +
                     4.1665795894e-2f) *
                        r +
                    1.6666665459e-1f) *
                       r +
                   5.0000001201e-1f) *
                      z +
                  r + 1.0f;
  const uint32_t bits = (static_cast<uint32_t>(static_cast<int32_t>(n)) + 127u) << 23;
#if defined(__CUDA_ARCH__)
  const float scale = __uint_as_float(bits);
#else
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
#endif
  return p * scale;
}
// e^x in double for the cross-entropy's max-subtracted logits (x <= 0), from double +, -, *, /,
// compares and conversions only, so a loop of it vectorizes (vector_rows.cc) where exp, a
// library call, does not: the loss over a 50,257-token vocabulary spent ~100 ms a step of 512
// tokens in glibc's exp. Cody-Waite reduction x = n ln2 + r as in exp_poly, e^r by Cephes'
// exp rational approximation 1 + 2r P(r^2) / (Q(r^2) - r P(r^2)) (within a few ulp of glibc's
// exp; kernels_test), times 2^n from its exponent bits. x is clamped to [-708, 0]: e^-708 ~
// 3e-308 adds nothing to a sum that holds e^0 = 1; NaN stays NaN. Not for x > 0.
SY_HD inline double exp_neg_poly(double x) {
  x = x > 0.0 ? 0.0 : x;  // written so that NaN passes both clamps unchanged
  x = x < -708.0 ? -708.0 : x;
  double n = (x * 1.4426950408889634 + 6755399441055744.0) - 6755399441055744.0;  // round(x/ln2)
  n = n == n ? n : 0.0;  // NaN: any n will do (r stays NaN), but a NaN must not reach the int
  double r = x - n * 6.93145751953125e-1;
  r = r - n * 1.42860682030941723212e-6;
  const double rr = r * r;
  const double px = r * ((1.26177193074810590878e-4 * rr + 3.02994407707441961300e-2) * rr +
                         9.99999999999999999910e-1);
  const double qx = ((3.00198505138664455042e-6 * rr + 2.52448340349684104192e-3) * rr +
                     2.27265548208155028766e-1) *
                        rr +
                    2.00000000000000000009e0;
  const double e = 1.0 + 2.0 * (px / (qx - px));
  const uint64_t bits = static_cast<uint64_t>(static_cast<int64_t>(static_cast<int32_t>(n)) + 1023)
                        << 52;
#if defined(__CUDA_ARCH__)
  const double scale = __longlong_as_double(static_cast<long long>(bits));
#else
  double scale;
  std::memcpy(&scale, &bits, sizeof scale);
#endif
  return e * scale;
}

// 1 / (1 + e^-x) with exp_poly: SiLU's sigmoid.
SY_HD inline float sigmoid_poly(float x) {
  return 1.0f / (1.0f + exp_poly(-x));
}
SY_HD inline float silu(float x) {
  return x * sigmoid_poly(x);
}
// d/dx [x * sigmoid(x)] = s * (1 + x * (1 - s))
SY_HD inline float silu_grad(float x) {
  float s = sigmoid_poly(x);
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

// Pieces of layernorm_row_stats, so that a block-per-row GPU kernel (runtime/backend/cuda/rows.cu),
// which sums in another order, finishes with the same formulas: the mean in double from the sum,
// the squared deviation of each entry from that double mean, rstd from the sum of those.
SY_HD inline double layernorm_mean(double sum, int64_t D) {
  return sum / static_cast<double>(D);
}
SY_HD inline double layernorm_sq_dev(float s, double m) {
  const double c = s - m;
  return c * c;
}
SY_HD inline float layernorm_rstd(double ss, int64_t D, float eps) {
  return static_cast<float>(1.0 / sqrt(ss / static_cast<double>(D) + eps));
}
// LayerNorm of one row s[0..D) (torch.nn.LayerNorm: biased variance): its mean and
// 1 / sqrt(var + eps), both accumulated in double over two passes and rounded to fp32 once,
// so forward and backward normalize with the same bits.
SY_HD inline void layernorm_row_stats(const float* s, int64_t D, float eps, float* mean,
                                      float* rstd) {
  double sum = 0.0;
  for (int64_t i = 0; i < D; ++i) sum += s[i];
  const double m = layernorm_mean(sum, D);
  double ss = 0.0;
  for (int64_t i = 0; i < D; ++i) ss += layernorm_sq_dev(s[i], m);
  *rstd = layernorm_rstd(ss, D, eps);
  *mean = static_cast<float>(m);
}

// Pieces of layernorm_backward_row, shared with the GPU kernels (which take its sums in another
// order): xhat, a row mean rounded to fp32, and dx's term from mg = mean(g), mgx = mean(g xhat).
SY_HD inline float layernorm_xhat(float x, float mean, float rstd) {
  return (x - mean) * rstd;
}
SY_HD inline float layernorm_row_mean_f(double sum, int64_t D) {
  return static_cast<float>(sum / static_cast<double>(D));
}
SY_HD inline float layernorm_backward_dx(float g, float xhat, float mg, float mgx, float rstd) {
  return rstd * (g - mg - xhat * mgx);
}
// Backward of y = (x - mean) rstd w + b for one row, from its input x (stats recomputed):
//   xhat = (x - mean) rstd, g = dy w,
//   dx  += rstd (g - mean(g) - xhat mean(g xhat)),  dw += dy xhat,  db += dy.
// Any of dx, dw, db may be null. The two row sums accumulate in double. _from_stats takes the
// row's mean and rstd as layernorm_row_stats computes them; layernorm_backward_row computes them.
SY_HD inline void layernorm_backward_row_from_stats(const float* x, const float* w, const float* dy,
                                                    int64_t D, float mean, float rstd, float* dx,
                                                    float* dw, float* db) {
  double sg = 0.0, sgx = 0.0;
  for (int64_t i = 0; i < D; ++i) {
    const float xhat = layernorm_xhat(x[i], mean, rstd);
    const float g = dy[i] * w[i];
    sg += g;
    sgx += static_cast<double>(g) * xhat;
    if (dw) dw[i] += dy[i] * xhat;
    if (db) db[i] += dy[i];
  }
  if (!dx) return;
  const float mg = layernorm_row_mean_f(sg, D);
  const float mgx = layernorm_row_mean_f(sgx, D);
  for (int64_t i = 0; i < D; ++i) {
    const float xhat = layernorm_xhat(x[i], mean, rstd);
    dx[i] += layernorm_backward_dx(dy[i] * w[i], xhat, mg, mgx, rstd);
  }
}
SY_HD inline void layernorm_backward_row(const float* x, const float* w, const float* dy, int64_t D,
                                         float eps, float* dx, float* dw, float* db) {
  float mean, rstd;
  layernorm_row_stats(x, D, eps, &mean, &rstd);
  layernorm_backward_row_from_stats(x, w, dy, D, mean, rstd, dx, dw, db);
}

// ds = p * (dp - sum(p * dp)) for one row (+= when accumulate); the sum in double, in index order.
SY_HD inline float softmax_backward_elem(float p, float dp, float dot) {
  return p * (dp - dot);
}
SY_HD inline void softmax_backward_row(const float* p, const float* dp, float* ds, int64_t n,
                                       bool accumulate) {
  double dot = 0.0;
  for (int64_t i = 0; i < n; ++i) dot += static_cast<double>(p[i]) * dp[i];
  const float d = static_cast<float>(dot);
  for (int64_t i = 0; i < n; ++i) {
    const float g = softmax_backward_elem(p[i], dp[i], d);
    ds[i] = accumulate ? ds[i] + g : g;
  }
}

// SwiGLU backward of one entry: du = da SiLU(g), dg = da u SiLU'(g). All inputs are read before
// either output is written (dg may alias da).
SY_HD inline void swiglu_backward_elem(float g, float u, float da, float* dg, float* du) {
  const float s = sigmoid_poly(g);
  *du = da * g * s;
  *dg = da * u * (s * (1.0f + g * (1.0f - s)));
}

// w /= sum(w) when the sum, taken in index order, is > 0 (norm_topk_prob).
SY_HD inline void normalize_row(float* x, int64_t n) {
  float s = 0.0f;
  for (int64_t k = 0; k < n; ++k) s += x[k];
  if (s > 0.0f)
    for (int64_t k = 0; k < n; ++k) x[k] /= s;
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
