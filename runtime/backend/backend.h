// The device seam: every numeric operation that the routers, the MoE layer, the models and the
// trainer run goes through a Backend, found by name in a registry. A backend is a small table of
// operations on raw device pointers (in the spirit of ggml's backend interface); an ExecContext
// carries what a call needs besides its operands: the backend, the stream, the deterministic
// flag and scratch memory. The CPU backend (runtime/backend/cpu/) wraps the OpenBLAS and plain
// C++ kernels of runtime/kernels/; it is the only code that includes them (or cblas.h).
//
// Adding a backend (CUDA, say) = a folder runtime/backend/<name>/ with a class implementing
// Backend, plus one SY_REGISTER_BACKEND line in it; tests/runtime/backend_conformance_test.cc
// runs every registered backend against the same references.
//
// Pointers: every float/int pointer an op takes lives in the backend's memory (host memory for
// "cpu"). Host-side structures (QuantizedMatrix, CapacityPlan, RoPE frequency tables) are
// passed as host objects: a device backend keeps its own copies where it needs them.
// Shapes follow the legend of runtime/core/tensor.h (T tokens, D hidden, K top-k, R rows, ...).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "runtime/core/dtype.h"
#include "runtime/core/memory.h"
#include "runtime/core/status.h"
#include "runtime/kernels/op_types.h"

namespace sy {

struct QuantizedMatrix;
struct CapacityPlan;
struct CapacityConfig;
class Status;
class Backend;

// ---- devices, dtypes, buffers --------------------------------------------------------------

// kDevsim: the emulated device of runtime/backend/devsim/ (host memory the host may not touch).
enum class DeviceKind { kCpu, kCuda, kDevsim };

struct Device {
  DeviceKind kind = DeviceKind::kCpu;
  int index = 0;
  std::string str() const;  // "cpu", "cuda:0", "devsim"
  bool operator==(const Device& o) const { return kind == o.kind && index == o.index; }
};

// An owning, typed allocation in one backend's memory; move-only. numel elements of dtype.
class Buffer {
 public:
  Buffer() = default;
  Buffer(Backend* backend, DType dtype, int64_t numel);
  ~Buffer();
  Buffer(Buffer&& o) noexcept;
  Buffer& operator=(Buffer&& o) noexcept;
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;

  Backend* backend() const { return backend_; }
  Device device() const;
  DType dtype() const { return dtype_; }
  int64_t numel() const { return numel_; }
  int64_t bytes() const { return numel_ * dtype_bytes(dtype_); }
  void* data() { return ptr_; }
  const void* data() const { return ptr_; }
  template <typename T>
  T* as() {
    return static_cast<T*>(ptr_);
  }
  template <typename T>
  const T* as() const {
    return static_cast<const T*>(ptr_);
  }
  // Host <-> buffer copies of the whole buffer (bytes() bytes), through the backend.
  void copy_from_host(const void* src);
  void copy_to_host(void* dst) const;

 private:
  void release();
  Backend* backend_ = nullptr;
  DType dtype_ = DType::kFloat32;
  int64_t numel_ = 0;
  void* ptr_ = nullptr;
};

// Grow-only scratch memory of one context (contents not kept when it grows).
class Workspace {
 public:
  explicit Workspace(Backend* backend) : backend_(backend) {}
  // At least n floats, in the backend's memory.
  float* floats(int64_t n);
  int64_t bytes() const { return buf_.bytes(); }

 private:
  Backend* backend_;
  Buffer buf_;
};

// What an op needs besides its operands. Cheap to copy; the workspace is shared by copies.
// deterministic: every GEMM whose rows are tokens gives a row the same bits whatever batch,
// rank or rank count it is computed in (the CPU backend's row-stable kernels); off: the
// fastest kernels. replicated() is the same context with it off, for GEMMs that every rank
// runs on identical rows (replicated attention, the LM head), which agree across ranks anyway.
// GEMM arithmetic. kFp32: fp32 operands, fp32 accumulation (every backend). kBf16, the fast
// mode of a backend whose supports_bf16() says so (cuda: tensor cores): the GEMMs that are NOT
// row-stable (deterministic off, or replicated()) round their fp32 operands to bf16 and
// accumulate in fp32; outputs stay fp32, and every other op is unchanged. Deterministic GEMMs
// stay fp32, so P ranks == 1 rank still holds bitwise under --deterministic.
enum class GemmPrecision { kFp32, kBf16 };
const char* gemm_precision_name(GemmPrecision p);
// "fp32" or "bf16"; anything else is InvalidArgument.
StatusOr<GemmPrecision> parse_gemm_precision(const std::string& name);

struct ExecContext {
  Backend* backend = nullptr;
  void* stream = nullptr;  // the backend's stream (cudaStream_t); null on the CPU
  bool deterministic = false;
  GemmPrecision precision = GemmPrecision::kFp32;
  Workspace* workspace = nullptr;

