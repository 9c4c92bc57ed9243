// GPU benchmarks of issue 14, for launch/gpu_check.sh: one JSON object per line on stdout
// (progress on stderr). Built when CMake found CUDA; needs a visible GPU (else it prints one
// {"bench":"none",...} line and exits 0, so a CPU-only machine can run it).
//
//   expert_gemm  the routed experts' GEMMs at the Qwen1.5-MoE shape (D 2048, E 60, top-4,
//                F 1408; gate+up as one [n, D] x [D, 2F] and down [n, F] x [F, D] per expert,
//                n = the expert's rows of a balanced routing of T tokens) three ways:
//                  per_expert  one cublasGemmEx per expert on one stream (the layer's
//                              experts before the grouped calls),
//                  grouped     one cublasGemmGroupedBatchedEx per projection,
//                  dense       one GEMM of the same FLOPs ([T*K, D] x [D, 2F], [T*K, F] x [F, D]),
//                in fp32 and bf16 (bf16 operands, fp32 accumulation), median of repeats;
//                ratio = grouped / dense TFLOP/s (issue target: >= 0.70 in bf16 on an H100).
//   moe_layer    MoeLayer (linear router, shared expert 5632, dropless) on the "cuda" backend,
//                forward and forward + backward (train_experts), T = 4096 and 16384, in both
//                GEMM precisions: fp32 (make_context("cuda", false)) and bf16
//                (make_context("cuda", false, GemmPrecision::kBf16): fp32 tensors, every GEMM
//                CUBLAS_COMPUTE_32F_FAST_16BF). The layer's routed experts run forward as one
//                grouped call per GEMM (Backend::grouped_linear_forward: gate, up and down, each
//                one cublasGemmGroupedBatchedEx), backward likewise
//                (Backend::grouped_linear_backward: per weight one grouped call for dx and one
//                for dW). Reported: tokens/s, and the share of the layer's time outside the
//                GEMMs of the same FLOPs in the same precision (1 - dense GEMM time / layer
//                time; the bf16 ceiling multiplies bf16-stored operands, so it leaves out the
//                layer's fp32-to-bf16 conversion). The same layer on the "cpu" backend of this
//                machine (fp32, one process, OpenBLAS threads = cores; run once per shape and
//                reused for the bf16 line) gives cpu_tokens_s and the ratio (issue target: >= 100x
//                at 16,384 tokens, forward).
//
// Not measured here (say so in the summary): the default model's router fine-tuning
// (bench/router_finetune.sh runs it with --backend cuda).
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "bench/bench_clock.h"
#include "runtime/backend/backend.h"
#include "runtime/core/check.h"
#include "runtime/core/memory.h"
#include "runtime/core/rng.h"
#include "runtime/moe/moe_layer.h"

namespace sy {
namespace {

#define CK(x)                                                            \
  do {                                                                   \
    cudaError_t e_ = (x);                                                \
    SY_CHECK(e_ == cudaSuccess) << #x << ": " << cudaGetErrorString(e_); \
  } while (0)
#define BK(x)                                                                         \
  do {                                                                                \
    cublasStatus_t s_ = (x);                                                          \
    SY_CHECK(s_ == CUBLAS_STATUS_SUCCESS) << #x << ": " << cublasGetStatusString(s_); \
  } while (0)

constexpr int64_t kD = 2048, kE = 60, kK = 4, kF = 1408, kFs = 5632;

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0.0 : v[v.size() / 2];
}

// Median seconds of fn() over reps runs after one warm-up, timed with events on stream 0.
double time_gpu(int reps, const std::function<void()>& fn) {
  cudaEvent_t a, b;
  CK(cudaEventCreate(&a));
  CK(cudaEventCreate(&b));
  fn();
  CK(cudaDeviceSynchronize());
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) {
    CK(cudaEventRecord(a, 0));
    fn();
    CK(cudaEventRecord(b, 0));
    CK(cudaEventSynchronize(b));
    float ms = 0;
    CK(cudaEventElapsedTime(&ms, a, b));
    t.push_back(ms * 1e-3);
  }
  CK(cudaEventDestroy(a));
  CK(cudaEventDestroy(b));
  return median(t);
}

