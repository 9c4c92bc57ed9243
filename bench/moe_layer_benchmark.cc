// Single-rank MoE layer forward beside the bare OpenBLAS GEMMs its experts are made of.
//
// Shape: one Qwen1.5-MoE-A2.7B MoE layer (D=2048, E=60, K=4, F=1408, linear router, no shared
// expert), frozen experts (train_experts=false: no gradient buffers), T = 512 and 2048 tokens,
// capacity_factor 1.25 and dropless. Weights are ~2.1 GB per layer; both layers fit 24 GB.
//
// Each iteration runs MoeLayer::forward (the reported, manually timed time), then, untimed by
// the framework, the baseline: for every expert, the same three cblas_sgemm calls the layer
// makes (gate [n,D]x[D,F], up [n,D]x[D,F], down [n,F]x[F,D], weights [out,in] so B is
// transposed), with n = the expert's kept rows in the plan that forward just produced, on the
// same weights, into preallocated buffers of their own.
//
// Counters (the benchmark's Time is the mean forward; the counters are minima over the
// iterations, because on a shared machine noise only adds time):
//   route_ms plan_ms permute_ms combine_ms swiglu_ms   MoePhaseTimes of the fastest forward
//                     (combine_ms: weighted_combine_s)
//   layer_ms          fastest forward;  experts_ms: fastest expert phase (GEMMs + SwiGLU)
//   swiglu_ms         the elementwise SiLU(g)*u inside experts_ms
//   openblas_ms       fastest baseline
//   expert_gemm_vs_openblas = openblas_ms / experts_ms (target >= 0.9: the expert phase is
//                     within 10% of calling OpenBLAS directly); ratio_of_means: the same
//                     with means instead of minima
//   non_gemm_share    1 - openblas_ms / layer_ms: the share of the layer's time that is not
//                     the expert GEMMs (router, plan, permute, SwiGLU, combine)
//   rows, dropped     kept and dropped assignments of the last forward
//   gflops            expert GEMM FLOPs / layer time
//
// Run: OPENBLAS_NUM_THREADS=2 build-moe/bench/moe_layer_benchmark
//      OPENBLAS_CORETYPE=Haswell ...   (OpenBLAS reads it when the library loads)
#include <benchmark/benchmark.h>
#include <cblas.h>

#include <algorithm>
#include <map>
#include <memory>
#include <vector>

#include "runtime/core/rng.h"
#include "runtime/core/timing.h"
#include "runtime/moe/moe_layer.h"

namespace sy {
namespace {

constexpr int64_t kD = 2048, kE = 60, kK = 4, kF = 1408;

// One layer per capacity factor, built once (initializing 0.5 G weights takes seconds).
MoeLayer& layer_for(double capacity_factor) {
  static std::map<double, std::unique_ptr<MoeLayer>> layers;
  auto it = layers.find(capacity_factor);
  if (it != layers.end()) return *it->second;
  MoeLayerConfig c;
  c.d_model = kD;
  c.ffn_hidden = kF;
  c.num_experts = kE;
  c.top_k = kK;
  c.capacity_factor = capacity_factor;
  c.train_experts = false;
  c.router.name = "linear";
  // Later layers copy the first one's weights instead of drawing them again.
  if (!layers.empty()) c.init_std = 0.0f;
  auto l = MoeLayer::create(c);
  SY_CHECK(l.ok()) << l.status().ToString();
  if (!layers.empty()) {
    MoeLayer& first = *layers.begin()->second;
    for (auto& [name, p] : (*l)->named_params()) p->value.data = first.find_param(name)->value.data;
  }
  return *(layers[capacity_factor] = std::move(l).value());
}

using Clock = SteadyClock;

// The layer's expert GEMMs, called directly. Returns seconds.
double openblas_baseline(MoeLayer& layer, const std::vector<float>& xg, std::vector<float>* h1,
                         std::vector<float>* h2, std::vector<float>* y) {
  const CapacityPlan& plan = layer.plan();
  const float* Wg = layer.find_param("experts.gate_proj")->value.ptr();
  const float* Wu = layer.find_param("experts.up_proj")->value.ptr();
  const float* Wd = layer.find_param("experts.down_proj")->value.ptr();
  const Clock::time_point t0 = Clock::now();
  for (int64_t e = 0; e < kE; ++e) {
    const int o = plan.offsets_E1[e], n = plan.offsets_E1[e + 1] - o;
    if (n == 0) continue;
    const float* x = xg.data() + static_cast<int64_t>(o) * kD;
    float* g = h1->data() + static_cast<int64_t>(o) * kF;
    float* u = h2->data() + static_cast<int64_t>(o) * kF;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, kF, kD, 1.0f, x, kD, Wg + e * kF * kD,
                kD, 0.0f, g, kF);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, kF, kD, 1.0f, x, kD, Wu + e * kF * kD,
                kD, 0.0f, u, kF);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, kD, kF, 1.0f, g, kF, Wd + e * kD * kF,
                kF, 0.0f, y->data() + static_cast<int64_t>(o) * kD, kD);
  }
  return seconds_since(t0);
}

