// GEMMs of the "cuda" backend. The fast path is cuBLAS (cublasGemmEx; the experts' GEMMs of a
// weight one cublasGemmGroupedBatchedEx each: forward y, backward dx, backward dW): compute type
// CUBLAS_COMPUTE_32F (fp32 math, no TF32: the handle stays in pedantic math) in an fp32
// context, CUBLAS_COMPUTE_32F_FAST_16BF (fp32 in and out, operands rounded to bf16 on the tensor
// cores, fp32 accumulation) in a kBf16 context that is not deterministic. In a deterministic
// context, a GEMM whose A is token rows (op(A) = A, lda == K) runs a tiled kernel whose every
// output element sums its K products in index order with fmaf, so a token row's bits do not
// depend on how many rows share the call (the CPU backend's row-stable promise; cuBLAS picks
// kernels and split-K by shape, so it does not keep it); its other GEMMs stay fp32 cuBLAS
// whatever the precision. Quantized weights are dequantized whole into the workspace (quant_get
// of runtime/kernels/quant_math.h, the CPU's format code) and multiplied by the same GEMMs.
#include <climits>
#include <cstdio>
#include <mutex>
#include <vector>

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

namespace {

// One problem of a grouped call, in the row-major terms of CudaBackend::gemm (alpha 1):
// C [M, N] = op(A) op(B) + beta C with op(A) [M, K], op(B) [K, N].
struct GroupedProblem {
  bool trans_a, trans_b;
  int64_t M, N, K;
  const float* A;
  int64_t lda;
  const float* B;
  int64_t ldb;
  float beta;
  float* C;
  int64_t ldc;
};

// The problems (K > 0 each) as one cublasGemmGroupedBatchedEx, each a cuBLAS group of one
// problem, mapped as CudaBackend::gemm maps one: row-major C = op(A) op(B) is column-major
// C^T = op(B)^T op(A)^T, so cuBLAS gets (op_b, op_a, m = N, n = M, k = K, B, ldb, A, lda, C,
// ldc). `a` is the backend's GroupedGemmArgs (a private type, hence the template), held under
// its mutex by the caller: the per-group arrays (ops, sizes, leading dimensions, alpha, beta,
// group sizes) are host arrays kept there; the A, B and C pointer arrays (one entry per
// problem) are device arrays, copied into the context's workspace on its stream (the copy from
// pageable memory returns once the host array is staged, so a.ptrs may be reused, and a later
// call's copy into the same workspace is queued behind this call's GEMMs).
template <class Args>
cublasStatus_t grouped_gemm_call(const ExecContext& c, cublasHandle_t h, Args& a,
                                 const std::vector<GroupedProblem>& p, bool bf16) {
  const int64_t G = static_cast<int64_t>(p.size());
  const size_t g = p.size();
  a.ta.resize(g);
  a.tb.resize(g);
  a.m.resize(g);
  a.n.resize(g);
  a.k.resize(g);
  a.lda.resize(g);
  a.ldb.resize(g);
  a.ldc.resize(g);
  a.ptrs.resize(3 * g);
  for (size_t j = 0; j < g; ++j) {
    const GroupedProblem& q = p[j];
    SY_CHECK(q.M <= INT_MAX && q.N <= INT_MAX && q.K <= INT_MAX && q.lda <= INT_MAX &&
             q.ldb <= INT_MAX && q.ldc <= INT_MAX)
        << "cuda grouped gemm: dims exceed int";
    a.ta[j] = q.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
    a.tb[j] = q.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
    a.m[j] = static_cast<int>(q.N);
    a.n[j] = static_cast<int>(q.M);
    a.k[j] = static_cast<int>(q.K);
    a.lda[j] = static_cast<int>(q.ldb);
    a.ldb[j] = static_cast<int>(q.lda);
    a.ldc[j] = static_cast<int>(q.ldc);
    a.ptrs[j] = const_cast<float*>(q.B);
    a.ptrs[g + j] = const_cast<float*>(q.A);
    a.ptrs[2 * g + j] = q.C;
  }
  a.size.assign(g, 1);
  a.alpha.assign(g, 1.0f);
  a.beta.resize(g);
  for (size_t j = 0; j < g; ++j) a.beta[j] = p[j].beta;
  // 3G device pointers in the workspace (from cudaMalloc: aligned; 2 floats per pointer).
  static_assert(sizeof(void*) == 2 * sizeof(float), "pointers of 8 bytes");
  void** d = reinterpret_cast<void**>(CudaBackend::scratch(c, 6 * G));
  SY_CUDA_CHECK(cudaMemcpyAsync(d, a.ptrs.data(), 3 * g * sizeof(void*), cudaMemcpyHostToDevice,
                                stream_of(c)));
  const Bf16MathScope math(h, bf16);
  return cublasGemmGroupedBatchedEx(h, a.ta.data(), a.tb.data(), a.m.data(), a.n.data(), a.k.data(),
                                    a.alpha.data(), const_cast<const void* const*>(d), CUDA_R_32F,
                                    a.lda.data(), const_cast<const void* const*>(d + G), CUDA_R_32F,
                                    a.ldb.data(), a.beta.data(), d + 2 * G, CUDA_R_32F,
                                    a.ldc.data(), static_cast<int>(G), a.size.data(),
                                    bf16 ? CUBLAS_COMPUTE_32F_FAST_16BF : CUBLAS_COMPUTE_32F);
}

// Issues the problems as one grouped call (none: nothing to do) and returns true, or returns
// false when cuBLAS refuses (or once refused) the context's compute type: the caller then runs
// them its per-group way. `mu`, `a` and `refused` are the backend's mutex, GroupedGemmArgs and
// grouped_refused_; `what` names the GEMMs in the one-time message.
template <class Args>
bool run_grouped_gemm(const ExecContext& c, CudaBackend& b, std::mutex& mu, Args& a,
                      bool (&refused)[2], const std::vector<GroupedProblem>& p, const char* what) {
  if (p.empty()) return true;
  const bool bf16 = fast_bf16(c);
  cublasStatus_t st = CUBLAS_STATUS_SUCCESS;
  {
    std::lock_guard<std::mutex> lock(mu);
    if (refused[bf16 ? 1 : 0]) return false;
    st = grouped_gemm_call(c, b.blas(c), a, p, bf16);
    if (st == CUBLAS_STATUS_SUCCESS) return true;
    refused[bf16 ? 1 : 0] = true;
    (void)cudaGetLastError();  // nothing of the refused call may linger for the next launch check
  }
  std::fprintf(stderr,
               "cuda backend: cublasGemmGroupedBatchedEx refused the experts' %s %s GEMMs (%s); "
               "this process runs the experts' GEMMs as one GEMM per expert from now on\n",
               bf16 ? "bf16" : "fp32", what, cublasGetStatusString(st));
  return false;
}

}  // namespace

