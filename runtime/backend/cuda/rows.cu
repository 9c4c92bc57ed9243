// The per-row group of the CUDA backend (cuda_backend.h): softmax, logsumexp, top-k, softmax
// backward, normalize_rows, RMSNorm and LayerNorm forward and backward. The per-row and
// per-entry math is the SY_HD code of runtime/kernels/math.h, norm.h and layer_norm.h that the
// CPU backend runs.
//
// Rows of at most kThreadRowMax entries take a thread per row running the CPU's row function
// itself (same code, same summation order). Longer rows take a block of kRowThreads per row: the
// same formulas (the shared SY_HD pieces), with each row sum taken as kRowThreads strided partial
// sums combined in a fixed tree (warp butterflies, then the warp totals in a fixed tree): another
// order than the CPU's left-to-right sum, within the fp32 (or, where the CPU sums in double,
// double) summation bound, and the same bits on every run. Max and top-k are order-free.
// Column reductions over rows (RMSNorm dw, LayerNorm dw and db) run a thread per column adding
// rows in order (the CPU's order exactly) up to 2 * kColChunk rows; past that, fixed chunks of
// kColChunk rows give partial sums (scratch) that each column then adds in chunk order.
// No floating-point atomics anywhere.
#include <climits>
#include <cstdint>

#include "runtime/backend/cuda/cuda_backend.h"
#include "runtime/backend/cuda/kernel_util.cuh"
#include "runtime/kernels/layer_norm.h"
#include "runtime/kernels/math.h"
#include "runtime/kernels/norm.h"

namespace sy {
namespace cuda {
namespace {

constexpr int64_t kThreadRowMax = 256;  // rows up to this length: a thread per row
constexpr unsigned kRowThreads = 256;   // block-per-row kernels (a multiple of 32)

inline unsigned row_blocks(int64_t rows) {
  return static_cast<unsigned>(rows < (1 << 20) ? rows : (1 << 20));
}

// ---- a thread per row ------------------------------------------------------------------------

struct SoftmaxRow {
  const float* s;
  float* p;
  int64_t n;
  __device__ void operator()(int64_t r) const {
    softmax_row(s + r * n, p + r * n, static_cast<int>(n));
  }
};
struct LogsumexpRow {
  const float* s;
  float* out;
  int64_t n;
  __device__ void operator()(int64_t r) const {
    out[r] = logsumexp_row(s + r * n, static_cast<int>(n));
  }
};
struct TopkRow {
  const float* v;
  int64_t n, k;
  int32_t* ids;
  float* vals;
  __device__ void operator()(int64_t r) const {
    topk_row(v + r * n, static_cast<int>(n), static_cast<int>(k), ids + r * k, vals + r * k);
  }
};
struct SoftmaxBackwardRow {
  const float* p;
  const float* dp;
  float* ds;
  int64_t n;
  bool accumulate;
  __device__ void operator()(int64_t r) const {
    softmax_backward_row(p + r * n, dp + r * n, ds + r * n, n, accumulate);
  }
};
struct NormalizeRow {
  float* w;
  int64_t n;
  __device__ void operator()(int64_t r) const { normalize_row(w + r * n, n); }
};
struct RmsnormRow {
  const float* x;
  const float* w;
  float* y;
  float* rstd;
  int64_t D;
  float eps;
  __device__ void operator()(int64_t t) const {
    const float r = rmsnorm_row(x + t * D, w, y + t * D, D, eps);
    if (rstd) rstd[t] = r;
  }
};
struct RmsnormDxRow {
  const float* x;
  const float* w;
  const float* rstd;
  const float* dy;
  float* dx;
  int64_t D;
  __device__ void operator()(int64_t t) const {
    rmsnorm_backward_row_dx(x + t * D, w, rstd[t], dy + t * D, dx + t * D, D);
  }
};
struct LayernormRow {
  const float* x;
  const float* w;
  const float* b;
  float* y;
  int64_t D;
  float eps;
  __device__ void operator()(int64_t t) const { layernorm_row(x + t * D, w, b, y + t * D, D, eps); }
};
struct AddLayernormRow {
  const float* a;
  const float* r;
  const float* w;
  const float* b;
  float* y;
  int64_t D;
  float eps;
  __device__ void operator()(int64_t t) const {
    add_layernorm_row(a + t * D, r + t * D, w, b, y + t * D, D, eps);
  }
};
struct LayernormStatsRow {
  const float* x;
  int64_t D;
  float eps;
  float* mean;
  float* rstd;
  __device__ void operator()(int64_t t) const {
    layernorm_row_stats(x + t * D, D, eps, mean + t, rstd + t);
  }
};
struct LayernormDxRow {
  const float* x;
  const float* w;
  const float* dy;
  const float* mean;
  const float* rstd;
  float* dx;
  int64_t D;
  __device__ void operator()(int64_t t) const {
    layernorm_backward_row_from_stats(x + t * D, w, dy + t * D, D, mean[t], rstd[t], dx + t * D,
                                      nullptr, nullptr);
  }
};

// ---- a block per row -------------------------------------------------------------------------

__global__ void softmax_block_kernel(const float* s, float* p, int64_t rows, int64_t n) {
  __shared__ float sh[33];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const float* sr = s + r * n;
    float* pr = p + r * n;
    float m = -INFINITY;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) m = sr[i] > m ? sr[i] : m;
    m = block_reduce(m, MaxOp{}, -INFINITY, sh);
    if (m == -INFINITY) {  // every entry -inf (or NaN): uniform, as softmax_row
      for (int64_t i = threadIdx.x; i < n; i += blockDim.x) pr[i] = 1.0f / static_cast<float>(n);
      continue;
    }
    float z = 0.0f;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) z += expf(sr[i] - m);
    z = block_reduce(z, SumOp{}, 0.0f, sh);
    const float inv = 1.0f / z;
    // p may alias s: each entry is read and written by the same thread, after every read above.
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) pr[i] = expf(sr[i] - m) * inv;
  }
}

