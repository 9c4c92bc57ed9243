// CudaBackend: RoPE and attention forward/backward (runtime/kernels/attention.h documents the
// semantics; runtime/kernels/attention.cc is the CPU reference).
//
//   rope_apply          a thread per (row, pair), looping over the heads; the angle and the
//                       rotation are rope_cos_sin / rope_rotate_pair of attention.h.
//   attention_forward   a block per (query row, head): scores (a warp per key), the masked
//                       softmax of attention.cc (block max and sum), then P V (a thread per
//                       output column, keys in order). Scores live in shared memory when the row
//                       fits, else in the context's workspace.
//   attention_backward  a block per (query row, head) recomputes P as the forward does, then
//                       dP = dO V^T, dS = P (dP - rowsum(P dP)) and dq = scale dS K (written);
//                       P and dS go to the workspace. A second kernel, a block per (key row, kv
//                       head), adds dv += P^T dO and dk += scale dS^T Q, the query heads of the
//                       group in order and the query rows in order: no atomics, so the result
//                       is the same on every run.
// Reductions are fixed trees (warp shuffles, then one warp over the warps' partials).
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "runtime/backend/cuda/cuda_backend.h"
#include "runtime/core/check.h"
#include "runtime/kernels/attention.h"

namespace sy {
namespace cuda {

namespace {

constexpr int kThreads = 128;          // a multiple of 32: the reductions use full warps
constexpr int kMaxRopeHalf = 256;      // hd <= 512
constexpr int64_t kMaxHeadDim = 4096;  // q (and dO) rows of a block in shared memory
// Dynamic shared memory a block may take without an opt-in (48 KiB), less the static part.
constexpr int64_t kSmemBytes = 47 * 1024;
// Workspace the attention ops aim to stay under (floats); at least one head (forward) or one
// kv group (backward) is processed per launch whatever its size.
constexpr int64_t kScratchBudget = int64_t{1} << 26;

// RoPE frequencies by value (a kernel parameter).
struct RopeFreqs {
  float f[kMaxRopeHalf];
};

__global__ void rope_kernel(float* x, int64_t T, int64_t heads, int64_t hd, int64_t ld,
                            int64_t pos0, RopeFreqs fr, bool inverse) {
  const int64_t half = hd / 2, n = T * half;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += stride) {
    const int64_t t = i / half, p = i % half;
    float c, s;
    rope_cos_sin(static_cast<float>(pos0 + t), fr.f[p], inverse, &c, &s);
    float* row = x + t * ld;
    for (int64_t h = 0; h < heads; ++h)
      rope_rotate_pair(row + h * hd + p, row + h * hd + p + half, c, s);
  }
}

// ---- reductions (fixed trees) ----

struct MaxOp {
  // std::max(a, b) of attention.cc: a NaN b never replaces a.
  __device__ float operator()(float a, float b) const { return a < b ? b : a; }
};
struct SumOp {
  __device__ float operator()(float a, float b) const { return a + b; }
};

template <typename Op>
__device__ float warp_reduce(float v, Op op) {
  for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// The block's reduction of v (every thread passes one value); every thread gets the result.
// `sh`: 32 floats of shared memory.
template <typename Op>
__device__ float block_reduce(float v, Op op, float identity, float* sh) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  v = warp_reduce(v, op);
  __syncthreads();  // sh may still be read from a previous reduction
  if (lane == 0) sh[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = lane < nwarps ? sh[lane] : identity;
    v = warp_reduce(v, op);
    if (lane == 0) sh[0] = v;
  }
  __syncthreads();
  return sh[0];
}

struct AttnArgs {
  const float* q;
  const float* k;
  const float* v;
  const uint8_t* key_mask;                  // may be null
  int64_t T, Tk, pos0, nH, nKV, hd, group;  // group = nH / nKV
  float scale;
  bool causal;
};

// S[0..Tk) = the masked softmax of query row t's scores against kv head g, exactly as
// masked_softmax_rows of attention.cc: invisible keys -inf, then max-subtracted exp, the sum,
// one reciprocal; a row with no visible key becomes zeros. q_s: the query row (hd floats in
// shared memory). Ends with the block synchronized.
__device__ void masked_softmax_scores(const AttnArgs& a, const float* q_s, int64_t t, int64_t g,
                                      float* S, float* red) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  const int64_t ldk = a.nKV * a.hd;
  const int64_t visible = a.causal ? (a.Tk < a.pos0 + t + 1 ? a.Tk : a.pos0 + t + 1) : a.Tk;
  for (int64_t j = warp; j < a.Tk; j += nwarps) {  // a warp per key: coalesced k rows
    const bool vis = j < visible && (a.key_mask == nullptr || a.key_mask[j] != 0);
    float sc = -INFINITY;
    if (vis) {  // uniform over the warp
      const float* kj = a.k + j * ldk + g * a.hd;
      float acc = 0.0f;
      for (int64_t d = lane; d < a.hd; d += 32) acc += q_s[d] * kj[d];
      sc = a.scale * warp_reduce(acc, SumOp());
    }
    if (lane == 0) S[j] = sc;
  }
  __syncthreads();
  float mx = -INFINITY;
  for (int64_t j = threadIdx.x; j < a.Tk; j += blockDim.x) mx = MaxOp()(mx, S[j]);
  mx = block_reduce(mx, MaxOp(), -INFINITY, red);
  if (mx == -INFINITY) {  // nothing visible
    for (int64_t j = threadIdx.x; j < a.Tk; j += blockDim.x) S[j] = 0.0f;
    __syncthreads();
    return;
  }
  float sum = 0.0f;
  for (int64_t j = threadIdx.x; j < a.Tk; j += blockDim.x) {
    const float e = S[j] == -INFINITY ? 0.0f : expf(S[j] - mx);
    S[j] = e;
    sum += e;
  }
  sum = block_reduce(sum, SumOp(), 0.0f, red);
  const float inv = 1.0f / sum;
  for (int64_t j = threadIdx.x; j < a.Tk; j += blockDim.x) S[j] *= inv;
  __syncthreads();
}

// Block (t, local head y): head h = h0 + y. S_global: [heads of the launch][T][Tk] of the
// workspace, or null when the scores fit in shared memory (after the query row).
__global__ void attention_forward_kernel(AttnArgs a, float* out, float* S_global, int64_t h0) {
  extern __shared__ float smem[];
  __shared__ float red[32];
  const int64_t t = blockIdx.x, h = h0 + blockIdx.y, g = h / a.group;
  const int64_t ldq = a.nH * a.hd, ldk = a.nKV * a.hd;
  float* q_s = smem;
  float* S =
      S_global ? S_global + (static_cast<int64_t>(blockIdx.y) * a.T + t) * a.Tk : smem + a.hd;
  for (int64_t d = threadIdx.x; d < a.hd; d += blockDim.x) q_s[d] = a.q[t * ldq + h * a.hd + d];
  __syncthreads();
  masked_softmax_scores(a, q_s, t, g, S, red);
  // O_h = P V_g, the keys in order.
  const float* vg = a.v + g * a.hd;
  for (int64_t d = threadIdx.x; d < a.hd; d += blockDim.x) {
    float acc = 0.0f;
    for (int64_t j = 0; j < a.Tk; ++j) acc += S[j] * vg[j * ldk + d];
    out[t * ldq + h * a.hd + d] = acc;
  }
}

// Block (t, local head y), h = h0 + y: P and dS of (t, h) into the workspace ([y][T][Tk] each),
// dq of (t, h) written.
__global__ void attention_backward_rows_kernel(AttnArgs a, const float* dout, float* dq,
                                               float* P_all, float* dS_all, int64_t h0) {
  extern __shared__ float smem[];
  __shared__ float red[32];
  const int64_t t = blockIdx.x, h = h0 + blockIdx.y, g = h / a.group;
  const int64_t ldq = a.nH * a.hd, ldk = a.nKV * a.hd;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  float* q_s = smem;
  float* do_s = smem + a.hd;
  const int64_t row = (static_cast<int64_t>(blockIdx.y) * a.T + t) * a.Tk;
  float* P = P_all + row;
  float* dS = dS_all + row;
  for (int64_t d = threadIdx.x; d < a.hd; d += blockDim.x) {
    q_s[d] = a.q[t * ldq + h * a.hd + d];
    do_s[d] = dout[t * ldq + h * a.hd + d];
  }
  __syncthreads();
  masked_softmax_scores(a, q_s, t, g, P, red);
  // dP_j = dO_t,h . v_j,g (every key, as the CPU's GEMM), held in dS.
  for (int64_t j = warp; j < a.Tk; j += nwarps) {
    const float* vj = a.v + j * ldk + g * a.hd;
    float acc = 0.0f;
    for (int64_t d = lane; d < a.hd; d += 32) acc += do_s[d] * vj[d];
    acc = warp_reduce(acc, SumOp());
    if (lane == 0) dS[j] = acc;
  }
  __syncthreads();
  float dot = 0.0f;
  for (int64_t j = threadIdx.x; j < a.Tk; j += blockDim.x) dot += P[j] * dS[j];
  dot = block_reduce(dot, SumOp(), 0.0f, red);
  // dS = P (dP - dot): masked keys and empty rows have P = 0, so dS = 0 there.
  for (int64_t j = threadIdx.x; j < a.Tk; j += blockDim.x) dS[j] = P[j] * (dS[j] - dot);
  __syncthreads();
  // dq_t,h = scale * dS K_g (written), the keys in order.
  const float* kg = a.k + g * a.hd;
  for (int64_t d = threadIdx.x; d < a.hd; d += blockDim.x) {
    float acc = 0.0f;
    for (int64_t j = 0; j < a.Tk; ++j) acc += dS[j] * kg[j * ldk + d];
    dq[t * ldq + h * a.hd + d] = a.scale * acc;
  }
}

// Block (key row j, kv head g = g_lo + y), for the query heads [h0, h1) of the launch (their P
// and dS at [h - h0][T][Tk]): dv_j,g += P_h^T dO_h and dk_j,g += scale dS_h^T Q_h for each of
// g's heads h in the launch, in order, each head's sum over the query rows in order and then
// added, as the CPU adds one GEMM per head; launches go in head order.
__global__ void attention_backward_kv_kernel(AttnArgs a, const float* dout, const float* P_all,
                                             const float* dS_all, float* dk, float* dv, int64_t h0,
                                             int64_t h1) {
  const int64_t j = blockIdx.x, g = h0 / a.group + blockIdx.y;
  const int64_t ldq = a.nH * a.hd, ldk = a.nKV * a.hd;
  const int64_t hs = g * a.group > h0 ? g * a.group : h0;
  const int64_t he = (g + 1) * a.group < h1 ? (g + 1) * a.group : h1;
  for (int64_t d = threadIdx.x; d < a.hd; d += blockDim.x) {
    float dv_acc = dv[j * ldk + g * a.hd + d];
    float dk_acc = dk[j * ldk + g * a.hd + d];
    for (int64_t h = hs; h < he; ++h) {
      const int64_t base = (h - h0) * a.T * a.Tk + j;
      float pv = 0.0f, pk = 0.0f;
      for (int64_t t = 0; t < a.T; ++t) {
        pv += P_all[base + t * a.Tk] * dout[t * ldq + h * a.hd + d];
        pk += dS_all[base + t * a.Tk] * a.q[t * ldq + h * a.hd + d];
      }
      dv_acc += pv;
      dk_acc += a.scale * pk;
    }
    dv[j * ldk + g * a.hd + d] = dv_acc;
    dk[j * ldk + g * a.hd + d] = dk_acc;
  }
}

AttnArgs attn_args(const float* q, const float* k, const float* v, const uint8_t* key_mask,
                   int64_t T, int64_t Tk, int64_t pos0, const AttentionShape& s) {
  AttnArgs a;
  a.q = q;
  a.k = k;
  a.v = v;
  a.key_mask = key_mask;
  a.T = T;
  a.Tk = Tk;
  a.pos0 = pos0;
  a.nH = s.num_heads;
  a.nKV = s.num_kv_heads;
  a.hd = s.head_dim;
  a.group = s.num_heads / s.num_kv_heads;
  a.scale = s.scale;
  a.causal = s.causal;
  return a;
}

void check_shape(const AttentionShape& s, int64_t T, int64_t Tk) {
  const int64_t nH = s.num_heads, nKV = s.num_kv_heads, hd = s.head_dim;
  SY_CHECK(nH >= 1 && nKV >= 1 && nH % nKV == 0 && hd >= 1)
      << "attention: " << nH << " heads, " << nKV << " kv heads";
  SY_CHECK(hd <= kMaxHeadDim) << "cuda attention: head_dim " << hd << " above " << kMaxHeadDim;
  SY_CHECK(nH <= 65535 && T <= INT32_MAX && Tk <= INT32_MAX)
      << "cuda attention: " << nH << " heads, " << T << " query rows, " << Tk << " key rows";
}

}  // namespace