// One cublasGemmGroupedBatchedEx over the non-empty groups (run_grouped_gemm), each group the
// GEMM linear_forward makes: y_e [n, O] = x_e [n, I] W_e^T, i.e. gemm(NT, M = n, N = O, K = I,
// A = x_e, lda I, B = W_e, ldb I, beta 0, C = y_e, ldc O); for cuBLAS (column-major) y_e^T =
// W_e x_e^T: (op T, op N, m = O, n = rows, k = I, A = W_e, lda I, B = x_e, ldb I, C = y_e,
// ldc O). Deterministic contexts, I == 0 or O == 0, and a compute type cuBLAS once refused take
// the seam's loop (one linear_forward per group).
void CudaBackend::grouped_linear_forward(const ExecContext& c, const float* x_RI,
                                         const float* W_EOI, float* y_RO,
                                         const int32_t* row_offsets_E1, int64_t E, int64_t I,
                                         int64_t O) {
  if (E <= 0) return;
  if (!c.deterministic && I > 0 && O > 0) {
    std::vector<GroupedProblem> p;
    p.reserve(static_cast<size_t>(E));
    const int64_t o0 = row_offsets_E1[0];
    for (int64_t e = 0; e < E; ++e) {
      const int64_t o = row_offsets_E1[e] - o0, n = row_offsets_E1[e + 1] - row_offsets_E1[e];
      SY_CHECK(n >= 0) << "cuda grouped_linear_forward: group " << e << " has " << n << " rows";
      if (n > 0)
        p.push_back(
            {false, true, n, O, I, x_RI + o * I, I, W_EOI + e * O * I, I, 0.0f, y_RO + o * O, O});
    }
    if (run_grouped_gemm(c, *this, mu_, grouped_, grouped_refused_, p, "forward")) return;
  }
  Backend::grouped_linear_forward(c, x_RI, W_EOI, y_RO, row_offsets_E1, E, I, O);
}