__global__ void logsumexp_block_kernel(const float* s, float* out, int64_t rows, int64_t n) {
  __shared__ float sh[33];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const float* sr = s + r * n;
    float m = -INFINITY;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) m = sr[i] > m ? sr[i] : m;
    m = block_reduce(m, MaxOp{}, -INFINITY, sh);
    if (m == -INFINITY) {
      if (threadIdx.x == 0) out[r] = -INFINITY;
      continue;
    }
    float z = 0.0f;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) z += expf(sr[i] - m);
    z = block_reduce(z, SumOp{}, 0.0f, sh);
    if (threadIdx.x == 0) out[r] = m + logf(z);
  }
}

// Top-k as k rounds of a block argmax: round j picks the largest (key, lower index) below the
// previous pick, key = the value with NaN as -inf. That is the prefix of the stable descending
// sort, exactly what topk_row returns (ids and values bit for bit).
__device__ __forceinline__ bool topk_better(float ak, int ai, float bk, int bi) {
  return ak > bk || (ak == bk && ai < bi);
}
__global__ void topk_block_kernel(const float* v, int64_t rows, int64_t n, int64_t k, int32_t* ids,
                                  float* vals) {
  __shared__ float sk[32];
  __shared__ int si[32];
  __shared__ int pick;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int warps = static_cast<int>(blockDim.x >> 5);
  const int nn = static_cast<int>(n);
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const float* row = v + r * n;
    float pk = INFINITY;  // the previous pick; (+inf, -1) is above everything
    int pi = -1;
    for (int64_t j = 0; j < k; ++j) {
      float bk = -INFINITY;
      int bi = INT_MAX;  // no candidate: below every real entry
      for (int i = threadIdx.x; i < nn; i += blockDim.x) {
        const float x = row[i];
        const float key = (x != x) ? -INFINITY : x;
        if (topk_better(pk, pi, key, i) && topk_better(key, i, bk, bi)) {
          bk = key;
          bi = i;
        }
      }
      for (int o = 16; o > 0; o >>= 1) {
        const float ok = __shfl_xor_sync(0xffffffffu, bk, o);
        const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
        if (topk_better(ok, oi, bk, bi)) {
          bk = ok;
          bi = oi;
        }
      }
      __syncthreads();  // sk, si, pick are free
      if (lane == 0) {
        sk[warp] = bk;
        si[warp] = bi;
      }
      __syncthreads();
      if (threadIdx.x == 0) {
        for (int w = 1; w < warps; ++w)
          if (topk_better(sk[w], si[w], bk, bi)) {
            bk = sk[w];
            bi = si[w];
          }
        pick = bi;
        ids[r * k + j] = bi;
        vals[r * k + j] = row[bi];
      }
      __syncthreads();
      pi = pick;
      const float x = row[pi];
      pk = (x != x) ? -INFINITY : x;
    }
  }
}