void CudaBackend::rope_apply(const ExecContext& c, float* x, int64_t T, int64_t heads, int64_t hd,
                             int64_t ld, int64_t pos0, const std::vector<float>& inv_freq,
                             bool inverse) {
  SY_CHECK(hd % 2 == 0 && static_cast<int64_t>(inv_freq.size()) == hd / 2)
      << "rope: head_dim " << hd << " and " << inv_freq.size() << " frequencies";
  SY_CHECK(hd / 2 <= kMaxRopeHalf) << "cuda rope: head_dim " << hd << " above " << 2 * kMaxRopeHalf;
  if (T <= 0 || heads <= 0 || hd == 0) return;
  RopeFreqs fr{};
  std::copy(inv_freq.begin(), inv_freq.end(), fr.f);
  const int64_t n = T * (hd / 2);
  rope_kernel<<<blocks_for(n), 256, 0, stream_of(c)>>>(x, T, heads, hd, ld, pos0, fr, inverse);
  SY_CUDA_LAUNCHED();
}

void CudaBackend::attention_forward(const ExecContext& c, const float* q, const float* k,
                                    const float* v, float* out, int64_t T, int64_t Tk, int64_t pos0,
                                    const AttentionShape& s, const uint8_t* key_mask) {
  check_shape(s, T, Tk);
  if (T == 0) return;
  const int64_t nH = s.num_heads, hd = s.head_dim, ldq = nH * hd;
  cudaStream_t st = stream_of(c);
  if (Tk == 0) {
    SY_CUDA_CHECK(cudaMemsetAsync(out, 0, static_cast<size_t>(T * ldq) * sizeof(float), st));
    return;
  }
  const AttnArgs a = attn_args(q, k, v, key_mask, T, Tk, pos0, s);
  const int64_t row_smem = (hd + Tk) * static_cast<int64_t>(sizeof(float));
  if (row_smem <= kSmemBytes) {  // the scores of a row in shared memory: one launch
    attention_forward_kernel<<<dim3(static_cast<unsigned>(T), static_cast<unsigned>(nH)), kThreads,
                               static_cast<size_t>(row_smem), st>>>(a, out, nullptr, 0);
    SY_CUDA_LAUNCHED();
    return;
  }
  // Scores in the workspace, as many heads per launch as the budget allows.
  const int64_t per_head = T * Tk;
  const int64_t hc = std::max<int64_t>(1, std::min<int64_t>(nH, kScratchBudget / per_head));
  float* S = scratch(c, hc * per_head);
  for (int64_t h0 = 0; h0 < nH; h0 += hc) {
    const int64_t n = std::min(hc, nH - h0);
    attention_forward_kernel<<<dim3(static_cast<unsigned>(T), static_cast<unsigned>(n)), kThreads,
                               static_cast<size_t>(hd) * sizeof(float), st>>>(a, out, S, h0);
    SY_CUDA_LAUNCHED();
  }
}

