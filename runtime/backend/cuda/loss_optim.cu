// CudaBackend: cross-entropy, the Switch aux loss, AdamW and the reductions
// (runtime/backend/backend.h documents each op; runtime/kernels/loss.cc, balance.cc and rows.cc
// are the CPU references).
//
//   cross_entropy_sum       a block per row: max, sum of exp in double (fixed tree), the row's
//                           loss into the workspace; one block then sums the rows and counts
//                           them (fixed tree), read back with small_results. A target outside
//                           [-1, V) is flagged on the device and fatal on the host.
//   cross_entropy_backward  a block per row: softmax_row's arithmetic (max, exp, fp32 sum, one
//                           reciprocal), then (p - onehot) scale; the same target check.
//   switch_aux_loss         expert counts by integer atomics (exact, order-free); P_e in double
//                           by fixed chunks of tokens, then one block: dot(count, P) and the
//                           gradient row g_e = float(c count_e); read back, loss finished on the
//                           host with balance.cc's formula; then dprobs = g (or += g).
//   adamw_update            a thread per element: adamw_element of rows.h.
//   sum_squares, dot,       per-block double partials over a grid fixed by n, then one block
//   dot_add                 sums them in a fixed tree; dot_add adds float(sum) on the device.
//   all_finite              a thread per element sets a flag on a non-finite value.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "runtime/backend/cuda/cuda_backend.h"
#include "runtime/core/check.h"
#include "runtime/kernels/rows.h"

