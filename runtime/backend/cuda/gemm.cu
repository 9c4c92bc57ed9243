// GEMMs of the "cuda" backend: cuBLAS in fp32 (pedantic math: no TF32) for the fast path; in a
// deterministic context, a GEMM whose A is token rows (op(A) = A, lda == K) runs a tiled kernel
// whose every output element sums its K products in index order with fmaf, so a token row's
// bits do not depend on how many rows share the call (the CPU backend's row-stable promise;
// cuBLAS picks kernels and split-K by shape, so it does not keep it). Quantized weights are
// dequantized whole into the workspace (quant_get of runtime/kernels/quant_math.h, the CPU's
// format code) and multiplied by the same GEMMs.
#include <climits>

#include "runtime/backend/cuda/cuda_backend.h"
#include "runtime/kernels/quant.h"
#include "runtime/kernels/quant_math.h"

namespace sy {
namespace cuda {
namespace {

constexpr int kTile = 16;

// C[m, n] = alpha sum_k A[m, k] op(B)[k, n] (+ beta C[m, n]; beta == 0: C not read), with A
// row-major [M, lda] not transposed; op(B) = B^T ([N, ldb]) when TRANS_B, else B ([K, ldb]).
template <bool TRANS_B>
__global__ void gemm_rowstable_kernel(int64_t M, int64_t N, int64_t K, float alpha,
                                      const float* __restrict__ A, int64_t lda,
                                      const float* __restrict__ B, int64_t ldb, float beta,
                                      float* __restrict__ C, int64_t ldc) {
  __shared__ float As[kTile][kTile + 1];
  __shared__ float Bs[kTile][kTile + 1];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t row = static_cast<int64_t>(blockIdx.y) * kTile + ty;
  const int64_t col = static_cast<int64_t>(blockIdx.x) * kTile + tx;
  float acc = 0.0f;
  for (int64_t k0 = 0; k0 < K; k0 += kTile) {
    As[ty][tx] = (row < M && k0 + tx < K) ? A[row * lda + k0 + tx] : 0.0f;
    const int64_t kb = k0 + ty;
    float b = 0.0f;
    if (kb < K && col < N) b = TRANS_B ? B[col * ldb + kb] : B[kb * ldb + col];
    Bs[ty][tx] = b;
    __syncthreads();
    const int kmax = K - k0 < kTile ? static_cast<int>(K - k0) : kTile;
    for (int kk = 0; kk < kmax; ++kk) acc = fmaf(As[ty][kk], Bs[kk][tx], acc);
    __syncthreads();
  }
  if (row < M && col < N) {
    float* c = C + row * ldc + col;
    *c = beta == 0.0f ? alpha * acc : alpha * acc + beta * *c;
  }
}

// C = beta C (beta == 0: zeros) for K == 0, as the CPU backend does explicitly.
__global__ void scale_matrix_kernel(int64_t M, int64_t N, float beta, float* C, int64_t ldc) {
  const int64_t n = M * N;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    float* c = C + (i / N) * ldc + i % N;
    *c = beta == 0.0f ? 0.0f : beta * *c;
  }
}

// out[r, i] = q[row0 + r, i] * scale(row0 + r, i / G): one thread per element.
__global__ void dequantize_kernel(const uint8_t* __restrict__ data,
                                  const float* __restrict__ scales, int64_t row0, int64_t rows,
                                  int64_t I, int64_t G, int64_t row_bytes, int64_t groups, int bits,
                                  float* __restrict__ out) {
  const int64_t n = rows * I;
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < n;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = e / I, i = e % I, o = row0 + r;
    const int q = quant_get(data + o * row_bytes, i, bits);
    out[e] = static_cast<float>(q) * scales[o * groups + i / G];
  }
}

}  // namespace