void CudaBackend::attention_backward(const ExecContext& c, const float* q, const float* k,
                                     const float* v, const float* dout, float* dq, float* dk,
                                     float* dv, int64_t T, int64_t Tk, int64_t pos0,
                                     const AttentionShape& s, const uint8_t* key_mask) {
  check_shape(s, T, Tk);
  if (T == 0) return;
  const int64_t nH = s.num_heads, nKV = s.num_kv_heads, hd = s.head_dim, ldq = nH * hd;
  cudaStream_t st = stream_of(c);
  if (Tk == 0) {  // the output was all zeros: no gradient reaches q (dk, dv are empty)
    SY_CUDA_CHECK(cudaMemsetAsync(dq, 0, static_cast<size_t>(T * ldq) * sizeof(float), st));
    return;
  }
  const AttnArgs a = attn_args(q, k, v, key_mask, T, Tk, pos0, s);
  const int64_t G = nH / nKV;
  // P and dS of a chunk of query heads in the workspace: 2 T Tk floats per head.
  const int64_t per_head = 2 * T * Tk;
  const int64_t hc = std::max<int64_t>(1, std::min<int64_t>(nH, kScratchBudget / per_head));
  float* ws = scratch(c, hc * per_head);
  float* P_all = ws;
  float* dS_all = ws + hc * T * Tk;
  const size_t smem = static_cast<size_t>(2 * hd) * sizeof(float);
  for (int64_t h0 = 0; h0 < nH; h0 += hc) {
    const int64_t h1 = std::min(nH, h0 + hc);
    const int64_t kv_heads = (h1 - 1) / G - h0 / G + 1;  // the kv heads the chunk touches
    attention_backward_rows_kernel<<<dim3(static_cast<unsigned>(T), static_cast<unsigned>(h1 - h0)),
                                     kThreads, smem, st>>>(a, dout, dq, P_all, dS_all, h0);
    SY_CUDA_LAUNCHED();
    attention_backward_kv_kernel<<<dim3(static_cast<unsigned>(Tk), static_cast<unsigned>(kv_heads)),
                                   kThreads, 0, st>>>(a, dout, P_all, dS_all, dk, dv, h0, h1);
    SY_CUDA_LAUNCHED();
  }
}

}  // namespace cuda
}  // namespace sy
