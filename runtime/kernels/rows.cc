#include "runtime/kernels/rows.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "runtime/core/check.h"
#include "runtime/kernels/cpu_kernels.h"
#include "runtime/kernels/hash_route.h"
#include "runtime/kernels/math.h"

namespace sy {

void gather_rows(const float* x_TD, const int32_t* order_A_R, int64_t R, int64_t K, int64_t D,
                 float* out_RD) {
  const size_t row_bytes = static_cast<size_t>(D) * sizeof(float);
  for (int64_t r = 0; r < R; ++r)
    std::memcpy(out_RD + r * D, x_TD + static_cast<int64_t>(order_A_R[r] / K) * D, row_bytes);
}

// Gather-combine per token: a fixed slot order, no write races, no zero-fill pass.
void combine_rows(const float* rows_RD, const int32_t* row_of_TK, const float* w_TK, int64_t T,
                  int64_t K, int64_t D, float* y_TD) {
  const size_t row_bytes = static_cast<size_t>(D) * sizeof(float);
  for (int64_t t = 0; t < T; ++t) {
    float* yt = y_TD + t * D;
    bool first = true;
    for (int64_t k = 0; k < K; ++k) {
      const int32_t r = row_of_TK[t * K + k];
      if (r < 0) continue;
      const float* src = rows_RD + static_cast<int64_t>(r) * D;
      if (!w_TK) {
        if (first) {
          std::memcpy(yt, src, row_bytes);
        } else {
          for (int64_t d = 0; d < D; ++d) yt[d] += src[d];
        }
      } else {
        const float wk = w_TK[t * K + k];
        if (first) {
          for (int64_t d = 0; d < D; ++d) yt[d] = wk * src[d];
        } else {
          for (int64_t d = 0; d < D; ++d) yt[d] += wk * src[d];
        }
      }
      first = false;
    }
    if (first) std::memset(yt, 0, row_bytes);
  }
}

void scatter_rows_weighted(const float* dy_TD, const int32_t* order_A_R, const float* w_TK,
                           int64_t R, int64_t K, int64_t D, float* out_RD) {
  for (int64_t r = 0; r < R; ++r) {
    const int32_t a = order_A_R[r];
    const float wk = w_TK[a];
    const float* src = dy_TD + static_cast<int64_t>(a / K) * D;
    float* dst = out_RD + r * D;
    for (int64_t d = 0; d < D; ++d) dst[d] = wk * src[d];
  }
}

void combine_weights_backward(const float* dy_TD, const float* rows_RD, const int32_t* row_of_TK,
                              int64_t T, int64_t K, int64_t D, float* dw_TK) {
  for (int64_t i = 0; i < T * K; ++i) {
    const int32_t r = row_of_TK[i];
    dw_TK[i] =
        r < 0 ? 0.0f : dot_f32(dy_TD + (i / K) * D, rows_RD + static_cast<int64_t>(r) * D, D);
  }
}

void gather_topk_probs(const float* probs_TE, const int32_t* ids_TK, int64_t T, int64_t E,
                       int64_t K, float* rank_p_TK) {
  for (int64_t t = 0; t < T; ++t)
    for (int64_t k = 0; k < K; ++k) rank_p_TK[t * K + k] = probs_TE[t * E + ids_TK[t * K + k]];
}

void hash_route(const int32_t* table_VK, int64_t V, uint64_t seed, const int32_t* token_ids_T,
                int64_t T, int64_t E, int64_t K, int32_t* ids_TK, float* logits_TE, float* probs_TE,
                float* weights_TK) {
  const float w = 1.0f / static_cast<float>(K);
  // Whole-array fills first (one vectorized pass each), then the chosen entries per token.
  std::fill(logits_TE, logits_TE + T * E, -INFINITY);
  std::fill(probs_TE, probs_TE + T * E, 0.0f);
  for (int64_t t = 0; t < T; ++t) {
    const int32_t id = token_ids_T[t];
    SY_CHECK(id >= 0 && id < V) << "router 'hash': token " << t << " has id " << id
                                << ", outside [0, vocab_size=" << V
                                << "); validate untrusted ids with check_token_ids()";
    int32_t* ids = ids_TK + t * K;
    if (table_VK)
      std::memcpy(ids, table_VK + static_cast<int64_t>(id) * K, static_cast<size_t>(K) * 4);
    else
      hash_route_experts(seed, E, K, id, /*sorted=*/true, ids);
    float* s = logits_TE + t * E;
    float* p = probs_TE + t * E;
    for (int64_t k = 0; k < K; ++k) {
      s[ids[k]] = 0.0f;
      p[ids[k]] = w;
      weights_TK[t * K + k] = w;
    }
  }
}

void embedding_rows(const float* table_VD, int64_t V, const int32_t* ids_T, int64_t T, int64_t D,
                    float* out_TD) {
  for (int64_t t = 0; t < T; ++t) {
    const int32_t id = ids_T[t];
    SY_CHECK(id >= 0 && id < V) << "embedding: token " << t << " has id " << id << ", outside [0, "
                                << V << ")";
    std::memcpy(out_TD + t * D, table_VD + static_cast<int64_t>(id) * D,
                static_cast<size_t>(D) * sizeof(float));
  }
}

void normalize_rows(float* w, int64_t rows, int64_t n) {
  for (int64_t r = 0; r < rows; ++r) normalize_row(w + r * n, n);
}

void topk_weights_backward(const float* dw_TK, const float* vals_TK, const int32_t* ids_TK,
                           int64_t T, int64_t E, int64_t K, bool normalized, float* dp_TE) {
  for (int64_t t = 0; t < T; ++t)
    topk_weights_backward_row(dw_TK + t * K, vals_TK + t * K, ids_TK + t * K, K, normalized,
                              dp_TE + t * E);
}

void axpy(const float* alpha, const float* x, float* y, int64_t n, bool accumulate) {
  const float a = *alpha;
  if (accumulate) {
    for (int64_t i = 0; i < n; ++i) y[i] += a * x[i];
  } else {
    for (int64_t i = 0; i < n; ++i) y[i] = a * x[i];
  }
}

void dot_add(const float* x, const float* y, int64_t n, float* out) {
  double s = 0.0;
  for (int64_t i = 0; i < n; ++i) s += static_cast<double>(x[i]) * y[i];
  *out += static_cast<float>(s);
}

void gated_add_rows(float* g_T, const float* s_TD, const uint8_t* mask_T, int64_t T, int64_t D,
                    float* y_TD) {
  for (int64_t t = 0; t < T; ++t) {
    const float gt = sigmoidf_(g_T[t]);
    g_T[t] = gt;  // the gate value, not the logit, is what backward needs
    if (mask_T && !mask_T[t]) continue;
    const float* st = s_TD + t * D;
    float* yt = y_TD + t * D;
    for (int64_t d = 0; d < D; ++d) yt[d] += gt * st[d];
  }
}

void gated_add_rows_backward(const float* dy_TD, const float* s_TD, const float* g_T,
                             const uint8_t* mask_T, int64_t T, int64_t D, float* ds_TD,
                             float* dlogit_T) {
  for (int64_t t = 0; t < T; ++t) {
    const float* dyt = dy_TD + t * D;
    const float* st = s_TD + t * D;
    float* dst = ds_TD + t * D;
    if (mask_T && !mask_T[t]) {
      std::memset(dst, 0, static_cast<size_t>(D) * sizeof(float));
      dlogit_T[t] = 0.0f;
      continue;
    }
    double dot = 0.0;
    for (int64_t d = 0; d < D; ++d) {
      dot += static_cast<double>(dyt[d]) * st[d];
      dst[d] = g_T[t] * dyt[d];
    }
    dlogit_T[t] = static_cast<float>(dot) * g_T[t] * (1.0f - g_T[t]);
  }
}

void add_inplace(float* y, const float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += x[i];
}

void add_bias_rows(const float* b_N, int64_t R, int64_t N, float* y_RN) {
  for (int64_t r = 0; r < R; ++r)
    for (int64_t n = 0; n < N; ++n) y_RN[r * N + n] += b_N[n];
}

void scatter_add_rows(const float* src_TD, const int32_t* index_T, int64_t T, int64_t D,
                      float* dst) {
  for (int64_t t = 0; t < T; ++t) {
    float* row = dst + static_cast<int64_t>(index_T[t]) * D;
    const float* g = src_TD + t * D;
    for (int64_t j = 0; j < D; ++j) row[j] += g[j];
  }
}

double sum_squares(const float* x, int64_t n) {
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += static_cast<double>(x[i]) * x[i];
  return s;
}

}  // namespace sy
