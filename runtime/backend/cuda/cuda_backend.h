// The "cuda" backend: device memory from cudaMalloc, cuBLAS for every GEMM, and CUDA kernels for
// the rest of the Backend table (runtime/backend/backend.h), on the stream of the ExecContext
// (null: the legacy default stream). Built whenever CMake finds a CUDA toolkit; registered always
// in such a build, and unavailable_reason() says why it cannot run where no device is visible
// (make_context then refuses it, and the conformance suite skips it with that message).
//
// The class is declared here and defined across this folder, one group of ops per file:
//   cuda_backend.cc   registration, device choice (the local rank), memory, copies, cuBLAS
//                     GEMMs, quantized linear (dequantize tiles + cuBLAS)
//   capacity.cu       the capacity plan (the pipeline of runtime/kernels/capacity_math.h)
//   gemm.cu           the row-stable GEMM of deterministic contexts, dequantization
//   elementwise.cu    activations, SwiGLU, adds, biases, embeddings, axpy, scatter-add
//   rows.cu           softmax, logsumexp, top-k, norms (per-row math from runtime/kernels/*.h)
//   attention.cu      RoPE, attention forward and backward
//   moe.cu            routing helpers and the MoE data path (gather, combine, scatter, gates)
//   loss_optim.cu     cross-entropy, switch aux loss, AdamW, reductions
// Per-element and per-row arithmetic comes from the SY_HD functions of runtime/kernels/ (math.h,
// norm.h, quant_math.h, hash_route.h, attention.h), the same code the CPU backend runs, so the
// CPU tests exercise it.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "runtime/backend/backend.h"
#include "runtime/core/check.h"

namespace sy {
namespace cuda {

// Fatal on a CUDA runtime error, naming the call and the error.
#define SY_CUDA_CHECK(expr)                                               \
  do {                                                                    \
    const cudaError_t sy_cuda_err_ = (expr);                              \
    SY_CHECK(sy_cuda_err_ == cudaSuccess)                                 \
        << "cuda: " << #expr << ": " << cudaGetErrorString(sy_cuda_err_); \
  } while (0)
#define SY_CUBLAS_CHECK(expr)                                                 \
  do {                                                                        \
    const cublasStatus_t sy_blas_st_ = (expr);                                \
    SY_CHECK(sy_blas_st_ == CUBLAS_STATUS_SUCCESS)                            \
        << "cublas: " << #expr << ": " << cublasGetStatusString(sy_blas_st_); \
  } while (0)
// After a kernel launch: a bad configuration is reported at the launch site.
#define SY_CUDA_LAUNCHED() SY_CUDA_CHECK(cudaGetLastError())

inline cudaStream_t stream_of(const ExecContext& c) {
  return static_cast<cudaStream_t>(c.stream);
}
// Blocks of `threads` covering n work items (at least one block; capped for grid-stride loops).
inline unsigned blocks_for(int64_t n, unsigned threads = 256) {
  const int64_t b = (n + threads - 1) / threads;
  return static_cast<unsigned>(b < 1 ? 1 : (b > 65535 * 16 ? 65535 * 16 : b));
}

class CudaBackend final : public Backend {
 public:
  CudaBackend();
  ~CudaBackend() override;

  const char* name() const override { return "cuda"; }
  Device device() const override { return Device{DeviceKind::kCuda, device_ < 0 ? 0 : device_}; }
  std::string unavailable_reason() const override { return unavailable_; }
  bool supports_bf16() const override { return true; }   // CUBLAS_COMPUTE_32F_FAST_16BF (gemm.cu)
  bool groups_experts() const override { return true; }  // cublasGemmGroupedBatchedEx

  // ---- Memory ----
  void* alloc(int64_t bytes) override;
  void free(void* p) override;
  void copy_from_host(void* dst, const void* src, int64_t bytes) override;
  void copy_to_host(void* dst, const void* src, int64_t bytes) override;
  void copy_within(void* dst, const void* src, int64_t bytes) override;
  void zero(void* dst, int64_t bytes) override;
  bool host_accessible() const override { return false; }