namespace sy {
namespace cuda {

namespace {

using u64 = unsigned long long;
constexpr u64 kNoFlag = ~u64{0};
constexpr int kThreads = 256;        // a multiple of 32: the reductions use full warps
constexpr int kReduceBlocks = 1024;  // most partials of the two-stage reductions

unsigned row_blocks(int64_t R) {
  return static_cast<unsigned>(R < 1 ? 1 : (R > (1 << 20) ? (1 << 20) : R));
}

__device__ void flag_min(u64* slot, int64_t index, int32_t value) {
  atomicMin(slot, (static_cast<u64>(index) << 32) | static_cast<u64>(static_cast<uint32_t>(value)));
}

struct MaxOp {
  // The max of softmax_row / std::max_element: a NaN never replaces the running max.
  __device__ float operator()(float a, float b) const { return a < b ? b : a; }
};
struct SumOp {
  template <typename T>
  __device__ T operator()(T a, T b) const {
    return a + b;
  }
};

// The block's reduction of one value per thread (fixed tree); every thread gets the result.
template <typename T, typename Op>
__device__ T block_reduce(T v, Op op, T identity) {
  __shared__ T sh[32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_xor_sync(0xffffffffu, v, o));
  __syncthreads();  // sh may still be read from a previous reduction
  if (lane == 0) sh[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = lane < nwarps ? sh[lane] : identity;
    for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_xor_sync(0xffffffffu, v, o));
    if (lane == 0) sh[0] = v;
  }
  __syncthreads();
  return sh[0];
}

// ---- cross-entropy ----

// row_loss[t] = logsumexp - logit[target] in double for counted rows, 0 for ignored ones.
__global__ void ce_rows_kernel(const float* logits, const int32_t* target, int64_t T, int64_t V,
                               double* row_loss, u64* bad) {
  for (int64_t t = blockIdx.x; t < T; t += gridDim.x) {
    const int32_t y = target[t];  // the same for the whole block
    if (y < -1 || y >= V) {
      if (threadIdx.x == 0) {
        flag_min(bad, t, y);
        row_loss[t] = 0.0;
      }
      continue;
    }
    if (y < 0) {
      if (threadIdx.x == 0) row_loss[t] = 0.0;
      continue;
    }
    const float* row = logits + t * V;
    float mx = -INFINITY;
    for (int64_t j = threadIdx.x; j < V; j += blockDim.x) mx = MaxOp()(mx, row[j]);
    mx = block_reduce(mx, MaxOp(), -INFINITY);
    double z = 0.0;
    for (int64_t j = threadIdx.x; j < V; j += blockDim.x)
      z += exp(static_cast<double>(row[j]) - mx);
    z = block_reduce(z, SumOp(), 0.0);
    if (threadIdx.x == 0)
      row_loss[t] = static_cast<double>(mx) + log(z) - static_cast<double>(row[y]);
  }
}

// res[0] = sum of row_loss, res[1] = the number of rows with target >= 0 (one block).
__global__ void ce_total_kernel(const double* row_loss, const int32_t* target, int64_t T,
                                double* res) {
  double s = 0.0, n = 0.0;
  for (int64_t t = threadIdx.x; t < T; t += blockDim.x) {
    s += row_loss[t];
    n += target[t] >= 0 ? 1.0 : 0.0;
  }
  s = block_reduce(s, SumOp(), 0.0);
  n = block_reduce(n, SumOp(), 0.0);
  if (threadIdx.x == 0) {
    res[0] = s;
    res[1] = n;
  }
}

// dlogits = (softmax - onehot) * scale (written), zeros for ignored rows.
__global__ void ce_backward_kernel(const float* logits, const int32_t* target, int64_t T, int64_t V,
                                   float scale, float* dlogits, u64* bad) {
  for (int64_t t = blockIdx.x; t < T; t += gridDim.x) {
    const int32_t y = target[t];
    float* d = dlogits + t * V;
    if (y < -1 || y >= V) {
      if (threadIdx.x == 0) flag_min(bad, t, y);
      continue;
    }
    if (y < 0) {
      for (int64_t j = threadIdx.x; j < V; j += blockDim.x) d[j] = 0.0f;
      continue;
    }
    const float* row = logits + t * V;
    float mx = -INFINITY;
    for (int64_t j = threadIdx.x; j < V; j += blockDim.x) mx = MaxOp()(mx, row[j]);
    mx = block_reduce(mx, MaxOp(), -INFINITY);
    float inv;
    if (mx == -INFINITY) {  // softmax_row: an all -inf row is uniform
      for (int64_t j = threadIdx.x; j < V; j += blockDim.x) d[j] = 1.0f / static_cast<float>(V);
      inv = 1.0f;
    } else {
      float z = 0.0f;
      for (int64_t j = threadIdx.x; j < V; j += blockDim.x) {
        const float e = expf(row[j] - mx);
        d[j] = e;
        z += e;
      }
      z = block_reduce(z, SumOp(), 0.0f);
      inv = 1.0f / z;
    }
    // p = e * inv, then p - 1 at the target, then * scale: each rounded (no FMA), as the CPU.
    for (int64_t j = threadIdx.x; j < V; j += blockDim.x) {
      float p = mul_nc(d[j], inv);
      if (j == y) p -= 1.0f;
      d[j] = p * scale;
    }
  }
}

// ---- the Switch aux loss ----

__global__ void aux_count_kernel(const int32_t* ids, int64_t n, int64_t E, int* count, u64* bad) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += stride) {
    const int32_t e = ids[i];
    if (e < 0 || e >= E)
      flag_min(bad, i, e);
    else
      atomicAdd(&count[e], 1);
  }
}

constexpr int kAuxCols = 32, kAuxRows = 8;

// partial[c * E + e] = sum of probs[t, e] over the tokens of chunk c (double): block (32
// experts) x (8 token lanes), grid (expert tiles, chunks).
__global__ void aux_psum_kernel(const float* probs, int64_t T, int64_t E, int64_t rows_per_chunk,
                                double* partial) {
  __shared__ double sh[kAuxRows][kAuxCols];
  const int64_t e = static_cast<int64_t>(blockIdx.x) * kAuxCols + threadIdx.x;
  const int64_t t0 = static_cast<int64_t>(blockIdx.y) * rows_per_chunk;
  const int64_t t1 = t0 + rows_per_chunk < T ? t0 + rows_per_chunk : T;
  double acc = 0.0;
  if (e < E)
    for (int64_t t = t0 + threadIdx.y; t < t1; t += kAuxRows) acc += probs[t * E + e];
  sh[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y == 0 && e < E) {
    double s = 0.0;
    for (int r = 0; r < kAuxRows; ++r) s += sh[r][threadIdx.x];
    partial[blockIdx.y * E + e] = s;
  }
}

