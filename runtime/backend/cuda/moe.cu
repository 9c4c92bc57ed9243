// CudaBackend: routing helpers and the MoE data path (runtime/backend/backend.h documents each
// op; runtime/kernels/rows.cc is the CPU reference).
//
//   gather_topk_probs         a thread per (token, slot): one load.
//   hash_route                a fill pass (logits -inf, probs 0), then a thread per token:
//                             hash_route_experts of hash_route.h (or the table row) and its K
//                             entries; an id outside [0, V) is flagged on the device (the first
//                             token's, by an integer atomicMin), read back and fatal.
//   topk_weights_backward     a thread per token: topk_weights_backward_row of rows.h.
//   gather_rows               a block per row: a copy.
//   combine_rows              a block per token, a thread per column: the slots in k order,
//                             each product and sum rounded as the CPU rounds it (no FMA).
//   scatter_rows_weighted     a block per row: one product per element.
//   combine_weights_backward  a block per (token, slot): the dot of length D, a fixed tree.
//   gated_add_rows            a block per token: g = sigmoid(g) in place, y += g s (no FMA).
//   gated_add_rows_backward   a block per token: ds = g dy and the dot in double (fixed tree).
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstring>

#include "runtime/backend/cuda/cuda_backend.h"
#include "runtime/core/check.h"
#include "runtime/kernels/hash_route.h"
#include "runtime/kernels/math.h"
#include "runtime/kernels/rows.h"

namespace sy {
namespace cuda {

namespace {

using u64 = unsigned long long;
constexpr u64 kNoFlag = ~u64{0};

// Threads per block for rows of D columns (a multiple of 32), and blocks for R rows (each
// block loops over rows R / gridDim apart).
unsigned row_threads(int64_t D) {
  return D <= 32 ? 32u : D <= 64 ? 64u : D <= 128 ? 128u : 256u;
}
unsigned row_blocks(int64_t R) {
  return static_cast<unsigned>(R < 1 ? 1 : (R > (1 << 20) ? (1 << 20) : R));
}

// A flag word: the smallest (index << 32 | value) of the offending entries.
__device__ void flag_min(u64* slot, int64_t index, int32_t value) {
  atomicMin(slot, (static_cast<u64>(index) << 32) | static_cast<u64>(static_cast<uint32_t>(value)));
}

// Block sum of one double per thread (fixed tree); every thread gets the result.
__device__ double block_sum(double v) {
  __shared__ double sh[32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  __syncthreads();
  if (lane == 0) sh[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = lane < nwarps ? sh[lane] : 0.0;
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    if (lane == 0) sh[0] = v;
  }
  __syncthreads();
  return sh[0];
}
__device__ float block_sum(float v) {
  __shared__ float shf[32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  __syncthreads();
  if (lane == 0) shf[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = lane < nwarps ? shf[lane] : 0.0f;
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    if (lane == 0) shf[0] = v;
  }
  __syncthreads();
  return shf[0];
}

__global__ void gather_topk_probs_kernel(const float* probs, const int32_t* ids, int64_t T,
                                         int64_t E, int64_t K, float* out) {
  const int64_t n = T * K, stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += stride) {
    const int32_t e = ids[i];
    // An id outside [0, E) reads nothing (the CPU would read out of the row): NaN.
    out[i] = (e >= 0 && e < E) ? probs[(i / K) * E + e] : NAN;
  }
}

__global__ void hash_fill_kernel(float* logits, float* probs, int64_t n) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += stride) {
    logits[i] = -INFINITY;
    probs[i] = 0.0f;
  }
}

// flags[0]: a token id outside [0, V); flags[1]: a table entry outside [0, E).
__global__ void hash_route_kernel(const int32_t* table, int64_t V, uint64_t seed,
                                  const int32_t* tokens, int64_t T, int64_t E, int64_t K, float w,
                                  int32_t* ids_TK, float* logits, float* probs, float* weights,
                                  u64* flags) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t t = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; t < T;
       t += stride) {
    const int32_t id = tokens[t];
    if (id < 0 || id >= V) {
      flag_min(&flags[0], t, id);
      continue;
    }
    int32_t* ids = ids_TK + t * K;
    if (table) {
      for (int64_t k = 0; k < K; ++k) ids[k] = table[static_cast<int64_t>(id) * K + k];
    } else {
      hash_route_experts(seed, E, K, id, /*sorted=*/true, ids);
    }
    float* s = logits + t * E;
    float* p = probs + t * E;
    for (int64_t k = 0; k < K; ++k) {
      const int32_t e = ids[k];
      weights[t * K + k] = w;
      if (e < 0 || e >= E) {
        flag_min(&flags[1], t, e);
        continue;
      }
      s[e] = 0.0f;
      p[e] = w;
    }
  }
}