  // ---- the operation table ----
  void copy(const ExecContext& c, void* dst, const void* src, int64_t bytes) override;
  void fill_zero(const ExecContext& c, void* dst, int64_t bytes) override;
  void synchronize(const ExecContext& c) override;
  void gemm(const ExecContext& c, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K,
            float alpha, const float* A, int64_t lda, const float* B, int64_t ldb, float beta,
            float* C, int64_t ldc) override;
  void linear_forward(const ExecContext& c, const float* x_TI, const float* W_OI, float* y_TO,
                      int64_t T, int64_t I, int64_t O, float beta) override;
  void linear_backward(const ExecContext& c, const float* x_TI, const float* W_OI,
                       const float* dy_TO, float* dW_OI, float* dx_TI, int64_t T, int64_t I,
                       int64_t O, bool accumulate_dx) override;
  void grouped_linear_forward(const ExecContext& c, const float* x_RI, const float* W_EOI,
                              float* y_RO, const int32_t* row_offsets_E1, int64_t E, int64_t I,
                              int64_t O) override;
  void grouped_linear_backward(const ExecContext& c, const float* x_RI, const float* W_EOI,
                               const float* dy_RO, float* dW_EOI, float* dx_RI,
                               const int32_t* row_offsets_E1, int64_t E, int64_t I, int64_t O,
                               bool accumulate_dx) override;
  void linear_forward_quantized(const ExecContext& c, const float* x_TI, const QuantizedMatrix& q,
                                float* y_TO, int64_t T, float beta) override;
  void dequantize_rows(const ExecContext& c, const QuantizedMatrix& q, int64_t row0, int64_t rows,
                       float* out_RI) override;
  void softmax_rows(const ExecContext& c, const float* s, float* p, int64_t rows,
                    int64_t n) override;
  void logsumexp_rows(const ExecContext& c, const float* s, float* out, int64_t rows,
                      int64_t n) override;
  void topk_rows(const ExecContext& c, const float* v, int64_t rows, int64_t n, int64_t k,
                 int32_t* ids, float* vals) override;
  void softmax_backward_rows(const ExecContext& c, const float* p, const float* dp, float* ds,
                             int64_t rows, int64_t n, bool accumulate) override;
  void silu_inplace(const ExecContext& c, float* x, int64_t n) override;
  void gelu_inplace(const ExecContext& c, float* x, int64_t n) override;
  void silu_backward(const ExecContext& c, const float* x, const float* dy, float* dx,
                     int64_t n) override;
  void gelu_backward(const ExecContext& c, const float* x, const float* dy, float* dx,
                     int64_t n) override;
  void swiglu(const ExecContext& c, const float* g, const float* u, float* a, int64_t n) override;
  void swiglu_backward(const ExecContext& c, const float* g, const float* u, const float* da,
                       float* dg, float* du, int64_t n) override;
  void add_inplace(const ExecContext& c, float* y, const float* x, int64_t n) override;
  void add_bias_rows(const ExecContext& c, const float* b_N, int64_t R, int64_t N,
                     float* y_RN) override;
  void embedding_rows(const ExecContext& c, const float* table_VD, int64_t V, const int32_t* ids_T,
                      int64_t T, int64_t D, float* out_TD) override;
  void axpy(const ExecContext& c, const float* alpha, const float* x, float* y, int64_t n,
            bool accumulate) override;
  void scatter_add_rows(const ExecContext& c, const float* src_TD, const int32_t* index_T,
                        int64_t T, int64_t D, float* dst) override;
  void bias_broadcast_rows(const ExecContext& c, const float* b_N, int64_t R, int64_t N,
                           float* y_RN) override;
  void bias_backward_rows(const ExecContext& c, const float* dy_RN, int64_t R, int64_t N,
                          float* db_N) override;
  void rmsnorm_forward(const ExecContext& c, const float* x_TD, const float* w_D, float* y_TD,
                       float* rstd_T, int64_t T, int64_t D, float eps) override;
  void rmsnorm_backward(const ExecContext& c, const float* x_TD, const float* w_D,
                        const float* rstd_T, const float* dy_TD, float* dx_TD, float* dw_D,
                        int64_t T, int64_t D) override;
  void layernorm_forward(const ExecContext& c, const float* x_TD, const float* w_D,
                         const float* b_D, float* y_TD, int64_t T, int64_t D, float eps) override;
  void add_layernorm_forward(const ExecContext& c, const float* a_TD, const float* r_TD,
                             const float* w_D, const float* b_D, float* y_TD, int64_t T, int64_t D,
                             float eps) override;
  void layernorm_backward(const ExecContext& c, const float* x_TD, const float* w_D,
                          const float* dy_TD, float* dx_TD, float* dw_D, float* db_D, int64_t T,
                          int64_t D, float eps) override;
  void rope_apply(const ExecContext& c, float* x, int64_t T, int64_t heads, int64_t hd, int64_t ld,
                  int64_t pos0, const std::vector<float>& inv_freq, bool inverse) override;
  void attention_forward(const ExecContext& c, const float* q, const float* k, const float* v,
                         float* out, int64_t T, int64_t Tk, int64_t pos0, const AttentionShape& s,
                         const uint8_t* key_mask) override;
  void attention_backward(const ExecContext& c, const float* q, const float* k, const float* v,
                          const float* dout, float* dq, float* dk, float* dv, int64_t T, int64_t Tk,
                          int64_t pos0, const AttentionShape& s, const uint8_t* key_mask) override;
  double cross_entropy_sum(const ExecContext& c, const float* logits_TV, const int32_t* target_T,
                           int64_t T, int64_t V, int64_t* count) override;
  void cross_entropy_backward(const ExecContext& c, const float* logits_TV, const int32_t* target_T,
                              int64_t T, int64_t V, float scale, float* dlogits_TV) override;
  Status capacity_plan(const ExecContext& c, const int32_t* ids_TK, const float* rank_p_TK,
                       int64_t T, int64_t E, int64_t K, int64_t D, const CapacityConfig& cfg,
                       const uint8_t* mask_T, CapacityPlan* plan) override;
  void gather_topk_probs(const ExecContext& c, const float* probs_TE, const int32_t* ids_TK,
                         int64_t T, int64_t E, int64_t K, float* rank_p_TK) override;
  void hash_route(const ExecContext& c, const int32_t* table_VK, int64_t V, uint64_t seed,
                  const int32_t* token_ids_T, int64_t T, int64_t E, int64_t K, int32_t* ids_TK,
                  float* logits_TE, float* probs_TE, float* weights_TK) override;
  void normalize_rows(const ExecContext& c, float* w, int64_t rows, int64_t n) override;
  void topk_weights_backward(const ExecContext& c, const float* dw_TK, const float* vals_TK,
                             const int32_t* ids_TK, int64_t T, int64_t E, int64_t K,
                             bool normalized, float* dp_TE) override;
  double switch_aux_loss(const ExecContext& c, const float* probs_TE, const int32_t* topk_ids_TK,
                         int64_t T, int64_t E, int64_t K, float alpha, float* dprobs_TE,
                         bool accumulate) override;
  void gather_rows(const ExecContext& c, const float* x_TD, const int32_t* order_A_R, int64_t R,
                   int64_t K, int64_t D, float* out_RD) override;
  void combine_rows(const ExecContext& c, const float* rows_RD, const int32_t* row_of_TK,
                    const float* w_TK, int64_t T, int64_t K, int64_t D, float* y_TD) override;
  void scatter_rows_weighted(const ExecContext& c, const float* dy_TD, const int32_t* order_A_R,
                             const float* w_TK, int64_t R, int64_t K, int64_t D,
                             float* out_RD) override;
  void combine_weights_backward(const ExecContext& c, const float* dy_TD, const float* rows_RD,
                                const int32_t* row_of_TK, int64_t T, int64_t K, int64_t D,
                                float* dw_TK) override;
  void gated_add_rows(const ExecContext& c, float* g_T, const float* s_TD, const uint8_t* mask_T,
                      int64_t T, int64_t D, float* y_TD) override;
  void gated_add_rows_backward(const ExecContext& c, const float* dy_TD, const float* s_TD,
                               const float* g_T, const uint8_t* mask_T, int64_t T, int64_t D,
                               float* ds_TD, float* dlogit_T) override;
  void adamw_update(const ExecContext& c, float* w, const float* g, float* m, float* v, int64_t n,
                    const AdamWStep& s) override;
  double sum_squares(const ExecContext& c, const float* x, int64_t n) override;
  float dot(const ExecContext& c, const float* x, const float* y, int64_t n) override;
  bool all_finite(const ExecContext& c, const float* x, int64_t n) override;
  void dot_add(const ExecContext& c, const float* x, const float* y, int64_t n,
               float* out) override;