__global__ void softmax_backward_block_kernel(const float* p, const float* dp, float* ds,
                                              int64_t rows, int64_t n, bool accumulate) {
  __shared__ double sh[33];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const float* pr = p + r * n;
    const float* dpr = dp + r * n;
    float* dsr = ds + r * n;
    double dot = 0.0;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x)
      dot += static_cast<double>(pr[i]) * dpr[i];
    const float d = static_cast<float>(block_reduce(dot, SumOp{}, 0.0, sh));
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
      const float g = softmax_backward_elem(pr[i], dpr[i], d);
      dsr[i] = accumulate ? dsr[i] + g : g;
    }
  }
}

__global__ void rmsnorm_block_kernel(const float* x, const float* w, float* y, float* rstd_T,
                                     int64_t T, int64_t D, float eps) {
  __shared__ float sh[33];
  for (int64_t t = blockIdx.x; t < T; t += gridDim.x) {
    const float* xr = x + t * D;
    float* yr = y + t * D;
    float ss = 0.0f;
    for (int64_t i = threadIdx.x; i < D; i += blockDim.x) ss += xr[i] * xr[i];
    const float rstd = rmsnorm_rstd(block_reduce(ss, SumOp{}, 0.0f, sh), D, eps);
    for (int64_t i = threadIdx.x; i < D; i += blockDim.x) yr[i] = rmsnorm_apply(xr[i], rstd, w[i]);
    if (rstd_T && threadIdx.x == 0) rstd_T[t] = rstd;
  }
}

__global__ void rmsnorm_dx_block_kernel(const float* x, const float* w, const float* rstd_T,
                                        const float* dy, float* dx, int64_t T, int64_t D) {
  __shared__ float sh[33];
  for (int64_t t = blockIdx.x; t < T; t += gridDim.x) {
    const float* xr = x + t * D;
    const float* dyr = dy + t * D;
    float* dxr = dx + t * D;
    const float r = rstd_T[t];
    float dot = 0.0f;
    for (int64_t i = threadIdx.x; i < D; i += blockDim.x)
      dot += rmsnorm_backward_dot_term(dyr[i], w[i], xr[i]);
    const float cf = rmsnorm_backward_coef(block_reduce(dot, SumOp{}, 0.0f, sh), r, D);
    for (int64_t i = threadIdx.x; i < D; i += blockDim.x)
      dxr[i] += rmsnorm_backward_dx(dyr[i], w[i], xr[i], r, cf);
  }
}

// The statistics of layernorm_row_stats for a row s held by the block: mean and rstd.
__device__ void layernorm_block_stats(const float* s, int64_t D, float eps, double* sh, float* mean,
                                      float* rstd) {
  double sum = 0.0;
  for (int64_t i = threadIdx.x; i < D; i += blockDim.x) sum += s[i];
  const double m = layernorm_mean(block_reduce(sum, SumOp{}, 0.0, sh), D);
  double ss = 0.0;
  for (int64_t i = threadIdx.x; i < D; i += blockDim.x) ss += layernorm_sq_dev(s[i], m);
  *rstd = layernorm_rstd(block_reduce(ss, SumOp{}, 0.0, sh), D, eps);
  *mean = static_cast<float>(m);
}