  ExecContext replicated() const {
    ExecContext c = *this;
    c.deterministic = false;
    return c;
  }
  ExecContext with_deterministic(bool on) const {
    ExecContext c = *this;
    c.deterministic = on;
    return c;
  }
};

// The process's default context: the "cpu" backend, not deterministic. Components built
// without a context use it; a run that wants another backend or determinism makes its own
// with make_context() and hands it down (models, layers, routers, trainer).
const ExecContext& default_context();
// The context of the named backend with that deterministic flag and GEMM precision: made once
// per triple and kept for the process, with its own workspace (callers run their ops on it one
// at a time). Unknown name, a backend that cannot run here (Backend::unavailable_reason), or
// kBf16 on a backend without it (Backend::supports_bf16): nullptr (see backend_names(),
// backend_unavailable()).
const ExecContext* make_context(const std::string& backend, bool deterministic,
                                GemmPrecision precision = GemmPrecision::kFp32);

// ---- the operation table -------------------------------------------------------------------

// A backend is also the Memory its ops read and write (runtime/core/memory.h: alloc, free,
// synchronous host copies, copy_within, zero, host_accessible): layers allocate their tensors
// in it (Tensor(shape, ctx.backend)).
class Backend : public Memory {
 public:
  virtual const char* name() const = 0;
  virtual Device device() const = 0;
  const char* memory_name() const override { return name(); }
  // Empty when the backend can run here; else why not ("no CUDA device is visible: ..."): a
  // registered backend without its device (the CUDA backend built on a machine without a GPU).
  // make_context() refuses such a backend; nothing else of it may be called.
  virtual std::string unavailable_reason() const { return {}; }
  // Whether contexts of GemmPrecision::kBf16 may be made (the CPU backends compute fp32 only).
  virtual bool supports_bf16() const { return false; }
  // Whether the SwiGLU experts issue their GEMMs grouped (grouped_linear_forward/backward: one
  // call per weight across all experts, then one elementwise pass over all rows) rather than
  // expert by expert (gate, up, SwiGLU, down of one expert, then the next), which is what a CPU
  // wants: an expert's activations stay in cache between its GEMMs (grouped, the CPU layer was
  // 6-12% slower). The results are the same bits either way. cuda batches the grouped calls;
  // devsim groups too, so the tests run that path on the CPU's arithmetic.
  virtual bool groups_experts() const { return false; }

  // Memory on the context's stream (bytes).
  virtual void copy(const ExecContext& c, void* dst, const void* src, int64_t bytes) = 0;
  virtual void fill_zero(const ExecContext& c, void* dst, int64_t bytes) = 0;
  virtual void synchronize(const ExecContext& c) = 0;

