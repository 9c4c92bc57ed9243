#include "runtime/kernels/attention.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "runtime/core/check.h"
#include "runtime/kernels/cpu_kernels.h"

namespace sy {

std::vector<float> rope_inv_freq(int64_t head_dim, double theta) {
  std::vector<float> f(static_cast<size_t>(head_dim / 2));
  for (int64_t i = 0; i < head_dim / 2; ++i)
    f[static_cast<size_t>(i)] = static_cast<float>(
        std::pow(theta, -2.0 * static_cast<double>(i) / static_cast<double>(head_dim)));
  return f;
}

void rope_apply(float* x, int64_t T, int64_t heads, int64_t hd, int64_t ld, int64_t pos0,
                const std::vector<float>& inv_freq) {
  SY_CHECK(hd % 2 == 0 && static_cast<int64_t>(inv_freq.size()) == hd / 2)
      << "rope: head_dim " << hd << " and " << inv_freq.size() << " frequencies";
  std::vector<float> c(static_cast<size_t>(hd / 2)), s(c.size());
  for (int64_t t = 0; t < T; ++t) {
    // Angles as Hugging Face computes them: float32 position * float32 inv_freq.
    const float pos = static_cast<float>(pos0 + t);
    for (size_t i = 0; i < c.size(); ++i) {
      const float ang = pos * inv_freq[i];
      c[i] = std::cos(ang);
      s[i] = std::sin(ang);
    }
    for (int64_t h = 0; h < heads; ++h)
      rope_rotate_head(x + t * ld + h * hd, c.data(), s.data(), hd);
  }
}

void attention_forward(const float* q, const float* k, const float* v, float* out, int64_t T,
                       int64_t Tk, int64_t pos0, const AttentionShape& s, const uint8_t* key_mask,
                       std::vector<float>* scratch) {
  const int64_t nH = s.num_heads, nKV = s.num_kv_heads, hd = s.head_dim;
  SY_CHECK(nH >= 1 && nKV >= 1 && nH % nKV == 0 && hd >= 1)
      << "attention: " << nH << " heads, " << nKV << " kv heads";
  if (T == 0) return;
  const int64_t ldq = nH * hd, ldk = nKV * hd;
  if (Tk == 0) {
    std::fill(out, out + T * ldq, 0.0f);
    return;
  }
  if (static_cast<int64_t>(scratch->size()) < T * Tk) scratch->resize(static_cast<size_t>(T * Tk));
  float* S = scratch->data();
  const float neg_inf = -std::numeric_limits<float>::infinity();
  for (int64_t h = 0; h < nH; ++h) {
    const int64_t g = h / (nH / nKV);
    // S = scale * Q_h K_g^T   [T, Tk]
    gemm(false, true, T, Tk, hd, s.scale, q + h * hd, ldq, k + g * hd, ldk, 0.0f, S, Tk);
    for (int64_t t = 0; t < T; ++t) {
      float* row = S + t * Tk;
      const int64_t visible = s.causal ? std::min<int64_t>(Tk, pos0 + t + 1) : Tk;
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
    // O_h = P V_g   [T, hd]
    gemm(false, false, T, hd, Tk, 1.0f, S, Tk, v + g * hd, ldk, 0.0f, out + h * hd, ldq);
  }
}

}  // namespace sy
