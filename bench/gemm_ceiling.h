// The GEMM ceiling of a piece of the model: the bare OpenBLAS calls of the same shapes, on the
// same weights, that the CPU backend makes for it (runtime/backend/cpu: y = x W^T with W
// [out, in]; backward dx = dy W and dW += dy^T x), timed alone. What a layer takes beyond it is
// its overhead: routing, the plan, gathers, exchanges, elementwise passes, GEMM calls that run
// below the bare rate.
//
// Used by bench/ceiling_bench.cc (the MoE layer) and bench/step_ceiling.cc (a training step).
#pragma once

#include <cblas.h>

#include <algorithm>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "bench/bench_clock.h"
#include "runtime/moe/moe_layer.h"

namespace sy {
namespace bench {

// C [M, N] = op(A) op(B) (+ C when accumulate), row-major; op(A) [M, K], op(B) [K, N]. Null
// operands use the runner's scratch (sized for them; contents do not matter to the time).
struct Gemm {
  std::string part;  // what it belongs to: "router", "experts", "shared", "attention", ...
  bool trans_a = false, trans_b = false;
  int64_t M = 0, N = 0, K = 0;
  const float* A = nullptr;
  const float* B = nullptr;
  float* C = nullptr;
  bool accumulate = false;
  double flops() const { return 2.0 * static_cast<double>(M) * N * K; }
};

// The GEMMs of a linear map y [R, out] = x [R, in] W^T, W [out, in] (null: scratch): forward
// when `forward`; its backward dx [R, in] = dy W and dW [out, in] += dy^T x when `backward`
// (dW into `dW` when given).
inline void add_linear(std::vector<Gemm>* g, const std::string& part, int64_t R, int64_t in,
                       int64_t out, const float* W, bool forward, bool backward,
                       float* dW = nullptr) {
  if (R <= 0) return;
  if (forward) g->push_back({part, false, true, R, out, in, nullptr, W, nullptr, false});
  if (backward) {
    g->push_back({part, false, false, R, in, out, nullptr, W, nullptr, false});
    g->push_back({part, true, false, out, in, R, nullptr, nullptr, dW, dW != nullptr});
  }
}

// The GEMMs of a trained or frozen model parameter W [out, in]: add_linear's, less the weight
// gradient's when the parameter is frozen (dW null).
inline void add_param_linear(std::vector<Gemm>* g, const std::string& part, int64_t R, int64_t in,
                             int64_t out, const float* W, float* dW, bool forward, bool backward) {
  add_linear(g, part, R, in, out, W, forward, backward && dW != nullptr, dW);
  if (backward && dW == nullptr && R > 0)  // frozen: dx = dy W only
    g->push_back({part, false, false, R, in, out, nullptr, W, nullptr, false});
}

// Drops the weight-gradient GEMMs (dW += dy^T x: the transposed-A ones) of `part`.
inline void erase_weight_grads(std::vector<Gemm>* g, const std::string& part) {
  g->erase(std::remove_if(g->begin(), g->end(),
                          [&](const Gemm& x) { return x.part == part && x.trans_a; }),
           g->end());
}

// One decoder layer's attention over T tokens (no KV cache: Tk = T), as the Qwen2-MoE model and
// runtime/kernels/attention.cc make it. "attention": the q/k/v/o projections (Wq [nH*hd, D], Wk
// and Wv [nKV*hd, D], Wo [D, nH*hd]; d* null when frozen). "attention core": per query head
// the score and value products, full T x T GEMMs (the causal mask is applied to S after them,
// so they do not halve): forward S = Q_h K_g^T and O_h = P V_g; backward S again (the
// probabilities are recomputed, not kept), dV_g += P^T dO_h, dP = dO_h V_g^T, dQ_h = dS K_g,
// dK_g += dS^T Q_h. The backend's operands are head slices with row stride nH*hd or nKV*hd;
// these run on packed scratch of the same shapes.
struct AttentionWeights {
  const float *wq = nullptr, *wk = nullptr, *wv = nullptr, *wo = nullptr;
  float *dwq = nullptr, *dwk = nullptr, *dwv = nullptr, *dwo = nullptr;
};
inline void add_attention(std::vector<Gemm>* g, int64_t T, int64_t D, int64_t nH, int64_t nKV,
                          int64_t hd, const AttentionWeights& w, bool forward, bool backward) {
  if (T <= 0) return;
  const int64_t Q = nH * hd, KV = nKV * hd;
  const char* core = "attention core";
  // The order of the model's calls: forward q, k, v, scores, o; backward o, scores, q, k, v.
  if (forward) {
    add_param_linear(g, "attention", T, D, Q, w.wq, w.dwq, true, false);
    add_param_linear(g, "attention", T, D, KV, w.wk, w.dwk, true, false);
    add_param_linear(g, "attention", T, D, KV, w.wv, w.dwv, true, false);
    for (int64_t h = 0; h < nH; ++h) {
      g->push_back({core, false, true, T, T, hd, nullptr, nullptr, nullptr, false});
      g->push_back({core, false, false, T, hd, T, nullptr, nullptr, nullptr, false});
    }
    add_param_linear(g, "attention", T, Q, D, w.wo, w.dwo, true, false);
  }
  if (backward) {
    add_param_linear(g, "attention", T, Q, D, w.wo, w.dwo, false, true);
    for (int64_t h = 0; h < nH; ++h) {
      g->push_back({core, false, true, T, T, hd, nullptr, nullptr, nullptr, false});
      g->push_back({core, true, false, T, hd, T, nullptr, nullptr, nullptr, true});
      g->push_back({core, false, true, T, T, hd, nullptr, nullptr, nullptr, false});
      g->push_back({core, false, false, T, hd, T, nullptr, nullptr, nullptr, false});
      g->push_back({core, true, false, T, hd, T, nullptr, nullptr, nullptr, true});
    }
    add_param_linear(g, "attention", T, D, Q, w.wq, w.dwq, false, true);
    add_param_linear(g, "attention", T, D, KV, w.wk, w.dwk, false, true);
    add_param_linear(g, "attention", T, D, KV, w.wv, w.dwv, false, true);
  }
}

// The GEMMs a MoeLayer with a linear router and SwiGLU experts made in its last forward (and,
// with backward, would make in its backward, weight gradients included when it trains its
// experts): the router over its T tokens, each local expert at the rows it received, the shared
// expert and its gate over T. Parts: "router", "experts", "shared".
inline std::vector<Gemm> moe_layer_gemms(MoeLayer& layer, bool forward, bool backward) {
  const MoeLayerConfig& c = layer.config();
  const int64_t D = c.d_model, F = c.ffn_hidden, E = c.num_experts;
  const int64_t T = layer.last_stats().T;
  auto ptr = [&](const char* name, bool grad) -> float* {
    Param* p = layer.find_param(name);
    if (p == nullptr) return nullptr;
    if (grad) return p->grad.empty() ? nullptr : p->grad.ptr();
    return p->value.ptr();
  };
  std::vector<Gemm> g;
  add_linear(&g, "router", T, D, E, ptr("gate.weight", false), forward, backward);
  const bool wgrad = c.train_experts;
  const std::vector<int64_t>& rows_e = layer.last_stats().exchange.rows_recv_e;
  float* wg = ptr("experts.gate_proj", false);
  float* wu = ptr("experts.up_proj", false);
  float* wd = ptr("experts.down_proj", false);
  float* dwg = wgrad ? ptr("experts.gate_proj", true) : nullptr;
  float* dwu = wgrad ? ptr("experts.up_proj", true) : nullptr;
  float* dwd = wgrad ? ptr("experts.down_proj", true) : nullptr;
  for (size_t j = 0; j < rows_e.size(); ++j) {
    const int64_t n = rows_e[j], o = static_cast<int64_t>(j) * F * D;
    add_linear(&g, "experts", n, D, F, wg + o, forward, backward, dwg ? dwg + o : nullptr);
    add_linear(&g, "experts", n, D, F, wu + o, forward, backward, dwu ? dwu + o : nullptr);
    add_linear(&g, "experts", n, F, D, wd + o, forward, backward, dwd ? dwd + o : nullptr);
  }
  if (!wgrad) erase_weight_grads(&g, "experts");  // frozen experts: no dW GEMMs
  if (c.shared_expert_hidden > 0) {
    const int64_t Fs = c.shared_expert_hidden;
    auto sh = [&](const char* name, int64_t in, int64_t out) {
      add_linear(&g, "shared", T, in, out, ptr(name, false), forward, backward,
                 wgrad ? ptr(name, true) : nullptr);
    };
    sh("shared_expert.gate_proj.weight", D, Fs);
    sh("shared_expert.up_proj.weight", D, Fs);
    sh("shared_expert.down_proj.weight", Fs, D);
    sh("shared_expert_gate.weight", D, 1);
  }
  return g;
}

// Runs lists of GEMMs on OpenBLAS with scratch operands of its own (grown to the largest seen).
class GemmRunner {
 public:
  // Seconds per part of one run of `gemms` (bench_now_s clock); "total" is their sum.
  std::map<std::string, double> run(const std::vector<Gemm>& gemms) {
    int64_t need = 0;
    for (const Gemm& x : gemms) need = std::max({need, x.M * x.K, x.K * x.N, x.M * x.N});
    for (std::vector<float>* s : {&a_, &b_, &c_}) {
      if (static_cast<int64_t>(s->size()) < need) s->assign(static_cast<size_t>(need), 0.01f);
    }
    std::map<std::string, double> t;
    for (const Gemm& x : gemms) {
      const double t0 = bench_now_s();
      cblas_sgemm(CblasRowMajor, x.trans_a ? CblasTrans : CblasNoTrans,
                  x.trans_b ? CblasTrans : CblasNoTrans, static_cast<int>(x.M),
                  static_cast<int>(x.N), static_cast<int>(x.K), 1.0f, x.A ? x.A : a_.data(),
                  static_cast<int>(x.trans_a ? x.M : x.K), x.B ? x.B : b_.data(),
                  static_cast<int>(x.trans_b ? x.K : x.N), x.accumulate ? 1.0f : 0.0f,
                  x.C ? x.C : c_.data(), static_cast<int>(x.N));
      const double s = bench_now_s() - t0;
      t[x.part] += s;
      t["total"] += s;
    }
    return t;
  }