  // ---- GEMMs (row-major) ----
  // C_MN = alpha op(A) op(B) + beta C; op(A) is M x K; beta = 0: C is not read (may hold NaN).
  // With c.deterministic, a GEMM whose A is token rows (trans_a false, lda == K) is row-stable.
  virtual void gemm(const ExecContext& c, bool trans_a, bool trans_b, int64_t M, int64_t N,
                    int64_t K, float alpha, const float* A, int64_t lda, const float* B,
                    int64_t ldb, float beta, float* C, int64_t ldc) = 0;
  // y_TO = x_TI W_OI^T (+ beta y_TO); W in the Hugging Face layout [out, in].
  virtual void linear_forward(const ExecContext& c, const float* x_TI, const float* W_OI,
                              float* y_TO, int64_t T, int64_t I, int64_t O, float beta) = 0;
  // dW_OI += dy^T x (when dW non-null); dx_TI = dy W (+= when accumulate_dx; when non-null).
  virtual void linear_backward(const ExecContext& c, const float* x_TI, const float* W_OI,
                               const float* dy_TO, float* dW_OI, float* dx_TI, int64_t T, int64_t I,
                               int64_t O, bool accumulate_dx) = 0;
  // The experts' forward GEMMs in one call: for each group e in [0, E), the rows
  // [off[e] - off[0], off[e+1] - off[0]) of x_RI times W_EOI + e*O*I transposed (as
  // linear_forward, beta 0) into the same rows of y_RO. row_offsets_E1 ([E+1]) is a HOST array.
  // Each row's result is linear_forward's for its group (bitwise under c.deterministic). This
  // default makes one linear_forward per non-empty group (cpu, devsim); a device backend
  // batches them (cuda: one cublasGemmGroupedBatchedEx).
  virtual void grouped_linear_forward(const ExecContext& c, const float* x_RI, const float* W_EOI,
                                      float* y_RO, const int32_t* row_offsets_E1, int64_t E,
                                      int64_t I, int64_t O);
  // The experts' backward GEMMs of one weight in one call: for each group e (rows as in
  // grouped_linear_forward) exactly linear_backward of that group: dW_EOI + e*O*I += dy_e^T x_e
  // (when dW_EOI is non-null) and dx_e = dy_e W_e (+= when accumulate_dx; when dx_RI is
  // non-null), x_e, dy_e and dx_e the group's rows of x_RI, dy_RO and dx_RI. Empty groups are
  // not touched. Each group's results are linear_backward's for it (bitwise under
  // c.deterministic). This default makes one linear_backward per non-empty group (cpu, devsim);
  // a device backend batches them (cuda: one cublasGemmGroupedBatchedEx for dx, one for dW).
  virtual void grouped_linear_backward(const ExecContext& c, const float* x_RI, const float* W_EOI,
                                       const float* dy_RO, float* dW_EOI, float* dx_RI,
                                       const int32_t* row_offsets_E1, int64_t E, int64_t I,
                                       int64_t O, bool accumulate_dx);
  // y_TO = x_TI deq(q)^T (+ beta y_TO), q [O, I] int8/int4 group-wise (runtime/kernels/quant.h).
  virtual void linear_forward_quantized(const ExecContext& c, const float* x_TI,
                                        const QuantizedMatrix& q, float* y_TO, int64_t T,
                                        float beta) = 0;
  // out_RI = rows [row0, row0 + rows) of deq(q).
  virtual void dequantize_rows(const ExecContext& c, const QuantizedMatrix& q, int64_t row0,
                               int64_t rows, float* out_RI) = 0;

  // ---- per-row ops ([rows, n]) ----
  // Max-subtracted; a row of all -inf gets the uniform distribution; NaN propagates.
  virtual void softmax_rows(const ExecContext& c, const float* s, float* p, int64_t rows,
                            int64_t n) = 0;
  virtual void logsumexp_rows(const ExecContext& c, const float* s, float* out, int64_t rows,
                              int64_t n) = 0;
  // The k largest per row, descending, ties to the lower index; NaN ranks as -inf (so ids stay
  // in range for a broken row). Requires 1 <= k <= n.
  virtual void topk_rows(const ExecContext& c, const float* v, int64_t rows, int64_t n, int64_t k,
                         int32_t* ids, float* vals) = 0;
  // ds = p * (dp - sum(p * dp)) per row (+= when accumulate).
  virtual void softmax_backward_rows(const ExecContext& c, const float* p, const float* dp,
                                     float* ds, int64_t rows, int64_t n, bool accumulate) = 0;

