// The CPU backend: host memory, OpenBLAS GEMMs (row-stable kernels when the context is
// deterministic) and the plain C++ kernels of runtime/kernels/. This folder is the only place
// outside runtime/kernels/ that includes the CPU kernels (tests/launch/layering_test.sh).
#include <cstdlib>
#include <cstring>
#include <memory>

#include "runtime/backend/backend.h"
#include "runtime/core/check.h"
#include "runtime/core/status.h"
#include "runtime/kernels/attention.h"
#include "runtime/kernels/balance.h"
#include "runtime/kernels/bias.h"
#include "runtime/kernels/capacity.h"
#include "runtime/kernels/cpu_kernels.h"
#include "runtime/kernels/layer_norm.h"
#include "runtime/kernels/loss.h"
#include "runtime/kernels/norm.h"
#include "runtime/kernels/quant.h"
#include "runtime/kernels/rows.h"

namespace sy {
namespace {

float* ws_floats(const ExecContext& c, int64_t n) {
  SY_CHECK(c.workspace != nullptr) << "cpu backend: the context has no workspace";
  return c.workspace->floats(n);
}

class CpuBackend final : public Backend {
 public:
  const char* name() const override { return "cpu"; }
  Device device() const override { return Device(); }

  // Host memory: the same allocator as host_memory(), so host tensors and CPU tensors mix.
  void* alloc(int64_t bytes) override { return host_memory()->alloc(bytes); }
  void free(void* p) override { host_memory()->free(p); }
  void copy_from_host(void* dst, const void* src, int64_t bytes) override {
    if (bytes > 0) std::memcpy(dst, src, static_cast<size_t>(bytes));
  }
  void copy_to_host(void* dst, const void* src, int64_t bytes) override {
    if (bytes > 0) std::memcpy(dst, src, static_cast<size_t>(bytes));
  }
  void copy_within(void* dst, const void* src, int64_t bytes) override {
    if (bytes > 0) std::memmove(dst, src, static_cast<size_t>(bytes));
  }
  void zero(void* dst, int64_t bytes) override {
    if (bytes > 0) std::memset(dst, 0, static_cast<size_t>(bytes));
  }
  bool host_accessible() const override { return true; }
  void copy(const ExecContext&, void* dst, const void* src, int64_t bytes) override {
    if (bytes > 0) std::memmove(dst, src, static_cast<size_t>(bytes));
  }
  void fill_zero(const ExecContext&, void* dst, int64_t bytes) override {
    if (bytes > 0) std::memset(dst, 0, static_cast<size_t>(bytes));
  }
  void synchronize(const ExecContext&) override {}

  void gemm(const ExecContext& c, bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha,
            const float* A, int64_t lda, const float* B, int64_t ldb, float beta, float* C,
            int64_t ldc) override {
    sy::gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, c.deterministic);
  }
  void linear_forward(const ExecContext& c, const float* x, const float* W, float* y, int64_t T,
                      int64_t I, int64_t O, float beta) override {
    sy::linear_forward(x, W, y, T, I, O, beta, c.deterministic);
  }
  void linear_backward(const ExecContext& c, const float* x, const float* W, const float* dy,
                       float* dW, float* dx, int64_t T, int64_t I, int64_t O,
                       bool accumulate_dx) override {
    sy::linear_backward(x, W, dy, dW, dx, T, I, O, accumulate_dx, c.deterministic);
  }
  void linear_forward_quantized(const ExecContext& c, const float* x, const QuantizedMatrix& q,
                                float* y, int64_t T, float beta) override {
    sy::linear_forward_quantized(x, q, y, T, beta, kQuantTileRows, c.deterministic);
  }
  void dequantize_rows(const ExecContext&, const QuantizedMatrix& q, int64_t row0, int64_t rows,
                       float* out) override {
    sy::dequantize_rows(q, row0, rows, out);
  }

  void softmax_rows(const ExecContext&, const float* s, float* p, int64_t rows,
                    int64_t n) override {
    sy::softmax_rows(s, p, rows, n);
  }
  void logsumexp_rows(const ExecContext&, const float* s, float* out, int64_t rows,
                      int64_t n) override {
    sy::logsumexp_rows(s, out, rows, n);
  }
  void topk_rows(const ExecContext&, const float* v, int64_t rows, int64_t n, int64_t k,
                 int32_t* ids, float* vals) override {
    sy::topk_rows(v, rows, n, k, ids, vals);
  }
  void softmax_backward_rows(const ExecContext&, const float* p, const float* dp, float* ds,
                             int64_t rows, int64_t n, bool accumulate) override {
    sy::softmax_backward_rows(p, dp, ds, rows, n, accumulate);
  }

