#include "runtime/kernels/balance.h"

#include <cmath>
#include <vector>

#include "runtime/core/check.h"

namespace sy {
namespace {

// Switch loss of one group of n tokens (rows [0, n) of the given pointers). `grad_scale` is the
// factor that turns dL_group/dp into dL_total/dp (1 for the batch form, 1/B for the
// sequence form). Returns L_group.
double aux_loss_group(const float* probs_TE, const int32_t* topk_ids_TK, int64_t n, int64_t E,
                      int64_t K, float alpha, double grad_scale, float* dprobs_TE, bool accumulate,
                      std::vector<double>* count_E, std::vector<double>* P_E) {
  count_E->assign(static_cast<size_t>(E), 0.0);
  P_E->assign(static_cast<size_t>(E), 0.0);
  for (int64_t i = 0; i < n * K; ++i) {
    const int32_t e = topk_ids_TK[i];
    SY_CHECK(e >= 0 && e < E) << "expert id " << e << " out of range [0, " << E << ") at token "
                              << i / K << " slot " << i % K;
    (*count_E)[static_cast<size_t>(e)] += 1.0;
  }
  for (int64_t t = 0; t < n; ++t) {
    const float* p = probs_TE + t * E;
    for (int64_t e = 0; e < E; ++e) (*P_E)[static_cast<size_t>(e)] += p[e];
  }
  // L = alpha * E * sum_e (count_e / (n K)) * (Psum_e / n). Dividing once at the end keeps the
  // perfectly balanced case exact: count_e = n K / E and Psum_e = n / E give alpha.
  double dot = 0.0;
  for (int64_t e = 0; e < E; ++e)
    dot += (*count_E)[static_cast<size_t>(e)] * (*P_E)[static_cast<size_t>(e)];
  const double nn = static_cast<double>(n);
  const double loss = static_cast<double>(alpha) * static_cast<double>(E) * dot /
                      (nn * static_cast<double>(K) * nn);
  if (dprobs_TE) {
    // dL/dp[t, e] = alpha * E * f_e / n, times grad_scale; the same row for every token.
    std::vector<float> g(static_cast<size_t>(E));
    const double c = static_cast<double>(alpha) * static_cast<double>(E) * grad_scale /
                     (nn * static_cast<double>(K) * nn);
    for (int64_t e = 0; e < E; ++e)
      g[static_cast<size_t>(e)] = static_cast<float>(c * (*count_E)[static_cast<size_t>(e)]);
    for (int64_t t = 0; t < n; ++t) {
      float* d = dprobs_TE + t * E;
      if (accumulate) {
        for (int64_t e = 0; e < E; ++e) d[e] += g[static_cast<size_t>(e)];
      } else {
        for (int64_t e = 0; e < E; ++e) d[e] = g[static_cast<size_t>(e)];
      }
    }
  }
  return loss;
}

void check_sizes(const float* probs_TE, const int32_t* topk_ids_TK, int64_t T, int64_t E,
                 int64_t K) {
  SY_CHECK(T >= 0 && E >= 1 && K >= 1 && K <= E)
      << "aux loss sizes T=" << T << " E=" << E << " K=" << K;
  SY_CHECK(T == 0 || (probs_TE != nullptr && topk_ids_TK != nullptr));
}

}  // namespace

double switch_aux_loss(const float* probs_TE, const int32_t* topk_ids_TK, int64_t T, int64_t E,
                       int64_t K, float alpha, float* dprobs_TE, bool accumulate) {
  check_sizes(probs_TE, topk_ids_TK, T, E, K);
  if (T == 0) return 0.0;
  std::vector<double> count_E, P_E;
  return aux_loss_group(probs_TE, topk_ids_TK, T, E, K, alpha, 1.0, dprobs_TE, accumulate, &count_E,
                        &P_E);
}

double switch_aux_loss_seq(const float* probs_TE, const int32_t* topk_ids_TK, int64_t T, int64_t S,
                           int64_t E, int64_t K, float alpha, float* dprobs_TE, bool accumulate) {
  check_sizes(probs_TE, topk_ids_TK, T, E, K);
  SY_CHECK(S >= 1 && T % S == 0) << "sequence length " << S << " must divide T=" << T;
  if (T == 0) return 0.0;
  const int64_t B = T / S;
  const double inv_B = 1.0 / static_cast<double>(B);
  std::vector<double> count_E, P_E;
  double sum = 0.0;
  for (int64_t b = 0; b < B; ++b) {
    sum += aux_loss_group(probs_TE + b * S * E, topk_ids_TK + b * S * K, S, E, K, alpha, inv_B,
                          dprobs_TE ? dprobs_TE + b * S * E : nullptr, accumulate, &count_E, &P_E);
  }
  return sum * inv_B;
}

double router_z_loss(const float* logits_TE, int64_t T, int64_t E, float coef, float* dlogits_TE,
                     bool accumulate) {
  SY_CHECK(T >= 0 && E >= 1) << "z-loss sizes T=" << T << " E=" << E;
  SY_CHECK(T == 0 || logits_TE != nullptr);
  if (T == 0) return 0.0;
  const double inv_T = 1.0 / static_cast<double>(T);
  double sum = 0.0;
  for (int64_t t = 0; t < T; ++t) {
    const float* s = logits_TE + t * E;
    float* d = dlogits_TE ? dlogits_TE + t * E : nullptr;
    double m = -INFINITY;
    for (int64_t e = 0; e < E; ++e) m = s[e] > m ? s[e] : m;  // NaN never wins: see below
    bool nan = false;
    for (int64_t e = 0; e < E; ++e) nan |= std::isnan(s[e]);
    if (m == -INFINITY && !nan) {  // fully masked row: no loss, no gradient
      if (d && !accumulate)
        for (int64_t e = 0; e < E; ++e) d[e] = 0.0f;
      continue;
    }
    double z = 0.0;
    for (int64_t e = 0; e < E; ++e) z += std::exp(static_cast<double>(s[e]) - m);
    // A NaN entry makes z (and so the loss and every gradient of the row) NaN, which is what a
    // caller checking finiteness must see; it is never hidden by the max above.
    const double lse = m + std::log(z);
    sum += lse * lse;
    if (d) {
      const double c = static_cast<double>(coef) * 2.0 * lse * inv_T / z;
      for (int64_t e = 0; e < E; ++e) {
        const float g = static_cast<float>(c * std::exp(static_cast<double>(s[e]) - m));
        d[e] = accumulate ? d[e] + g : g;
      }
    }
  }
  return static_cast<double>(coef) * sum * inv_T;
}

}  // namespace sy
