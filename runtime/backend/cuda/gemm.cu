// GEMMs of the "cuda" backend. The fast path is cuBLAS (cublasGemmEx; the experts' forward
// one cublasGemmGroupedBatchedEx): compute type CUBLAS_COMPUTE_32F (fp32 math, no TF32: the
// handle stays in pedantic math) in an fp32 context, CUBLAS_COMPUTE_32F_FAST_16BF (fp32 in and
// out, operands rounded to bf16 on the tensor cores, fp32 accumulation) in a kBf16 context
// that is not deterministic. In a deterministic context, a GEMM whose A is token rows (op(A) =
// A, lda == K) runs a tiled kernel whose every output element sums its K products in index
// order with fmaf, so a token row's bits do not depend on how many rows share the call (the
// CPU backend's row-stable promise; cuBLAS picks kernels and split-K by shape, so it does not
// keep it); its other GEMMs stay fp32 cuBLAS whatever the precision. Quantized weights are
// dequantized whole into the workspace (quant_get of runtime/kernels/quant_math.h, the CPU's
// format code) and multiplied by the same GEMMs.
#include <climits>
#include <cstdio>
#include <mutex>

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

// The context's GEMMs in bf16 (fast mode): kBf16 and not deterministic (deterministic GEMMs
// stay fp32, backend.h).
bool fast_bf16(const ExecContext& c) {
  return c.precision == GemmPrecision::kBf16 && !c.deterministic;
}

// The handle in default math for the span of a bf16 call, then back in pedantic math (what the
// backend keeps it in). cublas_api.h: CUBLAS_PEDANTIC_MATH is "the same as using matching
// _PEDANTIC compute type" for cublas<T> calls and cudaDataType compute types, so an explicit
// CUBLAS_COMPUTE_32F_FAST_16BF should pass through it anyway; leaving pedantic math for the call
// makes that independent of how a cuBLAS version reads the mode.
class Bf16MathScope {
 public:
  Bf16MathScope(cublasHandle_t h, bool bf16) : h_(bf16 ? h : nullptr) {
    if (h_) SY_CUBLAS_CHECK(cublasSetMathMode(h_, CUBLAS_DEFAULT_MATH));
  }
  ~Bf16MathScope() {
    if (h_) SY_CUBLAS_CHECK(cublasSetMathMode(h_, CUBLAS_PEDANTIC_MATH));
  }
  Bf16MathScope(const Bf16MathScope&) = delete;
  Bf16MathScope& operator=(const Bf16MathScope&) = delete;

