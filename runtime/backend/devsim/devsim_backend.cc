// The "devsim" backend: an emulated device on the CPU, so that CI without a GPU proves the
// layers device-clean. Its memory is host memory handed out TAGGED (bit 62 set): on x86-64 a
// user address is below 2^47, so a tagged pointer is non-canonical and any host dereference of
// it faults with SIGSEGV, as a dereference of CUDA device memory would. host_accessible() is
// false, so DeviceArray/Tensor element access fails with a message before it gets that far.
// (The fault needs x86-64: AArch64 loads ignore the top byte, so there only the checks hold.)
// Every op checks that each pointer operand carries the tag (a host buffer passed to an op is a
// fatal error naming the op and the argument), clears it and forwards to the CPU backend: the
// arithmetic, and so every result, is the CPU backend's. Run a layer's tests on "devsim" and
// they show it never reads backend memory on the host nor hands host memory to an op.
//
// It is also the template a CUDA backend copies: alloc/free and the copies are where
// cudaMalloc, cudaFree and cudaMemcpyAsync on c.stream go; each op is where its kernel launch
// goes; capacity_plan shows a backend without a plan kernel (ids down to the host, the CPU plan,
// the two index arrays up); host structures (QuantizedMatrix, AttentionShape, AdamWStep, the
// RoPE inv_freq table) arrive as host objects and stay host objects. Not a performance backend.
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "runtime/backend/backend.h"
#include "runtime/core/check.h"
#include "runtime/core/status.h"
#include "runtime/kernels/capacity.h"

namespace sy {
namespace {

constexpr uintptr_t kTag = uintptr_t{1} << 62;

// p without its tag; null stays null. A non-null pointer without the tag is host memory given
// to a devsim op: a layer bug that a real device would turn into a crash or garbage.
template <typename T>
T* untag(T* p, const char* op, const char* arg) {
  const uintptr_t u = reinterpret_cast<uintptr_t>(p);
  if (u == 0) return p;
  SY_CHECK((u & kTag) != 0) << "devsim " << op << ": " << arg
                            << " is a host pointer, not devsim memory";
  return reinterpret_cast<T*>(u & ~kTag);
}
// An operand of the enclosing op, untagged; the message names the op and the parameter.
#define UNTAG(p) untag(p, __func__, #p)

class DevsimBackend final : public Backend {
 public:
  const char* name() const override { return "devsim"; }
  // The grouped experts path on the CPU's arithmetic (so the tests cover it;
  // Backend::groups_experts).
  bool groups_experts() const override { return true; }
  Device device() const override { return Device{DeviceKind::kDevsim, 0}; }

  void* alloc(int64_t bytes) override {
    void* p = cpu()->alloc(bytes);
    if (p == nullptr) return nullptr;
    SY_CHECK((reinterpret_cast<uintptr_t>(p) & kTag) == 0)
        << "devsim: host address " << p << " already has the tag bit";
    return reinterpret_cast<void*>(reinterpret_cast<uintptr_t>(p) | kTag);
  }
  void free(void* p) override { cpu()->free(UNTAG(p)); }
  void copy_from_host(void* dst, const void* src, int64_t bytes) override {
    cpu()->copy_from_host(UNTAG(dst), src, bytes);
  }
  void copy_to_host(void* dst, const void* src, int64_t bytes) override {
    cpu()->copy_to_host(dst, UNTAG(src), bytes);
  }
  void copy_within(void* dst, const void* src, int64_t bytes) override {
    cpu()->copy_within(UNTAG(dst), UNTAG(src), bytes);
  }
  void zero(void* dst, int64_t bytes) override { cpu()->zero(UNTAG(dst), bytes); }
  bool host_accessible() const override { return false; }
  void copy(const ExecContext& c, void* dst, const void* src, int64_t bytes) override {
    cpu()->copy(host(c), UNTAG(dst), UNTAG(src), bytes);
  }
  void fill_zero(const ExecContext& c, void* dst, int64_t bytes) override {
    cpu()->fill_zero(host(c), UNTAG(dst), bytes);
  }
  void synchronize(const ExecContext&) override {}

