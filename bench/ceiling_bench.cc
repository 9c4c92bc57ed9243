// The MoE layer against its GEMM ceiling: for a layer shape, the layer's forward and forward +
// backward beside the bare OpenBLAS GEMMs of the same shapes and FLOPs (bench/gemm_ceiling.h:
// the linear router over the rank's tokens, every local expert at the rows it really received in
// that forward, the shared expert and its gate), in one run, and where the rest of the layer's
// time goes (its MoePhaseTimes less the GEMMs inside each phase). A plain MPI program: every rank
// holds E/P experts and its own tokens, as in training.
//
//   mpirun -np P build/bench/ceiling_bench [--shape qwen|small]... [--tokens T] [--iters N]
//                                          [--capacity-factor C] [--json FILE]
//
// Shapes (tokens per rank; E must be a multiple of P):
//   qwen   Qwen1.5-MoE-A2.7B: D 2048, E 60, K 4, F 1408, shared 5632, T 2048
//   small  D 256, E 16, K 2, F 512, shared 1024, T 8192
// Dropless by default (C <= 0), experts trained (their weight gradients are part of backward).
//
// Each iteration, after a barrier each: (a) a forward alone, (b) a forward then a backward
// (gradients zeroed before, untimed), (c) the bare forward GEMMs, (d) the bare backward GEMMs,
// the GEMM lists built from (b)'s forward (its row counts); (a)-(b) and (c)-(d) swap order every
// iteration. Times are the slowest rank's (the layer is a collective; the ceiling is that of the
// rank with the most GEMM work); the phase split is that of the rank with the most GEMM work
// (the others also wait for it in their exchanges); every figure is the median over
// iterations. share = ceiling / layer.
#include <mpi.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <numeric>
#include <string>
#include <vector>

#include "bench/gemm_ceiling.h"
#include "comm/mpi_communicator.h"
#include "runtime/core/rng.h"

extern "C" int openblas_get_num_threads(void);