 private:
  std::vector<float> a_, b_, c_;
};

inline double total_flops(const std::vector<Gemm>& gemms) {
  double f = 0;
  for (const Gemm& x : gemms) f += x.flops();
  return f;
}

// ---- the MoE layer's time beyond its GEMMs, phase by phase ----

// Each phase's time less the bare GEMMs inside it (parts "router", "experts", "shared"), and
// what `wall_s` (the layer's time as its caller measured it) holds beyond the phases.
inline const std::vector<std::string>& moe_rest_names() {
  static const std::vector<std::string> names = {
      "router beyond its GEMM",     "plan",
      "gather / scatter (permute)", "exchange (counts, dispatch, return; waits)",
      "experts beyond their GEMMs", "  of which SwiGLU pass",
      "weighted combine",           "shared expert beyond its GEMMs",
      "outside the phases"};
  return names;
}
inline std::vector<double> moe_rest_of(const MoePhaseTimes& t, double wall_s,
                                       std::map<std::string, double> gemm) {
  return {t.route_s - gemm["router"],
          t.plan_s,
          t.permute_s,
          t.count_exchange_s + t.dispatch_exchange_s + t.return_exchange_s,
          t.experts_s - gemm["experts"],
          t.experts_elementwise_s,
          t.weighted_combine_s,
          t.shared_expert_s - gemm["shared"],
          wall_s - t.total_s()};
}

// *sum += t, phase by phase (a step's layers and sequences).
inline void add_phase_times(MoePhaseTimes* sum, const MoePhaseTimes& t) {
  sum->route_s += t.route_s;
  sum->plan_s += t.plan_s;
  sum->permute_s += t.permute_s;
  sum->count_exchange_s += t.count_exchange_s;
  sum->dispatch_exchange_s += t.dispatch_exchange_s;
  sum->experts_s += t.experts_s;
  sum->return_exchange_s += t.return_exchange_s;
  sum->weighted_combine_s += t.weighted_combine_s;
  sum->shared_expert_s += t.shared_expert_s;
  sum->experts_elementwise_s += t.experts_elementwise_s;
}

// The MoE layer shapes of the layer benchmarks (ceiling_bench, overlap_bench); T is tokens per
// rank, E must be a multiple of P.
struct MoeShape {
  std::string name;
  int64_t D, E, K, F, Fs, T;
};
inline const std::vector<MoeShape>& moe_shapes() {
  static const std::vector<MoeShape> shapes = {{"qwen", 2048, 60, 4, 1408, 5632, 2048},
                                               {"small", 256, 16, 2, 512, 1024, 8192}};
  return shapes;
}
// The shape called `name`, or null.
inline const MoeShape* find_moe_shape(const std::string& name) {
  for (const MoeShape& s : moe_shapes())
    if (s.name == name) return &s;
  return nullptr;
}

inline double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

}  // namespace bench
}  // namespace sy
