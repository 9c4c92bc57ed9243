// The GEMM ceiling of a piece of the model: the bare OpenBLAS calls of the same shapes, on the
// same weights, that the CPU backend makes for it (runtime/backend/cpu: y = x W^T with W
// [out, in]; backward dx = dy W and dW += dy^T x), timed alone. What a layer takes beyond it is
// its overhead: routing, the plan, gathers, exchanges, elementwise passes, GEMM calls that run
// below the bare rate.
//
// Used by bench/ceiling_bench.cc (the MoE layer) and the training-step ceiling.
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
  if (!wgrad) {  // frozen experts: no dW GEMMs
    g.erase(std::remove_if(g.begin(), g.end(),
                           [](const Gemm& x) { return x.part == "experts" && x.trans_a; }),
            g.end());
  }
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

}  // namespace bench
}  // namespace sy