  // ---- shared by the op files ----
  // At least n floats of the context's workspace (device memory; contents not kept).
  static float* scratch(const ExecContext& c, int64_t n);
  // A small device buffer for scalar results of reductions (kSmallDoubles doubles), and its
  // read-back on the host after the stream finishes.
  static constexpr int kSmallDoubles = 8;
  double* small_results(const ExecContext& c);
  void read_small_results(const ExecContext& c, double* host, int n);
  // The device copy of a host QuantizedMatrix (uploaded once per matrix, by its uid).
  struct DeviceQuant {
    const uint8_t* data = nullptr;
    const float* scales = nullptr;
  };
  DeviceQuant device_quant(const QuantizedMatrix& q);
  cublasHandle_t blas(const ExecContext& c);

 private:
  int device_ = -1;
  std::string unavailable_;
  std::mutex mu_;
  // grouped_linear_forward (gemm.cu): the host arguments of cublasGemmGroupedBatchedEx, kept
  // and grown (under mu_), and whether cuBLAS refused it, per compute type ([0] fp32, [1] bf16).
  struct GroupedGemmArgs {
    std::vector<cublasOperation_t> ta, tb;
    std::vector<int> m, n, k, lda, ldb, ldc, size;
    std::vector<float> alpha, beta;
    std::vector<void*> ptrs;  // every group's A, then B, then C: copied to the device
  };
  GroupedGemmArgs grouped_;
  bool grouped_refused_[2] = {false, false};
  cublasHandle_t blas_ = nullptr;
  double* small_ = nullptr;
  std::map<uint64_t, std::pair<void*, void*>> quant_;  // uid -> (data, scales) on the device
  // The capacity plan's (capacity.cu) device workspace and pinned host staging, grown when a
  // call needs more and reused otherwise; plan_mu_ guards both for the whole (synchronous) call.
  std::mutex plan_mu_;
  void* plan_ws_ = nullptr;
  size_t plan_ws_bytes_ = 0;
  void* plan_host_ = nullptr;
  size_t plan_host_bytes_ = 0;
  void* plan_workspace(size_t bytes);  // at least bytes of device memory (contents not kept)
  void* plan_staging(size_t bytes);    // at least bytes of pinned host memory
};

}  // namespace cuda
}  // namespace sy
