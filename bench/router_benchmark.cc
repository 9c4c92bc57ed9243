// Router forward cost beside the bare GEMMs it is built on.
//
// For every router in router_registry() (registered at start-up, so new routers appear
// without editing this file) and two layer shapes, one benchmark times Router::forward on T
// tokens and, alternately in the same loop, plain cblas_sgemm calls of the router's own GEMM
// shapes on buffers of the same sizes. The ratio router / GEMM is the overhead of everything
// that is not the score GEMM: softmax, top-k, renormalization, copies and bookkeeping
// (and, for MLP routers, biases and activations).
//
// The bare GEMMs of each router (weights are [out, in], so B is transposed as in the router):
//   linear:        [T,D]x[D,E]
//   attention:     [T,D]x[D,H] + [T,H]x[H,E]
//   mlp:           [T,D]x[D,H] + [T,H]x[H,E]
//   hybrid:        [T,D]x[D,E] + [T,D]x[D,H] + [T,H]x[H,E]
//   mlp_hadamard:  2 x [T,D]x[D,H] + [T,H]x[H,E]
//   hash:          none (no GEMM: ratio is reported as 0)
//   anything else: one [T,D]x[D,N] GEMM of the same FLOPs (N = flops_per_token / 2D)
// i.e. the SUM of the router's GEMMs, H = cfg.router_hidden().
//
// Shapes: Qwen1.5-MoE-A2.7B's layer (D=2048, E=60, K=4) and a small one (D=256, E=16, K=2),
// 8,192 tokens each. Counters:
//   tokens_per_s   router tokens per second
//   us_per_1k      router microseconds per 1,000 tokens
//   gemm_us_per_1k bare GEMMs, microseconds per 1,000 tokens
//   ratio          router time / bare GEMM time (summed over the same iterations)
// The reported time is the router's (manual timing).
//
// Run: build/bench/router_benchmark --benchmark_repetitions=3
//      OPENBLAS_CORETYPE=Haswell build/bench/router_benchmark ...  (OpenBLAS reads it at load)
//      OPENBLAS_NUM_THREADS=1 SY_BENCH_CLOCK=cpu build/bench/router_benchmark  (shared machine)
#include <benchmark/benchmark.h>
#include <cblas.h>

#include <cstdlib>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "bench/bench_clock.h"
#include "routers/registry.h"
#include "runtime/core/rng.h"

namespace sy {
namespace {

struct LayerShape {
  const char* name;
  int64_t D, E, K, T;
};
const LayerShape kShapes[] = {
    {"qwen1.5moe", 2048, 60, 4, 8192},
    {"small", 256, 16, 2, 8192},
};
constexpr int64_t kVocab = 151936;  // Qwen1.5's vocabulary, for routers that need token ids

struct GemmShape {
  int64_t M, N, K;  // C_MN = A_MK B_NK^T
};

std::vector<GemmShape> router_gemms(const Router& r, int64_t T) {
  const RouterConfig& c = r.config();
  const int64_t D = c.d_model, E = c.num_experts, H = c.router_hidden();
  const std::string& n = c.name;
  if (n == "linear") return {{T, E, D}};
  if (n == "attention" || n == "mlp") return {{T, H, D}, {T, E, H}};
  if (n == "hybrid") return {{T, E, D}, {T, H, D}, {T, E, H}};
  if (n == "mlp_hadamard") return {{T, H, D}, {T, H, D}, {T, E, H}};
  const int64_t N = r.flops_per_token() / (2 * D);
  if (N <= 0) return {};
  return {{T, N, D}};
}

// Activations are shared by every benchmark of a shape (64 MiB at the Qwen shape).
const std::vector<float>& input_TD(int64_t T, int64_t D) {
  static std::map<std::pair<int64_t, int64_t>, std::vector<float>> cache;
  std::vector<float>& x = cache[{T, D}];
  if (x.empty()) {
    x.resize(static_cast<size_t>(T * D));
    fill_normal(x.data(), T * D, 1.0f, /*seed=*/42, /*stream=*/static_cast<uint64_t>(D));
  }
  return x;
}

struct GemmBuffers {
  GemmShape s;
  std::vector<float> A, B, C;
};

void bm_router(benchmark::State& state, std::string name, LayerShape shape) {
  RouterConfig cfg;
  cfg.name = name;
  cfg.d_model = shape.D;
  cfg.num_experts = shape.E;
  cfg.top_k = shape.K;
  cfg.vocab_size = kVocab;
  auto made = make_router(cfg);
  if (!made.ok()) {
    state.SkipWithError(made.status().ToString().c_str());
    return;
  }
  std::unique_ptr<Router> router = std::move(made).value();
  const int64_t T = shape.T;
  const std::vector<float>& x = input_TD(T, shape.D);
  std::vector<int32_t> ids(static_cast<size_t>(T));
  Rng rng(7);
  for (int32_t& id : ids) id = static_cast<int32_t>(rng.below(static_cast<uint64_t>(kVocab)));

  std::vector<GemmBuffers> gemms;
  uint64_t stream = 100;
  for (const GemmShape& s : router_gemms(*router, T)) {
    GemmBuffers g{s, std::vector<float>(static_cast<size_t>(s.M * s.K)),
                  std::vector<float>(static_cast<size_t>(s.N * s.K)),
                  std::vector<float>(static_cast<size_t>(s.M * s.N))};
    // The first GEMM reads the router's real input, as the router does.
    if (s.K == shape.D && g.A.size() == x.size())
      g.A = x;
    else
      fill_normal(g.A.data(), s.M * s.K, 1.0f, 1, stream++);
    fill_normal(g.B.data(), s.N * s.K, 0.02f, 1, stream++);
    gemms.push_back(std::move(g));
  }
  auto run_gemms = [&] {
    for (GemmBuffers& g : gemms)
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(g.s.M),
                  static_cast<int>(g.s.N), static_cast<int>(g.s.K), 1.0f, g.A.data(),
                  static_cast<int>(g.s.K), g.B.data(), static_cast<int>(g.s.K), 0.0f, g.C.data(),
                  static_cast<int>(g.s.N));
  };