  // ---- elementwise ----
  virtual void silu_inplace(const ExecContext& c, float* x, int64_t n) = 0;
  virtual void gelu_inplace(const ExecContext& c, float* x, int64_t n) = 0;
  virtual void silu_backward(const ExecContext& c, const float* x, const float* dy, float* dx,
                             int64_t n) = 0;
  virtual void gelu_backward(const ExecContext& c, const float* x, const float* dy, float* dx,
                             int64_t n) = 0;
  // a = SiLU(g) * u; backward: du = da SiLU(g), dg = da u SiLU'(g) (dg may alias da).
  virtual void swiglu(const ExecContext& c, const float* g, const float* u, float* a,
                      int64_t n) = 0;
  virtual void swiglu_backward(const ExecContext& c, const float* g, const float* u,
                               const float* da, float* dg, float* du, int64_t n) = 0;
  // y += x (residual joins).
  virtual void add_inplace(const ExecContext& c, float* y, const float* x, int64_t n) = 0;
  // y_RN[r] += b_N for every row (a bias added after the GEMM).
  virtual void add_bias_rows(const ExecContext& c, const float* b_N, int64_t R, int64_t N,
                             float* y_RN) = 0;
  // out_TD[t] = table_VD[ids_T[t]] (embedding lookup); an id outside [0, V) is fatal.
  virtual void embedding_rows(const ExecContext& c, const float* table_VD, int64_t V,
                              const int32_t* ids_T, int64_t T, int64_t D, float* out_TD) = 0;
  // y = alpha[0] x (+ y when accumulate): alpha is ONE value in the backend's memory (a learned
  // scalar such as the hybrid router's mix), read where it lives.
  virtual void axpy(const ExecContext& c, const float* alpha, const float* x, float* y, int64_t n,
                    bool accumulate) = 0;
  // dst[index_T[t]] += src_TD[t] in t order (embedding backward: rows may repeat).
  virtual void scatter_add_rows(const ExecContext& c, const float* src_TD, const int32_t* index_T,
                                int64_t T, int64_t D, float* dst) = 0;

  // ---- bias, norms ----
  // y_RN[r] = b_N (b_N null: zeros), before a GEMM that accumulates (beta = 1).
  virtual void bias_broadcast_rows(const ExecContext& c, const float* b_N, int64_t R, int64_t N,
                                   float* y_RN) = 0;
  // db_N += column sums of dy_RN.
  virtual void bias_backward_rows(const ExecContext& c, const float* dy_RN, int64_t R, int64_t N,
                                  float* db_N) = 0;
  virtual void rmsnorm_forward(const ExecContext& c, const float* x_TD, const float* w_D,
                               float* y_TD, float* rstd_T, int64_t T, int64_t D, float eps) = 0;
  // dx_TD += and dw_D += (either may be null).
  virtual void rmsnorm_backward(const ExecContext& c, const float* x_TD, const float* w_D,
                                const float* rstd_T, const float* dy_TD, float* dx_TD, float* dw_D,
                                int64_t T, int64_t D) = 0;
  virtual void layernorm_forward(const ExecContext& c, const float* x_TD, const float* w_D,
                                 const float* b_D, float* y_TD, int64_t T, int64_t D,
                                 float eps) = 0;
  // y = LayerNorm(a + r) (y may alias a or r).
  virtual void add_layernorm_forward(const ExecContext& c, const float* a_TD, const float* r_TD,
                                     const float* w_D, const float* b_D, float* y_TD, int64_t T,
                                     int64_t D, float eps) = 0;
  // Backward of layernorm_forward from its input x_TD (the statistics recomputed as the forward
  // computes them): dx_TD +=, dw_D +=, db_D += (each may be null).
  virtual void layernorm_backward(const ExecContext& c, const float* x_TD, const float* w_D,
                                  const float* dy_TD, float* dx_TD, float* dw_D, float* db_D,
                                  int64_t T, int64_t D, float eps) = 0;