// One GEMM problem per expert: C_e [n_e, N] = A_e [n_e, Kd] B_e^T (B_e [N, Kd], the Hugging
// Face [out, in] layout), row-major, as cuBLAS column-major C^T = B A^T.
struct Grouped {
  int64_t N = 0, Kd = 0;
  std::vector<int64_t> rows;  // n_e
  cudaDataType_t type = CUDA_R_32F;
  size_t elem = 4;
  void* A = nullptr;  // [sum n_e, Kd]
  void* B = nullptr;  // [E, N, Kd]
  void* C = nullptr;  // [sum n_e, N]
  void** dA = nullptr;
  void** dB = nullptr;
  void** dC = nullptr;
  int64_t total_rows() const {
    int64_t s = 0;
    for (int64_t r : rows) s += r;
    return s;
  }
  double flops() const { return 2.0 * static_cast<double>(total_rows()) * N * Kd; }
};

void fill_random(void* p, size_t count, cudaDataType_t type) {
  Rng rng(7);
  if (type == CUDA_R_32F) {
    std::vector<float> h(count);
    for (float& x : h) x = 0.02f * static_cast<float>(rng.normal());
    CK(cudaMemcpy(p, h.data(), count * 4, cudaMemcpyHostToDevice));
  } else {
    std::vector<__nv_bfloat16> h(count);
    for (auto& x : h) x = __float2bfloat16(0.02f * static_cast<float>(rng.normal()));
    CK(cudaMemcpy(p, h.data(), count * 2, cudaMemcpyHostToDevice));
  }
}

Grouped make_grouped(const std::vector<int64_t>& rows, int64_t N, int64_t Kd, cudaDataType_t type) {
  Grouped g;
  g.N = N;
  g.Kd = Kd;
  g.rows = rows;
  g.type = type;
  g.elem = type == CUDA_R_32F ? 4 : 2;
  const int64_t R = g.total_rows(), E = static_cast<int64_t>(rows.size());
  CK(cudaMalloc(&g.A, R * Kd * g.elem));
  CK(cudaMalloc(&g.B, E * N * Kd * g.elem));
  CK(cudaMalloc(&g.C, R * N * g.elem));
  fill_random(g.A, R * Kd, type);
  fill_random(g.B, E * N * Kd, type);
  std::vector<void*> a, b, c;
  int64_t r0 = 0;
  for (int64_t e = 0; e < E; ++e) {
    a.push_back(static_cast<char*>(g.A) + r0 * Kd * g.elem);
    b.push_back(static_cast<char*>(g.B) + e * N * Kd * g.elem);
    c.push_back(static_cast<char*>(g.C) + r0 * N * g.elem);
    r0 += rows[e];
  }
  for (auto* v : {&a, &b, &c}) {
    void** d = nullptr;
    CK(cudaMalloc(&d, E * sizeof(void*)));
    CK(cudaMemcpy(d, v->data(), E * sizeof(void*), cudaMemcpyHostToDevice));
    (v == &a ? g.dA : v == &b ? g.dB : g.dC) = d;
  }
  return g;
}

void free_grouped(Grouped* g) {
  for (void* p : {g->A, g->B, g->C, static_cast<void*>(g->dA), static_cast<void*>(g->dB),
                  static_cast<void*>(g->dC)})
    CK(cudaFree(p));
}

void per_expert(cublasHandle_t h, const Grouped& g) {
  const float one = 1.0f, zero = 0.0f;
  int64_t r0 = 0;
  for (size_t e = 0; e < g.rows.size(); ++e) {
    const int n = static_cast<int>(g.rows[e]);
    if (n > 0) {
      const char* A = static_cast<const char*>(g.A) + r0 * g.Kd * g.elem;
      const char* B = static_cast<const char*>(g.B) + e * g.N * g.Kd * g.elem;
      char* C = static_cast<char*>(g.C) + r0 * g.N * g.elem;
      BK(cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(g.N), n, static_cast<int>(g.Kd),
                      &one, B, g.type, static_cast<int>(g.Kd), A, g.type, static_cast<int>(g.Kd),
                      &zero, C, g.type, static_cast<int>(g.N), CUBLAS_COMPUTE_32F,
                      CUBLAS_GEMM_DEFAULT));
    }
    r0 += g.rows[e];
  }
}