  void gemm(const ExecContext& c, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K,
            float alpha, const float* A, int64_t lda, const float* B, int64_t ldb, float beta,
            float* C, int64_t ldc) override {
    cpu()->gemm(host(c), trans_a, trans_b, M, N, K, alpha, UNTAG(A), lda, UNTAG(B), ldb, beta,
                UNTAG(C), ldc);
  }
  void linear_forward(const ExecContext& c, const float* x_TI, const float* W_OI, float* y_TO,
                      int64_t T, int64_t I, int64_t O, float beta) override {
    cpu()->linear_forward(host(c), UNTAG(x_TI), UNTAG(W_OI), UNTAG(y_TO), T, I, O, beta);
  }
  void linear_backward(const ExecContext& c, const float* x_TI, const float* W_OI,
                       const float* dy_TO, float* dW_OI, float* dx_TI, int64_t T, int64_t I,
                       int64_t O, bool accumulate_dx) override {
    cpu()->linear_backward(host(c), UNTAG(x_TI), UNTAG(W_OI), UNTAG(dy_TO), UNTAG(dW_OI),
                           UNTAG(dx_TI), T, I, O, accumulate_dx);
  }
  void linear_forward_quantized(const ExecContext& c, const float* x_TI, const QuantizedMatrix& q,
                                float* y_TO, int64_t T, float beta) override {
    cpu()->linear_forward_quantized(host(c), UNTAG(x_TI), q, UNTAG(y_TO), T, beta);
  }
  void dequantize_rows(const ExecContext& c, const QuantizedMatrix& q, int64_t row0, int64_t rows,
                       float* out_RI) override {
    cpu()->dequantize_rows(host(c), q, row0, rows, UNTAG(out_RI));
  }

  void softmax_rows(const ExecContext& c, const float* s, float* p, int64_t rows,
                    int64_t n) override {
    cpu()->softmax_rows(host(c), UNTAG(s), UNTAG(p), rows, n);
  }
  void logsumexp_rows(const ExecContext& c, const float* s, float* out, int64_t rows,
                      int64_t n) override {
    cpu()->logsumexp_rows(host(c), UNTAG(s), UNTAG(out), rows, n);
  }
  void topk_rows(const ExecContext& c, const float* v, int64_t rows, int64_t n, int64_t k,
                 int32_t* ids, float* vals) override {
    cpu()->topk_rows(host(c), UNTAG(v), rows, n, k, UNTAG(ids), UNTAG(vals));
  }
  void softmax_backward_rows(const ExecContext& c, const float* p, const float* dp, float* ds,
                             int64_t rows, int64_t n, bool accumulate) override {
    cpu()->softmax_backward_rows(host(c), UNTAG(p), UNTAG(dp), UNTAG(ds), rows, n, accumulate);
  }

  void silu_inplace(const ExecContext& c, float* x, int64_t n) override {
    cpu()->silu_inplace(host(c), UNTAG(x), n);
  }
  void gelu_inplace(const ExecContext& c, float* x, int64_t n) override {
    cpu()->gelu_inplace(host(c), UNTAG(x), n);
  }
  void silu_backward(const ExecContext& c, const float* x, const float* dy, float* dx,
                     int64_t n) override {
    cpu()->silu_backward(host(c), UNTAG(x), UNTAG(dy), UNTAG(dx), n);
  }
  void gelu_backward(const ExecContext& c, const float* x, const float* dy, float* dx,
                     int64_t n) override {
    cpu()->gelu_backward(host(c), UNTAG(x), UNTAG(dy), UNTAG(dx), n);
  }
  void swiglu(const ExecContext& c, const float* g, const float* u, float* a, int64_t n) override {
    cpu()->swiglu(host(c), UNTAG(g), UNTAG(u), UNTAG(a), n);
  }
  void swiglu_backward(const ExecContext& c, const float* g, const float* u, const float* da,
                       float* dg, float* du, int64_t n) override {
    cpu()->swiglu_backward(host(c), UNTAG(g), UNTAG(u), UNTAG(da), UNTAG(dg), UNTAG(du), n);
  }
  void add_inplace(const ExecContext& c, float* y, const float* x, int64_t n) override {
    cpu()->add_inplace(host(c), UNTAG(y), UNTAG(x), n);
  }
  void add_bias_rows(const ExecContext& c, const float* b_N, int64_t R, int64_t N,
                     float* y_RN) override {
    cpu()->add_bias_rows(host(c), UNTAG(b_N), R, N, UNTAG(y_RN));
  }
  void scatter_add_rows(const ExecContext& c, const float* src_TD, const int32_t* index_T,
                        int64_t T, int64_t D, float* dst) override {
    cpu()->scatter_add_rows(host(c), UNTAG(src_TD), UNTAG(index_T), T, D, UNTAG(dst));
  }