namespace {

using sy::bench::Gemm;

using Shape = sy::bench::MoeShape;

double reduce(double x, MPI_Op op) {
  MPI_Allreduce(MPI_IN_PLACE, &x, 1, MPI_DOUBLE, op, MPI_COMM_WORLD);
  return x;
}
double max_over_ranks(double x) {
  return reduce(x, MPI_MAX);
}

using sy::bench::median;
using sy::bench::moe_rest_of;
const std::vector<std::string>& kRest = sy::bench::moe_rest_names();
const int kNumRest = static_cast<int>(kRest.size());

struct Samples {
  std::vector<double> fwd_s, fb_s, bwd_s, gemm_fwd_s, gemm_bwd_s;
  std::vector<std::vector<double>> rest_fwd, rest_bwd;  // [kNumRest][iteration]
  Samples() : rest_fwd(kNumRest), rest_bwd(kNumRest) {}
};

void barrier() {
  MPI_Barrier(MPI_COMM_WORLD);
}

int run_shape(sy::MpiCommunicator& comm, const Shape& s, int iters, double cf, std::FILE* json) {
  const int P = comm.size(), r = comm.rank();
  if (s.E % P != 0) {
    if (r == 0)
      std::fprintf(stderr, "ceiling_bench: E %lld is not a multiple of P %d\n",
                   static_cast<long long>(s.E), P);
    return sy::kExitConfig;
  }
  sy::MoeLayerConfig c;
  c.d_model = s.D;
  c.ffn_hidden = s.F;
  c.num_experts = s.E;
  c.top_k = s.K;
  c.shared_expert_hidden = s.Fs;
  c.capacity_factor = cf;
  c.train_experts = true;
  c.router.name = "linear";
  auto made = sy::MoeLayer::create(c, &comm);
  if (!made.ok()) {
    if (r == 0) std::fprintf(stderr, "ceiling_bench: %s\n", made.status().ToString().c_str());
    return sy::kExitConfig;
  }
  sy::MoeLayer& layer = **made;
  const int64_t T = s.T, D = s.D;
  std::vector<float> x(T * D), dy(T * D), y(T * D), dx(T * D);
  sy::fill_normal(x.data(), T * D, 1.0f, 11, static_cast<uint64_t>(r));
  sy::fill_normal(dy.data(), T * D, 1e-3f, 13, static_cast<uint64_t>(r));
  auto fwd = [&] { SY_CHECK_OK(layer.forward(x.data(), nullptr, T, y.data())); };
  // Warm-up: buffers grow, pages are touched.
  fwd();
  layer.backward(dy.data(), dx.data());
  sy::bench::GemmRunner runner;
  runner.run(sy::bench::moe_layer_gemms(layer, true, true));

  Samples sm;
  std::vector<Gemm> gf, gb;
  for (int it = 0; it < iters; ++it) {
    double fwd_s = 0, f_s = 0, b_s = 0;
    sy::MoePhaseTimes tf, tb;
    std::map<std::string, double> cf_t, cb_t;
    auto layer_runs = [&] {
      barrier();
      double t0 = sy::bench_now_s();
      fwd();
      fwd_s = sy::bench_now_s() - t0;
      tf = layer.last_stats().forward;
      layer.zero_grad();
      barrier();
      t0 = sy::bench_now_s();
      fwd();
      const double t1 = sy::bench_now_s();
      layer.backward(dy.data(), dx.data());
      f_s = t1 - t0;
      b_s = sy::bench_now_s() - t1;
      tb = layer.last_stats().backward;
      gf = sy::bench::moe_layer_gemms(layer, true, false);
      gb = sy::bench::moe_layer_gemms(layer, false, true);
    };
    auto gemm_runs = [&] {
      barrier();
      cf_t = runner.run(gf);
      barrier();
      cb_t = runner.run(gb);
    };
    if (it % 2 == 0 || gf.empty()) {
      layer_runs();
      gemm_runs();
    } else {
      gemm_runs();
      layer_runs();
    }
    sm.fwd_s.push_back(max_over_ranks(fwd_s));
    sm.fb_s.push_back(max_over_ranks(f_s + b_s));
    sm.bwd_s.push_back(max_over_ranks(b_s));
    sm.gemm_fwd_s.push_back(max_over_ranks(cf_t["total"]));
    sm.gemm_bwd_s.push_back(max_over_ranks(cb_t["total"]));
    // The split of the critical rank: the one with the most GEMM work in this iteration (the
    // others also wait for it inside their exchanges).
    std::vector<double> rf = moe_rest_of(tf, fwd_s, cf_t), rb = moe_rest_of(tb, b_s, cb_t);
    struct {
      double v;
      int rank;
    } crit{cf_t["total"] + cb_t["total"], r};
    MPI_Allreduce(MPI_IN_PLACE, &crit, 1, MPI_DOUBLE_INT, MPI_MAXLOC, MPI_COMM_WORLD);
    MPI_Bcast(rf.data(), kNumRest, MPI_DOUBLE, crit.rank, MPI_COMM_WORLD);
    MPI_Bcast(rb.data(), kNumRest, MPI_DOUBLE, crit.rank, MPI_COMM_WORLD);
    for (int k = 0; k < kNumRest; ++k) {
      sm.rest_fwd[k].push_back(rf[k]);
      sm.rest_bwd[k].push_back(rb[k]);
    }
  }
  const double flops_f = max_over_ranks(sy::bench::total_flops(gf));
  const double flops_b = max_over_ranks(sy::bench::total_flops(gb));
  if (r != 0) return 0;

  const double L_f = median(sm.fwd_s), L_fb = median(sm.fb_s), L_b = median(sm.bwd_s);
  const double G_f = median(sm.gemm_fwd_s), G_b = median(sm.gemm_bwd_s);
  std::vector<double> gsum(sm.gemm_fwd_s.size());
  for (size_t i = 0; i < gsum.size(); ++i) gsum[i] = sm.gemm_fwd_s[i] + sm.gemm_bwd_s[i];
  const double G_fb = median(gsum);
  const sy::MoeStepStats& st = layer.last_stats();
  std::printf(
      "\nshape %s: D %lld, E %lld (%lld per rank), K %lld, F %lld, shared %lld, %lld tokens per "
      "rank, P %d, %s, OpenBLAS threads %d, median of %d iterations\n",
      s.name.c_str(), static_cast<long long>(s.D), static_cast<long long>(s.E),
      static_cast<long long>(s.E / P), static_cast<long long>(s.K), static_cast<long long>(s.F),
      static_cast<long long>(s.Fs), static_cast<long long>(T), P,
      cf > 0 ? ("capacity factor " + std::to_string(cf)).c_str() : "dropless",
      openblas_get_num_threads(), iters);
  std::printf("  rank 0: %lld rows kept, %lld received for its experts\n",
              static_cast<long long>(st.kept),
              static_cast<long long>(std::accumulate(st.exchange.rows_recv_e.begin(),
                                                     st.exchange.rows_recv_e.end(), int64_t{0})));
  std::printf("  %-38s %12s %12s %12s\n", "", "forward", "backward", "fwd+bwd");
  std::printf("  %-38s %12.2f %12.2f %12.2f\n", "layer (ms, slowest rank)", 1e3 * L_f, 1e3 * L_b,
              1e3 * L_fb);
  std::printf("  %-38s %12.2f %12.2f %12.2f\n", "bare GEMMs (ms, slowest rank)", 1e3 * G_f,
              1e3 * G_b, 1e3 * G_fb);
  std::printf("  %-38s %12.3f %12.3f %12.3f\n", "share of the GEMM ceiling", G_f / L_f, G_b / L_b,
              G_fb / L_fb);
  std::printf("  %-38s %12.1f %12.1f %12.1f\n", "GFLOP/s (layer)", flops_f / L_f * 1e-9,
              flops_b / L_b * 1e-9, (flops_f + flops_b) / L_fb * 1e-9);
  std::printf("  %-38s %12.1f %12.1f %12.1f\n", "GFLOP/s (bare GEMMs)", flops_f / G_f * 1e-9,
              flops_b / G_b * 1e-9, (flops_f + flops_b) / G_fb * 1e-9);
  std::printf("  where the rest goes (ms, the rank with the most GEMM work):\n");
  for (int k = 0; k < kNumRest; ++k) {
    std::printf("  %-38s %12.2f %12.2f\n", kRest[k].c_str(), 1e3 * median(sm.rest_fwd[k]),
                1e3 * median(sm.rest_bwd[k]));
  }
  std::fflush(stdout);
  if (json) {
    std::fprintf(json,
                 "{\"shape\": \"%s\", \"P\": %d, \"tokens_per_rank\": %lld, \"capacity_factor\": "
                 "%g, \"threads\": %d, \"iters\": %d, \"layer_fwd_ms\": %.3f, "
                 "\"layer_bwd_ms\": %.3f, \"layer_fwdbwd_ms\": %.3f, \"gemm_fwd_ms\": %.3f, "
                 "\"gemm_bwd_ms\": %.3f, \"gemm_fwdbwd_ms\": %.3f, \"share_fwd\": %.4f, "
                 "\"share_fwdbwd\": %.4f",
                 s.name.c_str(), P, static_cast<long long>(T), cf, openblas_get_num_threads(),
                 iters, 1e3 * L_f, 1e3 * L_b, 1e3 * L_fb, 1e3 * G_f, 1e3 * G_b, 1e3 * G_fb,
                 G_f / L_f, G_fb / L_fb);
    for (int k = 0; k < kNumRest; ++k) {
      std::fprintf(json, ", \"rest_fwd_ms[%s]\": %.3f, \"rest_bwd_ms[%s]\": %.3f", kRest[k].c_str(),
                   1e3 * median(sm.rest_fwd[k]), kRest[k].c_str(), 1e3 * median(sm.rest_bwd[k]));
    }
    std::fprintf(json, "}\n");
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  sy::MpiRuntime mpi(&argc, &argv);
  std::vector<Shape> shapes;
  int64_t tokens = 0;
  int iters = 5;
  double cf = 0;
  std::string json_path;
  bool usage = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (i + 1 < argc && a == "--shape") {
      const Shape* found = sy::bench::find_moe_shape(argv[++i]);
      if (found) shapes.push_back(*found);
      usage |= !found;
    } else if (i + 1 < argc && a == "--tokens") {
      tokens = std::atoll(argv[++i]);
      usage |= tokens < 1;
    } else if (i + 1 < argc && a == "--iters") {
      iters = std::atoi(argv[++i]);
      usage |= iters < 1;
    } else if (i + 1 < argc && a == "--capacity-factor") {
      cf = std::atof(argv[++i]);
    } else if (i + 1 < argc && a == "--json") {
      json_path = argv[++i];
    } else {
      usage = true;
    }
  }
  if (usage) {
    if (mpi.world_rank() == 0) {
      std::fprintf(stderr,
                   "usage: %s [--shape qwen|small]... [--tokens T] [--iters N] "
                   "[--capacity-factor C] [--json FILE]\n",
                   argv[0]);
    }
    return sy::kExitUsage;
  }
  if (shapes.empty()) shapes = sy::bench::moe_shapes();
  sy::MpiCommunicator comm;
  std::FILE* json = nullptr;
  if (!json_path.empty() && comm.rank() == 0) {
    json = std::fopen(json_path.c_str(), "w");
    if (!json) {
      std::fprintf(stderr, "ceiling_bench: cannot write %s\n", json_path.c_str());
      return sy::kExitUsage;
    }
  }
  if (comm.rank() == 0) {
    std::printf("ceiling_bench: the MoE layer against the bare OpenBLAS GEMMs of its shapes\n");
  }
  int rc = 0;
  for (Shape s : shapes) {
    if (tokens > 0) s.T = tokens;
    rc = run_shape(comm, s, iters, cf, json);
    if (rc != 0) break;
  }
  if (json) std::fclose(json);
  return rc;
}