// One block: P_e from the chunks in order, res[0] = sum_e count_e P_e, g[e] = float(c count_e).
__global__ void aux_finish_kernel(const double* partial, int64_t chunks, const int* count,
                                  int64_t E, double cgrad, float* g, double* res) {
  double dot = 0.0;
  for (int64_t e = threadIdx.x; e < E; e += blockDim.x) {
    double P = 0.0;
    for (int64_t ch = 0; ch < chunks; ++ch) P += partial[ch * E + e];
    const double n = static_cast<double>(count[e]);
    dot += n * P;
    g[e] = static_cast<float>(cgrad * n);
  }
  dot = block_reduce(dot, SumOp(), 0.0);
  if (threadIdx.x == 0) res[0] = dot;
}

__global__ void aux_grad_kernel(const float* g, int64_t T, int64_t E, bool accumulate,
                                float* dprobs) {
  const int64_t n = T * E, stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += stride) {
    const float ge = g[i % E];
    dprobs[i] = accumulate ? dprobs[i] + ge : ge;
  }
}

// ---- AdamW, reductions ----

__global__ void adamw_kernel(float* w, const float* g, float* m, float* v, int64_t n,
                             AdamWScalars k) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride)
    adamw_element(k, g[i], w + i, m + i, v + i);
}

// partial[block] = sum of x*x (y null) or x*y in double over the block's grid-stride share.
__global__ void reduce_partials_kernel(const float* x, const float* y, int64_t n, double* partial) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  double acc = 0.0;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride)
    acc += static_cast<double>(x[i]) * (y ? y[i] : x[i]);
  acc = block_reduce(acc, SumOp(), 0.0);
  if (threadIdx.x == 0) partial[blockIdx.x] = acc;
}

// One block: the partials in a fixed tree; res[0] = the sum, or out[0] += float(sum).
__global__ void reduce_final_kernel(const double* partial, int64_t nb, double* res, float* out) {
  double acc = 0.0;
  for (int64_t b = threadIdx.x; b < nb; b += blockDim.x) acc += partial[b];
  acc = block_reduce(acc, SumOp(), 0.0);
  if (threadIdx.x == 0) {
    if (out)
      out[0] += static_cast<float>(acc);
    else
      res[0] = acc;
  }
}

__global__ void finite_kernel(const float* x, int64_t n, double* res) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride)
    if (!isfinite(x[i])) res[0] = 1.0;  // every writer writes the same value
}

u64 flag_bits(double d) {
  u64 b;
  std::memcpy(&b, &d, sizeof(b));
  return b;
}

// A sum of x*x or x*y in double: partial sums of a grid fixed by n, then one block.
void launch_reduction(cudaStream_t st, const float* x, const float* y, int64_t n, double* partial,
                      double* res, float* out) {
  const int64_t nb = std::min<int64_t>(kReduceBlocks, (n + kThreads - 1) / kThreads);
  reduce_partials_kernel<<<static_cast<unsigned>(nb), kThreads, 0, st>>>(x, y, n, partial);
  SY_CUDA_LAUNCHED();
  reduce_final_kernel<<<1, kThreads, 0, st>>>(partial, nb, res, out);
  SY_CUDA_LAUNCHED();
}

}  // namespace