__global__ void topk_weights_backward_kernel(const float* dw, const float* vals, const int32_t* ids,
                                             int64_t T, int64_t E, int64_t K, bool normalized,
                                             float* dp) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t t = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; t < T; t += stride)
    topk_weights_backward_row(dw + t * K, vals + t * K, ids + t * K, K, normalized, dp + t * E);
}

__global__ void gather_rows_kernel(const float* x, const int32_t* order, int64_t R, int64_t K,
                                   int64_t D, float* out) {
  for (int64_t r = blockIdx.x; r < R; r += gridDim.x) {
    const float* src = x + static_cast<int64_t>(order[r] / K) * D;
    float* dst = out + r * D;
    for (int64_t d = threadIdx.x; d < D; d += blockDim.x) dst[d] = src[d];
  }
}

// combine_rows of rows.cc: the first kept slot writes (w src, or src), the next ones add.
__global__ void combine_rows_kernel(const float* rows, const int32_t* row_of, const float* w,
                                    int64_t T, int64_t K, int64_t D, float* y) {
  for (int64_t t = blockIdx.x; t < T; t += gridDim.x) {
    const int32_t* ro = row_of + t * K;
    for (int64_t d = threadIdx.x; d < D; d += blockDim.x) {
      float acc = 0.0f;
      bool first = true;
      for (int64_t k = 0; k < K; ++k) {
        const int32_t r = ro[k];
        if (r < 0) continue;
        const float src = rows[static_cast<int64_t>(r) * D + d];
        const float term = w ? mul_nc(w[t * K + k], src) : src;
        acc = first ? term : add_nc(acc, term);
        first = false;
      }
      y[t * D + d] = acc;  // 0 when every slot was dropped
    }
  }
}

__global__ void scatter_rows_weighted_kernel(const float* dy, const int32_t* order, const float* w,
                                             int64_t R, int64_t K, int64_t D, float* out) {
  for (int64_t r = blockIdx.x; r < R; r += gridDim.x) {
    const int32_t a = order[r];
    const float wk = w[a];
    const float* src = dy + static_cast<int64_t>(a / K) * D;
    float* dst = out + r * D;
    for (int64_t d = threadIdx.x; d < D; d += blockDim.x) dst[d] = wk * src[d];
  }
}

__global__ void combine_weights_backward_kernel(const float* dy, const float* rows,
                                                const int32_t* row_of, int64_t T, int64_t K,
                                                int64_t D, float* dw) {
  for (int64_t i = blockIdx.x; i < T * K; i += gridDim.x) {
    const int32_t r = row_of[i];  // the same for the whole block
    if (r < 0) {
      if (threadIdx.x == 0) dw[i] = 0.0f;
      continue;
    }
    const float* a = dy + (i / K) * D;
    const float* b = rows + static_cast<int64_t>(r) * D;
    float acc = 0.0f;
    for (int64_t d = threadIdx.x; d < D; d += blockDim.x) acc += a[d] * b[d];
    acc = block_sum(acc);
    if (threadIdx.x == 0) dw[i] = acc;
  }
}