  void silu_inplace(const ExecContext&, float* x, int64_t n) override { sy::silu_inplace(x, n); }
  void gelu_inplace(const ExecContext&, float* x, int64_t n) override { sy::gelu_inplace(x, n); }
  void silu_backward(const ExecContext&, const float* x, const float* dy, float* dx,
                     int64_t n) override {
    sy::silu_backward(x, dy, dx, n);
  }
  void gelu_backward(const ExecContext&, const float* x, const float* dy, float* dx,
                     int64_t n) override {
    sy::gelu_backward(x, dy, dx, n);
  }
  void swiglu(const ExecContext&, const float* g, const float* u, float* a, int64_t n) override {
    sy::swiglu_rows(g, u, a, n);
  }
  void swiglu_backward(const ExecContext&, const float* g, const float* u, const float* da,
                       float* dg, float* du, int64_t n) override {
    sy::swiglu_backward_rows(g, u, da, dg, du, n);
  }
  void add_inplace(const ExecContext&, float* y, const float* x, int64_t n) override {
    sy::add_inplace(y, x, n);
  }

  void add_bias_rows(const ExecContext&, const float* b, int64_t R, int64_t N, float* y) override {
    sy::add_bias_rows(b, R, N, y);
  }
  void scatter_add_rows(const ExecContext&, const float* src, const int32_t* index, int64_t T,
                        int64_t D, float* dst) override {
    sy::scatter_add_rows(src, index, T, D, dst);
  }
  void bias_broadcast_rows(const ExecContext&, const float* b, int64_t R, int64_t N,
                           float* y) override {
    sy::bias_broadcast_rows(b, R, N, y);
  }
  void bias_backward_rows(const ExecContext&, const float* dy, int64_t R, int64_t N,
                          float* db) override {
    sy::bias_backward_rows(dy, R, N, db);
  }
  void rmsnorm_forward(const ExecContext&, const float* x, const float* w, float* y, float* rstd,
                       int64_t T, int64_t D, float eps) override {
    sy::rmsnorm_forward(x, w, y, rstd, T, D, eps);
  }
  void rmsnorm_backward(const ExecContext&, const float* x, const float* w, const float* rstd,
                        const float* dy, float* dx, float* dw, int64_t T, int64_t D) override {
    sy::rmsnorm_backward(x, w, rstd, dy, dx, dw, T, D);
  }
  void layernorm_forward(const ExecContext&, const float* x, const float* w, const float* b,
                         float* y, int64_t T, int64_t D, float eps) override {
    sy::layernorm_forward(x, w, b, y, T, D, eps);
  }
  void add_layernorm_forward(const ExecContext&, const float* a, const float* r, const float* w,
                             const float* b, float* y, int64_t T, int64_t D, float eps) override {
    sy::add_layernorm_forward(a, r, w, b, y, T, D, eps);
  }
  void layernorm_backward(const ExecContext&, const float* x, const float* w, const float* dy,
                          float* dx, float* dw, float* db, int64_t T, int64_t D,
                          float eps) override {
    sy::layernorm_backward(x, w, dy, dx, dw, db, T, D, eps);
  }

  void rope_apply(const ExecContext&, float* x, int64_t T, int64_t heads, int64_t hd, int64_t ld,
                  int64_t pos0, const std::vector<float>& inv_freq, bool inverse) override {
    sy::rope_apply(x, T, heads, hd, ld, pos0, inv_freq, inverse);
  }
  void attention_forward(const ExecContext& c, const float* q, const float* k, const float* v,
                         float* out, int64_t T, int64_t Tk, int64_t pos0, const AttentionShape& s,
                         const uint8_t* key_mask) override {
    sy::attention_forward(q, k, v, out, T, Tk, pos0, s, key_mask, ws_floats(c, T * Tk));
  }
  void attention_backward(const ExecContext& c, const float* q, const float* k, const float* v,
                          const float* dout, float* dq, float* dk, float* dv, int64_t T, int64_t Tk,
                          int64_t pos0, const AttentionShape& s, const uint8_t* key_mask) override {
    sy::attention_backward(q, k, v, dout, dq, dk, dv, T, Tk, pos0, s, key_mask,
                           ws_floats(c, 2 * T * Tk));
  }

  double cross_entropy_sum(const ExecContext&, const float* logits, const int32_t* target,
                           int64_t T, int64_t V, int64_t* count) override {
    return sy::cross_entropy_sum(logits, target, T, V, count);
  }
  void cross_entropy_backward(const ExecContext&, const float* logits, const int32_t* target,
                              int64_t T, int64_t V, float scale, float* dlogits) override {
    sy::cross_entropy_backward(logits, target, T, V, scale, dlogits);
  }