void CudaBackend::linear_backward(const ExecContext& c, const float* x_TI, const float* W_OI,
                                  const float* dy_TO, float* dW_OI, float* dx_TI, int64_t T,
                                  int64_t I, int64_t O, bool accumulate_dx) {
  if (dW_OI) gemm(c, true, false, O, I, T, 1.0f, dy_TO, O, x_TI, I, 1.0f, dW_OI, I);
  if (dx_TI)
    gemm(c, false, false, T, I, O, 1.0f, dy_TO, O, W_OI, I, accumulate_dx ? 1.0f : 0.0f, dx_TI, I);
}

// Per non-empty group, the two GEMMs linear_backward makes, each kind for all groups in one
// cublasGemmGroupedBatchedEx (run_grouped_gemm):
//   dx_e [n, I] = dy_e [n, O] W_e [O, I] (beta 1 when accumulate_dx, else 0): gemm(NN, M = n,
//     N = I, K = O, A = dy_e, lda O, B = W_e, ldb I, C = dx_e, ldc I); for cuBLAS (op N, op N,
//     m = I, n = rows, k = O, A = W_e, lda I, B = dy_e, ldb O, C = dx_e, ldc I);
//   dW_e [O, I] += dy_e^T [O, n] x_e [n, I] (beta 1): gemm(TN, M = O, N = I, K = n, A = dy_e,
//     lda O, B = x_e, ldb I, C = dW_e, ldc I); for cuBLAS (op N, op T, m = I, n = O, k = rows,
//     A = x_e, lda I, B = dy_e, ldb O, C = dW_e, ldc I).
// The compute type is linear_backward's (fp32, or bf16 in a kBf16 context), and its dW GEMM is
// cuBLAS too (not a token-row GEMM: summed in cuBLAS's order), so a group's dW differs from
// linear_backward's only by that order. Deterministic contexts (the dx GEMMs must be
// row-stable), I == 0 or O == 0, and a compute type cuBLAS once refused take the seam's loop
// (one linear_backward per group); a refusal of the second call runs only its GEMMs that way.
void CudaBackend::grouped_linear_backward(const ExecContext& c, const float* x_RI,
                                          const float* W_EOI, const float* dy_RO, float* dW_EOI,
                                          float* dx_RI, const int32_t* row_offsets_E1, int64_t E,
                                          int64_t I, int64_t O, bool accumulate_dx) {
  if (E <= 0 || (!dW_EOI && !dx_RI)) return;
  if (c.deterministic || I == 0 || O == 0) {
    Backend::grouped_linear_backward(c, x_RI, W_EOI, dy_RO, dW_EOI, dx_RI, row_offsets_E1, E, I, O,
                                     accumulate_dx);
    return;
  }
  const int64_t o0 = row_offsets_E1[0];
  std::vector<GroupedProblem> p;
  p.reserve(static_cast<size_t>(E));
  for (int pass = 0; pass < 2; ++pass) {
    const bool dx = pass == 0;  // the dx GEMMs, then the dW GEMMs
    if (dx ? !dx_RI : !dW_EOI) continue;
    p.clear();
    for (int64_t e = 0; e < E; ++e) {
      const int64_t o = row_offsets_E1[e] - o0, n = row_offsets_E1[e + 1] - row_offsets_E1[e];
      SY_CHECK(n >= 0) << "cuda grouped_linear_backward: group " << e << " has " << n << " rows";
      if (n == 0) continue;
      if (dx)
        p.push_back({false, false, n, I, O, dy_RO + o * O, O, W_EOI + e * O * I, I,
                     accumulate_dx ? 1.0f : 0.0f, dx_RI + o * I, I});
      else
        p.push_back(
            {true, false, O, I, n, dy_RO + o * O, O, x_RI + o * I, I, 1.0f, dW_EOI + e * O * I, I});
    }
    if (run_grouped_gemm(c, *this, mu_, grouped_, grouped_refused_, p,
                         dx ? "backward dx" : "backward dW"))
      continue;
    Backend::grouped_linear_backward(c, x_RI, W_EOI, dy_RO, dx ? nullptr : dW_EOI,
                                     dx ? dx_RI : nullptr, row_offsets_E1, E, I, O, accumulate_dx);
  }
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
