#include "runtime/train/distill.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>

#include "runtime/backend/ops.h"
#include "runtime/core/timing.h"
#include "runtime/train/adamw.h"

namespace sy {
namespace {

double LogSumExp(const float* s, int64_t n) {
  double mx = -std::numeric_limits<double>::infinity();
  for (int64_t e = 0; e < n; ++e) mx = std::max(mx, static_cast<double>(s[e]));
  if (std::isinf(mx)) return mx;
  double z = 0;
  for (int64_t e = 0; e < n; ++e) z += std::exp(static_cast<double>(s[e]) - mx);
  return mx + std::log(z);
}

// Sums of the agreement terms over this rank's tokens: KL, top-1 matches, top-K overlaps.
struct AgreementSums {
  double kl = 0, top1 = 0, overlap = 0, tokens = 0;
};

// The router inputs (host arrays: captured by the model) where router r runs.
struct RouterInputs {
  DeviceArray<float> x;
  DeviceArray<int32_t> ids;
  RouterInputs(const Router& r, const float* x_TD, const int32_t* token_ids_T, int64_t T)
      : x(r.mem()), ids(r.mem()) {
    if (x_TD) x.copy_from_host(x_TD, static_cast<size_t>(T * r.config().d_model));
    if (token_ids_T) ids.copy_from_host(token_ids_T, static_cast<size_t>(T));
  }
  const float* x_TD() const { return x.empty() ? nullptr : x.data(); }
  const int32_t* ids_T() const { return ids.empty() ? nullptr : ids.data(); }
};

// On host copies of the two outputs (a measurement, twice per layer).
AgreementSums SumAgreement(const RouterOutput& t_out, const RouterOutput& s_out) {
  AgreementSums a;
  const int64_t T = t_out.T, E = t_out.E, K = t_out.K;
  const std::vector<float> t_logits = t_out.logits_TE.data, s_logits = s_out.logits_TE.data;
  const std::vector<int32_t> t_ids = t_out.topk_ids_TK, s_ids = s_out.topk_ids_TK;
  for (int64_t i = 0; i < T; ++i) {
    const float* lt = t_logits.data() + i * E;
    const float* ls = s_logits.data() + i * E;
    // log p and log q by log-softmax of the scores in double, so a student with the teacher's
    // scores has KL exactly 0; a teacher score of -inf (hash: an expert it never picks) is p = 0.
    const double lse_t = LogSumExp(lt, E), lse_s = LogSumExp(ls, E);
    double kl = 0;
    for (int64_t e = 0; e < E; ++e) {
      if (std::isinf(lt[e]) && lt[e] < 0) continue;
      const double log_p = lt[e] - lse_t;
      kl += std::exp(log_p) * (log_p - (ls[e] - lse_s));
    }
    a.kl += kl;
    const int32_t* ti = t_ids.data() + i * K;
    // The student's first K slots: its top-K (it may offer more slots: expert choice's E).
    const int32_t* si = s_ids.data() + i * s_out.K;
    a.top1 += ti[0] == si[0] ? 1.0 : 0.0;
    int64_t common = 0;
    for (int64_t k = 0; k < K; ++k) common += std::count(ti, ti + K, si[k]) > 0 ? 1 : 0;
    a.overlap += static_cast<double>(common) / static_cast<double>(K);
  }
  a.tokens = static_cast<double>(T);
  return a;
}

RoutingAgreement Finish(AgreementSums a, Communicator* comm, int layer) {
  double v[4] = {a.kl, a.top1, a.overlap, a.tokens};
  if (comm) comm->allreduce(v, 4, ReduceOp::kSum, {"distill.agreement", layer});
  RoutingAgreement r;
  if (v[3] > 0) {
    r.kl = v[0] / v[3];
    r.top1 = v[1] / v[3];
    r.topk_overlap = v[2] / v[3];
  }
  return r;
}

}  // namespace

Status DistillConfig::validate() const {
  if (iterations < 0) return InvalidArgument("distill: iterations must be >= 0");
  if (!(lr > 0) || !std::isfinite(lr)) return InvalidArgument("distill: lr must be > 0");
  if (max_tokens < 0) return InvalidArgument("distill: max_tokens must be >= 0 (0 = all)");
  return Status::Ok();
}

RoutingAgreement measure_agreement(Router& teacher, Router& student, const float* x_TD,
                                   const int32_t* token_ids_T, int64_t T, Communicator* comm,
                                   int layer) {
  const RouterInputs in(student, x_TD, token_ids_T, T);
  RouterOutput t, s;
  teacher.forward(in.x_TD(), in.ids_T(), T, &t);
  student.forward(in.x_TD(), in.ids_T(), T, &s);
  return Finish(SumAgreement(t, s), comm, layer);
}

StatusOr<DistillLayerReport> distill_router(Router& teacher, Router& student, const float* x_TD,
                                            const int32_t* token_ids_T, int64_t T,
                                            Communicator* comm, const DistillConfig& cfg,
                                            int layer) {
  SY_RETURN_IF_ERROR(cfg.validate());
  const RouterConfig &tc = teacher.config(), &sc = student.config();
  if (tc.d_model != sc.d_model || tc.num_experts != sc.num_experts || tc.top_k != sc.top_k)
    return InvalidArgument("distill: teacher '" + tc.name + "' and student '" + sc.name +
                           "' differ in D, E or K");
  const int64_t E = sc.num_experts;
  DistillLayerReport rep;
  rep.layer = layer;
  const RouterInputs in(student, x_TD, token_ids_T, T);
  x_TD = in.x_TD();
  token_ids_T = in.ids_T();
  RouterOutput t, s;
  teacher.forward(x_TD, token_ids_T, T, &t);
  student.forward(x_TD, token_ids_T, T, &s);
  rep.before = Finish(SumAgreement(t, s), comm, layer);
  rep.after = rep.before;
  if (student.routes_like(teacher)) {
    rep.skipped = "the student already routes exactly like the teacher";
    return rep;
  }
  if (!student.differentiable()) {
    rep.skipped = "'" + sc.name + "' has no gradient";
    return rep;
  }
  if (cfg.iterations == 0) {
    rep.skipped = "0 iterations";
    return rep;
  }
  int64_t N = T;
  if (comm) comm->allreduce(&N, 1, ReduceOp::kSum, {"distill.tokens", layer});
  if (N == 0) return InvalidArgument("distill: no router inputs on any rank");

  AdamWConfig ac;
  ac.lr = cfg.lr;
  ac.beta1 = 0.9;
  ac.beta2 = 0.999;
  ac.weight_decay = 0.0;
  ac.clip_norm = 0.0;  // full-batch KL gradients are well scaled; Adam normalizes them anyway
  ac.total_steps = cfg.iterations;
  ac.min_lr_ratio = 0.1;
  SY_RETURN_IF_ERROR(ac.validate());
  AdamW opt(ac);
  opt.set_context(&student.ctx());  // its update runs where the student lives
  std::vector<TrainParam> params;
  int64_t n_params = 0;
  for (Param& p : student.params()) {
    if (p.grad.numel() == 0) continue;  // state without a gradient (Router::add_state)
    params.push_back({p.name, &p.value, &p.grad});
    n_params += p.grad.numel();
  }
  Memory* mem = student.mem();
  const ExecContext& ex = student.ctx();
  DeviceArray<float> packed(mem, static_cast<size_t>(n_params));
  Tensor diff({T, E}, mem), dlogits({T, E}, mem);
  // -1 and 1/N where the ops read their scalars: dlogits = (q - p) / N, bitwise as in float.
  const DeviceArray<float> scalars(mem, std::vector<float>{-1.0f, 1.0f / static_cast<float>(N)});
  const float* p_TE = t.probs_TE.ptr();
  const int64_t bytes_TE = T * E * static_cast<int64_t>(sizeof(float));
  for (int64_t it = 0; it < cfg.iterations; ++it) {
    student.zero_grad();
    student.forward(x_TD, token_ids_T, T, &s);
    ops::copy(ex, diff.ptr(), s.probs_TE.ptr(), bytes_TE);
    ops::axpy(ex, scalars.data(), p_TE, diff.ptr(), T * E, /*accumulate=*/true);
    ops::axpy(ex, scalars.data() + 1, diff.ptr(), dlogits.ptr(), T * E, /*accumulate=*/false);
    RouterGrads g;
    g.dlogits_TE = dlogits.ptr();
    student.backward(g);
    if (comm && comm->size() > 1) {  // replicated parameters: every rank the same update
      size_t off = 0;
      for (Param& p : student.params()) {
        ops::copy(ex, packed.data() + off, p.grad.ptr(), p.grad.data.bytes());
        off += p.grad.data.size();
      }
      comm->allreduce(packed.data(), n_params, ReduceOp::kSum, {"distill.grad", layer, it});
      off = 0;
      for (Param& p : student.params()) {
        ops::copy(ex, p.grad.ptr(), packed.data() + off, p.grad.data.bytes());
        off += p.grad.data.size();
      }
    }
    opt.update(params, 0.0);
  }
  student.zero_grad();
  student.forward(x_TD, token_ids_T, T, &s);
  rep.after = Finish(SumAgreement(t, s), comm, layer);
  rep.iterations = cfg.iterations;
  return rep;
}

StatusOr<DistillReport> warm_start_routers(Model& model, Communicator* comm,
                                           const std::string& router, uint64_t seed, int64_t hidden,
                                           const std::vector<std::vector<int32_t>>& my_seqs,
                                           const DistillConfig& cfg,
                                           const DistillProgress& on_layer) {
  const double t0 = now_seconds();
  SY_RETURN_IF_ERROR(cfg.validate());
  // Checks that could fail on one rank only are agreed on first, so no rank is left waiting in
  // a collective: token ids, sequence lengths, the number of sequences.
  std::string bad;
  for (const auto& seq : my_seqs) {
    if (static_cast<int64_t>(seq.size()) > model.max_positions())
      bad = "warm start: a sequence of " + std::to_string(seq.size()) +
            " tokens exceeds max_position_embeddings";
    for (int32_t id : seq)
      if (id < 0 || id >= model.vocab_size())
        bad = "warm start: token id " + std::to_string(id) + " outside the vocabulary";
  }
  int64_t flags[3] = {bad.empty() ? 0 : 1, static_cast<int64_t>(my_seqs.size()),
                      -static_cast<int64_t>(my_seqs.size())};
  if (comm) comm->allreduce(flags, 3, ReduceOp::kMax, {"distill.check"});
  if (flags[0] != 0)
    return InvalidArgument(bad.empty() ? "warm start: bad input on another rank" : bad);
  if (flags[1] != -flags[2])
    return InvalidArgument("warm start: ranks pass different numbers of sequences");

  // Sequences needed to reach max_tokens on this rank; every rank runs the largest count.
  int64_t need = 0, have = 0;
  for (const auto& seq : my_seqs) {
    if (cfg.max_tokens > 0 && have >= cfg.max_tokens) break;
    have += static_cast<int64_t>(seq.size());
    ++need;
  }
  if (comm) comm->allreduce(&need, 1, ReduceOp::kMax, {"distill.seqs"});

  // The teachers' inputs: what the checkpoint's routers see in the model's own forward.
  std::vector<std::vector<float>> x_L(static_cast<size_t>(model.num_layers()));
  std::vector<int32_t> ids;
  if (!model.set_moe_input_capture(&x_L))  // the same answer on every rank: no collective yet
    return InvalidArgument("warm start: a " + model.model_type() +
                           " model cannot capture its router inputs");
  model.set_replicated_tokens(false);  // every rank its own sequences, as in training
  Tensor logits;
  for (int64_t i = 0; i < need; ++i) {
    const std::vector<int32_t>& seq = my_seqs[static_cast<size_t>(i)];
    model.reset_cache();
    Status st = model.forward(seq.data(), static_cast<int64_t>(seq.size()), &logits,
                              /*all_logits=*/false);
    if (!st.ok()) {
      model.set_moe_input_capture(nullptr);
      return st;
    }
    ids.insert(ids.end(), seq.begin(), seq.end());
  }
  model.set_moe_input_capture(nullptr);
  model.reset_cache();
  const int64_t T = cfg.max_tokens > 0 ? std::min<int64_t>(cfg.max_tokens, ids.size())
                                       : static_cast<int64_t>(ids.size());

  DistillReport rep;
  rep.student = router;
  rep.config = cfg;
  rep.ranks = comm ? comm->size() : 1;
  rep.tokens = T;
  if (comm) comm->allreduce(&rep.tokens, 1, ReduceOp::kSum, {"distill.tokens"});
  std::vector<MoeLayer*> layers;  // by layer index, null for dense layers
  for (int64_t l = 0; l < model.num_layers(); ++l) layers.push_back(model.moe_layer(l));
  for (MoeLayer* l : layers)
    if (l) rep.teacher = l->router().name();
  SY_ASSIGN_OR_RETURN(std::vector<std::unique_ptr<Router>> teachers,
                      model.replace_routers(router, seed, hidden));
  for (size_t l = 0; l < layers.size(); ++l) {
    if (!layers[l]) continue;
    SY_ASSIGN_OR_RETURN(DistillLayerReport lr,
                        distill_router(*teachers[l], layers[l]->router(), x_L[l].data(), ids.data(),
                                       T, comm, cfg, static_cast<int>(l)));
    rep.layers.push_back(std::move(lr));
    if (on_layer) {
      size_t total = 0;
      for (MoeLayer* m : layers) total += m != nullptr;
      on_layer(rep.layers.back(), rep.layers.size(), total, now_seconds() - t0);
    }
  }
  rep.seconds = now_seconds() - t0;
  return rep;
}

std::string format_distill_report(const DistillReport& r) {
  std::string out;
  char line[512];
  std::snprintf(line, sizeof(line),
                "router warm start: %s -> %s, distilled on %lld router inputs (%d rank%s), "
                "%lld Adam iterations at lr %.3g, %.1f s\n",
                r.teacher.c_str(), r.student.c_str(), (long long)r.tokens, r.ranks,
                r.ranks == 1 ? "" : "s", (long long)r.config.iterations, r.config.lr, r.seconds);
  out += line;
  for (const DistillLayerReport& l : r.layers) {
    if (!l.skipped.empty()) {
      std::snprintf(line, sizeof(line),
                    "  layer %d: not fitted (%s): KL %.4f, top-1 agreement %.1f%%, top-k overlap "
                    "%.1f%%\n",
                    l.layer, l.skipped.c_str(), l.before.kl, 100 * l.before.top1,
                    100 * l.before.topk_overlap);
    } else {
      std::snprintf(line, sizeof(line),
                    "  layer %d: KL %.4f -> %.4f, top-1 agreement %.1f%% -> %.1f%%, top-k overlap "
                    "%.1f%% -> %.1f%%\n",
                    l.layer, l.before.kl, l.after.kl, 100 * l.before.top1, 100 * l.after.top1,
                    100 * l.before.topk_overlap, 100 * l.after.topk_overlap);
    }
    out += line;
  }
  return out;
}

void print_distill_report(const DistillReport& r, Communicator* comm) {
  if (comm && comm->rank() != 0) return;
  std::fputs(format_distill_report(r).c_str(), stdout);
  std::fflush(stdout);
}

}  // namespace sy