// y = LayerNorm(a + r) when r is non-null, else LayerNorm(a); y may alias a or r: every entry is
// read and written by one thread, and the sum a + r is written to y before the statistics.
__global__ void layernorm_block_kernel(const float* a, const float* r, const float* w,
                                       const float* b, float* y, int64_t T, int64_t D, float eps) {
  __shared__ double sh[33];
  for (int64_t t = blockIdx.x; t < T; t += gridDim.x) {
    const float* s = a + t * D;
    float* yr = y + t * D;
    if (r) {
      const float* rr = r + t * D;
      for (int64_t i = threadIdx.x; i < D; i += blockDim.x) yr[i] = s[i] + rr[i];
      s = yr;
    }
    float mean, rstd;
    layernorm_block_stats(s, D, eps, sh, &mean, &rstd);
    for (int64_t i = threadIdx.x; i < D; i += blockDim.x)
      yr[i] = layernorm_apply(s[i], mean, rstd, w[i], b[i]);
  }
}

__global__ void layernorm_stats_block_kernel(const float* x, int64_t T, int64_t D, float eps,
                                             float* mean_T, float* rstd_T) {
  __shared__ double sh[33];
  for (int64_t t = blockIdx.x; t < T; t += gridDim.x) {
    float mean, rstd;
    layernorm_block_stats(x + t * D, D, eps, sh, &mean, &rstd);
    if (threadIdx.x == 0) {
      mean_T[t] = mean;
      rstd_T[t] = rstd;
    }
  }
}

__global__ void layernorm_dx_block_kernel(const float* x, const float* w, const float* dy,
                                          const float* mean_T, const float* rstd_T, float* dx,
                                          int64_t T, int64_t D) {
  __shared__ double sh[33];
  for (int64_t t = blockIdx.x; t < T; t += gridDim.x) {
    const float* xr = x + t * D;
    const float* dyr = dy + t * D;
    float* dxr = dx + t * D;
    const float mean = mean_T[t], rstd = rstd_T[t];
    double sg = 0.0, sgx = 0.0;
    for (int64_t i = threadIdx.x; i < D; i += blockDim.x) {
      const float xhat = layernorm_xhat(xr[i], mean, rstd);
      const float g = dyr[i] * w[i];
      sg += g;
      sgx += static_cast<double>(g) * xhat;
    }
    const float mg = layernorm_row_mean_f(block_reduce(sg, SumOp{}, 0.0, sh), D);
    const float mgx = layernorm_row_mean_f(block_reduce(sgx, SumOp{}, 0.0, sh), D);
    for (int64_t i = threadIdx.x; i < D; i += blockDim.x) {
      const float xhat = layernorm_xhat(xr[i], mean, rstd);
      dxr[i] += layernorm_backward_dx(dyr[i] * w[i], xhat, mg, mgx, rstd);
    }
  }
}

// ---- column sums over rows: out[n] += sum_t term(t, n), t in order -------------------------

struct RmsnormDwTerm {
  const float* x;
  const float* dy;
  const float* rstd;
  int64_t D;
  __device__ float operator()(int64_t t, int64_t i) const {
    return rmsnorm_backward_dw(dy[t * D + i], x[t * D + i], rstd[t]);
  }
};
struct LayernormDwTerm {
  const float* x;
  const float* dy;
  const float* mean;
  const float* rstd;
  int64_t D;
  __device__ float operator()(int64_t t, int64_t i) const {
    return dy[t * D + i] * layernorm_xhat(x[t * D + i], mean[t], rstd[t]);
  }
};

}  // namespace