void BM_MoeLayerForward(benchmark::State& state) {
  const int64_t T = state.range(0);
  const double cf = static_cast<double>(state.range(1)) / 100.0;
  MoeLayer& layer = layer_for(cf);
  std::vector<float> x(static_cast<size_t>(T * kD)), y(x.size());
  fill_normal(x.data(), T * kD, 1.0f, 7, 1);
  // Baseline buffers sized for the worst case (every assignment kept).
  std::vector<float> xg(static_cast<size_t>(T * kK * kD)), yb(xg.size());
  std::vector<float> h1(static_cast<size_t>(T * kK * kF)), h2(h1.size());
  fill_normal(xg.data(), T * kK * kD, 1.0f, 7, 2);
  SY_CHECK_OK(layer.forward(x.data(), nullptr, T, y.data()));  // warm-up: buffers grow here

  // The machine may be shared: noise only ever adds time, so the counters come from the
  // fastest iteration of each (layer, baseline); the reported time is the mean.
  MoePhaseTimes best;
  double best_layer_s = 1e30, best_experts_s = 1e30, best_blas_s = 1e30;
  double sum_experts_s = 0, sum_blas_s = 0;
  int64_t i = 0;
  for (auto _ : state) {
    // Alternate which runs first, so neither always follows the other.
    double blas_s = (i % 2) ? openblas_baseline(layer, xg, &h1, &h2, &yb) : 0.0;
    const Clock::time_point t0 = Clock::now();
    SY_CHECK_OK(layer.forward(x.data(), nullptr, T, y.data()));
    const double s = seconds_since(t0);
    state.SetIterationTime(s);
    benchmark::DoNotOptimize(y.data());
    if (i % 2 == 0) blas_s = openblas_baseline(layer, xg, &h1, &h2, &yb);
    benchmark::DoNotOptimize(yb.data());
    ++i;
    const MoePhaseTimes& t = layer.last_stats().forward;
    if (s < best_layer_s) {
      best_layer_s = s;
      best = t;
    }
    best_experts_s = std::min(best_experts_s, t.experts_s);
    best_blas_s = std::min(best_blas_s, blas_s);
    sum_experts_s += t.experts_s;
    sum_blas_s += blas_s;
  }
  const CapacityPlan& plan = layer.plan();
  state.counters["route_ms"] = 1e3 * best.route_s;
  state.counters["plan_ms"] = 1e3 * best.plan_s;
  state.counters["permute_ms"] = 1e3 * best.permute_s;
  state.counters["experts_ms"] = 1e3 * best_experts_s;
  state.counters["swiglu_ms"] = 1e3 * best.experts_elementwise_s;
  state.counters["combine_ms"] = 1e3 * best.weighted_combine_s;
  state.counters["layer_ms"] = 1e3 * best_layer_s;
  state.counters["openblas_ms"] = 1e3 * best_blas_s;
  state.counters["expert_gemm_vs_openblas"] = best_blas_s / best_experts_s;
  state.counters["ratio_of_means"] = sum_blas_s / sum_experts_s;
  state.counters["non_gemm_share"] = 1.0 - best_blas_s / best_layer_s;
  state.counters["rows"] = static_cast<double>(plan.rows());
  state.counters["dropped"] = static_cast<double>(plan.total_dropped);
  state.counters["gflops"] =
      2.0 * 3.0 * kD * kF * static_cast<double>(plan.rows()) / best_layer_s * 1e-9;
}

// Args: {T, capacity_factor * 100}; 0 = dropless.
BENCHMARK(BM_MoeLayerForward)
    ->ArgNames({"T", "cf_x100"})
    ->Args({512, 125})
    ->Args({512, 0})
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond)
    ->Iterations(10);
BENCHMARK(BM_MoeLayerForward)
    ->ArgNames({"T", "cf_x100"})
    ->Args({2048, 125})
    ->Args({2048, 0})
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond)
    ->Iterations(4);

}  // namespace
}  // namespace sy

BENCHMARK_MAIN();