  void bias_broadcast_rows(const ExecContext& c, const float* b_N, int64_t R, int64_t N,
                           float* y_RN) override {
    cpu()->bias_broadcast_rows(host(c), UNTAG(b_N), R, N, UNTAG(y_RN));
  }
  void bias_backward_rows(const ExecContext& c, const float* dy_RN, int64_t R, int64_t N,
                          float* db_N) override {
    cpu()->bias_backward_rows(host(c), UNTAG(dy_RN), R, N, UNTAG(db_N));
  }
  void rmsnorm_forward(const ExecContext& c, const float* x_TD, const float* w_D, float* y_TD,
                       float* rstd_T, int64_t T, int64_t D, float eps) override {
    cpu()->rmsnorm_forward(host(c), UNTAG(x_TD), UNTAG(w_D), UNTAG(y_TD), UNTAG(rstd_T), T, D, eps);
  }
  void rmsnorm_backward(const ExecContext& c, const float* x_TD, const float* w_D,
                        const float* rstd_T, const float* dy_TD, float* dx_TD, float* dw_D,
                        int64_t T, int64_t D) override {
    cpu()->rmsnorm_backward(host(c), UNTAG(x_TD), UNTAG(w_D), UNTAG(rstd_T), UNTAG(dy_TD),
                            UNTAG(dx_TD), UNTAG(dw_D), T, D);
  }
  void layernorm_forward(const ExecContext& c, const float* x_TD, const float* w_D,
                         const float* b_D, float* y_TD, int64_t T, int64_t D, float eps) override {
    cpu()->layernorm_forward(host(c), UNTAG(x_TD), UNTAG(w_D), UNTAG(b_D), UNTAG(y_TD), T, D, eps);
  }
  void add_layernorm_forward(const ExecContext& c, const float* a_TD, const float* r_TD,
                             const float* w_D, const float* b_D, float* y_TD, int64_t T, int64_t D,
                             float eps) override {
    cpu()->add_layernorm_forward(host(c), UNTAG(a_TD), UNTAG(r_TD), UNTAG(w_D), UNTAG(b_D),
                                 UNTAG(y_TD), T, D, eps);
  }
  void layernorm_backward(const ExecContext& c, const float* x_TD, const float* w_D,
                          const float* dy_TD, float* dx_TD, float* dw_D, float* db_D, int64_t T,
                          int64_t D, float eps) override {
    cpu()->layernorm_backward(host(c), UNTAG(x_TD), UNTAG(w_D), UNTAG(dy_TD), UNTAG(dx_TD),
                              UNTAG(dw_D), UNTAG(db_D), T, D, eps);
  }

  void rope_apply(const ExecContext& c, float* x, int64_t T, int64_t heads, int64_t hd, int64_t ld,
                  int64_t pos0, const std::vector<float>& inv_freq, bool inverse) override {
    cpu()->rope_apply(host(c), UNTAG(x), T, heads, hd, ld, pos0, inv_freq, inverse);
  }
  void attention_forward(const ExecContext& c, const float* q, const float* k, const float* v,
                         float* out, int64_t T, int64_t Tk, int64_t pos0, const AttentionShape& s,
                         const uint8_t* key_mask) override {
    cpu()->attention_forward(host(c), UNTAG(q), UNTAG(k), UNTAG(v), UNTAG(out), T, Tk, pos0, s,
                             UNTAG(key_mask));
  }
  void attention_backward(const ExecContext& c, const float* q, const float* k, const float* v,
                          const float* dout, float* dq, float* dk, float* dv, int64_t T, int64_t Tk,
                          int64_t pos0, const AttentionShape& s, const uint8_t* key_mask) override {
    cpu()->attention_backward(host(c), UNTAG(q), UNTAG(k), UNTAG(v), UNTAG(dout), UNTAG(dq),
                              UNTAG(dk), UNTAG(dv), T, Tk, pos0, s, UNTAG(key_mask));
  }

  double cross_entropy_sum(const ExecContext& c, const float* logits_TV, const int32_t* target_T,
                           int64_t T, int64_t V, int64_t* count) override {
    return cpu()->cross_entropy_sum(host(c), UNTAG(logits_TV), UNTAG(target_T), T, V, count);
  }
  void cross_entropy_backward(const ExecContext& c, const float* logits_TV, const int32_t* target_T,
                              int64_t T, int64_t V, float scale, float* dlogits_TV) override {
    cpu()->cross_entropy_backward(host(c), UNTAG(logits_TV), UNTAG(target_T), T, V, scale,
                                  UNTAG(dlogits_TV));
  }

