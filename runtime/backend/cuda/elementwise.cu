// The elementwise group of the CUDA backend (cuda_backend.h): activations, SwiGLU, residual and
// bias adds, bias gradients, embedding lookup, axpy, scatter-add. Per-element math is the SY_HD
// code of runtime/kernels/math.h that the CPU backend runs.
//
// Kernels:
//   activations, SwiGLU, add_inplace, axpy   grid-stride loop, one element per iteration
//   add_bias_rows, bias_broadcast_rows       2-D grid: columns in x, rows grid-strided in y
//   bias_backward_rows                       column sums in row order: one thread per column;
//                                            past kColChunk * 2 rows, fixed chunks of kColChunk
//                                            rows (partials in scratch), then per column the
//                                            partials in chunk order
//   embedding_rows                           one block finds the first bad id (no atomics), a 2-D
//                                            copy kernel skips bad ids, the host reads the verdict
//   scatter_add_rows                         stable radix sort of (index, t) pairs (cub), then
//                                            a block per run of equal indices adds its rows in
//                                            increasing t
// Reproducible: no floating-point atomics, every sum in a fixed order.
#include <cub/device/device_radix_sort.cuh>

#include <climits>
#include <cstdint>

#include "runtime/backend/cuda/cuda_backend.h"
#include "runtime/backend/cuda/kernel_util.cuh"
#include "runtime/kernels/math.h"

namespace sy {
namespace cuda {
namespace {

constexpr unsigned kThreads = 256;

// ---- elementwise maps ----------------------------------------------------------------------

struct SiluOp {
  float* x;
  __device__ void operator()(int64_t i) const { x[i] = silu(x[i]); }
};
struct GeluOp {
  float* x;
  __device__ void operator()(int64_t i) const { x[i] = gelu(x[i]); }
};
struct SiluBackwardOp {
  const float* x;
  const float* dy;
  float* dx;
  __device__ void operator()(int64_t i) const { dx[i] = dy[i] * silu_grad(x[i]); }
};
struct GeluBackwardOp {
  const float* x;
  const float* dy;
  float* dx;
  __device__ void operator()(int64_t i) const { dx[i] = dy[i] * gelu_grad(x[i]); }
};
struct SwigluOp {
  const float* g;
  const float* u;
  float* a;
  __device__ void operator()(int64_t i) const { a[i] = silu(g[i]) * u[i]; }
};
struct SwigluBackwardOp {
  const float* g;
  const float* u;
  const float* da;
  float* dg;  // may alias da: swiglu_backward_elem reads every input before it writes
  float* du;
  __device__ void operator()(int64_t i) const {
    float dgi, dui;
    swiglu_backward_elem(g[i], u[i], da[i], &dgi, &dui);
    du[i] = dui;
    dg[i] = dgi;
  }
};
struct AddOp {
  float* y;
  const float* x;
  __device__ void operator()(int64_t i) const { y[i] = y[i] + x[i]; }
};
// y = a x (+ y): the product rounded on its own (__fmul_rn is never contracted into an FMA), as
// the CPU computes it, so both backends give the same bits.
struct AxpyOp {
  const float* alpha;
  const float* x;
  float* y;
  bool accumulate;
  __device__ void operator()(int64_t i) const {
    const float ax = __fmul_rn(*alpha, x[i]);
    y[i] = accumulate ? __fadd_rn(y[i], ax) : ax;
  }
};

// ---- row-broadcast bias ops ([R, N]) -------------------------------------------------------

inline dim3 rows_grid(int64_t R, int64_t N) {
  const int64_t gy = R < 65535 ? R : 65535;
  return dim3(blocks_for(N, kThreads), static_cast<unsigned>(gy));
}

// y[r, n] += b[n] (add == true) or y[r, n] = b[n] (b null: 0).
__global__ void bias_rows_kernel(const float* b, int64_t R, int64_t N, float* y, bool add) {
  for (int64_t r = blockIdx.y; r < R; r += gridDim.y) {
    float* yr = y + r * N;
    for (int64_t n = thread_index(); n < N; n += thread_stride()) {
      const float bn = b ? b[n] : 0.0f;
      yr[n] = add ? yr[n] + bn : bn;
    }
  }
}

// ---- embedding -----------------------------------------------------------------------------

// One block: result[0] = the first t whose id is outside [0, V) (-1 when none), result[1] = its id.
__global__ void first_bad_id_kernel(const int32_t* ids, int64_t T, int64_t V, double* result) {
  __shared__ long long sh[32];
  long long first = LLONG_MAX;
  for (int64_t t = threadIdx.x; t < T; t += blockDim.x) {
    const int32_t id = ids[t];
    if (id < 0 || id >= V) {
      first = t;  // t only grows in this thread's loop: its first hit is its smallest
      break;
    }
  }
  for (int o = 16; o > 0; o >>= 1) {
    const long long other = __shfl_xor_sync(0xffffffffu, first, o);
    first = other < first ? other : first;
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) sh[warp] = first;
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < static_cast<int>(blockDim.x >> 5); ++w)
      first = sh[w] < first ? sh[w] : first;
    result[0] = first == LLONG_MAX ? -1.0 : static_cast<double>(first);
    result[1] = first == LLONG_MAX ? 0.0 : static_cast<double>(ids[first]);
  }
}

// out[t] = table[ids[t]]; rows with a bad id are left alone (the host reports them).
__global__ void embedding_kernel(const float* table, int64_t V, const int32_t* ids, int64_t T,
                                 int64_t D, float* out) {
  for (int64_t t = blockIdx.y; t < T; t += gridDim.y) {
    const int32_t id = ids[t];
    if (id < 0 || id >= V) continue;
    const float* src = table + static_cast<int64_t>(id) * D;
    float* dst = out + t * D;
    for (int64_t d = thread_index(); d < D; d += thread_stride()) dst[d] = src[d];
  }
}

// ---- scatter-add ---------------------------------------------------------------------------

__global__ void iota_kernel(int32_t* v, int64_t n) {
  for (int64_t i = thread_index(); i < n; i += thread_stride()) v[i] = static_cast<int32_t>(i);
}

// keys: the indices sorted (stably), rows_t: their t. The block of position i, when i starts a run
// of equal keys, adds that run's source rows into dst[key] in increasing t: the CPU's order.
// blockIdx.y (grid-strided) splits the D columns.
__global__ void scatter_add_sorted_kernel(const float* src, const int32_t* keys,
                                          const int32_t* rows_t, int64_t T, int64_t D, float* dst) {
  for (int64_t i = blockIdx.x; i < T; i += gridDim.x) {
    const int32_t key = keys[i];
    if (i > 0 && keys[i - 1] == key) continue;  // not the start of a run (uniform in the block)
    // The run's end: the keys equal to key form a prefix of every window past the run's start.
    int64_t end = i + 1;
    for (;;) {
      const int64_t p = end + threadIdx.x;
      const int count = __syncthreads_count(p < T && keys[p] == key);
      end += count;
      if (count < static_cast<int>(blockDim.x)) break;
    }
    float* out = dst + static_cast<int64_t>(key) * D;
    for (int64_t d = static_cast<int64_t>(blockIdx.y) * blockDim.x + threadIdx.x; d < D;
         d += static_cast<int64_t>(gridDim.y) * blockDim.x) {
      float acc = out[d];
      for (int64_t j = i; j < end; ++j) acc += src[static_cast<int64_t>(rows_t[j]) * D + d];
      out[d] = acc;
    }
  }
}

inline size_t align_up(size_t bytes) {
  return (bytes + 255) / 256 * 256;
}

}  // namespace

