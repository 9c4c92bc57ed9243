#include "runtime/kernels/attention.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "runtime/core/check.h"
#include "runtime/kernels/cpu_kernels.h"

namespace sy {

namespace {

// In place over S [T, Tk]: masks invisible keys to -inf, then row softmax. A row with no visible
// key becomes all zeros. Forward and backward share it so the recomputed P is bitwise the one
// the forward used.
void masked_softmax_rows(float* S, int64_t T, int64_t Tk, int64_t pos0, bool causal,
                         const uint8_t* key_mask) {
  const float neg_inf = -std::numeric_limits<float>::infinity();
  for (int64_t t = 0; t < T; ++t) {
    float* row = S + t * Tk;
    const int64_t visible = causal ? std::min<int64_t>(Tk, pos0 + t + 1) : Tk;
    float mx = neg_inf;
    for (int64_t j = 0; j < Tk; ++j) {
      if (j >= visible || (key_mask && !key_mask[j])) row[j] = neg_inf;
      mx = std::max(mx, row[j]);
    }
    if (mx == neg_inf) {  // nothing visible
      std::fill(row, row + Tk, 0.0f);
      continue;
    }
    float sum = 0.0f;
    for (int64_t j = 0; j < Tk; ++j) {
      row[j] = row[j] == neg_inf ? 0.0f : std::exp(row[j] - mx);
      sum += row[j];
    }
    const float inv = 1.0f / sum;
    for (int64_t j = 0; j < Tk; ++j) row[j] *= inv;
  }
}

}  // namespace

std::vector<float> rope_inv_freq(int64_t head_dim, double theta) {
  std::vector<float> f(static_cast<size_t>(head_dim / 2));
  for (int64_t i = 0; i < head_dim / 2; ++i)
    f[static_cast<size_t>(i)] = static_cast<float>(
        std::pow(theta, -2.0 * static_cast<double>(i) / static_cast<double>(head_dim)));
  return f;
}

void rope_apply(float* x, int64_t T, int64_t heads, int64_t hd, int64_t ld, int64_t pos0,
                const std::vector<float>& inv_freq, bool inverse) {
  SY_CHECK(hd % 2 == 0 && static_cast<int64_t>(inv_freq.size()) == hd / 2)
      << "rope: head_dim " << hd << " and " << inv_freq.size() << " frequencies";
  std::vector<float> c(static_cast<size_t>(hd / 2)), s(c.size());
  for (int64_t t = 0; t < T; ++t) {
    // Angles as Hugging Face computes them: float32 position * float32 inv_freq.
    const float pos = static_cast<float>(pos0 + t);
    for (size_t i = 0; i < c.size(); ++i) rope_cos_sin(pos, inv_freq[i], inverse, &c[i], &s[i]);
    for (int64_t h = 0; h < heads; ++h)
      rope_rotate_head(x + t * ld + h * hd, c.data(), s.data(), hd);
  }
}

void attention_forward(const float* q, const float* k, const float* v, float* out, int64_t T,
                       int64_t Tk, int64_t pos0, const AttentionShape& s, const uint8_t* key_mask,
                       float* scratch) {
  const int64_t nH = s.num_heads, nKV = s.num_kv_heads, hd = s.head_dim;
  SY_CHECK(nH >= 1 && nKV >= 1 && nH % nKV == 0 && hd >= 1)
      << "attention: " << nH << " heads, " << nKV << " kv heads";
  if (T == 0) return;
  const int64_t ldq = nH * hd, ldk = nKV * hd;
  if (Tk == 0) {
    std::fill(out, out + T * ldq, 0.0f);
    return;
  }
  float* S = scratch;
  for (int64_t h = 0; h < nH; ++h) {
    const int64_t g = h / (nH / nKV);
    // S = scale * Q_h K_g^T   [T, Tk]
    gemm(false, true, T, Tk, hd, s.scale, q + h * hd, ldq, k + g * hd, ldk, 0.0f, S, Tk);
    masked_softmax_rows(S, T, Tk, pos0, s.causal, key_mask);
    // O_h = P V_g   [T, hd]
    gemm(false, false, T, hd, Tk, 1.0f, S, Tk, v + g * hd, ldk, 0.0f, out + h * hd, ldq);
  }
}

void attention_backward(const float* q, const float* k, const float* v, const float* dout,
                        float* dq, float* dk, float* dv, int64_t T, int64_t Tk, int64_t pos0,
                        const AttentionShape& s, const uint8_t* key_mask, float* scratch) {
  const int64_t nH = s.num_heads, nKV = s.num_kv_heads, hd = s.head_dim;
  SY_CHECK(nH >= 1 && nKV >= 1 && nH % nKV == 0 && hd >= 1)
      << "attention: " << nH << " heads, " << nKV << " kv heads";
  if (T == 0) return;
  const int64_t ldq = nH * hd, ldk = nKV * hd;
  if (Tk == 0) {  // the output was all zeros: no gradient reaches q (dk, dv are empty)
    std::fill(dq, dq + T * ldq, 0.0f);
    return;
  }
  float* P = scratch;      // [T, Tk]
  float* dS = P + T * Tk;  // [T, Tk], holds dP first
  for (int64_t h = 0; h < nH; ++h) {
    const int64_t g = h / (nH / nKV);
    const float* q_h = q + h * hd;
    const float* do_h = dout + h * hd;
    gemm(false, true, T, Tk, hd, s.scale, q_h, ldq, k + g * hd, ldk, 0.0f, P, Tk);
    masked_softmax_rows(P, T, Tk, pos0, s.causal, key_mask);
    // dV_g += P^T dO_h   [Tk, hd]
    gemm(true, false, Tk, hd, T, 1.0f, P, Tk, do_h, ldq, 1.0f, dv + g * hd, ldk);
    // dP = dO_h V_g^T   [T, Tk]
    gemm(false, true, T, Tk, hd, 1.0f, do_h, ldq, v + g * hd, ldk, 0.0f, dS, Tk);
    // dS = P * (dP - rowsum(dP * P)); masked keys and empty rows have P = 0, so dS = 0 there.
    for (int64_t t = 0; t < T; ++t) {
      const float* p = P + t * Tk;
      float* d = dS + t * Tk;
      float dot = 0.0f;
      for (int64_t j = 0; j < Tk; ++j) dot += p[j] * d[j];
      for (int64_t j = 0; j < Tk; ++j) d[j] = p[j] * (d[j] - dot);
    }
    // dQ_h = scale * dS K_g   [T, hd] (written)
    gemm(false, false, T, hd, Tk, s.scale, dS, Tk, k + g * hd, ldk, 0.0f, dq + h * hd, ldq);
    // dK_g += scale * dS^T Q_h   [Tk, hd]
    gemm(true, false, Tk, hd, T, s.scale, dS, Tk, q_h, ldq, 1.0f, dk + g * hd, ldk);
  }
}

}  // namespace sy
