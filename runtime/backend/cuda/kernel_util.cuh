// Kernel building blocks shared by the CUDA backend's op files: grid-stride indices, element
// and row maps, fixed-shape (deterministic) warp and block reductions, and column sums in row
// order (direct, or in fixed chunks of kColChunk rows whose partial sums are added in chunk
// order). Internal linkage: each .cu gets its own copy of these kernels.
#pragma once

#include <cstdint>

#include "runtime/backend/cuda/cuda_backend.h"

namespace sy {
namespace cuda {
namespace {

constexpr unsigned kThreadRowBlock = 128;  // threads per block of the thread-per-row kernels
constexpr int64_t kColChunk = 128;         // rows per partial sum of a chunked column sum

__device__ __forceinline__ int64_t thread_index() {
  return static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
}
__device__ __forceinline__ int64_t thread_stride() {
  return static_cast<int64_t>(gridDim.x) * blockDim.x;
}

// ---- element and row maps ---------------------------------------------------------------

template <class F>
__global__ void map_kernel(F f, int64_t n) {
  for (int64_t i = thread_index(); i < n; i += thread_stride()) f(i);
}

template <class F>
void launch_map(const ExecContext& c, const F& f, int64_t n) {
  if (n <= 0) return;
  map_kernel<<<blocks_for(n, 256), 256, 0, stream_of(c)>>>(f, n);
  SY_CUDA_LAUNCHED();
}

template <class F>
__global__ void per_row_kernel(F f, int64_t rows) {
  for (int64_t r = thread_index(); r < rows; r += thread_stride()) f(r);
}
template <class F>
void launch_per_row(const ExecContext& c, const F& f, int64_t rows) {
  per_row_kernel<<<blocks_for(rows, kThreadRowBlock), kThreadRowBlock, 0, stream_of(c)>>>(f, rows);
  SY_CUDA_LAUNCHED();
}

// ---- block reductions (fixed shape: deterministic) ------------------------------------------

struct SumOp {
  template <typename T>
  __device__ T operator()(T a, T b) const {
    return a + b;
  }
};
// NaN never reaches it (the callers skip NaN as the CPU's `x > m ? x : m` does).
struct MaxOp {
  __device__ float operator()(float a, float b) const { return b > a ? b : a; }
};

// Butterfly within the warp: every lane ends with the same value (a + b == b + a bitwise).
template <typename T, class Op>
__device__ __forceinline__ T warp_reduce(T v, Op op) {
  for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// The block's reduction of v, returned to every thread. sh: 33 entries of shared memory. Every
// thread of the block must call it.
template <typename T, class Op>
__device__ T block_reduce(T v, Op op, T identity, T* sh) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int warps = static_cast<int>(blockDim.x >> 5);
  v = warp_reduce(v, op);
  __syncthreads();  // sh is free (a previous call's result has been read)
  if (lane == 0) sh[warp] = v;
  __syncthreads();
  if (warp == 0) {
    T x = lane < warps ? sh[lane] : identity;
    x = warp_reduce(x, op);
    if (lane == 0) sh[32] = x;
  }
  __syncthreads();
  return sh[32];
}

// ---- column sums in row order -------------------------------------------------------------

// The term of a plain column sum: element [r, n] of a row-major [R, N] matrix.
struct RowsTerm {
  const float* m;
  int64_t N;
  __device__ float operator()(int64_t r, int64_t n) const { return m[r * N + n]; }
};

template <class Term>
__global__ void col_sum_direct_kernel(Term term, int64_t R, int64_t N, float* out) {
  for (int64_t n = thread_index(); n < N; n += thread_stride()) {
    float acc = out[n];
    for (int64_t r = 0; r < R; ++r) acc += term(r, n);
    out[n] = acc;
  }
}
template <class Term>
__global__ void col_sum_partial_kernel(Term term, int64_t R, int64_t N, int64_t chunks,
                                       float* partial) {
  for (int64_t ch = blockIdx.y; ch < chunks; ch += gridDim.y) {
    const int64_t r0 = ch * kColChunk, r1 = r0 + kColChunk < R ? r0 + kColChunk : R;
    for (int64_t n = thread_index(); n < N; n += thread_stride()) {
      float acc = 0.0f;
      for (int64_t r = r0; r < r1; ++r) acc += term(r, n);
      partial[ch * N + n] = acc;
    }
  }
}
__global__ void col_sum_finish_kernel(const float* partial, int64_t chunks, int64_t N, float* out) {
  for (int64_t n = thread_index(); n < N; n += thread_stride()) {
    float acc = out[n];
    for (int64_t ch = 0; ch < chunks; ++ch) acc += partial[ch * N + n];
    out[n] = acc;
  }
}

inline int64_t col_chunks(int64_t R) {
  const int64_t chunks = (R + kColChunk - 1) / kColChunk;
  return chunks <= 2 ? 1 : chunks;
}
// Floats of scratch that column_sums needs for R rows of N columns.
inline int64_t col_scratch(int64_t R, int64_t N) {
  const int64_t chunks = col_chunks(R);
  return chunks == 1 ? 0 : chunks * N;
}
// partial: col_scratch(R, N) floats (unused when 0).
template <class Term>
void column_sums(cudaStream_t st, const Term& term, int64_t R, int64_t N, float* out,
                 float* partial) {
  const unsigned threads = 256;
  const int64_t chunks = col_chunks(R);
  if (chunks == 1) {
    col_sum_direct_kernel<<<blocks_for(N, threads), threads, 0, st>>>(term, R, N, out);
    SY_CUDA_LAUNCHED();
    return;
  }
  const dim3 grid(blocks_for(N, threads), static_cast<unsigned>(chunks < 65535 ? chunks : 65535));
  col_sum_partial_kernel<<<grid, threads, 0, st>>>(term, R, N, chunks, partial);
  SY_CUDA_LAUNCHED();
  col_sum_finish_kernel<<<blocks_for(N, threads), threads, 0, st>>>(partial, chunks, N, out);
  SY_CUDA_LAUNCHED();
}

}  // namespace
}  // namespace cuda
}  // namespace sy