// ---- activations ---------------------------------------------------------------------------

void CudaBackend::silu_inplace(const ExecContext& c, float* x, int64_t n) {
  launch_map(c, SiluOp{x}, n);
}
void CudaBackend::gelu_inplace(const ExecContext& c, float* x, int64_t n) {
  launch_map(c, GeluOp{x}, n);
}
void CudaBackend::silu_backward(const ExecContext& c, const float* x, const float* dy, float* dx,
                                int64_t n) {
  launch_map(c, SiluBackwardOp{x, dy, dx}, n);
}
void CudaBackend::gelu_backward(const ExecContext& c, const float* x, const float* dy, float* dx,
                                int64_t n) {
  launch_map(c, GeluBackwardOp{x, dy, dx}, n);
}
void CudaBackend::swiglu(const ExecContext& c, const float* g, const float* u, float* a,
                         int64_t n) {
  launch_map(c, SwigluOp{g, u, a}, n);
}
void CudaBackend::swiglu_backward(const ExecContext& c, const float* g, const float* u,
                                  const float* da, float* dg, float* du, int64_t n) {
  launch_map(c, SwigluBackwardOp{g, u, da, dg, du}, n);
}

// ---- adds, biases --------------------------------------------------------------------------

void CudaBackend::add_inplace(const ExecContext& c, float* y, const float* x, int64_t n) {
  launch_map(c, AddOp{y, x}, n);
}

