#include "runtime/moe/experts.h"

#include <chrono>
#include <cstring>

#include "runtime/backend/ops.h"
#include "runtime/core/rng.h"

namespace sy {
namespace {

// N(0, std^2) per slice of `slice` values: slice i drawn from stream (name, i), so any subset of
// experts is reproducible on its own.
// Slice i draws from the stream of global id ids[i] (first_slice + i without ids), so an
// expert gets the same weights on whichever rank, at whichever local slot, it is placed.
void init_slices(Param* p, int64_t slices, float std, uint64_t seed, int64_t first_slice = 0,
                 const std::vector<int32_t>& ids = {}) {
  if (std == 0.0f) return;  // zeros as allocated; skips ~20 ns per weight at Qwen size
  const int64_t slice = slices > 0 ? p->value.numel() / slices : 0;
  const uint64_t base = fnv1a64(p->name.c_str());
  for (int64_t i = 0; i < slices; ++i) {
    const int64_t global = ids.empty() ? first_slice + i : ids[i];
    fill_normal(p->value.ptr() + i * slice, slice, std, seed,
                hash_combine(base, static_cast<uint64_t>(global)));
  }
}

Param* add(std::deque<Param>* params, const std::string& name, std::vector<int64_t> shape,
           bool grads) {
  params->emplace_back(name, std::move(shape));
  if (!grads) params->back().grad = Tensor();
  return &params->back();
}

// y_RO = x_RI W^T + b with W fp32 (W_OI) or quantized (q); the bias goes in first.
void linear_bias_forward(const ExecContext& c, const float* x_RI, const float* W_OI,
                         const QuantizedMatrix* q, const float* b_O, int64_t R, int64_t I,
                         int64_t O, float* y_RO) {
  ops::bias_broadcast_rows(c, b_O, R, O, y_RO);
  if (q)
    ops::linear_forward_quantized(c, x_RI, *q, y_RO, R, /*beta=*/1.0f);
  else
    ops::linear_forward(c, x_RI, W_OI, y_RO, R, I, O, /*beta=*/1.0f);
}

// a = GELU(pre) over n values.
void gelu_copy(const ExecContext& c, const float* pre, float* a, int64_t n) {
  ops::copy(c, a, pre, n * static_cast<int64_t>(sizeof(float)));
  ops::gelu_inplace(c, a, n);
}

}  // namespace

const char* expert_kind_name(ExpertKind k) {
  switch (k) {
    case ExpertKind::kIdentity:
      return "identity";
    case ExpertKind::kGelu:
      return "gelu";
    case ExpertKind::kSwiGLU:
      break;
  }
  return "swiglu";
}

// ---- one SwiGLU ----------------------------------------------------------------------------

void swiglu_forward(const ExecContext& c, const float* x_RD, const float* Wg_FD, const float* Wu_FD,
                    const float* Wd_DF, int64_t R, int64_t D, int64_t F, float* g_RF, float* u_RF,
                    float* a_RF, float* y_RD) {
  if (R == 0) return;
  ops::linear_forward(c, x_RD, Wg_FD, g_RF, R, D, F);
  ops::linear_forward(c, x_RD, Wu_FD, u_RF, R, D, F);
  ops::swiglu(c, g_RF, u_RF, a_RF, R * F);
  ops::linear_forward(c, a_RF, Wd_DF, y_RD, R, F, D);
}

void swiglu_backward(const ExecContext& c, const float* x_RD, const float* Wg_FD,
                     const float* Wu_FD, const float* Wd_DF, const float* g_RF, const float* u_RF,
                     const float* a_RF, const float* dy_RD, int64_t R, int64_t D, int64_t F,
                     float* dWg_FD, float* dWu_FD, float* dWd_DF, float* dx_RD, bool accumulate_dx,
                     float* da_RF, float* du_RF) {
  if (R == 0) return;
  // da = dy Wd; dWd += dy^T a.
  ops::linear_backward(c, a_RF, Wd_DF, dy_RD, dWd_DF, da_RF, R, F, D, /*accumulate_dx=*/false);
  float* dg_RF = da_RF;  // in place: dg overwrites da
  ops::swiglu_backward(c, g_RF, u_RF, da_RF, dg_RF, du_RF, R * F);
  // The gate term writes (or accumulates) dx, the up term always accumulates onto it.
  ops::linear_backward(c, x_RD, Wg_FD, dg_RF, dWg_FD, dx_RD, R, D, F, accumulate_dx);
  ops::linear_backward(c, x_RD, Wu_FD, du_RF, dWu_FD, dx_RD, R, D, F, /*accumulate_dx=*/true);
}

// ---- one GELU FFN --------------------------------------------------------------------------

void gelu_ffn_forward(const ExecContext& c, const float* x_RD, const float* W1_FD,
                      const float* b1_F, const float* W2_DF, const float* b2_D, int64_t R,
                      int64_t D, int64_t F, float* pre_RF, float* a_RF, float* y_RD) {
  if (R == 0) return;
  linear_bias_forward(c, x_RD, W1_FD, nullptr, b1_F, R, D, F, pre_RF);
  gelu_copy(c, pre_RF, a_RF, R * F);
  linear_bias_forward(c, a_RF, W2_DF, nullptr, b2_D, R, F, D, y_RD);
}

void gelu_ffn_backward(const ExecContext& c, const float* x_RD, const float* W1_FD,
                       const float* W2_DF, const float* pre_RF, const float* a_RF,
                       const float* dy_RD, int64_t R, int64_t D, int64_t F, float* dW1_FD,
                       float* db1_F, float* dW2_DF, float* db2_D, float* dx_RD, bool accumulate_dx,
                       float* dpre_RF) {
  if (R == 0) return;
  if (db2_D) ops::bias_backward_rows(c, dy_RD, R, D, db2_D);
  // da = dy W2 (into dpre), dW2 += dy^T a; then dpre = da * GELU'(pre) in place.
  ops::linear_backward(c, a_RF, W2_DF, dy_RD, dW2_DF, dpre_RF, R, F, D, /*accumulate_dx=*/false);
  ops::gelu_backward(c, pre_RF, dpre_RF, dpre_RF, R * F);
  if (db1_F) ops::bias_backward_rows(c, dpre_RF, R, F, db1_F);
  ops::linear_backward(c, x_RD, W1_FD, dpre_RF, dW1_FD, dx_RD, R, D, F, accumulate_dx);
}

// ---- routed experts ------------------------------------------------------------------------

RoutedExperts::RoutedExperts(const ExpertsConfig& cfg) : cfg_(cfg) {
  SY_CHECK(cfg.d_model >= 1 && cfg.num_experts >= 1) << "experts need D >= 1 and E >= 1";
  SY_CHECK(cfg.expert_ids.empty() ||
           static_cast<int64_t>(cfg.expert_ids.size()) == cfg.num_experts);
  offsets_E1_.assign(static_cast<size_t>(cfg.num_experts + 1), 0);
  if (cfg.kind == ExpertKind::kIdentity) return;
  SY_CHECK(cfg.ffn_hidden >= 1) << expert_kind_name(cfg.kind) << " experts need ffn_hidden >= 1";
  const int64_t E = cfg.num_experts, F = cfg.ffn_hidden, D = cfg.d_model;
  if (cfg.kind == ExpertKind::kGelu) {
    fc1_ = add(&params_, "experts.fc1", {E, F, D}, cfg.allocate_grads);
    fc1_bias_ = add(&params_, "experts.fc1_bias", {E, F}, cfg.allocate_grads);
    fc2_ = add(&params_, "experts.fc2", {E, D, F}, cfg.allocate_grads);
    fc2_bias_ = add(&params_, "experts.fc2_bias", {E, D}, cfg.allocate_grads);
    for (Param* p : {fc1_, fc2_})
      init_slices(p, E, cfg.init_std, cfg.seed, cfg.first_expert, cfg.expert_ids);
    if (cfg.weight_bits != 32) quantize_weights();
    return;
  }
  if (cfg.weight_bits != 32 && cfg.init_std == 0.0f) {
    // Quantized zeros from the start, filled expert by expert with set_expert_weights(): no
    // fp32 copy of the experts is ever allocated (what a checkpoint loader wants).
    SY_CHECK(!cfg.allocate_grads) << "quantized experts are frozen: allocate_grads must be false";
    SY_CHECK(cfg.weight_bits == 8 || cfg.weight_bits == 4)
        << "expert weight_bits must be 32, 8 or 4 (got " << cfg.weight_bits << ")";
    auto zeros = [&](int64_t O, int64_t I) {
      QuantizedMatrix q;
      q.O = O;
      q.I = I;
      q.G = cfg.quant_group;
      q.bits = cfg.weight_bits;
      q.data.assign(static_cast<size_t>(O * q.row_bytes()), 0);
      q.scales.assign(static_cast<size_t>(O * q.groups()), 0.0f);
      return q;
    };
    q_gate_.assign(static_cast<size_t>(E), zeros(F, D));
    q_up_.assign(static_cast<size_t>(E), zeros(F, D));
    q_down_.assign(static_cast<size_t>(E), zeros(D, F));
    return;
  }
  gate_ = add(&params_, "experts.gate_proj", {E, F, D}, cfg.allocate_grads);
  up_ = add(&params_, "experts.up_proj", {E, F, D}, cfg.allocate_grads);
  down_ = add(&params_, "experts.down_proj", {E, D, F}, cfg.allocate_grads);
  for (Param* p : {gate_, up_, down_})
    init_slices(p, E, cfg.init_std, cfg.seed, cfg.first_expert, cfg.expert_ids);
  if (cfg.weight_bits != 32) quantize_weights();
}

void RoutedExperts::set_expert_weights(int64_t e, const float* gate_FD, const float* up_FD,
                                       const float* down_DF) {
  SY_CHECK(cfg_.kind == ExpertKind::kSwiGLU) << "set_expert_weights: SwiGLU experts only";
  SY_CHECK(e >= 0 && e < cfg_.num_experts)
      << "set_expert_weights: expert " << e << " of " << cfg_.num_experts;
  const int64_t F = cfg_.ffn_hidden, D = cfg_.d_model;
  if (quantized()) {
    const size_t i = static_cast<size_t>(e);
    q_gate_[i] = quantize(gate_FD, F, D, cfg_.quant_group, cfg_.weight_bits);
    q_up_[i] = quantize(up_FD, F, D, cfg_.quant_group, cfg_.weight_bits);
    q_down_[i] = quantize(down_DF, D, F, cfg_.quant_group, cfg_.weight_bits);
    return;
  }
  const int64_t bytes = F * D * static_cast<int64_t>(sizeof(float));
  Memory* m = gate_->value.memory();  // host slices into the weights, wherever they live
  m->copy_from_host(gate_->value.ptr() + e * F * D, gate_FD, bytes);
  m->copy_from_host(up_->value.ptr() + e * F * D, up_FD, bytes);
  m->copy_from_host(down_->value.ptr() + e * D * F, down_DF, bytes);
}

void RoutedExperts::quantize_weights(int bits, int64_t group) {
  if (cfg_.kind == ExpertKind::kIdentity || quantized()) return;
  cfg_.weight_bits = bits;
  cfg_.quant_group = group;
  quantize_weights();
}

void RoutedExperts::quantize_weights() {
  if (cfg_.kind == ExpertKind::kIdentity || quantized()) return;
  SY_CHECK(cfg_.weight_bits == 8 || cfg_.weight_bits == 4)
      << "expert weight_bits must be 32, 8 or 4 (got " << cfg_.weight_bits << ")";
  SY_CHECK(cfg_.quant_group >= 1) << "expert quant_group must be >= 1";
  if (cfg_.kind == ExpertKind::kGelu) {
    quantize_gelu();
    return;
  }
  SY_CHECK(gate_->grad.empty() && up_->grad.empty() && down_->grad.empty())
      << "quantized experts are frozen: allocate_grads must be false";
  const int64_t E = cfg_.num_experts, F = cfg_.ffn_hidden, D = cfg_.d_model;
  const int64_t G = cfg_.quant_group;
  const int bits = cfg_.weight_bits;
  q_gate_.reserve(static_cast<size_t>(E));
  q_up_.reserve(static_cast<size_t>(E));
  q_down_.reserve(static_cast<size_t>(E));
  // Quantization is a load-time host step: the fp32 weights are read through a host copy
  // when they live elsewhere.
  Tensor sg, su, sd;
  const float* gw = host_readable(gate_->value, &sg).ptr();
  const float* uw = host_readable(up_->value, &su).ptr();
  const float* dw = host_readable(down_->value, &sd).ptr();
  for (int64_t e = 0; e < E; ++e) {
    q_gate_.push_back(quantize(gw + e * F * D, F, D, G, bits));
    q_up_.push_back(quantize(uw + e * F * D, F, D, G, bits));
    q_down_.push_back(quantize(dw + e * D * F, D, F, G, bits));
  }
  // Release the fp32 weights (swap, so the capacity goes too) and the Params themselves.
  for (Param* p : {gate_, up_, down_}) {
    p->value.data.release();
    p->grad.data.release();
  }
  gate_ = up_ = down_ = nullptr;
  params_.clear();
}

void RoutedExperts::quantize_gelu() {
  SY_CHECK(fc1_->grad.empty() && fc2_->grad.empty())
      << "quantized experts are frozen: allocate_grads must be false";
  const int64_t E = cfg_.num_experts, F = cfg_.ffn_hidden, D = cfg_.d_model;
  q_fc1_.reserve(static_cast<size_t>(E));
  q_fc2_.reserve(static_cast<size_t>(E));
  Tensor s1, s2;
  const float* w1 = host_readable(fc1_->value, &s1).ptr();
  const float* w2 = host_readable(fc2_->value, &s2).ptr();
  for (int64_t e = 0; e < E; ++e) {
    q_fc1_.push_back(quantize(w1 + e * F * D, F, D, cfg_.quant_group, cfg_.weight_bits));
    q_fc2_.push_back(quantize(w2 + e * D * F, D, F, cfg_.quant_group, cfg_.weight_bits));
  }
  // Keep the fp32 biases (as frozen Params, same names and order), release everything else.
  Tensor b1 = std::move(fc1_bias_->value), b2 = std::move(fc2_bias_->value);
  params_.clear();
  fc1_ = fc2_ = nullptr;
  fc1_bias_ = add(&params_, "experts.fc1_bias", {}, /*grads=*/false);
  fc2_bias_ = add(&params_, "experts.fc2_bias", {}, /*grads=*/false);
  fc1_bias_->value = std::move(b1);
  fc2_bias_->value = std::move(b2);
}

int64_t RoutedExperts::num_params() const {
  const int64_t E = cfg_.num_experts, F = cfg_.ffn_hidden, D = cfg_.d_model;
  switch (cfg_.kind) {
    case ExpertKind::kIdentity:
      return 0;
    case ExpertKind::kGelu:
      return E * (2 * F * D + F + D);
    case ExpertKind::kSwiGLU:
      break;
  }
  return 3 * E * F * D;
}

int64_t RoutedExperts::weight_bytes() const {
  if (!quantized()) return 4 * num_params();
  int64_t n = 0;
  for (const auto* qs : {&q_gate_, &q_up_, &q_down_, &q_fc1_, &q_fc2_})
    for (const QuantizedMatrix& q : *qs) n += q.bytes();
  if (cfg_.kind == ExpertKind::kGelu) n += 4 * cfg_.num_experts * (cfg_.ffn_hidden + cfg_.d_model);
  return n;
}

int64_t RoutedExperts::flops_per_row() const {
  const int64_t gemms = cfg_.kind == ExpertKind::kIdentity ? 0
                        : cfg_.kind == ExpertKind::kGelu   ? 2
                                                           : 3;
  return 2 * gemms * cfg_.d_model * cfg_.ffn_hidden;
}

void RoutedExperts::forward(const float* x_RD, const int32_t* row_offsets_E1, float* y_RD) {
  const ExecContext& c = *exec_;
  const int64_t E = cfg_.num_experts, D = cfg_.d_model, F = cfg_.ffn_hidden;
  std::memcpy(offsets_E1_.data(), row_offsets_E1, static_cast<size_t>(E + 1) * sizeof(int32_t));
  x_RD_ = x_RD;
  last_elementwise_s_ = 0.0;
  const int64_t R = row_offsets_E1[E] - row_offsets_E1[0];
  if (R == 0) return;
  if (cfg_.kind == ExpertKind::kIdentity) {
    ops::copy(c, y_RD, x_RD, R * D * static_cast<int64_t>(sizeof(float)));
    return;
  }
  if (cfg_.kind == ExpertKind::kGelu) {
    forward_gelu(x_RD, row_offsets_E1, y_RD);
    return;
  }
  float* g = scratch_grow(g_RF_, R * F, c.backend);
  float* u = scratch_grow(u_RF_, R * F, c.backend);
  float* a = scratch_grow(a_RF_, R * F, c.backend);
  // swiglu_forward inlined, to time the elementwise join apart from the GEMMs.
  using Clock = std::chrono::steady_clock;
  Clock::duration elementwise{0};
  if (!quantized() && c.backend->groups_experts()) {
    // Each GEMM for every expert in one call (a device backend batches them), the SwiGLU join
    // over all R rows in one pass: per row the same values as one expert at a time.
    ops::grouped_linear_forward(c, x_RD, gate_->value.ptr(), g, row_offsets_E1, E, D, F);
    ops::grouped_linear_forward(c, x_RD, up_->value.ptr(), u, row_offsets_E1, E, D, F);
    const Clock::time_point t0 = Clock::now();
    ops::swiglu(c, g, u, a, R * F);
    last_elementwise_s_ = std::chrono::duration<double>(Clock::now() - t0).count();
    ops::grouped_linear_forward(c, a, down_->value.ptr(), y_RD, row_offsets_E1, E, F, D);
    return;
  }
  const int64_t o0 = row_offsets_E1[0];
  for (int64_t e = 0; e < E; ++e) {
    if (hook_) hook_(e);
    const int64_t o = row_offsets_E1[e] - o0, n = row_offsets_E1[e + 1] - row_offsets_E1[e];
    if (n == 0) continue;
    const float* x = x_RD + o * D;
    float *ge = g + o * F, *ue = u + o * F, *ae = a + o * F;
    const size_t es = static_cast<size_t>(e);
    if (quantized()) {
      ops::linear_forward_quantized(c, x, q_gate_[es], ge, n);
      ops::linear_forward_quantized(c, x, q_up_[es], ue, n);
    } else {
      ops::linear_forward(c, x, gate_->value.ptr() + e * F * D, ge, n, D, F);
      ops::linear_forward(c, x, up_->value.ptr() + e * F * D, ue, n, D, F);
    }
    const Clock::time_point t0 = Clock::now();
    ops::swiglu(c, ge, ue, ae, n * F);
    elementwise += Clock::now() - t0;
    if (quantized())
      ops::linear_forward_quantized(c, ae, q_down_[es], y_RD + o * D, n);
    else
      ops::linear_forward(c, ae, down_->value.ptr() + e * D * F, y_RD + o * D, n, F, D);
  }
  last_elementwise_s_ = std::chrono::duration<double>(elementwise).count();
}

void RoutedExperts::backward(const float* dy_RD, float* dx_RD, bool weight_grads) {
  const ExecContext& c = *exec_;
  const int64_t E = cfg_.num_experts, D = cfg_.d_model, F = cfg_.ffn_hidden;
  const int64_t R = offsets_E1_[static_cast<size_t>(E)] - offsets_E1_[0];
  if (R == 0) return;
  if (cfg_.kind == ExpertKind::kIdentity) {
    if (dx_RD) ops::copy(c, dx_RD, dy_RD, R * D * static_cast<int64_t>(sizeof(float)));
    return;
  }
  if (cfg_.kind == ExpertKind::kGelu) {
    backward_gelu(dy_RD, dx_RD, weight_grads);
    return;
  }
  if (quantized()) {
    SY_CHECK(!weight_grads) << "quantized experts are frozen: no weight gradients";
    if (!dx_RD) return;
    float* da = scratch_grow(da_RF_, R * F, c.backend);
    float* du = scratch_grow(du_RF_, R * F, c.backend);
    float* wg = scratch_grow(wg_FD_, F * D, c.backend);
    float* wu = scratch_grow(wu_FD_, F * D, c.backend);
    float* wd = scratch_grow(wd_DF_, D * F, c.backend);
    const int64_t o0 = offsets_E1_[0];
    for (int64_t e = 0; e < E; ++e) {
      if (hook_) hook_(e);
      const int64_t o = offsets_E1_[e] - o0, n = offsets_E1_[e + 1] - offsets_E1_[e];
      if (n == 0) continue;
      const size_t es = static_cast<size_t>(e);
      ops::dequantize_rows(c, q_gate_[es], 0, F, wg);
      ops::dequantize_rows(c, q_up_[es], 0, F, wu);
      ops::dequantize_rows(c, q_down_[es], 0, D, wd);
      swiglu_backward(c, x_RD_ + o * D, wg, wu, wd, g_RF_.data() + o * F, u_RF_.data() + o * F,
                      a_RF_.data() + o * F, dy_RD + o * D, n, D, F, nullptr, nullptr, nullptr,
                      dx_RD + o * D, /*accumulate_dx=*/false, da + o * F, du + o * F);
    }
    return;
  }
  weight_grads = weight_grads && !gate_->grad.empty();
  if (!weight_grads && !dx_RD) return;
  float* da = scratch_grow(da_RF_, R * F, c.backend);
  float* du = scratch_grow(du_RF_, R * F, c.backend);
  if (!c.backend->groups_experts()) {  // expert by expert (Backend::groups_experts)
    const int64_t o0 = offsets_E1_[0];
    for (int64_t e = 0; e < E; ++e) {
      if (hook_) hook_(e);
      const int64_t o = offsets_E1_[e] - o0, n = offsets_E1_[e + 1] - offsets_E1_[e];
      if (n == 0) continue;
      const int64_t wg = e * F * D, wd = e * D * F;
      swiglu_backward(
          c, x_RD_ + o * D, gate_->value.ptr() + wg, up_->value.ptr() + wg, down_->value.ptr() + wd,
          g_RF_.data() + o * F, u_RF_.data() + o * F, a_RF_.data() + o * F, dy_RD + o * D, n, D, F,
          weight_grads ? gate_->grad.ptr() + wg : nullptr,
          weight_grads ? up_->grad.ptr() + wg : nullptr,
          weight_grads ? down_->grad.ptr() + wd : nullptr, dx_RD ? dx_RD + o * D : nullptr,
          /*accumulate_dx=*/false, da + o * F, du + o * F);
    }
    return;
  }
  // swiglu_backward for every expert at once: each GEMM for all experts in one call (a device
  // backend batches them), the SwiGLU backward over all R rows in one pass. Per group the same
  // linear_backward calls and per element the same elementwise op as one expert at a time, and
  // dx gets the gate term then the up term as before: the results do not change.
  const int32_t* off = offsets_E1_.data();
  // da = dy Wd; dWd += dy^T a.
  ops::grouped_linear_backward(c, a_RF_.data(), down_->value.ptr(), dy_RD,
                               weight_grads ? down_->grad.ptr() : nullptr, da, off, E, F, D,
                               /*accumulate_dx=*/false);
  float* dg = da;  // in place: dg overwrites da
  ops::swiglu_backward(c, g_RF_.data(), u_RF_.data(), da, dg, du, R * F);
  // The gate term writes dx, the up term accumulates onto it.
  ops::grouped_linear_backward(c, x_RD_, gate_->value.ptr(), dg,
                               weight_grads ? gate_->grad.ptr() : nullptr, dx_RD, off, E, D, F,
                               /*accumulate_dx=*/false);
  ops::grouped_linear_backward(c, x_RD_, up_->value.ptr(), du,
                               weight_grads ? up_->grad.ptr() : nullptr, dx_RD, off, E, D, F,
                               /*accumulate_dx=*/true);
}

// GELU experts keep pre = fc1 x + b1 in g_RF_ and a = GELU(pre) in a_RF_.
void RoutedExperts::forward_gelu(const float* x_RD, const int32_t* row_offsets_E1, float* y_RD) {
  const ExecContext& c = *exec_;
  const int64_t E = cfg_.num_experts, D = cfg_.d_model, F = cfg_.ffn_hidden;
  const int64_t R = row_offsets_E1[E] - row_offsets_E1[0];
  float* pre = scratch_grow(g_RF_, R * F, c.backend);
  float* a = scratch_grow(a_RF_, R * F, c.backend);
  using Clock = std::chrono::steady_clock;
  Clock::duration elementwise{0};
  const int64_t o0 = row_offsets_E1[0];
  const bool q = quantized();
  for (int64_t e = 0; e < E; ++e) {
    if (hook_) hook_(e);
    const int64_t o = row_offsets_E1[e] - o0, n = row_offsets_E1[e + 1] - row_offsets_E1[e];
    if (n == 0) continue;
    const size_t es = static_cast<size_t>(e);
    float *pe = pre + o * F, *ae = a + o * F;
    linear_bias_forward(c, x_RD + o * D, q ? nullptr : fc1_->value.ptr() + e * F * D,
                        q ? &q_fc1_[es] : nullptr, fc1_bias_->value.ptr() + e * F, n, D, F, pe);
    const Clock::time_point t0 = Clock::now();
    gelu_copy(c, pe, ae, n * F);
    elementwise += Clock::now() - t0;
    linear_bias_forward(c, ae, q ? nullptr : fc2_->value.ptr() + e * D * F,
                        q ? &q_fc2_[es] : nullptr, fc2_bias_->value.ptr() + e * D, n, F, D,
                        y_RD + o * D);
  }
  last_elementwise_s_ = std::chrono::duration<double>(elementwise).count();
}

void RoutedExperts::backward_gelu(const float* dy_RD, float* dx_RD, bool weight_grads) {
  const ExecContext& c = *exec_;
  const int64_t E = cfg_.num_experts, D = cfg_.d_model, F = cfg_.ffn_hidden;
  const int64_t R = offsets_E1_[static_cast<size_t>(E)] - offsets_E1_[0];
  const bool q = quantized();
  if (q) SY_CHECK(!weight_grads) << "quantized experts are frozen: no weight gradients";
  weight_grads = weight_grads && !q && !fc1_->grad.empty();
  if (!weight_grads && !dx_RD) return;
  float* dpre = scratch_grow(da_RF_, R * F, c.backend);
  float* w1 = q ? scratch_grow(wg_FD_, F * D, c.backend) : nullptr;
  float* w2 = q ? scratch_grow(wd_DF_, D * F, c.backend) : nullptr;
  const int64_t o0 = offsets_E1_[0];
  for (int64_t e = 0; e < E; ++e) {
    if (hook_) hook_(e);
    const int64_t o = offsets_E1_[e] - o0, n = offsets_E1_[e + 1] - offsets_E1_[e];
    if (n == 0) continue;
    const size_t es = static_cast<size_t>(e);
    if (q) {
      ops::dequantize_rows(c, q_fc1_[es], 0, F, w1);
      ops::dequantize_rows(c, q_fc2_[es], 0, D, w2);
    } else {
      w1 = fc1_->value.ptr() + e * F * D;
      w2 = fc2_->value.ptr() + e * D * F;
    }
    gelu_ffn_backward(c, x_RD_ + o * D, w1, w2, g_RF_.data() + o * F, a_RF_.data() + o * F,
                      dy_RD + o * D, n, D, F, weight_grads ? fc1_->grad.ptr() + e * F * D : nullptr,
                      weight_grads ? fc1_bias_->grad.ptr() + e * F : nullptr,
                      weight_grads ? fc2_->grad.ptr() + e * D * F : nullptr,
                      weight_grads ? fc2_bias_->grad.ptr() + e * D : nullptr,
                      dx_RD ? dx_RD + o * D : nullptr, /*accumulate_dx=*/false, dpre + o * F);
  }
}

// ---- shared expert -------------------------------------------------------------------------

SharedExpert::SharedExpert(int64_t d_model, int64_t hidden, bool allocate_grads, float init_std,
                           uint64_t seed)
    : D_(d_model), F_(hidden) {
  SY_CHECK(d_model >= 1 && hidden >= 1) << "shared expert needs D >= 1 and hidden >= 1";
  gate_proj_ = add(&params_, "shared_expert.gate_proj.weight", {F_, D_}, allocate_grads);
  up_proj_ = add(&params_, "shared_expert.up_proj.weight", {F_, D_}, allocate_grads);
  down_proj_ = add(&params_, "shared_expert.down_proj.weight", {D_, F_}, allocate_grads);
  gate_ = add(&params_, "shared_expert_gate.weight", {1, D_}, allocate_grads);
  for (Param* p : {gate_proj_, up_proj_, down_proj_, gate_}) init_slices(p, 1, init_std, seed);
}

int64_t SharedExpert::num_params() const {
  int64_t n = 0;
  for (const Param& p : params_) n += p.value.numel();
  return n;
}

void SharedExpert::forward(const float* x_TD, int64_t T, float* y_TD, const uint8_t* mask_T) {
  compute(x_TD, T, mask_T);
  add_output(y_TD);
}

void SharedExpert::add_output(float* y_TD) {
  if (T_ == 0) return;
  // gate: logits -> sigmoid values, in place
  ops::gated_add_rows(*exec_, gate_T_.data(), s_TD_.data(), mask_T_, T_, D_, y_TD);
}

void SharedExpert::compute(const float* x_TD, int64_t T, const uint8_t* mask_T) {
  compute_hidden(x_TD, T, mask_T);
  compute_output();
}

void SharedExpert::compute_hidden(const float* x_TD, int64_t T, const uint8_t* mask_T) {
  const ExecContext& c = *exec_;
  x_TD_ = x_TD;
  mask_T_ = mask_T;
  T_ = T;
  if (T == 0) return;
  // swiglu_forward's first half: g = gate x, u = up x, a = SiLU(g) * u.
  float* g = scratch_grow(g_TF_, T * F_, c.backend);
  float* u = scratch_grow(u_TF_, T * F_, c.backend);
  float* a = scratch_grow(a_TF_, T * F_, c.backend);
  ops::linear_forward(c, x_TD, gate_proj_->value.ptr(), g, T, D_, F_);
  ops::linear_forward(c, x_TD, up_proj_->value.ptr(), u, T, D_, F_);
  ops::swiglu(c, g, u, a, T * F_);
}

void SharedExpert::compute_output() {
  const ExecContext& c = *exec_;
  const int64_t T = T_;
  if (T == 0) return;
  // swiglu_forward's second half (s = down a), then the gate logits.
  float* s = scratch_grow(s_TD_, T * D_, c.backend);
  float* gate = scratch_grow(gate_T_, T, c.backend);
  ops::linear_forward(c, a_TF_.data(), down_proj_->value.ptr(), s, T, F_, D_);
  ops::linear_forward(c, x_TD_, gate_->value.ptr(), gate, T, D_, 1);
}

void SharedExpert::backward(const float* dy_TD, float* dx_TD, bool weight_grads) {
  backward_weights(dy_TD, weight_grads, dx_TD != nullptr);
  backward_weights_rest();
  backward_dx(dx_TD);
}

void SharedExpert::backward_weights(const float* dy_TD, bool weight_grads, bool need_dx) {
  const ExecContext& c = *exec_;
  const int64_t T = T_;
  weight_grads_ = weight_grads && !gate_->grad.empty() && T > 0;
  has_dx_terms_ = T > 0 && need_dx;
  if (!weight_grads_ && !has_dx_terms_) return;
  float* ds = scratch_grow(ds_TD_, T * D_, c.backend);
  float* dlogit = scratch_grow(dlogit_T_, T, c.backend);
  ops::gated_add_rows_backward(c, dy_TD, s_TD_.data(), gate_T_.data(), mask_T_, T, D_, ds, dlogit);
  // Gate logit = w_gate x: dw += dlogit^T x (its dx term, dlogit w, is backward_dx's).
  if (weight_grads_) {
    ops::linear_backward(c, x_TD_, gate_->value.ptr(), dlogit, gate_->grad.ptr(), nullptr, T, D_, 1,
                         /*accumulate_dx=*/true);
  }
  // swiglu_backward without its dx GEMMs: da = ds Wd (dWd += ds^T a), dg (in da's place) and du;
  // dWg and dWu are backward_weights_rest's.
  float* da = scratch_grow(da_TF_, T * F_, c.backend);
  float* du = scratch_grow(du_TF_, T * F_, c.backend);
  ops::linear_backward(c, a_TF_.data(), down_proj_->value.ptr(), ds,
                       weight_grads_ ? down_proj_->grad.ptr() : nullptr, da, T, F_, D_,
                       /*accumulate_dx=*/false);
  ops::swiglu_backward(c, g_TF_.data(), u_TF_.data(), da, da, du, T * F_);
}

void SharedExpert::backward_weights_rest() {
  if (!weight_grads_) return;
  const ExecContext& c = *exec_;
  // dWg += dg^T x, dWu += du^T x.
  ops::linear_backward(c, x_TD_, gate_proj_->value.ptr(), da_TF_.data(), gate_proj_->grad.ptr(),
                       nullptr, T_, D_, F_, /*accumulate_dx=*/true);
  ops::linear_backward(c, x_TD_, up_proj_->value.ptr(), du_TF_.data(), up_proj_->grad.ptr(),
                       nullptr, T_, D_, F_, /*accumulate_dx=*/true);
}

void SharedExpert::backward_dx(float* dx_TD) {
  if (!dx_TD || !has_dx_terms_) return;
  const ExecContext& c = *exec_;
  const int64_t T = T_;
  // dx += dlogit w_gate, then the gate and up terms of the SwiGLU, in swiglu_backward's order.
  ops::linear_backward(c, x_TD_, gate_->value.ptr(), dlogit_T_.data(), nullptr, dx_TD, T, D_, 1,
                       /*accumulate_dx=*/true);
  ops::linear_backward(c, x_TD_, gate_proj_->value.ptr(), da_TF_.data(), nullptr, dx_TD, T, D_, F_,
                       /*accumulate_dx=*/true);
  ops::linear_backward(c, x_TD_, up_proj_->value.ptr(), du_TF_.data(), nullptr, dx_TD, T, D_, F_,
                       /*accumulate_dx=*/true);
}

}  // namespace sy

namespace sy {
namespace {
int64_t CapacityBytes(std::initializer_list<const DeviceArray<float>*> vs) {
  int64_t n = 0;
  for (const DeviceArray<float>* v : vs) n += static_cast<int64_t>(v->capacity() * sizeof(float));
  return n;
}
}  // namespace

void RoutedExperts::set_context(const ExecContext* c) {
  exec_ = c ? c : &default_context();
  for (Param& p : params_) p.move_to(exec_->backend);
}

void SharedExpert::set_context(const ExecContext* c) {
  exec_ = c ? c : &default_context();
  for (Param& p : params_) p.move_to(exec_->backend);
}

int64_t RoutedExperts::buffer_bytes() const {
  return CapacityBytes({&g_RF_, &u_RF_, &a_RF_, &da_RF_, &du_RF_, &wg_FD_, &wu_FD_, &wd_DF_});
}

int64_t SharedExpert::buffer_bytes() const {
  return CapacityBytes(
      {&g_TF_, &u_TF_, &a_TF_, &s_TD_, &gate_T_, &da_TF_, &du_TF_, &ds_TD_, &dlogit_T_});
}

}  // namespace sy
