// CPU kernels of the MoE data path (permute, combine and their backward), the gated shared
// expert, AdamW and small reductions: the loops that used to live in runtime/moe/ and
// runtime/train/, now behind Backend (runtime/backend/backend.h documents each). Raw pointers,
// row-major. The arithmetic order is fixed (a token's slots in k order), so results do not
// depend on how tokens are split over ranks.
#pragma once

#include <cstdint>

#include "runtime/kernels/op_types.h"

namespace sy {

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