void CudaBackend::add_bias_rows(const ExecContext& c, const float* b_N, int64_t R, int64_t N,
                                float* y_RN) {
  if (R <= 0 || N <= 0) return;
  bias_rows_kernel<<<rows_grid(R, N), kThreads, 0, stream_of(c)>>>(b_N, R, N, y_RN, true);
  SY_CUDA_LAUNCHED();
}

void CudaBackend::bias_broadcast_rows(const ExecContext& c, const float* b_N, int64_t R, int64_t N,
                                      float* y_RN) {
  if (R <= 0 || N <= 0) return;
  bias_rows_kernel<<<rows_grid(R, N), kThreads, 0, stream_of(c)>>>(b_N, R, N, y_RN, false);
  SY_CUDA_LAUNCHED();
}

void CudaBackend::bias_backward_rows(const ExecContext& c, const float* dy_RN, int64_t R, int64_t N,
                                     float* db_N) {
  if (R <= 0 || N <= 0) return;
  const int64_t need = col_scratch(R, N);  // up to 2 * kColChunk rows: the CPU's order exactly
  column_sums(stream_of(c), RowsTerm{dy_RN, N}, R, N, db_N,
              need > 0 ? CudaBackend::scratch(c, need) : nullptr);
}

// ---- embedding, axpy, scatter-add ----------------------------------------------------------

void CudaBackend::embedding_rows(const ExecContext& c, const float* table_VD, int64_t V,
                                 const int32_t* ids_T, int64_t T, int64_t D, float* out_TD) {
  if (T <= 0) return;
  const cudaStream_t st = stream_of(c);
  double* verdict = small_results(c);
  first_bad_id_kernel<<<1, kThreads, 0, st>>>(ids_T, T, V, verdict);
  SY_CUDA_LAUNCHED();
  if (D > 0) {
    embedding_kernel<<<rows_grid(T, D), kThreads, 0, st>>>(table_VD, V, ids_T, T, D, out_TD);
    SY_CUDA_LAUNCHED();
  }
  double host[2];
  read_small_results(c, host, 2);
  SY_CHECK(host[0] < 0) << "embedding: token " << static_cast<int64_t>(host[0]) << " has id "
                        << static_cast<int64_t>(host[1]) << ", outside [0, " << V << ")";
}

void CudaBackend::axpy(const ExecContext& c, const float* alpha, const float* x, float* y,
                       int64_t n, bool accumulate) {
  launch_map(c, AxpyOp{alpha, x, y, accumulate}, n);
}

void CudaBackend::scatter_add_rows(const ExecContext& c, const float* src_TD,
                                   const int32_t* index_T, int64_t T, int64_t D, float* dst) {
  if (T <= 0 || D <= 0) return;
  SY_CHECK(T <= INT32_MAX) << "scatter_add_rows: " << T << " rows exceed int32";
  const cudaStream_t st = stream_of(c);
  const int n = static_cast<int>(T);
  size_t sort_bytes = 0;
  SY_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(
      nullptr, sort_bytes, static_cast<const int32_t*>(nullptr), static_cast<int32_t*>(nullptr),
      static_cast<const int32_t*>(nullptr), static_cast<int32_t*>(nullptr), n, 0, 32, st));
  // Scratch: sorted keys, t in order, t sorted by key, cub's workspace (256-byte aligned each).
  const size_t ints = align_up(static_cast<size_t>(T) * sizeof(int32_t));
  const size_t total = 3 * ints + align_up(sort_bytes);
  char* ws =
      reinterpret_cast<char*>(CudaBackend::scratch(c, static_cast<int64_t>(total / sizeof(float))));
  int32_t* keys = reinterpret_cast<int32_t*>(ws);
  int32_t* t_in = reinterpret_cast<int32_t*>(ws + ints);
  int32_t* t_sorted = reinterpret_cast<int32_t*>(ws + 2 * ints);
  void* sort_ws = ws + 3 * ints;
  iota_kernel<<<blocks_for(T, kThreads), kThreads, 0, st>>>(t_in, T);
  SY_CUDA_LAUNCHED();
  // Radix sort is stable: equal indices keep increasing t.
  SY_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(sort_ws, sort_bytes, index_T, keys, t_in, t_sorted,
                                                n, 0, 32, st));
  const int64_t gx = T < (1 << 20) ? T : (1 << 20);
  const unsigned gy = blocks_for(D, kThreads) < 65535 ? blocks_for(D, kThreads) : 65535;
  scatter_add_sorted_kernel<<<dim3(static_cast<unsigned>(gx), gy), kThreads, 0, st>>>(
      src_TD, keys, t_sorted, T, D, dst);
  SY_CUDA_LAUNCHED();
}

}  // namespace cuda
}  // namespace sy