double CudaBackend::cross_entropy_sum(const ExecContext& c, const float* logits_TV,
                                      const int32_t* target_T, int64_t T, int64_t V,
                                      int64_t* count) {
  if (T <= 0) {
    if (count) *count = 0;
    return 0.0;
  }
  cudaStream_t st = stream_of(c);
  double* row_loss = reinterpret_cast<double*>(scratch(c, 2 * T));
  double* res = small_results(c);
  SY_CUDA_CHECK(cudaMemsetAsync(res + 2, 0xff, sizeof(double), st));
  ce_rows_kernel<<<row_blocks(T), kThreads, 0, st>>>(logits_TV, target_T, T, V, row_loss,
                                                     reinterpret_cast<u64*>(res + 2));
  SY_CUDA_LAUNCHED();
  ce_total_kernel<<<1, kThreads, 0, st>>>(row_loss, target_T, T, res);
  SY_CUDA_LAUNCHED();
  double host[3];
  read_small_results(c, host, 3);
  const u64 bad = flag_bits(host[2]);
  SY_CHECK(bad == kNoFlag) << "cross-entropy: target " << static_cast<int32_t>(bad & 0xffffffffu)
                           << " at row " << static_cast<int64_t>(bad >> 32) << " outside [-1, " << V
                           << ")";
  if (count) *count = static_cast<int64_t>(host[1]);
  return host[0];
}

void CudaBackend::cross_entropy_backward(const ExecContext& c, const float* logits_TV,
                                         const int32_t* target_T, int64_t T, int64_t V, float scale,
                                         float* dlogits_TV) {
  if (T <= 0) return;
  cudaStream_t st = stream_of(c);
  double* res = small_results(c);
  SY_CUDA_CHECK(cudaMemsetAsync(res, 0xff, sizeof(double), st));
  ce_backward_kernel<<<row_blocks(T), kThreads, 0, st>>>(logits_TV, target_T, T, V, scale,
                                                         dlogits_TV, reinterpret_cast<u64*>(res));
  SY_CUDA_LAUNCHED();
  double host[1];
  read_small_results(c, host, 1);
  const u64 bad = flag_bits(host[0]);
  SY_CHECK(bad == kNoFlag) << "cross-entropy: target " << static_cast<int32_t>(bad & 0xffffffffu)
                           << " at row " << static_cast<int64_t>(bad >> 32) << " outside [-1, " << V
                           << ")";
}

