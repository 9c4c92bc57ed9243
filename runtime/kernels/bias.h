// Bias helpers for linear layers with a bias (BERT's dense layers, GELU experts): a bias
// broadcast over rows before a GEMM that accumulates onto it (beta = 1), and its gradient.
// Raw pointers, row-major.
#pragma once

#include <cstdint>

namespace sy {

// y_RN[r] = b_N for every row r (b_N null: zeros). Then linear_forward(..., beta = 1) gives
// x W^T + b with the bias added first, the order PyTorch's addmm uses.
void bias_broadcast_rows(const float* b_N, int64_t R, int64_t N, float* y_RN);
// db_N += sum over rows of dy_RN (the gradient of a bias broadcast over rows).
void bias_backward_rows(const float* dy_RN, int64_t R, int64_t N, float* db_N);

}  // namespace sy
