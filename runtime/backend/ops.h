// Free-function spelling of the Backend operations: ops::linear_forward(ctx, ...) is
// ctx.backend->linear_forward(ctx, ...). Layers above the backend include this header, never
// runtime/kernels/ (each op is documented in runtime/backend/backend.h). Generated from
// backend.h's declarations; keep the two in step when an op is added.
#pragma once

#include "runtime/backend/backend.h"
#include "runtime/core/status.h"

namespace sy::ops {

inline void copy(const ExecContext& c, void* dst, const void* src, int64_t bytes) {
  c.backend->copy(c, dst, src, bytes);
}
inline void fill_zero(const ExecContext& c, void* dst, int64_t bytes) {
  c.backend->fill_zero(c, dst, bytes);
}
inline void synchronize(const ExecContext& c) {
  c.backend->synchronize(c);
}
inline void gemm(const ExecContext& c, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K,
                 float alpha, const float* A, int64_t lda, const float* B, int64_t ldb, float beta,
                 float* C, int64_t ldc) {
  c.backend->gemm(c, trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}
inline void linear_forward(const ExecContext& c, const float* x_TI, const float* W_OI, float* y_TO,
                           int64_t T, int64_t I, int64_t O, float beta = 0.0f) {
  c.backend->linear_forward(c, x_TI, W_OI, y_TO, T, I, O, beta);
}
inline void grouped_linear_forward(const ExecContext& c, const float* x_RI, const float* W_EOI,
                                   float* y_RO, const int32_t* row_offsets_E1, int64_t E, int64_t I,
                                   int64_t O) {
  c.backend->grouped_linear_forward(c, x_RI, W_EOI, y_RO, row_offsets_E1, E, I, O);
}
inline void grouped_linear_backward(const ExecContext& c, const float* x_RI, const float* W_EOI,
                                    const float* dy_RO, float* dW_EOI, float* dx_RI,
                                    const int32_t* row_offsets_E1, int64_t E, int64_t I, int64_t O,
                                    bool accumulate_dx) {
  c.backend->grouped_linear_backward(c, x_RI, W_EOI, dy_RO, dW_EOI, dx_RI, row_offsets_E1, E, I, O,
                                     accumulate_dx);
}
inline void linear_backward(const ExecContext& c, const float* x_TI, const float* W_OI,
                            const float* dy_TO, float* dW_OI, float* dx_TI, int64_t T, int64_t I,
                            int64_t O, bool accumulate_dx) {
  c.backend->linear_backward(c, x_TI, W_OI, dy_TO, dW_OI, dx_TI, T, I, O, accumulate_dx);
}
inline void linear_forward_quantized(const ExecContext& c, const float* x_TI,
                                     const QuantizedMatrix& q, float* y_TO, int64_t T,
                                     float beta = 0.0f) {
  c.backend->linear_forward_quantized(c, x_TI, q, y_TO, T, beta);
}
inline void dequantize_rows(const ExecContext& c, const QuantizedMatrix& q, int64_t row0,
                            int64_t rows, float* out_RI) {
  c.backend->dequantize_rows(c, q, row0, rows, out_RI);
}
inline void softmax_rows(const ExecContext& c, const float* s, float* p, int64_t rows, int64_t n) {
  c.backend->softmax_rows(c, s, p, rows, n);
}
inline void logsumexp_rows(const ExecContext& c, const float* s, float* out, int64_t rows,
                           int64_t n) {
  c.backend->logsumexp_rows(c, s, out, rows, n);
}
inline void topk_rows(const ExecContext& c, const float* v, int64_t rows, int64_t n, int64_t k,
                      int32_t* ids, float* vals) {
  c.backend->topk_rows(c, v, rows, n, k, ids, vals);
}
inline void softmax_backward_rows(const ExecContext& c, const float* p, const float* dp, float* ds,
                                  int64_t rows, int64_t n, bool accumulate) {
  c.backend->softmax_backward_rows(c, p, dp, ds, rows, n, accumulate);
}
inline void silu_inplace(const ExecContext& c, float* x, int64_t n) {
  c.backend->silu_inplace(c, x, n);
}
inline void gelu_inplace(const ExecContext& c, float* x, int64_t n) {
  c.backend->gelu_inplace(c, x, n);
}
inline void silu_backward(const ExecContext& c, const float* x, const float* dy, float* dx,
                          int64_t n) {
  c.backend->silu_backward(c, x, dy, dx, n);
}
inline void gelu_backward(const ExecContext& c, const float* x, const float* dy, float* dx,
                          int64_t n) {
  c.backend->gelu_backward(c, x, dy, dx, n);
}
inline void swiglu(const ExecContext& c, const float* g, const float* u, float* a, int64_t n) {
  c.backend->swiglu(c, g, u, a, n);
}
inline void swiglu_backward(const ExecContext& c, const float* g, const float* u, const float* da,
                            float* dg, float* du, int64_t n) {
  c.backend->swiglu_backward(c, g, u, da, dg, du, n);
}
inline void add_inplace(const ExecContext& c, float* y, const float* x, int64_t n) {
  c.backend->add_inplace(c, y, x, n);
}
inline void add_bias_rows(const ExecContext& c, const float* b_N, int64_t R, int64_t N,
                          float* y_RN) {
  c.backend->add_bias_rows(c, b_N, R, N, y_RN);
}
inline void scatter_add_rows(const ExecContext& c, const float* src_TD, const int32_t* index_T,
                             int64_t T, int64_t D, float* dst) {
  c.backend->scatter_add_rows(c, src_TD, index_T, T, D, dst);
}
inline void bias_broadcast_rows(const ExecContext& c, const float* b_N, int64_t R, int64_t N,
                                float* y_RN) {
  c.backend->bias_broadcast_rows(c, b_N, R, N, y_RN);
}
inline void bias_backward_rows(const ExecContext& c, const float* dy_RN, int64_t R, int64_t N,
                               float* db_N) {
  c.backend->bias_backward_rows(c, dy_RN, R, N, db_N);
}
inline void rmsnorm_forward(const ExecContext& c, const float* x_TD, const float* w_D, float* y_TD,
                            float* rstd_T, int64_t T, int64_t D, float eps) {
  c.backend->rmsnorm_forward(c, x_TD, w_D, y_TD, rstd_T, T, D, eps);
}
inline void rmsnorm_backward(const ExecContext& c, const float* x_TD, const float* w_D,
                             const float* rstd_T, const float* dy_TD, float* dx_TD, float* dw_D,
                             int64_t T, int64_t D) {
  c.backend->rmsnorm_backward(c, x_TD, w_D, rstd_T, dy_TD, dx_TD, dw_D, T, D);
}
inline void layernorm_forward(const ExecContext& c, const float* x_TD, const float* w_D,
                              const float* b_D, float* y_TD, int64_t T, int64_t D, float eps) {
  c.backend->layernorm_forward(c, x_TD, w_D, b_D, y_TD, T, D, eps);
}
inline void add_layernorm_forward(const ExecContext& c, const float* a_TD, const float* r_TD,
                                  const float* w_D, const float* b_D, float* y_TD, int64_t T,
                                  int64_t D, float eps) {
  c.backend->add_layernorm_forward(c, a_TD, r_TD, w_D, b_D, y_TD, T, D, eps);
}
inline void layernorm_backward(const ExecContext& c, const float* x_TD, const float* w_D,
                               const float* dy_TD, float* dx_TD, float* dw_D, float* db_D,
                               int64_t T, int64_t D, float eps) {
  c.backend->layernorm_backward(c, x_TD, w_D, dy_TD, dx_TD, dw_D, db_D, T, D, eps);
}
inline void rope_apply(const ExecContext& c, float* x, int64_t T, int64_t heads, int64_t hd,
                       int64_t ld, int64_t pos0, const std::vector<float>& inv_freq,
                       bool inverse = false) {
  c.backend->rope_apply(c, x, T, heads, hd, ld, pos0, inv_freq, inverse);
}
inline void attention_forward(const ExecContext& c, const float* q, const float* k, const float* v,
                              float* out, int64_t T, int64_t Tk, int64_t pos0,
                              const AttentionShape& s, const uint8_t* key_mask) {
  c.backend->attention_forward(c, q, k, v, out, T, Tk, pos0, s, key_mask);
}
inline void attention_backward(const ExecContext& c, const float* q, const float* k, const float* v,
                               const float* dout, float* dq, float* dk, float* dv, int64_t T,
                               int64_t Tk, int64_t pos0, const AttentionShape& s,
                               const uint8_t* key_mask) {
  c.backend->attention_backward(c, q, k, v, dout, dq, dk, dv, T, Tk, pos0, s, key_mask);
}
inline double cross_entropy_sum(const ExecContext& c, const float* logits_TV,
                                const int32_t* target_T, int64_t T, int64_t V, int64_t* count) {
  return c.backend->cross_entropy_sum(c, logits_TV, target_T, T, V, count);
}
inline void cross_entropy_backward(const ExecContext& c, const float* logits_TV,
                                   const int32_t* target_T, int64_t T, int64_t V, float scale,
                                   float* dlogits_TV) {
  c.backend->cross_entropy_backward(c, logits_TV, target_T, T, V, scale, dlogits_TV);
}
inline Status capacity_plan(const ExecContext& c, const int32_t* ids_TK, const float* rank_p_TK,
                            int64_t T, int64_t E, int64_t K, int64_t D, const CapacityConfig& cfg,
                            const uint8_t* mask_T, CapacityPlan* plan) {
  return c.backend->capacity_plan(c, ids_TK, rank_p_TK, T, E, K, D, cfg, mask_T, plan);
}
inline void gather_topk_probs(const ExecContext& c, const float* probs_TE, const int32_t* ids_TK,
                              int64_t T, int64_t E, int64_t K, float* rank_p_TK) {
  c.backend->gather_topk_probs(c, probs_TE, ids_TK, T, E, K, rank_p_TK);
}
inline void hash_route(const ExecContext& c, const int32_t* table_VK, int64_t V, uint64_t seed,
                       const int32_t* token_ids_T, int64_t T, int64_t E, int64_t K, int32_t* ids_TK,
                       float* logits_TE, float* probs_TE, float* weights_TK) {
  c.backend->hash_route(c, table_VK, V, seed, token_ids_T, T, E, K, ids_TK, logits_TE, probs_TE,
                        weights_TK);
}
inline void normalize_rows(const ExecContext& c, float* w, int64_t rows, int64_t n) {
  c.backend->normalize_rows(c, w, rows, n);
}
inline void topk_weights_backward(const ExecContext& c, const float* dw_TK, const float* vals_TK,
                                  const int32_t* ids_TK, int64_t T, int64_t E, int64_t K,
                                  bool normalized, float* dp_TE) {
  c.backend->topk_weights_backward(c, dw_TK, vals_TK, ids_TK, T, E, K, normalized, dp_TE);
}
inline double switch_aux_loss(const ExecContext& c, const float* probs_TE,
                              const int32_t* topk_ids_TK, int64_t T, int64_t E, int64_t K,
                              float alpha, float* dprobs_TE, bool accumulate) {
  return c.backend->switch_aux_loss(c, probs_TE, topk_ids_TK, T, E, K, alpha, dprobs_TE,
                                    accumulate);
}
inline void embedding_rows(const ExecContext& c, const float* table_VD, int64_t V,
                           const int32_t* ids_T, int64_t T, int64_t D, float* out_TD) {
  c.backend->embedding_rows(c, table_VD, V, ids_T, T, D, out_TD);
}
inline void axpy(const ExecContext& c, const float* alpha, const float* x, float* y, int64_t n,
                 bool accumulate) {
  c.backend->axpy(c, alpha, x, y, n, accumulate);
}
inline void dot_add(const ExecContext& c, const float* x, const float* y, int64_t n, float* out) {
  c.backend->dot_add(c, x, y, n, out);
}
inline void gather_rows(const ExecContext& c, const float* x_TD, const int32_t* order_A_R,
                        int64_t R, int64_t K, int64_t D, float* out_RD) {
  c.backend->gather_rows(c, x_TD, order_A_R, R, K, D, out_RD);
}
inline void combine_rows(const ExecContext& c, const float* rows_RD, const int32_t* row_of_TK,
                         const float* w_TK, int64_t T, int64_t K, int64_t D, float* y_TD) {
  c.backend->combine_rows(c, rows_RD, row_of_TK, w_TK, T, K, D, y_TD);
}
inline void scatter_rows_weighted(const ExecContext& c, const float* dy_TD,
                                  const int32_t* order_A_R, const float* w_TK, int64_t R, int64_t K,
                                  int64_t D, float* out_RD) {
  c.backend->scatter_rows_weighted(c, dy_TD, order_A_R, w_TK, R, K, D, out_RD);
}
inline void combine_weights_backward(const ExecContext& c, const float* dy_TD, const float* rows_RD,
                                     const int32_t* row_of_TK, int64_t T, int64_t K, int64_t D,
                                     float* dw_TK) {
  c.backend->combine_weights_backward(c, dy_TD, rows_RD, row_of_TK, T, K, D, dw_TK);
}
inline void gated_add_rows(const ExecContext& c, float* g_T, const float* s_TD,
                           const uint8_t* mask_T, int64_t T, int64_t D, float* y_TD) {
  c.backend->gated_add_rows(c, g_T, s_TD, mask_T, T, D, y_TD);
}
inline void gated_add_rows_backward(const ExecContext& c, const float* dy_TD, const float* s_TD,
                                    const float* g_T, const uint8_t* mask_T, int64_t T, int64_t D,
                                    float* ds_TD, float* dlogit_T) {
  c.backend->gated_add_rows_backward(c, dy_TD, s_TD, g_T, mask_T, T, D, ds_TD, dlogit_T);
}
inline void adamw_update(const ExecContext& c, float* w, const float* g, float* m, float* v,
                         int64_t n, const AdamWStep& s) {
  c.backend->adamw_update(c, w, g, m, v, n, s);
}
inline double sum_squares(const ExecContext& c, const float* x, int64_t n) {
  return c.backend->sum_squares(c, x, n);
}
inline float dot(const ExecContext& c, const float* x, const float* y, int64_t n) {
  return c.backend->dot(c, x, y, n);
}
inline bool all_finite(const ExecContext& c, const float* x, int64_t n) {
  return c.backend->all_finite(c, x, n);
}

}  // namespace sy::ops
