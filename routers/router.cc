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
  const std::string e = err.str();
  if (!e.empty()) return InvalidArgument("router '" + name + "': " + e.substr(0, e.size() - 2));
  return Status::Ok();
}

namespace {

// Gives t the shape [rows, cols], keeping its contents when it already has that shape.
void reshape(Tensor* t, int64_t rows, int64_t cols) {
  if (t->shape.size() == 2 && t->shape[0] == rows && t->shape[1] == cols) return;
  t->resize({rows, cols});
}

}  // namespace

void Router::forward(const float* x_TD, const int32_t* token_ids_T, int64_t T, RouterOutput* out) {
  SY_CHECK(out != nullptr);
  SY_CHECK(T == 0 || x_TD != nullptr || needs_token_ids());
  SY_CHECK(!needs_token_ids() || T == 0 || token_ids_T != nullptr)
      << "router '" << cfg_.name << "' needs token ids";
  const int64_t E = cfg_.num_experts, K = cfg_.top_k;
  out->T = T;
  out->E = E;
  out->K = K;
  // The caller's buffers are reused as they are when the shape is unchanged (no clearing pass
  // over T*E floats): route() writes every entry (router.h).
  reshape(&out->logits_TE, T, E);
  reshape(&out->probs_TE, T, E);
  out->topk_ids_TK.resize(static_cast<size_t>(T * K));
  reshape(&out->topk_weights_TK, T, K);
  route(x_TD, token_ids_T, T, out);
  // The chosen probabilities before any renormalization: what the capacity plan ranks drops
  // by, and what backward needs. One gather here, for every router (route() may be overridden).
  reshape(&out->chosen_probs_TK, T, K);
  ops::gather_topk_probs(ctx(), out->probs_TE.ptr(), out->topk_ids_TK.data(), T, E, K,
                         out->chosen_probs_TK.ptr());
  vals_TK_ = out->chosen_probs_TK;
  last_T_ = T;
  probs_TE_ = out->probs_TE;
  ids_TK_ = out->topk_ids_TK;
}

void Router::route(const float* x_TD, const int32_t* token_ids_T, int64_t T, RouterOutput* out) {
  const int64_t E = cfg_.num_experts, K = cfg_.top_k;
  compute_scores(x_TD, token_ids_T, T, out->logits_TE.ptr());
  out->finite = ops::all_finite(ctx(), out->logits_TE.ptr(), T * E);
  ops::softmax_rows(ctx(), out->logits_TE.ptr(), out->probs_TE.ptr(), T, E);
  ops::topk_rows(ctx(), out->probs_TE.ptr(), T, E, K, out->topk_ids_TK.data(),
                 out->topk_weights_TK.ptr());
  if (cfg_.norm_topk_prob) {
    for (int64_t t = 0; t < T; ++t) {
      float* w = out->topk_weights_TK.row(t);
      float s = 0.0f;
      for (int64_t k = 0; k < K; ++k) s += w[k];
      if (s > 0.0f)
        for (int64_t k = 0; k < K; ++k) w[k] /= s;
    }
  }
}

void Router::backward(const RouterGrads& g) {
  if (!differentiable()) return;
  const int64_t T = last_T_, E = cfg_.num_experts, K = cfg_.top_k;
  if (T == 0) return;
  // dp = dprobs + scatter(d chosen values), through the renormalization when it is on:
  // w_i = v_i / S, S = sum_j v_j  =>  dv_i = (dw_i - sum_j dw_j w_j) / S.
  Tensor dp({T, E});
  if (g.dprobs_TE) std::copy(g.dprobs_TE, g.dprobs_TE + T * E, dp.ptr());
  if (g.dweights_TK) {
    for (int64_t t = 0; t < T; ++t) {
      const float* dw = g.dweights_TK + t * K;
      const float* v = vals_TK_.row(t);
      const int32_t* ids = ids_TK_.data() + t * K;
      if (cfg_.norm_topk_prob) {
        float S = 0.0f, dot = 0.0f;
        for (int64_t k = 0; k < K; ++k) S += v[k];
        if (S <= 0.0f) continue;
        for (int64_t k = 0; k < K; ++k) dot += dw[k] * (v[k] / S);
        for (int64_t k = 0; k < K; ++k) dp.at(t, ids[k]) += (dw[k] - dot) / S;
      } else {
        for (int64_t k = 0; k < K; ++k) dp.at(t, ids[k]) += dw[k];
      }
    }
  }
  Tensor ds({T, E});
  ops::softmax_backward_rows(ctx(), probs_TE_.ptr(), dp.ptr(), ds.ptr(), T, E,
                             /*accumulate=*/false);
  if (g.dlogits_TE)
    for (int64_t i = 0; i < T * E; ++i) ds.data[static_cast<size_t>(i)] += g.dlogits_TE[i];
  backward_scores(ds.ptr(), g.dx_TD);
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
  p->value.data = value.data;
  return Status::Ok();
}

Status Router::fit_token_table(const std::vector<int64_t>&) {
  return InvalidArgument("router '" + name() + "' does not route by a token table");
}

void Router::zero_grad() {
  for (Param& p : params_) p.zero_grad();
}

Param* Router::add_param(const std::string& name, std::vector<int64_t> shape) {
  params_.emplace_back(name, std::move(shape));
  return &params_.back();
}

void Router::init_normal(Param* p, float std) {
  const uint64_t stream = fnv1a64((cfg_.name + "/" + p->name).c_str());
  fill_normal(p->value.ptr(), p->value.numel(), std, cfg_.seed, stream);
}

}  // namespace sy
