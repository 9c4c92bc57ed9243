// Quantized expert GEMM beside the fp32 one.
//
// linear_forward_quantized (dequantize tile_rows rows of W into fp32 scratch, then cblas on
// the tile) against linear_forward (cblas on the fp32 W) at the expert shapes of
// Qwen1.5-MoE-A2.7B (D = 2048, F = 1408): gate/up  y[T,F] = x[T,D] W[F,D]^T  (I=2048, O=1408)
// and down  y[T,D] = a[T,F] W[D,F]^T  (I=1408, O=2048), T = 512 routed rows (and T = 32: a
// lightly loaded expert, where the per-call dequantization of W is not amortized), G = 128.
//
// One benchmark per (shape, bits, tile_rows) times the quantized GEMM and, alternately in the
// same loop, the fp32 GEMM on the same inputs, so machine noise hits both alike. The fp32-only
// rows (bits = 32) give the baseline on its own. Counters:
//   gflops       quantized GEMM throughput (2 T I O / s)
//   fp32_gflops  fp32 GEMM throughput in the same loop
//   ratio        throughput quantized / fp32 (= fp32 time / quantized time, summed)
//   deq_ms       milliseconds to dequantize all of W once (tile by tile, outside the GEMM)
//   w_bytes_rel  weight bytes (values + scales) / fp32 weight bytes
// The reported time is the quantized GEMM's (manual timing).
//
// Run: OPENBLAS_NUM_THREADS=1 build/bench/quant_benchmark
//      OPENBLAS_NUM_THREADS=1 SY_BENCH_CLOCK=cpu build/bench/quant_benchmark  (shared machine)
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdlib>
#include <string>
#include <vector>

#include "bench/bench_clock.h"
#include "runtime/core/rng.h"
#include "runtime/kernels/cpu_kernels.h"
#include "runtime/kernels/quant.h"

namespace sy {
namespace {

struct Shape {
  const char* name;
  int64_t T, I, O;
};
const Shape kShapes[] = {
    {"gate_up", 512, 2048, 1408},
    {"down", 512, 1408, 2048},
    {"gate_up_small", 32, 2048, 1408},  // a lightly loaded expert: dequantization dominates
};

void bm_quant(benchmark::State& state, Shape s, int bits, int64_t tile_rows) {
  std::vector<float> W(static_cast<size_t>(s.O * s.I)), x(static_cast<size_t>(s.T * s.I));
  fill_normal(W.data(), s.O * s.I, 0.02f, 7, 0);
  fill_normal(x.data(), s.T * s.I, 1.0f, 8, 0);
  std::vector<float> y(static_cast<size_t>(s.T * s.O)), yq(y.size());
  QuantizedMatrix q;
  if (bits != 32) q = quantize(W.data(), s.O, s.I, 128, bits);
  // Warm-up: grows the thread-local scratch, touches every buffer.
  linear_forward(x.data(), W.data(), y.data(), s.T, s.I, s.O);
  if (bits != 32) linear_forward_quantized(x.data(), q, yq.data(), s.T, 0.0f, tile_rows);
  // Dequantization alone: all O rows, tile by tile into one tile buffer (as the GEMM does).
  double t_deq = 0.0;
  if (bits != 32) {
    std::vector<float> tile(static_cast<size_t>(tile_rows * s.I));
    const double t0 = bench_now_s();
    for (int rep = 0; rep < 5; ++rep)
      for (int64_t r0 = 0; r0 < s.O; r0 += tile_rows)
        dequantize_rows(q, r0, std::min(tile_rows, s.O - r0), tile.data());
    t_deq = (bench_now_s() - t0) / 5;
  }
  double t_fp32 = 0.0, t_q = 0.0;
  for (auto _ : state) {
    double t0 = bench_now_s();
    linear_forward(x.data(), W.data(), y.data(), s.T, s.I, s.O);
    const double dt_fp32 = bench_now_s() - t0;
    t_fp32 += dt_fp32;
    double dt = dt_fp32;
    if (bits != 32) {
      t0 = bench_now_s();
      linear_forward_quantized(x.data(), q, yq.data(), s.T, 0.0f, tile_rows);
      dt = bench_now_s() - t0;
      t_q += dt;
    }
    state.SetIterationTime(dt);
    benchmark::DoNotOptimize(y.data());
    benchmark::DoNotOptimize(yq.data());
  }
  if (bits == 32) t_q = t_fp32;
  const double flops = 2.0 * s.T * s.I * s.O * static_cast<double>(state.iterations());
  state.counters["gflops"] = flops / t_q * 1e-9;
  state.counters["fp32_gflops"] = flops / t_fp32 * 1e-9;
  state.counters["ratio"] = t_fp32 / t_q;
  state.counters["deq_ms"] = t_deq * 1e3;  // one full dequantization of W
  state.counters["w_bytes_rel"] =
      bits == 32 ? 1.0 : static_cast<double>(q.bytes()) / (4.0 * s.O * s.I);
}

}  // namespace
}  // namespace sy

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  for (const sy::Shape& s : sy::kShapes) {
    const std::string base = std::string("quant/") + s.name + "/T" + std::to_string(s.T) + "_I" +
                             std::to_string(s.I) + "_O" + std::to_string(s.O);
    benchmark::RegisterBenchmark((base + "/fp32").c_str(), sy::bm_quant, s, 32, int64_t{0})
        ->UseManualTime()
        ->Unit(benchmark::kMillisecond);
    for (int bits : {8, 4})
      for (int64_t tile : {64, 128, 256})
        benchmark::RegisterBenchmark(
            (base + "/int" + std::to_string(bits) + "/tile" + std::to_string(tile)).c_str(),
            sy::bm_quant, s, bits, tile)
            ->UseManualTime()
            ->Unit(benchmark::kMillisecond);
  }
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