__global__ void gated_add_rows_kernel(float* g, const float* s, const uint8_t* mask, int64_t T,
                                      int64_t D, float* y) {
  for (int64_t t = blockIdx.x; t < T; t += gridDim.x) {
    const float gt = sigmoidf_(g[t]);
    __syncthreads();  // every thread has read the logit before it is replaced
    if (threadIdx.x == 0) g[t] = gt;
    if (mask && !mask[t]) continue;
    const float* st = s + t * D;
    float* yt = y + t * D;
    for (int64_t d = threadIdx.x; d < D; d += blockDim.x) yt[d] = add_nc(yt[d], mul_nc(gt, st[d]));
  }
}

__global__ void gated_add_rows_backward_kernel(const float* dy, const float* s, const float* g,
                                               const uint8_t* mask, int64_t T, int64_t D, float* ds,
                                               float* dlogit) {
  for (int64_t t = blockIdx.x; t < T; t += gridDim.x) {
    const float* dyt = dy + t * D;
    const float* st = s + t * D;
    float* dst = ds + t * D;
    if (mask && !mask[t]) {
      for (int64_t d = threadIdx.x; d < D; d += blockDim.x) dst[d] = 0.0f;
      if (threadIdx.x == 0) dlogit[t] = 0.0f;
      continue;
    }
    const float gt = g[t];
    double dot = 0.0;
    for (int64_t d = threadIdx.x; d < D; d += blockDim.x) {
      dot += static_cast<double>(dyt[d]) * st[d];
      dst[d] = gt * dyt[d];
    }
    dot = block_sum(dot);
    if (threadIdx.x == 0) dlogit[t] = static_cast<float>(dot) * gt * (1.0f - gt);
  }
}

}  // namespace

void CudaBackend::gather_topk_probs(const ExecContext& c, const float* probs_TE,
                                    const int32_t* ids_TK, int64_t T, int64_t E, int64_t K,
                                    float* rank_p_TK) {
  if (T <= 0 || K <= 0) return;
  gather_topk_probs_kernel<<<blocks_for(T * K), 256, 0, stream_of(c)>>>(probs_TE, ids_TK, T, E, K,
                                                                        rank_p_TK);
  SY_CUDA_LAUNCHED();
}

void CudaBackend::hash_route(const ExecContext& c, const int32_t* table_VK, int64_t V,
                             uint64_t seed, const int32_t* token_ids_T, int64_t T, int64_t E,
                             int64_t K, int32_t* ids_TK, float* logits_TE, float* probs_TE,
                             float* weights_TK) {
  if (T <= 0) return;
  SY_CHECK(E >= 1 && K >= 1 && (table_VK || K <= E)) << "hash_route: E=" << E << " K=" << K;
  cudaStream_t st = stream_of(c);
  const float w = 1.0f / static_cast<float>(K);
  double* res = small_results(c);
  u64* flags = reinterpret_cast<u64*>(res);
  SY_CUDA_CHECK(cudaMemsetAsync(flags, 0xff, 2 * sizeof(u64), st));
  hash_fill_kernel<<<blocks_for(T * E), 256, 0, st>>>(logits_TE, probs_TE, T * E);
  SY_CUDA_LAUNCHED();
  hash_route_kernel<<<blocks_for(T, 128), 128, 0, st>>>(
      table_VK, V, seed, token_ids_T, T, E, K, w, ids_TK, logits_TE, probs_TE, weights_TK, flags);
  SY_CUDA_LAUNCHED();
  double host[2];
  read_small_results(c, host, 2);
  u64 bad[2];
  std::memcpy(bad, host, sizeof(bad));
  SY_CHECK(bad[0] == kNoFlag) << "router 'hash': token " << static_cast<int64_t>(bad[0] >> 32)
                              << " has id " << static_cast<int32_t>(bad[0] & 0xffffffffu)
                              << ", outside [0, vocab_size=" << V
                              << "); validate untrusted ids with check_token_ids()";
  SY_CHECK(bad[1] == kNoFlag) << "router 'hash': token " << static_cast<int64_t>(bad[1] >> 32)
                              << " routed by the table to expert "
                              << static_cast<int32_t>(bad[1] & 0xffffffffu) << ", outside [0, " << E
                              << ")";
}

