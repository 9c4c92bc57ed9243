// CPU kernels: raw pointers and sizes only (no Tensor, no MPI, no protobuf). Row-major.
// GEMMs go through cblas (OpenBLAS); elementwise and per-row ops use math.h, the same code
// the CUDA kernels call.
#pragma once

#include <cstdint>

namespace sy {

// C_MN = alpha * op(A) op(B) + beta * C_MN, row-major; op(A) is M x K, op(B) is K x N.
// deterministic (ExecContext::deterministic): a GEMM whose A is token rows (op(A) = A,
// contiguous) uses the row-stable kernels of gemm_rowstable.h, so a token's forward result and
// its dx are bitwise independent of its batch, its rank and the rank count. Off: OpenBLAS,
// several times faster.
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
          int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc,
          bool deterministic = false);

// Linear layer in the Hugging Face weight layout (W is [out, in]):
//   y_TO = x_TI W_OI^T (+ beta * y_TO)
void linear_forward(const float* x_TI, const float* W_OI, float* y_TO, int64_t T, int64_t I,
                    int64_t O, float beta = 0.0f, bool deterministic = false);
// Backward of linear_forward. dW_OI += dy^T x (always accumulates); dx_TI = dy W (+= when
// accumulate_dx). Either output may be null to skip it.
void linear_backward(const float* x_TI, const float* W_OI, const float* dy_TO, float* dW_OI,
                     float* dx_TI, int64_t T, int64_t I, int64_t O, bool accumulate_dx,
                     bool deterministic = false);

// sum_i x[i] * y[i] (cblas_sdot: vectorized, fp32 accumulation).
float dot_f32(const float* x, const float* y, int64_t n);

// Row-wise softmax / log-sum-exp / top-k over [rows, n] (math.h semantics).
void softmax_rows(const float* s, float* p, int64_t rows, int64_t n);
void logsumexp_rows(const float* s, float* out, int64_t rows, int64_t n);
void topk_rows(const float* v, int64_t rows, int64_t n, int64_t k, int32_t* ids, float* vals);
// Softmax backward: ds = p * (dp - sum(p * dp)) per row; accumulates into ds when accumulate.
void softmax_backward_rows(const float* p, const float* dp, float* ds, int64_t rows, int64_t n,
                           bool accumulate);

// Elementwise activations in place and their backward (dx = dy * f'(x)).
void silu_inplace(float* x, int64_t n);
void gelu_inplace(float* x, int64_t n);
void gelu_backward(const float* x, const float* dy, float* dx, int64_t n);
void silu_backward(const float* x, const float* dy, float* dx, int64_t n);

// SwiGLU's elementwise join: a = SiLU(g) * u over n values (one sigmoid per element).
void swiglu_rows(const float* g, const float* u, float* a, int64_t n);
// Its backward: du = da * SiLU(g), dg = da * u * SiLU'(g). dg may alias da (in place).
void swiglu_backward_rows(const float* g, const float* u, const float* da, float* dg, float* du,
                          int64_t n);

// True when every value is finite (no NaN, no Inf).
bool all_finite(const float* x, int64_t n);

}  // namespace sy