  // As a device backend without a plan kernel does it: the routing down to the host, the CPU
  // plan there (into a kept host plan: no allocation in steady state), the plan back, its two
  // index arrays into the caller's plan's own (devsim) memory.
  Status capacity_plan(const ExecContext& c, const int32_t* ids_TK, const float* rank_p_TK,
                       int64_t T, int64_t E, int64_t K, int64_t D, const CapacityConfig& cfg,
                       const uint8_t* mask_T, CapacityPlan* plan) override {
    SY_CHECK(plan->order_A.memory() == this && plan->row_of_TK.memory() == this)
        << "devsim capacity_plan: the plan's index arrays are in '"
        << plan->order_A.memory()->memory_name()
        << "' memory, not devsim memory (make the plan as CapacityPlan(backend))";
    SY_RETURN_IF_ERROR(check_capacity_sizes(T, E, K, D));  // before sizing the host copies
    std::lock_guard<std::mutex> lock(plan_mu_);
    const size_t A = static_cast<size_t>(T * K);
    ids_.resize(A);
    cpu()->copy_to_host(ids_.data(), UNTAG(ids_TK), static_cast<int64_t>(A * sizeof(int32_t)));
    const float* rank_p = nullptr;
    if (rank_p_TK != nullptr) {
      rank_p_.resize(A);
      cpu()->copy_to_host(rank_p_.data(), UNTAG(rank_p_TK),
                          static_cast<int64_t>(A * sizeof(float)));
      rank_p = rank_p_.data();
    }
    const uint8_t* mask = nullptr;
    if (mask_T != nullptr) {
      mask_.resize(static_cast<size_t>(T));
      cpu()->copy_to_host(mask_.data(), UNTAG(mask_T), T);
      mask = mask_.data();
    }
    CapacityPlan& h = host_plan_;
    SY_RETURN_IF_ERROR(
        cpu()->capacity_plan(host(c), ids_.data(), rank_p, T, E, K, D, cfg, mask, &h));
    assign_plan(h, plan);
    return Status::Ok();
  }
  void gather_topk_probs(const ExecContext& c, const float* probs_TE, const int32_t* ids_TK,
                         int64_t T, int64_t E, int64_t K, float* rank_p_TK) override {
    cpu()->gather_topk_probs(host(c), UNTAG(probs_TE), UNTAG(ids_TK), T, E, K, UNTAG(rank_p_TK));
  }
  void hash_route(const ExecContext& c, const int32_t* table_VK, int64_t V, uint64_t seed,
                  const int32_t* token_ids_T, int64_t T, int64_t E, int64_t K, int32_t* ids_TK,
                  float* logits_TE, float* probs_TE, float* weights_TK) override {
    cpu()->hash_route(host(c), UNTAG(table_VK), V, seed, UNTAG(token_ids_T), T, E, K, UNTAG(ids_TK),
                      UNTAG(logits_TE), UNTAG(probs_TE), UNTAG(weights_TK));
  }
  void normalize_rows(const ExecContext& c, float* w, int64_t rows, int64_t n) override {
    cpu()->normalize_rows(host(c), UNTAG(w), rows, n);
  }
  void topk_weights_backward(const ExecContext& c, const float* dw_TK, const float* vals_TK,
                             const int32_t* ids_TK, int64_t T, int64_t E, int64_t K,
                             bool normalized, float* dp_TE) override {
    cpu()->topk_weights_backward(host(c), UNTAG(dw_TK), UNTAG(vals_TK), UNTAG(ids_TK), T, E, K,
                                 normalized, UNTAG(dp_TE));
  }
  double switch_aux_loss(const ExecContext& c, const float* probs_TE, const int32_t* topk_ids_TK,
                         int64_t T, int64_t E, int64_t K, float alpha, float* dprobs_TE,
                         bool accumulate) override {
    return cpu()->switch_aux_loss(host(c), UNTAG(probs_TE), UNTAG(topk_ids_TK), T, E, K, alpha,
                                  UNTAG(dprobs_TE), accumulate);
  }
  void embedding_rows(const ExecContext& c, const float* table_VD, int64_t V, const int32_t* ids_T,
                      int64_t T, int64_t D, float* out_TD) override {
    cpu()->embedding_rows(host(c), UNTAG(table_VD), V, UNTAG(ids_T), T, D, UNTAG(out_TD));
  }
  void axpy(const ExecContext& c, const float* alpha, const float* x, float* y, int64_t n,
            bool accumulate) override {
    cpu()->axpy(host(c), UNTAG(alpha), UNTAG(x), UNTAG(y), n, accumulate);
  }
  void dot_add(const ExecContext& c, const float* x, const float* y, int64_t n,
               float* out) override {
    cpu()->dot_add(host(c), UNTAG(x), UNTAG(y), n, UNTAG(out));
  }
  void gather_rows(const ExecContext& c, const float* x_TD, const int32_t* order_A_R, int64_t R,
                   int64_t K, int64_t D, float* out_RD) override {
    cpu()->gather_rows(host(c), UNTAG(x_TD), UNTAG(order_A_R), R, K, D, UNTAG(out_RD));
  }
  void combine_rows(const ExecContext& c, const float* rows_RD, const int32_t* row_of_TK,
                    const float* w_TK, int64_t T, int64_t K, int64_t D, float* y_TD) override {
    cpu()->combine_rows(host(c), UNTAG(rows_RD), UNTAG(row_of_TK), UNTAG(w_TK), T, K, D,
                        UNTAG(y_TD));
  }
  void scatter_rows_weighted(const ExecContext& c, const float* dy_TD, const int32_t* order_A_R,
                             const float* w_TK, int64_t R, int64_t K, int64_t D,
                             float* out_RD) override {
    cpu()->scatter_rows_weighted(host(c), UNTAG(dy_TD), UNTAG(order_A_R), UNTAG(w_TK), R, K, D,
                                 UNTAG(out_RD));
  }
  void combine_weights_backward(const ExecContext& c, const float* dy_TD, const float* rows_RD,
                                const int32_t* row_of_TK, int64_t T, int64_t K, int64_t D,
                                float* dw_TK) override {
    cpu()->combine_weights_backward(host(c), UNTAG(dy_TD), UNTAG(rows_RD), UNTAG(row_of_TK), T, K,
                                    D, UNTAG(dw_TK));
  }
  void gated_add_rows(const ExecContext& c, float* g_T, const float* s_TD, const uint8_t* mask_T,
                      int64_t T, int64_t D, float* y_TD) override {
    cpu()->gated_add_rows(host(c), UNTAG(g_T), UNTAG(s_TD), UNTAG(mask_T), T, D, UNTAG(y_TD));
  }
  void gated_add_rows_backward(const ExecContext& c, const float* dy_TD, const float* s_TD,
                               const float* g_T, const uint8_t* mask_T, int64_t T, int64_t D,
                               float* ds_TD, float* dlogit_T) override {
    cpu()->gated_add_rows_backward(host(c), UNTAG(dy_TD), UNTAG(s_TD), UNTAG(g_T), UNTAG(mask_T), T,
                                   D, UNTAG(ds_TD), UNTAG(dlogit_T));
  }