// ---- softmax, logsumexp, top-k -------------------------------------------------------------

void CudaBackend::softmax_rows(const ExecContext& c, const float* s, float* p, int64_t rows,
                               int64_t n) {
  if (rows <= 0) return;
  if (n <= kThreadRowMax) return launch_per_row(c, SoftmaxRow{s, p, n}, rows);
  softmax_block_kernel<<<row_blocks(rows), kRowThreads, 0, stream_of(c)>>>(s, p, rows, n);
  SY_CUDA_LAUNCHED();
}

void CudaBackend::logsumexp_rows(const ExecContext& c, const float* s, float* out, int64_t rows,
                                 int64_t n) {
  if (rows <= 0) return;
  if (n <= kThreadRowMax) return launch_per_row(c, LogsumexpRow{s, out, n}, rows);
  logsumexp_block_kernel<<<row_blocks(rows), kRowThreads, 0, stream_of(c)>>>(s, out, rows, n);
  SY_CUDA_LAUNCHED();
}

void CudaBackend::topk_rows(const ExecContext& c, const float* v, int64_t rows, int64_t n,
                            int64_t k, int32_t* ids, float* vals) {
  SY_CHECK(k >= 1 && k <= n) << "top-k " << k << " of " << n;
  SY_CHECK(n <= INT32_MAX) << "top-k over " << n << " entries exceeds int";
  if (rows <= 0) return;
  if (n <= kThreadRowMax) return launch_per_row(c, TopkRow{v, n, k, ids, vals}, rows);
  topk_block_kernel<<<row_blocks(rows), kRowThreads, 0, stream_of(c)>>>(v, rows, n, k, ids, vals);
  SY_CUDA_LAUNCHED();
}

void CudaBackend::softmax_backward_rows(const ExecContext& c, const float* p, const float* dp,
                                        float* ds, int64_t rows, int64_t n, bool accumulate) {
  if (rows <= 0) return;
  if (n <= kThreadRowMax)
    return launch_per_row(c, SoftmaxBackwardRow{p, dp, ds, n, accumulate}, rows);
  softmax_backward_block_kernel<<<row_blocks(rows), kRowThreads, 0, stream_of(c)>>>(p, dp, ds, rows,
                                                                                    n, accumulate);
  SY_CUDA_LAUNCHED();
}

// The contract fixes the sum in k order (a serial sum), and n is the top-k width: a thread per
// row at every length.
void CudaBackend::normalize_rows(const ExecContext& c, float* w, int64_t rows, int64_t n) {
  if (rows <= 0) return;
  launch_per_row(c, NormalizeRow{w, n}, rows);
}

// ---- RMSNorm -------------------------------------------------------------------------------

void CudaBackend::rmsnorm_forward(const ExecContext& c, const float* x_TD, const float* w_D,
                                  float* y_TD, float* rstd_T, int64_t T, int64_t D, float eps) {
  if (T <= 0) return;
  if (D <= kThreadRowMax) return launch_per_row(c, RmsnormRow{x_TD, w_D, y_TD, rstd_T, D, eps}, T);
  rmsnorm_block_kernel<<<row_blocks(T), kRowThreads, 0, stream_of(c)>>>(x_TD, w_D, y_TD, rstd_T, T,
                                                                        D, eps);
  SY_CUDA_LAUNCHED();
}

void CudaBackend::rmsnorm_backward(const ExecContext& c, const float* x_TD, const float* w_D,
                                   const float* rstd_T, const float* dy_TD, float* dx_TD,
                                   float* dw_D, int64_t T, int64_t D) {
  if (T <= 0 || D <= 0) return;
  const cudaStream_t st = stream_of(c);
  if (dx_TD) {
    if (D <= kThreadRowMax) {
      launch_per_row(c, RmsnormDxRow{x_TD, w_D, rstd_T, dy_TD, dx_TD, D}, T);
    } else {
      rmsnorm_dx_block_kernel<<<row_blocks(T), kRowThreads, 0, st>>>(x_TD, w_D, rstd_T, dy_TD,
                                                                     dx_TD, T, D);
      SY_CUDA_LAUNCHED();
    }
  }
  if (dw_D) {
    const int64_t need = col_scratch(T, D);
    float* partial = need > 0 ? CudaBackend::scratch(c, need) : nullptr;
    column_sums(st, RmsnormDwTerm{x_TD, dy_TD, rstd_T, D}, T, D, dw_D, partial);
  }
}