void CudaBackend::topk_weights_backward(const ExecContext& c, const float* dw_TK,
                                        const float* vals_TK, const int32_t* ids_TK, int64_t T,
                                        int64_t E, int64_t K, bool normalized, float* dp_TE) {
  if (T <= 0 || K <= 0) return;
  topk_weights_backward_kernel<<<blocks_for(T, 128), 128, 0, stream_of(c)>>>(
      dw_TK, vals_TK, ids_TK, T, E, K, normalized, dp_TE);
  SY_CUDA_LAUNCHED();
}

void CudaBackend::gather_rows(const ExecContext& c, const float* x_TD, const int32_t* order_A_R,
                              int64_t R, int64_t K, int64_t D, float* out_RD) {
  if (R <= 0 || D <= 0) return;
  gather_rows_kernel<<<row_blocks(R), row_threads(D), 0, stream_of(c)>>>(x_TD, order_A_R, R, K, D,
                                                                         out_RD);
  SY_CUDA_LAUNCHED();
}

void CudaBackend::combine_rows(const ExecContext& c, const float* rows_RD, const int32_t* row_of_TK,
                               const float* w_TK, int64_t T, int64_t K, int64_t D, float* y_TD) {
  if (T <= 0 || D <= 0) return;
  combine_rows_kernel<<<row_blocks(T), row_threads(D), 0, stream_of(c)>>>(rows_RD, row_of_TK, w_TK,
                                                                          T, K, D, y_TD);
  SY_CUDA_LAUNCHED();
}

void CudaBackend::scatter_rows_weighted(const ExecContext& c, const float* dy_TD,
                                        const int32_t* order_A_R, const float* w_TK, int64_t R,
                                        int64_t K, int64_t D, float* out_RD) {
  if (R <= 0 || D <= 0) return;
  scatter_rows_weighted_kernel<<<row_blocks(R), row_threads(D), 0, stream_of(c)>>>(
      dy_TD, order_A_R, w_TK, R, K, D, out_RD);
  SY_CUDA_LAUNCHED();
}

void CudaBackend::combine_weights_backward(const ExecContext& c, const float* dy_TD,
                                           const float* rows_RD, const int32_t* row_of_TK,
                                           int64_t T, int64_t K, int64_t D, float* dw_TK) {
  if (T <= 0 || K <= 0) return;
  combine_weights_backward_kernel<<<row_blocks(T * K), row_threads(D), 0, stream_of(c)>>>(
      dy_TD, rows_RD, row_of_TK, T, K, D, dw_TK);
  SY_CUDA_LAUNCHED();
}

void CudaBackend::gated_add_rows(const ExecContext& c, float* g_T, const float* s_TD,
                                 const uint8_t* mask_T, int64_t T, int64_t D, float* y_TD) {
  if (T <= 0) return;
  gated_add_rows_kernel<<<row_blocks(T), row_threads(D), 0, stream_of(c)>>>(g_T, s_TD, mask_T, T, D,
                                                                            y_TD);
  SY_CUDA_LAUNCHED();
}

void CudaBackend::gated_add_rows_backward(const ExecContext& c, const float* dy_TD,
                                          const float* s_TD, const float* g_T,
                                          const uint8_t* mask_T, int64_t T, int64_t D, float* ds_TD,
                                          float* dlogit_T) {
  if (T <= 0) return;
  gated_add_rows_backward_kernel<<<row_blocks(T), row_threads(D), 0, stream_of(c)>>>(
      dy_TD, s_TD, g_T, mask_T, T, D, ds_TD, dlogit_T);
  SY_CUDA_LAUNCHED();
}

}  // namespace cuda
}  // namespace sy
