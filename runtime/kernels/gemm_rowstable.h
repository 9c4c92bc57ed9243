// A row-stable GEMM for deterministic runs: y_MN = x_MK W_NK^T (+ beta y), where every output
// element is computed by the same fixed sequence of float operations (8 partial sums over k in
// order, then a fixed pairwise reduction, then the k tail) whatever M, the row's position in
// the batch, the blocking or the thread count. So a token's result does not depend on which
// other tokens share its batch: P ranks give bitwise the result of 1 rank.
//
// OpenBLAS does not promise that: it picks kernels by matrix size (and OPENBLAS_CORETYPE), so a
// row's result changes with M (measured here: for N=512, K=256 most batch sizes give
// different bits). The price is speed: this kernel is plain C++ (the compiler vectorizes the
// 8 lanes), several times slower than OpenBLAS. A deterministic ExecContext switches every
// GEMM whose rows are tokens (op(A) = A: forward, and dx in backward) to it; weight gradients still
// use OpenBLAS (their sum over tokens differs with P anyway and is compared within a tolerance).
#pragma once

#include <cstdint>

namespace sy {

// y_MN = alpha * x_MK W_NK^T + beta * y_MN (lda = K, ldb = K, ldc = N).
void gemm_nt_rowstable(const float* x_MK, const float* W_NK, float* y_MN, int64_t M, int64_t N,
                       int64_t K, float alpha, float beta);
// y_MN = alpha * x_MK W_KN + beta * y_MN: each element sums k in order (an axpy per k).
void gemm_nn_rowstable(const float* x_MK, const float* W_KN, float* y_MN, int64_t M, int64_t N,
                       int64_t K, float alpha, float beta);

}  // namespace sy