// ---- LayerNorm -----------------------------------------------------------------------------

void CudaBackend::layernorm_forward(const ExecContext& c, const float* x_TD, const float* w_D,
                                    const float* b_D, float* y_TD, int64_t T, int64_t D,
                                    float eps) {
  if (T <= 0) return;
  if (D <= kThreadRowMax) return launch_per_row(c, LayernormRow{x_TD, w_D, b_D, y_TD, D, eps}, T);
  layernorm_block_kernel<<<row_blocks(T), kRowThreads, 0, stream_of(c)>>>(x_TD, nullptr, w_D, b_D,
                                                                          y_TD, T, D, eps);
  SY_CUDA_LAUNCHED();
}

void CudaBackend::add_layernorm_forward(const ExecContext& c, const float* a_TD, const float* r_TD,
                                        const float* w_D, const float* b_D, float* y_TD, int64_t T,
                                        int64_t D, float eps) {
  if (T <= 0) return;
  if (D <= kThreadRowMax)
    return launch_per_row(c, AddLayernormRow{a_TD, r_TD, w_D, b_D, y_TD, D, eps}, T);
  layernorm_block_kernel<<<row_blocks(T), kRowThreads, 0, stream_of(c)>>>(a_TD, r_TD, w_D, b_D,
                                                                          y_TD, T, D, eps);
  SY_CUDA_LAUNCHED();
}

// The row statistics are computed once into scratch; dx, dw and db all read them.
void CudaBackend::layernorm_backward(const ExecContext& c, const float* x_TD, const float* w_D,
                                     const float* dy_TD, float* dx_TD, float* dw_D, float* db_D,
                                     int64_t T, int64_t D, float eps) {
  if (T <= 0 || D <= 0 || (!dx_TD && !dw_D && !db_D)) return;
  const cudaStream_t st = stream_of(c);
  const bool cols = dw_D || db_D;
  float* ws = CudaBackend::scratch(c, 2 * T + (cols ? col_scratch(T, D) : 0));
  float* mean_T = ws;
  float* rstd_T = ws + T;
  float* partial = ws + 2 * T;  // reused by dw, then db (same stream: in order)
  const bool by_thread = D <= kThreadRowMax;
  if (by_thread) {
    launch_per_row(c, LayernormStatsRow{x_TD, D, eps, mean_T, rstd_T}, T);
  } else {
    layernorm_stats_block_kernel<<<row_blocks(T), kRowThreads, 0, st>>>(x_TD, T, D, eps, mean_T,
                                                                        rstd_T);
    SY_CUDA_LAUNCHED();
  }
  if (dx_TD) {
    if (by_thread) {
      launch_per_row(c, LayernormDxRow{x_TD, w_D, dy_TD, mean_T, rstd_T, dx_TD, D}, T);
    } else {
      layernorm_dx_block_kernel<<<row_blocks(T), kRowThreads, 0, st>>>(x_TD, w_D, dy_TD, mean_T,
                                                                       rstd_T, dx_TD, T, D);
      SY_CUDA_LAUNCHED();
    }
  }
  if (dw_D) column_sums(st, LayernormDwTerm{x_TD, dy_TD, mean_T, rstd_T, D}, T, D, dw_D, partial);
  if (db_D) column_sums(st, RowsTerm{dy_TD, D}, T, D, db_D, partial);
}

}  // namespace cuda
}  // namespace sy