 private:
  cublasHandle_t h_;
};

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
  const bool bf16 = fast_bf16(c);
  cublasHandle_t h = blas(c);
  const Bf16MathScope math(h, bf16);
  SY_CUBLAS_CHECK(
      cublasGemmEx(h, trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, trans_a ? CUBLAS_OP_T : CUBLAS_OP_N,
                   static_cast<int>(N), static_cast<int>(M), static_cast<int>(K), &alpha, B,
                   CUDA_R_32F, static_cast<int>(ldb), A, CUDA_R_32F, static_cast<int>(lda), &beta,
                   C, CUDA_R_32F, static_cast<int>(ldc),
                   bf16 ? CUBLAS_COMPUTE_32F_FAST_16BF : CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

void CudaBackend::linear_forward(const ExecContext& c, const float* x_TI, const float* W_OI,
                                 float* y_TO, int64_t T, int64_t I, int64_t O, float beta) {
  gemm(c, false, true, T, O, I, 1.0f, x_TI, I, W_OI, I, beta, y_TO, O);
}

// One cublasGemmGroupedBatchedEx over the non-empty groups, each a cuBLAS group of one problem
// (groups differ in n = their rows). Per group, the mapping of gemm(NT) that linear_forward
// uses: row-major y_e [n, O] = x_e [n, I] W_e^T is column-major y_e^T [O, n] = W_e x_e^T, i.e.
// C = op(A) op(B) with A = W_e (stored [O, I] row-major = [I, O] column-major, lda I, op T),
// B = x_e ([n, I] row-major = [I, n] column-major, ldb I, op N), C = y_e ([O, n] column-major,
// ldc O); m = O, n = rows, k = I. The per-group arrays (ops, sizes, leading dimensions, alpha,
// beta, group sizes) are host arrays; the A, B and C pointer arrays (one entry per problem)
// are device arrays, copied into the context's workspace on its stream. Deterministic
// contexts, I == 0 or O == 0, and a compute type cuBLAS once refused take the seam's loop
// (one linear_forward per group).
void CudaBackend::grouped_linear_forward(const ExecContext& c, const float* x_RI,
                                         const float* W_EOI, float* y_RO,
                                         const int32_t* row_offsets_E1, int64_t E, int64_t I,
                                         int64_t O) {
  if (E <= 0) return;
  const bool bf16 = fast_bf16(c);
  if (c.deterministic || I == 0 || O == 0 || grouped_refused_[bf16 ? 1 : 0]) {
    Backend::grouped_linear_forward(c, x_RI, W_EOI, y_RO, row_offsets_E1, E, I, O);
    return;
  }
  SY_CHECK(I <= INT_MAX && O <= INT_MAX) << "cuda grouped_linear_forward: dims exceed int";
  cublasStatus_t st = CUBLAS_STATUS_SUCCESS;
  {
    std::lock_guard<std::mutex> lock(mu_);
    GroupedGemmArgs& a = grouped_;
    a.n.clear();
    for (int64_t e = 0; e < E; ++e) {
      const int64_t n = row_offsets_E1[e + 1] - row_offsets_E1[e];
      SY_CHECK(n >= 0 && n <= INT_MAX)
          << "cuda grouped_linear_forward: group " << e << " has " << n << " rows";
      if (n > 0) a.n.push_back(static_cast<int>(n));
    }
    const int64_t G = static_cast<int64_t>(a.n.size());
    if (G == 0) return;
    // Problem j (the j-th non-empty group e): A_j = W_e, B_j = x_e, C_j = y_e.
    a.ptrs.resize(static_cast<size_t>(3 * G));
    const int64_t o0 = row_offsets_E1[0];
    for (int64_t e = 0, j = 0; e < E; ++e) {
      if (row_offsets_E1[e + 1] == row_offsets_E1[e]) continue;
      const int64_t o = row_offsets_E1[e] - o0;
      a.ptrs[static_cast<size_t>(j)] = const_cast<float*>(W_EOI + e * O * I);
      a.ptrs[static_cast<size_t>(G + j)] = const_cast<float*>(x_RI + o * I);
      a.ptrs[static_cast<size_t>(2 * G + j)] = y_RO + o * O;
      ++j;
    }
    const size_t g = static_cast<size_t>(G);
    a.ta.assign(g, CUBLAS_OP_T);
    a.tb.assign(g, CUBLAS_OP_N);
    a.m.assign(g, static_cast<int>(O));
    a.k.assign(g, static_cast<int>(I));
    a.lda.assign(g, static_cast<int>(I));
    a.ldb.assign(g, static_cast<int>(I));
    a.ldc.assign(g, static_cast<int>(O));
    a.size.assign(g, 1);
    a.alpha.assign(g, 1.0f);
    a.beta.assign(g, 0.0f);
    // 3G device pointers in the workspace (from cudaMalloc: aligned; 2 floats per pointer). The
    // copy from pageable memory returns once the host array is staged, so a.ptrs may be reused.
    static_assert(sizeof(void*) == 2 * sizeof(float), "pointers of 8 bytes");
    void** d = reinterpret_cast<void**>(scratch(c, 6 * G));
    SY_CUDA_CHECK(cudaMemcpyAsync(d, a.ptrs.data(), 3 * g * sizeof(void*), cudaMemcpyHostToDevice,
                                  stream_of(c)));
    cublasHandle_t h = blas(c);
    const Bf16MathScope math(h, bf16);
    st = cublasGemmGroupedBatchedEx(h, a.ta.data(), a.tb.data(), a.m.data(), a.n.data(), a.k.data(),
                                    a.alpha.data(), const_cast<const void* const*>(d), CUDA_R_32F,
                                    a.lda.data(), const_cast<const void* const*>(d + G), CUDA_R_32F,
                                    a.ldb.data(), a.beta.data(), d + 2 * G, CUDA_R_32F,
                                    a.ldc.data(), static_cast<int>(G), a.size.data(),
                                    bf16 ? CUBLAS_COMPUTE_32F_FAST_16BF : CUBLAS_COMPUTE_32F);
    if (st == CUBLAS_STATUS_SUCCESS) return;
    grouped_refused_[bf16 ? 1 : 0] = true;
    (void)cudaGetLastError();  // nothing of the refused call may linger for the next launch check
  }
  std::fprintf(stderr,
               "cuda backend: cublasGemmGroupedBatchedEx refused the experts' %s GEMMs (%s); "
               "this process runs them as one GEMM per expert from now on\n",
               bf16 ? "bf16" : "fp32", cublasGetStatusString(st));
  Backend::grouped_linear_forward(c, x_RI, W_EOI, y_RO, row_offsets_E1, E, I, O);
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