  // ---- attention (runtime/kernels/op_types.h) ----
  // Rotates every head of T rows (row stride ld) at positions pos0.. in place ("rotate half"
  // convention); inverse rotates back (also its backward). inv_freq: [hd/2] host table.
  virtual void rope_apply(const ExecContext& c, float* x, int64_t T, int64_t heads, int64_t hd,
                          int64_t ld, int64_t pos0, const std::vector<float>& inv_freq,
                          bool inverse) = 0;
  // q [T, nH*hd], k/v [Tk, nKV*hd] -> out [T, nH*hd] (written); causal rows see keys up to
  // pos0 + t; key_mask [Tk] may be null; a row with no visible key gets zeros. Scratch: the
  // context's workspace.
  virtual void attention_forward(const ExecContext& c, const float* q, const float* k,
                                 const float* v, float* out, int64_t T, int64_t Tk, int64_t pos0,
                                 const AttentionShape& s, const uint8_t* key_mask) = 0;
  // Backward of attention_forward (probabilities recomputed): writes dq, ADDS into dk and dv.
  virtual void attention_backward(const ExecContext& c, const float* q, const float* k,
                                  const float* v, const float* dout, float* dq, float* dk,
                                  float* dv, int64_t T, int64_t Tk, int64_t pos0,
                                  const AttentionShape& s, const uint8_t* key_mask) = 0;

  // ---- loss ----
  // Sum over rows with target >= 0 (count in *count) of logsumexp - logit[target], in double.
  virtual double cross_entropy_sum(const ExecContext& c, const float* logits_TV,
                                   const int32_t* target_T, int64_t T, int64_t V,
                                   int64_t* count) = 0;
  // dlogits = (softmax - onehot) * scale for counted rows, zeros for ignored ones (written).
  virtual void cross_entropy_backward(const ExecContext& c, const float* logits_TV,
                                      const int32_t* target_T, int64_t T, int64_t V, float scale,
                                      float* dlogits_TV) = 0;

  // ---- routing and the MoE data path ----
  // The capacity plan of routers/capacity.h (host structure; a device backend copies ids in).
  virtual Status capacity_plan(const ExecContext& c, const int32_t* ids_TK, const float* rank_p_TK,
                               int64_t T, int64_t E, int64_t K, int64_t D,
                               const CapacityConfig& cfg, const uint8_t* mask_T,
                               CapacityPlan* plan) = 0;
  // rank_p_TK[t,k] = probs_TE[t, ids_TK[t,k]] (the chosen probabilities ranking drops).
  virtual void gather_topk_probs(const ExecContext& c, const float* probs_TE, const int32_t* ids_TK,
                                 int64_t T, int64_t E, int64_t K, float* rank_p_TK) = 0;
  // Hash routing (routers/hash.h) of T tokens: ids_TK[t] = table_VK[token_ids_T[t]] when
  // table_VK is non-null (the balanced table), else the fixed hashes of runtime/kernels/
  // hash_route.h (seed), sorted. Writes logits_TE (0 at the chosen experts, -inf elsewhere),
  // probs_TE (1/K there, 0 elsewhere) and weights_TK (1/K). An id outside [0, V) is fatal.
  virtual void hash_route(const ExecContext& c, const int32_t* table_VK, int64_t V, uint64_t seed,
                          const int32_t* token_ids_T, int64_t T, int64_t E, int64_t K,
                          int32_t* ids_TK, float* logits_TE, float* probs_TE,
                          float* weights_TK) = 0;
  // w_r /= sum(w_r) for each row whose sum is > 0 (norm_topk_prob), the sum in k order.
  virtual void normalize_rows(const ExecContext& c, float* w, int64_t rows, int64_t n) = 0;
  // The top-k weights' backward into the full probabilities: dp_TE[t, ids[t,k]] += dv_k, with
  // dv = dw, or through the renormalization when normalized: w_i = v_i / S gives
  // dv_i = (dw_i - sum_j dw_j w_j) / S (rows with S <= 0 get nothing). vals_TK: the chosen
  // probabilities before renormalization.
  virtual void topk_weights_backward(const ExecContext& c, const float* dw_TK, const float* vals_TK,
                                     const int32_t* ids_TK, int64_t T, int64_t E, int64_t K,
                                     bool normalized, float* dp_TE) = 0;
  // The Switch load-balancing loss and its gradient (runtime/kernels/balance.h, same contract:
  // dprobs_TE may be null; written, or added to when accumulate). Returns the loss.
  virtual double switch_aux_loss(const ExecContext& c, const float* probs_TE,
                                 const int32_t* topk_ids_TK, int64_t T, int64_t E, int64_t K,
                                 float alpha, float* dprobs_TE, bool accumulate) = 0;
  // Permute: out_RD[r] = x_TD[order_A[r] / K] (kept rows grouped by expert; order_A of the
  // capacity plan maps a row to its flat assignment t*K + k).
  virtual void gather_rows(const ExecContext& c, const float* x_TD, const int32_t* order_A_R,
                           int64_t R, int64_t K, int64_t D, float* out_RD) = 0;
  // Weighted combine: y_t = sum_{k: row_of[t,k] >= 0} w[t,k] rows[row_of[t,k]] (0 when none);
  // a fixed slot order per token. w null: unweighted sum (the backward of gather_rows).
  virtual void combine_rows(const ExecContext& c, const float* rows_RD, const int32_t* row_of_TK,
                            const float* w_TK, int64_t T, int64_t K, int64_t D, float* y_TD) = 0;
  // Backward of combine_rows w.r.t. the rows: out_RD[r] = w[a_r] dy[a_r / K], a_r = order_A[r].
  virtual void scatter_rows_weighted(const ExecContext& c, const float* dy_TD,
                                     const int32_t* order_A_R, const float* w_TK, int64_t R,
                                     int64_t K, int64_t D, float* out_RD) = 0;
  // Backward of combine_rows w.r.t. the weights: dw[t,k] = dy_t . rows[row_of[t,k]] (0 dropped).
  virtual void combine_weights_backward(const ExecContext& c, const float* dy_TD,
                                        const float* rows_RD, const int32_t* row_of_TK, int64_t T,
                                        int64_t K, int64_t D, float* dw_TK) = 0;
  // The sigmoid-gated shared expert: g_T holds gate logits and becomes sigmoid(g) in place;
  // then y_t += g_t s_t, skipped where mask_T[t] == 0 (mask may be null).
  virtual void gated_add_rows(const ExecContext& c, float* g_T, const float* s_TD,
                              const uint8_t* mask_T, int64_t T, int64_t D, float* y_TD) = 0;
  // Its backward (g_T the sigmoid values): ds_t = g_t dy_t, dlogit_t = (dy_t . s_t) g_t (1 - g_t)
  // (the dot in double); both 0 for masked tokens.
  virtual void gated_add_rows_backward(const ExecContext& c, const float* dy_TD, const float* s_TD,
                                       const float* g_T, const uint8_t* mask_T, int64_t T,
                                       int64_t D, float* ds_TD, float* dlogit_T) = 0;

