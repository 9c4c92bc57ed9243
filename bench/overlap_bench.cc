// The MoE layer's exchange overlapped with its compute (MoeLayerConfig::exchange_chunks), beside
// the two things it overlaps, measured apart in the same run: the layer with its exchange
// overlapped in N chunks against max(compute, exchange). A plain MPI program; the point is a
// link slower than shared memory, e.g. two namespace hosts with a rate limit:
//
//   bash launch/netns_cluster.sh up 2 && bash launch/netns_cluster.sh rate 1gbit
//   SY_BIN=build/bench/overlap_bench bash launch/netns_cluster.sh run 2 --shape small --chunks 4
//   bash launch/netns_cluster.sh down
//
//   overlap_bench [--shape small|qwen] [--tokens T] [--chunks N]... [--iters N] [--forward-only]
//                 [--capacity-factor C] [--json FILE]
//
// Shapes (bench/gemm_ceiling.h moe_shapes(), tokens per rank): small D 256, E 16, K 2, F 512,
// shared 1024, T 8192; qwen D 2048, E 60, K 4, F 1408, shared 5632, T 2048. Dropless by default.
//
// Each iteration, a barrier before each part, the parts' order rotating every iteration:
//   exchange  the rows alone: a Dispatcher of its own moves the blocking layer's rows out and back
//             (dispatch_rows + return_rows; twice with the backward, which moves the same bytes),
//             nothing else running;
//   blocking  the layer with exchange_chunks 1: forward (+ backward);
//   N chunks  the same layer (same weights) overlapped in N chunks, for every --chunks.
// compute = the blocking layer's time less its exchange phases (count, dispatch, return exchange
// in MoePhaseTimes: the rest is route, plan, permute, experts, combine, shared expert). Every
// figure is the slowest rank's, then the median over iterations. The target of issue 15:
// overlapped <= 1.15 x max(compute, exchange) (blocking is about their sum). The overlapped
// layers' outputs (and dx) are checked bitwise against the blocking layer's every iteration.
#include <mpi.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "bench/gemm_ceiling.h"
#include "comm/dispatcher.h"
#include "comm/mpi_communicator.h"
#include "runtime/core/rng.h"
#include "runtime/moe/moe_layer.h"