  RouterOutput out;
  router->forward(x.data(), ids.data(), T, &out);  // warm-up: first-touch of the outputs
  run_gemms();
  double router_s = 0.0, gemm_s = 0.0;
  int64_t iters = 0;
  for (auto _ : state) {
    // Alternate which goes first so cache and frequency effects fall on both alike.
    const bool gemm_first = (iters & 1) != 0;
    double g = 0.0;
    if (gemm_first) {
      const double t0 = bench_now_s();
      run_gemms();
      g = bench_now_s() - t0;
    }
    const double t0 = bench_now_s();
    router->forward(x.data(), ids.data(), T, &out);
    const double r = bench_now_s() - t0;
    benchmark::DoNotOptimize(out.topk_ids_TK.data());
    if (!gemm_first) {
      const double t1 = bench_now_s();
      run_gemms();
      g = bench_now_s() - t1;
    }
    benchmark::ClobberMemory();
    state.SetIterationTime(r);
    router_s += r;
    gemm_s += g;
    ++iters;
  }
  if (iters == 0) return;
  const double per_1k = 1000.0 / static_cast<double>(T) / static_cast<double>(iters) * 1e6;
  state.counters["tokens_per_s"] = static_cast<double>(T) * static_cast<double>(iters) / router_s;
  state.counters["us_per_1k"] = router_s * per_1k;
  state.counters["gemm_us_per_1k"] = gemms.empty() ? 0.0 : gemm_s * per_1k;
  state.counters["ratio"] = gemms.empty() ? 0.0 : router_s / gemm_s;
  state.SetLabel(name + " D=" + std::to_string(shape.D) + " E=" + std::to_string(shape.E) +
                 " K=" + std::to_string(shape.K) + " T=" + std::to_string(T));
}

}  // namespace
}  // namespace sy

int main(int argc, char** argv) {
  for (const sy::LayerShape& shape : sy::kShapes)
    for (const sy::RouterInfo& info : sy::router_registry()) {
      const std::string name = info.name;
      benchmark::RegisterBenchmark(
          ("router_forward/" + name + "/" + shape.name).c_str(),
          [name, shape](benchmark::State& st) { sy::bm_router(st, name, shape); })
          ->UseManualTime()
          ->Unit(benchmark::kMillisecond);
    }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  const char* core = std::getenv("OPENBLAS_CORETYPE");
  benchmark::AddCustomContext("OPENBLAS_CORETYPE", core ? core : "(unset)");
  benchmark::AddCustomContext("clock", sy::bench_use_cpu_clock() ? "process cpu" : "wall");
  benchmark::AddCustomContext("openblas_config", openblas_get_config());
  benchmark::AddCustomContext("openblas_core", openblas_get_corename());
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