  // ---- optimizer, reductions ----
  // One AdamW step over n values (decoupled weight decay; bias corrections bc1 = 1 - b1^t,
  // bc2 = 1 - b2^t): g' = float(g * clip); m = b1 m + (1-b1) g'; v = b2 v + (1-b2) g'^2 (fp32);
  // w = float(w - lr (m/bc1 / (sqrt(v/bc2) + eps) + wd w)) (double). wd = 0: no decay.
  virtual void adamw_update(const ExecContext& c, float* w, const float* g, float* m, float* v,
                            int64_t n, const AdamWStep& s) = 0;
  // sum of x^2 in double; sum x.y in float (vectorized).
  virtual double sum_squares(const ExecContext& c, const float* x, int64_t n) = 0;
  virtual float dot(const ExecContext& c, const float* x, const float* y, int64_t n) = 0;
  virtual bool all_finite(const ExecContext& c, const float* x, int64_t n) = 0;
  // out[0] += float(sum x.y), the sum in double; out is one value in the backend's memory.
  virtual void dot_add(const ExecContext& c, const float* x, const float* y, int64_t n,
                       float* out) = 0;
};

// ---- registry ------------------------------------------------------------------------------

using BackendFactory = std::unique_ptr<Backend> (*)();
// Registers a backend under `name` (at static-initialization time, through the macro below).
// A second registration of the same name is a fatal error naming both.
bool register_backend(const char* name, BackendFactory make);
// The backend of that name, made once and kept for the process; nullptr when unknown.
Backend* find_backend(const std::string& name);
std::vector<std::string> backend_names();
// Why the named registered backend cannot run here; empty when it can (or is unknown).
std::string backend_unavailable(const std::string& name);

#define SY_REGISTER_BACKEND(ident, name, factory) \
  static const bool sy_backend_registered_##ident = ::sy::register_backend(name, factory)

}  // namespace sy
