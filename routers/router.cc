#include "routers/router.h"

#include <algorithm>
#include <sstream>

#include "runtime/backend/ops.h"
#include "runtime/core/rng.h"

namespace sy {

Status RouterConfig::validate() const {
  std::ostringstream err;
  if (d_model < 1) err << "d_model must be >= 1 (got " << d_model << "); ";
  if (num_experts < 1) err << "num_experts must be >= 1 (got " << num_experts << "); ";
  if (top_k < 1) err << "top_k must be >= 1 (got " << top_k << "); ";
  if (num_experts >= 1 && top_k > num_experts)
    err << "top_k (" << top_k << ") must be <= num_experts (" << num_experts << "); ";
  if (hidden < 0) err << "router hidden must be >= 0 (got " << hidden << "); ";
  if (num_heads < 1) err << "num_heads must be >= 1 (got " << num_heads << "); ";
  if (!(init_std >= 0.0f)) err << "init_std must be >= 0; ";
  if (!(balance_rate >= 0.0f && balance_rate <= 1.0f))
    err << "balance_rate must be in [0, 1] (got " << balance_rate << "); ";
  const std::string e = err.str();
  if (!e.empty()) return InvalidArgument("router '" + name + "': " + e.substr(0, e.size() - 2));
  return Status::Ok();
}

namespace {

// *dst = src's values in dst's memory (reallocated only when the shape changes).
void copy_into(const Tensor& src, Tensor* dst) {
  if (dst->memory() != src.memory()) dst->data = DeviceArray<float>(src.memory());
  dst->shape = src.shape;
  dst->data = src.data;
}

// Gives t the shape [rows, cols] in memory m, keeping its contents when it already has both.
void reshape(Tensor* t, int64_t rows, int64_t cols, Memory* m) {
  t->resize({rows, cols}, m);
}

}  // namespace

void Router::forward(const float* x_TD, const int32_t* token_ids_T, int64_t T, RouterOutput* out) {
  SY_CHECK(out != nullptr);
  SY_CHECK(T == 0 || x_TD != nullptr || needs_token_ids());
  SY_CHECK(!needs_token_ids() || T == 0 || token_ids_T != nullptr)
      << "router '" << cfg_.name << "' needs token ids";
  const int64_t E = cfg_.num_experts, K = slots_per_token();
  out->T = T;
  out->E = E;
  out->K = K;
  // The caller's buffers are reused as they are when the shape is unchanged (no clearing pass
  // over T*E floats): route() writes every entry (router.h).
  reshape(&out->logits_TE, T, E, mem());
  reshape(&out->probs_TE, T, E, mem());
  scratch_grow(out->topk_ids_TK, T * K, mem());
  out->topk_ids_TK.resize_uninit(static_cast<size_t>(T * K));
  reshape(&out->topk_weights_TK, T, K, mem());
  route(x_TD, token_ids_T, T, out);
  // The chosen probabilities before any renormalization: what the capacity plan ranks drops
  // by, and what backward needs. One gather here, for every router (route() may be overridden).
  reshape(&out->chosen_probs_TK, T, K, mem());
  ops::gather_topk_probs(ctx(), out->probs_TE.ptr(), out->topk_ids_TK.data(), T, E, K,
                         out->chosen_probs_TK.ptr());
  last_T_ = T;
  // Copies for backward (the caller may reuse out), in this router's memory.
  copy_into(out->chosen_probs_TK, &vals_TK_);
  copy_into(out->probs_TE, &probs_TE_);
  ids_TK_.move_to(mem());
  ids_TK_ = out->topk_ids_TK;
}

void Router::route(const float* x_TD, const int32_t* token_ids_T, int64_t T, RouterOutput* out) {
  const int64_t E = cfg_.num_experts, K = slots_per_token();
  compute_scores(x_TD, token_ids_T, T, out->logits_TE.ptr());
  out->finite = ops::all_finite(ctx(), out->logits_TE.ptr(), T * E);
  ops::softmax_rows(ctx(), out->logits_TE.ptr(), out->probs_TE.ptr(), T, E);
  if (balance_b_) {  // the choice: top-k of s + b; the weights stay the chosen probabilities
    biased_TE_.resize({T, E}, mem());
    ops::copy(ctx(), biased_TE_.ptr(), out->logits_TE.ptr(),
              T * E * static_cast<int64_t>(sizeof(float)));
    ops::add_bias_rows(ctx(), balance_b_->value.ptr(), T, E, biased_TE_.ptr());
    choose_by(biased_TE_.ptr(), T, cfg_.norm_topk_prob, out);
    return;
  }
  ops::topk_rows(ctx(), out->probs_TE.ptr(), T, E, K, out->topk_ids_TK.data(),
                 out->topk_weights_TK.ptr());
  if (cfg_.norm_topk_prob) ops::normalize_rows(ctx(), out->topk_weights_TK.ptr(), T, K);
}

void Router::add_balance_bias(const std::string& name, float rate, bool by_sign) {
  SY_CHECK(balance_b_ == nullptr) << "router '" << cfg_.name << "' already has a balance bias";
  balance_b_ = add_state(name, {cfg_.num_experts});  // zero
  balance_rate_ = rate;
  balance_by_sign_ = by_sign;
}

void Router::after_step(const int64_t* load_E) {
  if (!balance_b_) return;
  const int64_t E = cfg_.num_experts;
  double mean = 0;
  for (int64_t e = 0; e < E; ++e) mean += static_cast<double>(load_E[e]);
  mean /= static_cast<double>(E);
  if (mean <= 0) return;  // no tokens this step
  std::vector<float> b = to_host(balance_b_->value.ptr(), E);
  for (int64_t e = 0; e < E; ++e) {
    const double gap = mean - static_cast<double>(load_E[e]);
    if (balance_by_sign_)
      b[static_cast<size_t>(e)] += gap > 0 ? balance_rate_ : (gap < 0 ? -balance_rate_ : 0.0f);
    else
      b[static_cast<size_t>(e)] += static_cast<float>(balance_rate_ * gap / mean);
  }
  from_host(balance_b_->value.ptr(), b);
}

void Router::copy_balance_bias(const Router& other) {
  const Param* theirs = other.balance_bias();
  if (!balance_b_ || !theirs || theirs->name != balance_b_->name ||
      theirs->value.shape != balance_b_->value.shape)
    return;
  balance_b_->value.data = theirs->value.data;  // keeps this router's memory
}

void Router::backward(const RouterGrads& g) {
  if (!differentiable()) return;
  const int64_t T = last_T_, E = cfg_.num_experts, K = slots_per_token();
  if (T == 0) return;
  // dp = dprobs + scatter(d chosen values), through the renormalization when it is on:
  // w_i = v_i / S, S = sum_j v_j  =>  dv_i = (dw_i - sum_j dw_j w_j) / S.
  dp_TE_.resize({T, E}, mem());
  if (g.dprobs_TE)
    ops::copy(ctx(), dp_TE_.ptr(), g.dprobs_TE, T * E * static_cast<int64_t>(sizeof(float)));
  else
    dp_TE_.zero();
  if (g.dweights_TK)
    ops::topk_weights_backward(ctx(), g.dweights_TK, vals_TK_.ptr(), ids_TK_.data(), T, E, K,
                               cfg_.norm_topk_prob, dp_TE_.ptr());
  ds_TE_.resize({T, E}, mem());
  ops::softmax_backward_rows(ctx(), probs_TE_.ptr(), dp_TE_.ptr(), ds_TE_.ptr(), T, E,
                             /*accumulate=*/false);
  if (g.dlogits_TE) ops::add_inplace(ctx(), ds_TE_.ptr(), g.dlogits_TE, T * E);
  backward_scores(ds_TE_.ptr(), g.dx_TD);
}

void Router::choose_by(const float* rank_TE, int64_t T, bool normalize, RouterOutput* out) {
  const int64_t E = cfg_.num_experts, K = slots_per_token();
  rank_vals_TK_.resize({T, K}, mem());
  ops::topk_rows(ctx(), rank_TE, T, E, K, out->topk_ids_TK.data(), rank_vals_TK_.ptr());
  ops::gather_topk_probs(ctx(), out->probs_TE.ptr(), out->topk_ids_TK.data(), T, E, K,
                         out->topk_weights_TK.ptr());
  if (normalize) ops::normalize_rows(ctx(), out->topk_weights_TK.ptr(), T, K);
}

std::vector<float> Router::to_host(const float* p, int64_t n) const {
  std::vector<float> v(static_cast<size_t>(n));
  if (n > 0) mem()->copy_to_host(v.data(), p, n * static_cast<int64_t>(sizeof(float)));
  return v;
}

void Router::from_host(float* dst, const std::vector<float>& v) const {
  if (!v.empty())
    mem()->copy_from_host(dst, v.data(), static_cast<int64_t>(v.size() * sizeof(float)));
}

int64_t Router::num_params() const {
  int64_t n = 0;
  for (const Param& p : params_) n += p.value.numel();
  return n;
}

Param* Router::find_param(const std::string& name) {
  for (Param& p : params_)
    if (p.name == name) return &p;
  return nullptr;
}

Status Router::set_param(const std::string& name, const Tensor& value) {
  Param* p = find_param(name);
  if (!p) return NotFound("router '" + cfg_.name + "' has no parameter '" + name + "'");
  if (p->value.shape != value.shape)
    return InvalidArgument("router '" + cfg_.name + "' parameter '" + name + "' has shape " +
                           p->value.shape_str() + ", got " + value.shape_str());
  p->value.data = value.data;  // keeps the parameter's memory
  return Status::Ok();
}

Status Router::fit_token_table(const std::vector<int64_t>&) {
  return InvalidArgument("router '" + name() + "' does not route by a token table");
}

void Router::zero_grad() {
  for (Param& p : params_) p.zero_grad();
}

void Router::set_context(const ExecContext* c) {
  exec_ = c ? c : &default_context();
  for (Param& p : params_) p.move_to(mem());
}

Param* Router::add_param(const std::string& name, std::vector<int64_t> shape) {
  params_.emplace_back(name, std::move(shape), mem());
  return &params_.back();
}

Param* Router::add_state(const std::string& name, std::vector<int64_t> shape) {
  Param* p = add_param(name, std::move(shape));
  p->grad = Tensor(std::vector<int64_t>{0}, mem());
  return p;
}

void Router::init_normal(Param* p, float std) {
  // Drawn on the host, then copied to where the parameter lives.
  const uint64_t stream = fnv1a64((cfg_.name + "/" + p->name).c_str());
  std::vector<float> v(static_cast<size_t>(p->value.numel()));
  fill_normal(v.data(), p->value.numel(), std, cfg_.seed, stream);
  p->value.data = v;
}

}  // namespace sy