double CudaBackend::switch_aux_loss(const ExecContext& c, const float* probs_TE,
                                    const int32_t* topk_ids_TK, int64_t T, int64_t E, int64_t K,
                                    float alpha, float* dprobs_TE, bool accumulate) {
  SY_CHECK(T >= 0 && E >= 1 && K >= 1 && K <= E)
      << "aux loss sizes T=" << T << " E=" << E << " K=" << K;
  SY_CHECK(T == 0 || (probs_TE != nullptr && topk_ids_TK != nullptr));
  if (T == 0) return 0.0;
  cudaStream_t st = stream_of(c);
  // Workspace: partial sums [chunks][E] (double), then count [E] (int), then g [E] (float).
  const int64_t chunks = std::min<int64_t>(256, (T + 255) / 256);
  const int64_t rows_per_chunk = (T + chunks - 1) / chunks;
  float* ws = scratch(c, 2 * chunks * E + 2 * E);
  double* partial = reinterpret_cast<double*>(ws);
  int* count = reinterpret_cast<int*>(ws + 2 * chunks * E);
  float* g = ws + 2 * chunks * E + E;
  double* res = small_results(c);
  u64* bad = reinterpret_cast<u64*>(res + 1);
  SY_CUDA_CHECK(cudaMemsetAsync(bad, 0xff, sizeof(u64), st));
  SY_CUDA_CHECK(cudaMemsetAsync(count, 0, static_cast<size_t>(E) * sizeof(int), st));
  aux_count_kernel<<<blocks_for(T * K), 256, 0, st>>>(topk_ids_TK, T * K, E, count, bad);
  SY_CUDA_LAUNCHED();
  const dim3 tiles(static_cast<unsigned>((E + kAuxCols - 1) / kAuxCols),
                   static_cast<unsigned>(chunks));
  aux_psum_kernel<<<tiles, dim3(kAuxCols, kAuxRows), 0, st>>>(probs_TE, T, E, rows_per_chunk,
                                                              partial);
  SY_CUDA_LAUNCHED();
  // balance.cc: loss = alpha E dot / (n K n), dL/dp[t, e] = alpha E f_e / n = c count_e.
  const double nn = static_cast<double>(T);
  const double cgrad = static_cast<double>(alpha) * static_cast<double>(E) * 1.0 /
                       (nn * static_cast<double>(K) * nn);
  aux_finish_kernel<<<1, kThreads, 0, st>>>(partial, chunks, count, E, cgrad, g, res);
  SY_CUDA_LAUNCHED();
  double host[2];
  read_small_results(c, host, 2);
  const u64 b = flag_bits(host[1]);
  SY_CHECK(b == kNoFlag) << "expert id " << static_cast<int32_t>(b & 0xffffffffu)
                         << " out of range [0, " << E << ") at token "
                         << static_cast<int64_t>(b >> 32) / K << " slot "
                         << static_cast<int64_t>(b >> 32) % K;
  const double loss = static_cast<double>(alpha) * static_cast<double>(E) * host[0] /
                      (nn * static_cast<double>(K) * nn);
  if (dprobs_TE) {
    aux_grad_kernel<<<blocks_for(T * E), 256, 0, st>>>(g, T, E, accumulate, dprobs_TE);
    SY_CUDA_LAUNCHED();
  }
  return loss;
}

void CudaBackend::adamw_update(const ExecContext& c, float* w, const float* g, float* m, float* v,
                               int64_t n, const AdamWStep& s) {
  if (n <= 0) return;
  adamw_kernel<<<blocks_for(n), 256, 0, stream_of(c)>>>(w, g, m, v, n, adamw_scalars(s));
  SY_CUDA_LAUNCHED();
}

double CudaBackend::sum_squares(const ExecContext& c, const float* x, int64_t n) {
  if (n <= 0) return 0.0;
  double* res = small_results(c);
  double* partial = reinterpret_cast<double*>(scratch(c, 2 * kReduceBlocks));
  launch_reduction(stream_of(c), x, nullptr, n, partial, res, nullptr);
  double host[1];
  read_small_results(c, host, 1);
  return host[0];
}

float CudaBackend::dot(const ExecContext& c, const float* x, const float* y, int64_t n) {
  if (n <= 0) return 0.0f;
  double* res = small_results(c);
  double* partial = reinterpret_cast<double*>(scratch(c, 2 * kReduceBlocks));
  launch_reduction(stream_of(c), x, y, n, partial, res, nullptr);
  double host[1];
  read_small_results(c, host, 1);
  return static_cast<float>(host[0]);
}

bool CudaBackend::all_finite(const ExecContext& c, const float* x, int64_t n) {
  if (n <= 0) return true;
  cudaStream_t st = stream_of(c);
  double* res = small_results(c);
  SY_CUDA_CHECK(cudaMemsetAsync(res, 0, sizeof(double), st));
  finite_kernel<<<blocks_for(n), 256, 0, st>>>(x, n, res);
  SY_CUDA_LAUNCHED();
  double host[1];
  read_small_results(c, host, 1);
  return host[0] == 0.0;
}

void CudaBackend::dot_add(const ExecContext& c, const float* x, const float* y, int64_t n,
                          float* out) {
  if (n <= 0) return;  // out[0] += float(0): unchanged
  double* partial = reinterpret_cast<double*>(scratch(c, 2 * kReduceBlocks));
  launch_reduction(stream_of(c), x, y, n, partial, nullptr, out);
}

}  // namespace cuda
}  // namespace sy