  void adamw_update(const ExecContext& c, float* w, const float* g, float* m, float* v, int64_t n,
                    const AdamWStep& s) override {
    cpu()->adamw_update(host(c), UNTAG(w), UNTAG(g), UNTAG(m), UNTAG(v), n, s);
  }
  double sum_squares(const ExecContext& c, const float* x, int64_t n) override {
    return cpu()->sum_squares(host(c), UNTAG(x), n);
  }
  float dot(const ExecContext& c, const float* x, const float* y, int64_t n) override {
    return cpu()->dot(host(c), UNTAG(x), UNTAG(y), n);
  }
  bool all_finite(const ExecContext& c, const float* x, int64_t n) override {
    return cpu()->all_finite(host(c), UNTAG(x), n);
  }

 private:
  // The CPU backend that does the arithmetic, looked up on first use: find_backend holds the
  // registry's lock while this backend's factory runs, so the constructor cannot ask for it.
  Backend* cpu() {
    std::call_once(once_, [this] {
      cpu_ = find_backend("cpu");
      SY_CHECK(cpu_ != nullptr) << "devsim forwards to the cpu backend, which is not registered";
      host_workspace_ = std::make_unique<Workspace>(cpu_);
    });
    return cpu_;
  }
  // The context a forwarded op runs in: c's flags, the CPU backend, and a host workspace (c's
  // is devsim memory, which the CPU kernels cannot read).
  ExecContext host(const ExecContext& c) {
    ExecContext h = c;
    h.backend = cpu();
    h.workspace = host_workspace_.get();
    return h;
  }

  std::once_flag once_;
  Backend* cpu_ = nullptr;
  std::unique_ptr<Workspace> host_workspace_;
  // capacity_plan's host side, reused across calls.
  std::mutex plan_mu_;
  std::vector<int32_t> ids_;
  std::vector<float> rank_p_;
  std::vector<uint8_t> mask_;
  CapacityPlan host_plan_;
};

#undef UNTAG

std::unique_ptr<Backend> make_devsim_backend() {
  return std::make_unique<DevsimBackend>();
}

}  // namespace

SY_REGISTER_BACKEND(devsim, "devsim", make_devsim_backend);

}  // namespace sy