void grouped(cublasHandle_t h, const Grouped& g) {
  const int E = static_cast<int>(g.rows.size());
  std::vector<cublasOperation_t> ta(E, CUBLAS_OP_T), tb(E, CUBLAS_OP_N);
  std::vector<int> m(E, static_cast<int>(g.N)), n(E), k(E, static_cast<int>(g.Kd)), gs(E, 1);
  std::vector<int> lda(E, static_cast<int>(g.Kd)), ldb(E, static_cast<int>(g.Kd)),
      ldc(E, static_cast<int>(g.N));
  std::vector<float> alpha(E, 1.0f), beta(E, 0.0f);
  for (int e = 0; e < E; ++e) n[e] = static_cast<int>(g.rows[e]);
  BK(cublasGemmGroupedBatchedEx(h, ta.data(), tb.data(), m.data(), n.data(), k.data(), alpha.data(),
                                g.dB, g.type, lda.data(), g.dA, g.type, ldb.data(), beta.data(),
                                g.dC, g.type, ldc.data(), E, gs.data(), CUBLAS_COMPUTE_32F));
}

void dense(cublasHandle_t h, const Grouped& g) {
  // One [R, Kd] x [Kd, N] GEMM (expert 0's weights: the same FLOPs, one problem).
  const float one = 1.0f, zero = 0.0f;
  BK(cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(g.N),
                  static_cast<int>(g.total_rows()), static_cast<int>(g.Kd), &one, g.B, g.type,
                  static_cast<int>(g.Kd), g.A, g.type, static_cast<int>(g.Kd), &zero, g.C, g.type,
                  static_cast<int>(g.N), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

// Rows per expert of a balanced routing of T tokens x K slots over E experts.
std::vector<int64_t> balanced_rows(int64_t T) {
  std::vector<int64_t> rows(kE, T * kK / kE);
  for (int64_t e = 0; e < (T * kK) % kE; ++e) ++rows[e];
  return rows;
}

// Seconds of the routed + shared GEMMs of one forward of T tokens (dense): the ceiling, per
// precision.
struct Ceiling {
  double fp32_s = 0, bf16_s = 0;
};
Ceiling expert_gemm_bench(cublasHandle_t h, int64_t T, bool print) {
  Ceiling dense_fwd;
  for (cudaDataType_t type : {CUDA_R_32F, CUDA_R_16BF}) {
    const char* tn = type == CUDA_R_32F ? "fp32" : "bf16";
    if (type == CUDA_R_32F)
      BK(cublasSetMathMode(h, CUBLAS_PEDANTIC_MATH));
    else
      BK(cublasSetMathMode(h, CUBLAS_DEFAULT_MATH));
    Grouped up = make_grouped(balanced_rows(T), 2 * kF, kD, type);
    Grouped down = make_grouped(balanced_rows(T), kD, kF, type);
    const double fl = up.flops() + down.flops();
    const double tp = time_gpu(10, [&] {
      per_expert(h, up);
      per_expert(h, down);
    });
    const double tg = time_gpu(10, [&] {
      grouped(h, up);
      grouped(h, down);
    });
    const double td = time_gpu(10, [&] {
      dense(h, up);
      dense(h, down);
    });
    {
      // + the shared expert (gate+up [T, D] x [D, 2Fs], down [T, Fs] x [Fs, D]).
      Grouped su = make_grouped({T}, 2 * kFs, kD, type), sd = make_grouped({T}, kD, kFs, type);
      const double ts = time_gpu(10, [&] {
        dense(h, su);
        dense(h, sd);
      });
      (type == CUDA_R_32F ? dense_fwd.fp32_s : dense_fwd.bf16_s) = td + ts;
      free_grouped(&su);
      free_grouped(&sd);
    }
    if (print)
      std::printf(
          "{\"bench\":\"expert_gemm\",\"dtype\":\"%s\",\"tokens\":%lld,\"gflop\":%.1f,"
          "\"per_expert_tflops\":%.1f,\"grouped_tflops\":%.1f,\"dense_tflops\":%.1f,"
          "\"grouped_vs_dense\":%.3f,\"per_expert_vs_dense\":%.3f}\n",
          tn, static_cast<long long>(T), fl * 1e-9, fl / tp * 1e-12, fl / tg * 1e-12,
          fl / td * 1e-12, td / tg, td / tp);
    std::fflush(stdout);
    free_grouped(&up);
    free_grouped(&down);
  }
  BK(cublasSetMathMode(h, CUBLAS_PEDANTIC_MATH));
  return dense_fwd;
}

std::unique_ptr<MoeLayer> make_layer(const char* backend, bool train,
                                     GemmPrecision precision = GemmPrecision::kFp32) {
  MoeLayerConfig c;
  c.d_model = kD;
  c.ffn_hidden = kF;
  c.num_experts = kE;
  c.top_k = kK;
  c.capacity_factor = 0;  // dropless
  c.shared_expert_hidden = kFs;
  c.train_experts = train;
  c.router.name = "linear";
  c.exec = make_context(backend, /*deterministic=*/false, precision);
  SY_CHECK(c.exec != nullptr) << backend << ": " << backend_unavailable(backend);
  auto l = MoeLayer::create(c);
  SY_CHECK(l.ok()) << l.status().ToString();
  return std::move(l).value();
}

// Median seconds of one forward (and backward when train) of T tokens on the layer's backend.
double layer_seconds(MoeLayer& l, int64_t T, bool train, int reps) {
  const ExecContext& c = l.ctx();
  Memory* m = c.backend;
  std::vector<float> hx(static_cast<size_t>(T * kD));
  Rng rng(11);
  for (float& v : hx) v = static_cast<float>(rng.normal());
  DeviceArray<float> x(m, hx), y(m, hx.size()), dy(m, hx), dx(m, hx.size());
  std::vector<double> t;
  for (int i = 0; i < reps + 1; ++i) {
    const double t0 = bench_now_s();
    SY_CHECK_OK(l.forward(x.data(), nullptr, T, y.data()));
    if (train) l.backward(dy.data(), dx.data());
    c.backend->synchronize(c);
    if (i > 0) t.push_back(bench_now_s() - t0);  // the first run warms up
  }
  return median(t);
}

int run() {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("{\"bench\":\"none\",\"reason\":\"no CUDA device visible\"}\n");
    return 0;
  }
  cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, 0));
  std::printf("{\"bench\":\"device\",\"name\":\"%s\",\"sm\":%d%d,\"memory_gib\":%.1f}\n", prop.name,
              prop.major, prop.minor, prop.totalGlobalMem / 1073741824.0);
  cublasHandle_t h;
  BK(cublasCreate(&h));
  std::vector<Ceiling> ceiling;
  for (int64_t T : {4096, 16384}) {
    std::fprintf(stderr, "expert GEMMs, %lld tokens\n", static_cast<long long>(T));
    ceiling.push_back(expert_gemm_bench(h, T, true));
  }
  BK(cublasDestroy(h));
  const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
  for (bool train : {false, true}) {
    std::unique_ptr<MoeLayer> gpu32 = make_layer("cuda", train);
    std::unique_ptr<MoeLayer> gpu16 = make_layer("cuda", train, GemmPrecision::kBf16);
    std::unique_ptr<MoeLayer> cpu = make_layer("cpu", train);
    for (size_t i = 0; i < 2; ++i) {
      const int64_t T = i == 0 ? 4096 : 16384;
      std::fprintf(stderr, "MoE layer %s, %lld tokens\n", train ? "fwd+bwd" : "fwd",
                   static_cast<long long>(T));
      const double cs = layer_seconds(*cpu, T, train, 1);
      for (GemmPrecision p : {GemmPrecision::kFp32, GemmPrecision::kBf16}) {
        const bool bf16 = p == GemmPrecision::kBf16;
        const double g = layer_seconds(bf16 ? *gpu16 : *gpu32, T, train, 5);
        // backward: 2 GEMMs per forward one
        const double gemm_s = (bf16 ? ceiling[i].bf16_s : ceiling[i].fp32_s) * (train ? 3.0 : 1.0);
        std::printf(
            "{\"bench\":\"moe_layer\",\"dtype\":\"%s\",\"pass\":\"%s\",\"tokens\":%lld,"
            "\"gpu_s\":%.5f,\"gpu_tokens_s\":%.0f,\"cpu_dtype\":\"fp32\",\"cpu_s\":%.4f,"
            "\"cpu_tokens_s\":%.0f,\"cpu_threads\":%u,\"gpu_vs_cpu\":%.1f,"
            "\"gemm_ceiling_s\":%.5f,\"outside_gemm_share\":%.3f}\n",
            gemm_precision_name(p), train ? "forward+backward" : "forward",
            static_cast<long long>(T), g, T / g, cs, T / cs, cores, cs / g, gemm_s,
            std::max(0.0, 1.0 - gemm_s / g));
        std::fflush(stdout);
      }
    }
  }
  std::printf(
      "{\"bench\":\"not_measured\",\"what\":\"router fine-tuning tokens/s "
      "(bench/router_finetune.sh with --backend cuda)\"}\n");
  return 0;
}

}  // namespace
}  // namespace sy

int main() {
  return sy::run();
}