  Status capacity_plan(const ExecContext&, const int32_t* ids, const float* rank_p, int64_t T,
                       int64_t E, int64_t K, int64_t D, const CapacityConfig& cfg,
                       const uint8_t* mask, CapacityPlan* plan) override {
    return plan_capacity_into(ids, rank_p, T, E, K, D, cfg, mask, plan);
  }
  void gather_topk_probs(const ExecContext&, const float* probs, const int32_t* ids, int64_t T,
                         int64_t E, int64_t K, float* rank_p) override {
    sy::gather_topk_probs(probs, ids, T, E, K, rank_p);
  }
  void hash_route(const ExecContext&, const int32_t* table, int64_t V, uint64_t seed,
                  const int32_t* token_ids, int64_t T, int64_t E, int64_t K, int32_t* ids,
                  float* logits, float* probs, float* weights) override {
    sy::hash_route(table, V, seed, token_ids, T, E, K, ids, logits, probs, weights);
  }
  void normalize_rows(const ExecContext&, float* w, int64_t rows, int64_t n) override {
    sy::normalize_rows(w, rows, n);
  }
  void topk_weights_backward(const ExecContext&, const float* dw, const float* vals,
                             const int32_t* ids, int64_t T, int64_t E, int64_t K, bool normalized,
                             float* dp) override {
    sy::topk_weights_backward(dw, vals, ids, T, E, K, normalized, dp);
  }
  double switch_aux_loss(const ExecContext&, const float* probs, const int32_t* ids, int64_t T,
                         int64_t E, int64_t K, float alpha, float* dprobs,
                         bool accumulate) override {
    return sy::switch_aux_loss(probs, ids, T, E, K, alpha, dprobs, accumulate);
  }
  void embedding_rows(const ExecContext&, const float* table, int64_t V, const int32_t* ids,
                      int64_t T, int64_t D, float* out) override {
    sy::embedding_rows(table, V, ids, T, D, out);
  }
  void axpy(const ExecContext&, const float* alpha, const float* x, float* y, int64_t n,
            bool accumulate) override {
    sy::axpy(alpha, x, y, n, accumulate);
  }
  void dot_add(const ExecContext&, const float* x, const float* y, int64_t n, float* out) override {
    sy::dot_add(x, y, n, out);
  }
  void gather_rows(const ExecContext&, const float* x, const int32_t* order_A, int64_t R, int64_t K,
                   int64_t D, float* out) override {
    sy::gather_rows(x, order_A, R, K, D, out);
  }
  void combine_rows(const ExecContext&, const float* rows, const int32_t* row_of, const float* w,
                    int64_t T, int64_t K, int64_t D, float* y) override {
    sy::combine_rows(rows, row_of, w, T, K, D, y);
  }
  void scatter_rows_weighted(const ExecContext&, const float* dy, const int32_t* order_A,
                             const float* w, int64_t R, int64_t K, int64_t D, float* out) override {
    sy::scatter_rows_weighted(dy, order_A, w, R, K, D, out);
  }
  void combine_weights_backward(const ExecContext&, const float* dy, const float* rows,
                                const int32_t* row_of, int64_t T, int64_t K, int64_t D,
                                float* dw) override {
    sy::combine_weights_backward(dy, rows, row_of, T, K, D, dw);
  }
  void gated_add_rows(const ExecContext&, float* g, const float* s, const uint8_t* mask, int64_t T,
                      int64_t D, float* y) override {
    sy::gated_add_rows(g, s, mask, T, D, y);
  }
  void gated_add_rows_backward(const ExecContext&, const float* dy, const float* s, const float* g,
                               const uint8_t* mask, int64_t T, int64_t D, float* ds,
                               float* dlogit) override {
    sy::gated_add_rows_backward(dy, s, g, mask, T, D, ds, dlogit);
  }

  void adamw_update(const ExecContext&, float* w, const float* g, float* m, float* v, int64_t n,
                    const AdamWStep& s) override {
    sy::adamw_update(w, g, m, v, n, s);
  }
  double sum_squares(const ExecContext&, const float* x, int64_t n) override {
    return sy::sum_squares(x, n);
  }
  float dot(const ExecContext&, const float* x, const float* y, int64_t n) override {
    return dot_f32(x, y, n);
  }
  bool all_finite(const ExecContext&, const float* x, int64_t n) override {
    return sy::all_finite(x, n);
  }
};

std::unique_ptr<Backend> make_cpu_backend() {
  return std::make_unique<CpuBackend>();
}

}  // namespace

SY_REGISTER_BACKEND(cpu, "cpu", make_cpu_backend);

// Defined here, not in backend.cc, so that every program that uses the default context links
// this file, and with it the registration above (a static library drops unreferenced objects).
const ExecContext& default_context() {
  static const ExecContext* c = make_context("cpu", /*deterministic=*/false);
  return *c;
}

}  // namespace sy