namespace {

using Shape = sy::bench::MoeShape;

double max_over_ranks(double x) {
  MPI_Allreduce(MPI_IN_PLACE, &x, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
  return x;
}

using sy::bench::median;

// The layer's phases (forward + backward when both run), as MoePhaseTimes names them.
const char* const kPhases[] = {"route",
                               "plan",
                               "permute",
                               "count exchange",
                               "dispatch (exposed)",
                               "experts",
                               "return (exposed)",
                               "combine",
                               "shared expert"};
constexpr int kNumPhases = 9;
void add_phases(const sy::MoePhaseTimes& t, double* out) {
  const double v[kNumPhases] = {t.route_s,
                                t.plan_s,
                                t.permute_s,
                                t.count_exchange_s,
                                t.dispatch_exchange_s,
                                t.experts_s,
                                t.return_exchange_s,
                                t.weighted_combine_s,
                                t.shared_expert_s};
  for (int k = 0; k < kNumPhases; ++k) out[k] += v[k];
}

double exchange_phases(const sy::MoePhaseTimes& t) {
  return t.count_exchange_s + t.dispatch_exchange_s + t.return_exchange_s;
}

struct Options {
  Shape shape = *sy::bench::find_moe_shape("small");
  std::vector<int> chunks;
  int iters = 5;
  bool backward = true;
  double cf = 0;
  std::string json;
};

int run(sy::MpiCommunicator& comm, const Options& o) {
  const Shape& s = o.shape;
  const int P = comm.size(), r = comm.rank();
  if (s.E % P != 0 || P < 2) {
    if (r == 0)
      std::fprintf(stderr, "overlap_bench: needs P >= 2 ranks dividing E %lld (P = %d)\n",
                   static_cast<long long>(s.E), P);
    return sy::kExitConfig;
  }
  sy::MoeLayerConfig c;
  c.d_model = s.D;
  c.ffn_hidden = s.F;
  c.num_experts = s.E;
  c.top_k = s.K;
  c.shared_expert_hidden = s.Fs;
  c.capacity_factor = o.cf;
  c.train_experts = o.backward;
  c.router.name = "linear";
  // layers[0] blocking, then one per --chunks; the same seeds: the same weights.
  std::vector<std::unique_ptr<sy::MoeLayer>> layers;
  std::vector<int> chunks = {1};
  chunks.insert(chunks.end(), o.chunks.begin(), o.chunks.end());
  for (int n : chunks) {
    c.exchange_chunks = n;
    auto made = sy::MoeLayer::create(c, &comm);
    if (!made.ok()) {
      if (r == 0) std::fprintf(stderr, "overlap_bench: %s\n", made.status().ToString().c_str());
      return sy::kExitConfig;
    }
    layers.push_back(std::move(made).value());
  }
  auto disp_or = sy::Dispatcher::create(&comm, s.E, s.D);
  SY_CHECK_OK(disp_or.status());
  sy::Dispatcher& disp = *disp_or.value();
  sy::DispatchHandle handle;

  const int64_t T = s.T, D = s.D, L = static_cast<int64_t>(layers.size());
  std::vector<float> x(T * D), dy(T * D);
  sy::fill_normal(x.data(), T * D, 1.0f, 11, static_cast<uint64_t>(r));
  sy::fill_normal(dy.data(), T * D, 1e-3f, 13, static_cast<uint64_t>(r));
  std::vector<std::vector<float>> y(L, std::vector<float>(T * D)), dx(y);
  std::vector<float> rows_A, recv_R, back_A;

  // One part of an iteration: its time on this rank.
  auto layer_step = [&](int64_t i) {
    sy::MoeLayer& l = *layers[i];
    l.zero_grad();
    const double t0 = sy::bench_now_s();
    SY_CHECK_OK(l.forward(x.data(), nullptr, T, y[i].data()));
    if (o.backward) l.backward(dy.data(), dx[i].data());
    return sy::bench_now_s() - t0;
  };
  auto exchange_only = [&] {
    // The blocking layer's plan: its rows per expert, in plan order (the values do not matter).
    const sy::CapacityPlan& plan = layers[0]->plan();
    const int64_t A = plan.rows();
    rows_A.resize(A * D);
    back_A.resize(A * D);
    const double t0 = sy::bench_now_s();
    const sy::CollectiveTag tag{"overlap_bench", 0, -1};
    disp.exchange_counts(plan.kept_E.data(), A, tag, &handle);
    recv_R.resize(handle.recv_rows() * D);
    for (int pass = 0; pass < (o.backward ? 2 : 1); ++pass) {
      disp.dispatch_rows(&handle, rows_A.data(), recv_R.data(), tag);
      disp.return_rows(&handle, recv_R.data(), back_A.data(), tag);
    }
    return sy::bench_now_s() - t0;
  };

  for (int64_t i = 0; i < L; ++i) layer_step(i);  // warm-up: buffers grow, pages are touched
  exchange_only();
  std::vector<double> ex_s, comp_s;
  std::vector<std::vector<double>> layer_s(L), exposed_s(L);
  std::vector<std::vector<std::vector<double>>> phase_s(
      L, std::vector<std::vector<double>>(kNumPhases));  // [layer][phase][iteration]
  int mismatches = 0;
  for (int it = 0; it < o.iters; ++it) {
    std::vector<double> t(L + 1);
    for (int64_t k = 0; k <= L; ++k) {
      const int64_t part = (k + it) % (L + 1);  // rotate the order
      MPI_Barrier(MPI_COMM_WORLD);
      t[part] = part == L ? exchange_only() : layer_step(part);
    }
    ex_s.push_back(max_over_ranks(t[L]));
    for (int64_t i = 0; i < L; ++i) {
      layer_s[i].push_back(max_over_ranks(t[i]));
      const sy::MoeStepStats& st = layers[i]->last_stats();
      const double xch =
          exchange_phases(st.forward) + (o.backward ? exchange_phases(st.backward) : 0);
      if (i == 0) comp_s.push_back(max_over_ranks(t[0] - xch));
      exposed_s[i].push_back(max_over_ranks(xch));
      double ph[kNumPhases] = {};
      add_phases(st.forward, ph);
      if (o.backward) add_phases(st.backward, ph);
      MPI_Allreduce(MPI_IN_PLACE, ph, kNumPhases, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
      for (int k = 0; k < kNumPhases; ++k) phase_s[i][k].push_back(ph[k]);
      if (i > 0) {
        const size_t bytes = y[i].size() * sizeof(float);
        mismatches += std::memcmp(y[i].data(), y[0].data(), bytes) != 0;
        if (o.backward) mismatches += std::memcmp(dx[i].data(), dx[0].data(), bytes) != 0;
      }
    }
  }
  MPI_Allreduce(MPI_IN_PLACE, &mismatches, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
  const sy::ExchangeLoad& load = layers[0]->last_stats().exchange;
  double mib = static_cast<double>(load.remote_bytes()) / 2 / (1 << 20);  // sent = received
  mib = max_over_ranks(mib);
  if (r != 0) return mismatches == 0 ? 0 : 1;

  const double X = median(ex_s), C = median(comp_s);
  std::printf(
      "\noverlap_bench: shape %s (D %lld, E %lld, K %lld, F %lld, shared %lld, %lld tokens per "
      "rank), P %d, %s, %s, median of %d iterations, slowest rank\n",
      s.name.c_str(), static_cast<long long>(s.D), static_cast<long long>(s.E),
      static_cast<long long>(s.K), static_cast<long long>(s.F), static_cast<long long>(s.Fs),
      static_cast<long long>(T), P, o.cf > 0 ? "capacity-limited" : "dropless",
      o.backward ? "forward + backward" : "forward", o.iters);
  std::printf("  rows out to other ranks: %.1f MiB per rank, each way\n", mib);
  std::printf("  %-44s %10.1f ms\n", "exchange alone (dispatch + return)", 1e3 * X);
  std::printf("  %-44s %10.1f ms\n", "compute alone (blocking layer less exchange)", 1e3 * C);
  std::printf("  %-44s %10s %10s %14s %14s\n", "layer", "ms", "exposed", "/ max(C, X)",
              "/ (C + X)");
  for (int64_t i = 0; i < L; ++i) {
    const double Lm = median(layer_s[i]);
    const std::string name =
        i == 0 ? std::string("blocking") : "overlapped, " + std::to_string(chunks[i]) + " chunks";
    std::printf("  %-44s %10.1f %10.1f %14.3f %14.3f\n", name.c_str(), 1e3 * Lm,
                1e3 * median(exposed_s[i]), Lm / std::max(C, X), Lm / (C + X));
  }
  std::printf("  phases (ms, each the slowest rank's):\n  %-22s", "");
  for (int64_t i = 0; i < L; ++i)
    std::printf(" %11s", i == 0 ? "blocking" : (std::to_string(chunks[i]) + " chunks").c_str());
  std::printf("\n");
  for (int k = 0; k < kNumPhases; ++k) {
    std::printf("  %-22s", kPhases[k]);
    for (int64_t i = 0; i < L; ++i) std::printf(" %11.1f", 1e3 * median(phase_s[i][k]));
    std::printf("\n");
  }
  std::printf("  outputs%s bitwise equal to the blocking layer's: %s\n",
              o.backward ? " and dx" : "", mismatches == 0 ? "yes" : "NO");
  if (!o.json.empty()) {
    std::FILE* f = std::fopen(o.json.c_str(), "w");
    if (f) {
      std::fprintf(f,
                   "{\"shape\": \"%s\", \"P\": %d, \"tokens_per_rank\": %lld, \"backward\": %s, "
                   "\"iters\": %d, \"exchange_ms\": %.3f, \"compute_ms\": %.3f, \"layers\": [",
                   s.name.c_str(), P, static_cast<long long>(T), o.backward ? "true" : "false",
                   o.iters, 1e3 * X, 1e3 * C);
      for (int64_t i = 0; i < L; ++i)
        std::fprintf(f, "%s{\"chunks\": %d, \"ms\": %.3f, \"exposed_ms\": %.3f}", i ? ", " : "",
                     chunks[i], 1e3 * median(layer_s[i]), 1e3 * median(exposed_s[i]));
      std::fprintf(f, "], \"bitwise\": %s}\n", mismatches == 0 ? "true" : "false");
      std::fclose(f);
    }
  }
  return mismatches == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  sy::MpiRuntime mpi(&argc, &argv);
  Options o;
  int64_t tokens = 0;
  bool usage = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (i + 1 < argc && a == "--shape") {
      const Shape* found = sy::bench::find_moe_shape(argv[++i]);
      if (found) o.shape = *found;
      usage |= !found;
    } else if (i + 1 < argc && a == "--tokens") {
      tokens = std::atoll(argv[++i]);
      usage |= tokens < 1;
    } else if (i + 1 < argc && a == "--chunks") {
      o.chunks.push_back(std::atoi(argv[++i]));
      usage |= o.chunks.back() < 2;
    } else if (i + 1 < argc && a == "--iters") {
      o.iters = std::atoi(argv[++i]);
      usage |= o.iters < 1;
    } else if (a == "--forward-only") {
      o.backward = false;
    } else if (i + 1 < argc && a == "--capacity-factor") {
      o.cf = std::atof(argv[++i]);
    } else if (i + 1 < argc && a == "--json") {
      o.json = argv[++i];
    } else {
      usage = true;
    }
  }
  if (usage) {
    if (mpi.world_rank() == 0) {
      std::fprintf(stderr,
                   "usage: %s [--shape small|qwen] [--tokens T] [--chunks N (>= 2)]... "
                   "[--iters N] [--forward-only] [--capacity-factor C] [--json FILE]\n",
                   argv[0]);
    }
    return sy::kExitUsage;
  }
  if (tokens > 0) o.shape.T = tokens;
  if (o.chunks.empty()) o.chunks = {4};
  sy::MpiCommunicator comm;
  return run(comm, o);
}