void CudaBackend::gemm(const ExecContext& c, bool trans_a, bool trans_b, int64_t M, int64_t N,
                       int64_t K, float alpha, const float* A, int64_t lda, const float* B,
                       int64_t ldb, float beta, float* C, int64_t ldc) {
  if (M == 0 || N == 0) return;
  if (K == 0) {
    scale_matrix_kernel<<<blocks_for(M * N), 256, 0, stream_of(c)>>>(M, N, beta, C, ldc);
    SY_CUDA_LAUNCHED();
    return;
  }
  if (c.deterministic && !trans_a && lda == K && alpha != 0.0f) {
    SY_CHECK((M + kTile - 1) / kTile <= 65535) << "cuda row-stable gemm: " << M << " rows";
    const dim3 grid(static_cast<unsigned>((N + kTile - 1) / kTile),
                    static_cast<unsigned>((M + kTile - 1) / kTile));
    const dim3 block(kTile, kTile);
    if (trans_b)
      gemm_rowstable_kernel<true>
          <<<grid, block, 0, stream_of(c)>>>(M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    else
      gemm_rowstable_kernel<false>
          <<<grid, block, 0, stream_of(c)>>>(M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    SY_CUDA_LAUNCHED();
    return;
  }
  SY_CHECK(M <= INT_MAX && N <= INT_MAX && K <= INT_MAX && lda <= INT_MAX && ldb <= INT_MAX &&
           ldc <= INT_MAX)
      << "cuda gemm: dims exceed int";
  // Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T: swap the operands.
  SY_CUBLAS_CHECK(cublasSgemm(
      blas(c), trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, trans_a ? CUBLAS_OP_T : CUBLAS_OP_N,
      static_cast<int>(N), static_cast<int>(M), static_cast<int>(K), &alpha, B,
      static_cast<int>(ldb), A, static_cast<int>(lda), &beta, C, static_cast<int>(ldc)));
}

void CudaBackend::linear_forward(const ExecContext& c, const float* x_TI, const float* W_OI,
                                 float* y_TO, int64_t T, int64_t I, int64_t O, float beta) {
  gemm(c, false, true, T, O, I, 1.0f, x_TI, I, W_OI, I, beta, y_TO, O);
}

void CudaBackend::linear_backward(const ExecContext& c, const float* x_TI, const float* W_OI,
                                  const float* dy_TO, float* dW_OI, float* dx_TI, int64_t T,
                                  int64_t I, int64_t O, bool accumulate_dx) {
  if (dW_OI) gemm(c, true, false, O, I, T, 1.0f, dy_TO, O, x_TI, I, 1.0f, dW_OI, I);
  if (dx_TI)
    gemm(c, false, false, T, I, O, 1.0f, dy_TO, O, W_OI, I, accumulate_dx ? 1.0f : 0.0f, dx_TI, I);
}

void CudaBackend::dequantize_rows(const ExecContext& c, const QuantizedMatrix& q, int64_t row0,
                                  int64_t rows, float* out_RI) {
  SY_CHECK(row0 >= 0 && rows >= 0 && row0 + rows <= q.O)
      << "cuda dequantize_rows: rows [" << row0 << ", " << row0 + rows << ") of " << q.O;
  if (rows == 0 || q.I == 0) return;
  const DeviceQuant d = device_quant(q);
  dequantize_kernel<<<blocks_for(rows * q.I), 256, 0, stream_of(c)>>>(
      d.data, d.scales, row0, rows, q.I, q.G, q.row_bytes(), q.groups(), q.bits, out_RI);
  SY_CUDA_LAUNCHED();
}

// The whole matrix dequantized into the workspace, then one GEMM (row-stable in a
// deterministic context, like every token-row GEMM). The workspace is the context's: the
// dequantized tile is dead once the GEMM has been queued behind it on the same stream.
void CudaBackend::linear_forward_quantized(const ExecContext& c, const float* x_TI,
                                           const QuantizedMatrix& q, float* y_TO, int64_t T,
                                           float beta) {
  if (T == 0 || q.O == 0) return;
  float* w = scratch(c, q.O * q.I);
  dequantize_rows(c, q, 0, q.O, w);
  gemm(c, false, true, T, q.O, q.I, 1.0f, x_TI, q.I, w, q.I, beta, y_TO, q.O);
}

}  // namespace cuda
}  // namespace sy
