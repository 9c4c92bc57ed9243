// CPU kernels of the MoE data path (permute, combine and their backward), the gated shared
// expert, AdamW and small reductions: the loops that used to live in runtime/moe/ and
// runtime/train/, now behind Backend (runtime/backend/backend.h documents each). Raw pointers,
// row-major. The arithmetic order is fixed (a token's slots in k order), so results do not
// depend on how tokens are split over ranks.
#pragma once

#include <cmath>
#include <cstdint>

#include "runtime/kernels/math.h"
#include "runtime/kernels/op_types.h"

namespace sy {

// ---- per-element code shared with the CUDA kernels (SY_HD) ----------------------------------

// Products and sums that must not fuse into an FMA: nvcc contracts a * b + c in device code by
// default (the CPU build does not), so shared code whose results the CPU and CUDA backends
// must round alike spells its operations with these (plain operators on the host).
SY_HD inline float mul_nc(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}
SY_HD inline float add_nc(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}
SY_HD inline double mul_nc(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __dmul_rn(a, b);
#else
  return a * b;
#endif
}
SY_HD inline double add_nc(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __dadd_rn(a, b);
#else
  return a + b;
#endif
}

// The scalars of an AdamW step as the per-element update reads them.
struct AdamWScalars {
  float b1, b2;
  double clip, bc1, bc2, eps, lr, wd;
  bool decay;
};
SY_HD inline AdamWScalars adamw_scalars(const AdamWStep& s) {
  AdamWScalars k;
  k.b1 = s.beta1;
  k.b2 = s.beta2;
  k.clip = s.clip;
  k.bc1 = s.bc1;
  k.bc2 = s.bc2;
  k.eps = s.eps;
  k.lr = s.lr;
  k.wd = s.weight_decay;
  k.decay = s.weight_decay > 0;
  return k;
}
// One AdamW element (backend.h documents the mixed arithmetic): g' = float(g clip); m, v in
// fp32; the update and the new weight in double, rounded once.
SY_HD inline void adamw_element(const AdamWScalars& k, float g, float* w, float* m, float* v) {
  const float gi = static_cast<float>(g * k.clip);
  const float mi = add_nc(mul_nc(k.b1, *m), mul_nc(1.0f - k.b1, gi));
  const float vi = add_nc(mul_nc(k.b2, *v), mul_nc(mul_nc(1.0f - k.b2, gi), gi));
  *m = mi;
  *v = vi;
  const double mhat = mi / k.bc1, vhat = vi / k.bc2;
  double upd = mhat / (sqrt(vhat) + k.eps);
  const double wi = *w;
  if (k.decay) upd = add_nc(upd, mul_nc(k.wd, wi));
  *w = static_cast<float>(wi - mul_nc(k.lr, upd));
}

// One token's top-k weights backward (Backend::topk_weights_backward): dp_E[ids_K[k]] += dv_k,
// dv = dw, or through the renormalization w_i = v_i / S when normalized (nothing when S <= 0).
SY_HD inline void topk_weights_backward_row(const float* dw_K, const float* v_K,
                                            const int32_t* ids_K, int64_t K, bool normalized,
                                            float* dp_E) {
  if (!normalized) {
    for (int64_t k = 0; k < K; ++k) dp_E[ids_K[k]] += dw_K[k];
    return;
  }
  // w_i = v_i / S, S = sum_j v_j  =>  dv_i = (dw_i - sum_j dw_j w_j) / S.
  float S = 0.0f, dot = 0.0f;
  for (int64_t k = 0; k < K; ++k) S += v_K[k];
  if (S <= 0.0f) return;
  for (int64_t k = 0; k < K; ++k) dot = add_nc(dot, mul_nc(dw_K[k], v_K[k] / S));
  for (int64_t k = 0; k < K; ++k) dp_E[ids_K[k]] += (dw_K[k] - dot) / S;
}

// ---- CPU kernels ---------------------------------------------------------------------------

void gather_rows(const float* x_TD, const int32_t* order_A_R, int64_t R, int64_t K, int64_t D,
                 float* out_RD);
void combine_rows(const float* rows_RD, const int32_t* row_of_TK, const float* w_TK, int64_t T,
                  int64_t K, int64_t D, float* y_TD);
void scatter_rows_weighted(const float* dy_TD, const int32_t* order_A_R, const float* w_TK,
                           int64_t R, int64_t K, int64_t D, float* out_RD);
void combine_weights_backward(const float* dy_TD, const float* rows_RD, const int32_t* row_of_TK,
                              int64_t T, int64_t K, int64_t D, float* dw_TK);
void gather_topk_probs(const float* probs_TE, const int32_t* ids_TK, int64_t T, int64_t E,
                       int64_t K, float* rank_p_TK);
void hash_route(const int32_t* table_VK, int64_t V, uint64_t seed, const int32_t* token_ids_T,
                int64_t T, int64_t E, int64_t K, int32_t* ids_TK, float* logits_TE, float* probs_TE,
                float* weights_TK);
void embedding_rows(const float* table_VD, int64_t V, const int32_t* ids_T, int64_t T, int64_t D,
                    float* out_TD);
void normalize_rows(float* w, int64_t rows, int64_t n);
void topk_weights_backward(const float* dw_TK, const float* vals_TK, const int32_t* ids_TK,
                           int64_t T, int64_t E, int64_t K, bool normalized, float* dp_TE);
void axpy(const float* alpha, const float* x, float* y, int64_t n, bool accumulate);
void dot_add(const float* x, const float* y, int64_t n, float* out);
void gated_add_rows(float* g_T, const float* s_TD, const uint8_t* mask_T, int64_t T, int64_t D,
                    float* y_TD);
void gated_add_rows_backward(const float* dy_TD, const float* s_TD, const float* g_T,
                             const uint8_t* mask_T, int64_t T, int64_t D, float* ds_TD,
                             float* dlogit_T);
void add_inplace(float* y, const float* x, int64_t n);
void add_bias_rows(const float* b_N, int64_t R, int64_t N, float* y_RN);
void scatter_add_rows(const float* src_TD, const int32_t* index_T, int64_t T, int64_t D,
                      float* dst);
void adamw_update(float* w, const float* g, float* m, float* v, int64_t n, const AdamWStep& s);
double sum_squares(const float* x, int64_t n);

}  // namespace sy
