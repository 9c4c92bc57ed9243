#include "launch/project_calibrate.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "comm/dispatcher.h"
#include "comm/mpi_communicator.h"
#include "launch/commands.h"
#include "runtime/core/check.h"
#include "runtime/io/safetensors.h"
#include "runtime/moe/experts.h"
#include "runtime/project/calibration.h"

namespace sy::launch {
namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// Every rank's host, by rank.
std::vector<std::string> rank_hosts(Communicator& comm) {
  constexpr int kLen = 64;
  char mine[kLen] = {};
  std::snprintf(mine, sizeof(mine), "%s", host_name().c_str());
  std::vector<char> all(static_cast<size_t>(kLen) * comm.size());
  comm.allgather(mine, all.data(), kLen, CollectiveTag{"calibrate.hosts", 0, 0});
  std::vector<std::string> out;
  for (int r = 0; r < comm.size(); ++r)
    out.emplace_back(all.data() + static_cast<size_t>(r) * kLen);
  return out;
}

// Writes 64 MiB, more than the last-level cache one core sees (32 MiB on the development
// machine's EPYC; sysconf reports the whole package's, 320 MiB, which would cost 0.6 GB per
// rank): the exchange that follows starts with cold caches, as in a forward, where the router,
// the permute and the experts' GEMMs run between two exchanges. (Timed hot, on buffers the
// previous iteration left in cache, the same exchange took a third of what the runtime's
// forwards measured: bench/project_validate.sh.)
void evict_caches() {
  static std::vector<char> junk(size_t{64} << 20);
  for (size_t i = 0; i < junk.size(); i += 64) junk[i] = static_cast<char>(junk[i] + 1);
}

// The median over iterations of the slowest rank's time for one exchange in which this rank
// sends rows_per_peer rows to every rank marked in to_peer, itself included when marked (E = P
// experts: expert d is rank d). The rows are rewritten first, as the permute writes them.
double time_exchange(Communicator& comm, Dispatcher& disp, const std::vector<char>& to_peer,
                     int64_t rows_per_peer, int64_t D, int iters, int64_t* seq) {
  const int P = comm.size();
  std::vector<int32_t> kept_E(static_cast<size_t>(P), 0);
  int64_t A = 0;
  for (int d = 0; d < P; ++d)
    if (to_peer[d]) kept_E[d] = static_cast<int32_t>(rows_per_peer), A += rows_per_peer;
  std::vector<float> x(static_cast<size_t>(std::max<int64_t>(A, 1) * D), 0.5f), y(x.size()), recv;
  DispatchHandle h;
  std::vector<double> t;
  const int warmup = 3;
  for (int it = 0; it < warmup + iters; ++it) {
    const CollectiveTag tag{"calibrate", 0, (*seq)++};
    evict_caches();
    for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>((i + it) & 255);
    comm.barrier(tag);
    const Clock::time_point t0 = Clock::now();
    disp.dispatch(kept_E.data(), x.data(), A, tag, &h, &recv);
    disp.return_rows(&h, recv.data(), y.data(), tag);
    double s = seconds_since(t0);
    comm.allreduce(&s, 1, ReduceOp::kMax, tag);
    if (it >= warmup) t.push_back(s);
  }
  return median(t);
}

// Seconds of one rank's SwiGLU expert on `rows` rows, the slowest rank's, median.
double time_expert(Communicator& comm, int64_t D, int64_t F, int64_t rows, int iters) {
  ExpertsConfig ec;
  ec.d_model = D;
  ec.ffn_hidden = F;
  ec.num_experts = 1;
  ec.allocate_grads = false;
  RoutedExperts ex(ec);
  std::vector<float> x(static_cast<size_t>(rows * D), 0.25f), y(x.size());
  const int32_t off[2] = {0, static_cast<int32_t>(rows)};
  std::vector<double> t;
  for (int it = 0; it < 2 + iters; ++it) {
    const CollectiveTag tag{"calibrate.expert", 0, it};
    comm.barrier(tag);
    const Clock::time_point t0 = Clock::now();
    ex.forward(x.data(), off, y.data());
    double s = seconds_since(t0);
    comm.allreduce(&s, 1, ReduceOp::kMax, tag);
    if (it >= 2) t.push_back(s);
  }
  return median(t);
}

json tier_json(const LinkTier& t) {
  return {{"latency_us", t.latency_s * 1e6}, {"bandwidth_GBps", t.bandwidth_Bps / 1e9}};
}

int fail(const Status& st, int rank) {
  if (rank == 0)
    std::fprintf(stderr, "switchyard project --calibrate: %s\n", st.ToString().c_str());
  return st.exit_code();
}

}  // namespace

int run_calibrate(const switchyard::ProjectConfig& cfg) {
  MpiRuntime mpi(nullptr, nullptr);
  const std::unique_ptr<Communicator> world = open_world_communicator();
  Communicator& comm = *world;
  const int P = comm.size(), me = comm.rank();
  if (cfg.out().empty()) return fail(InvalidArgument("--out (out) is required"), me);
  if (P < 2)
    return fail(InvalidArgument("--calibrate times exchanges between ranks: run it under mpirun "
                                "with at least 2 ranks (across hosts for the other-node tier)"),
                me);
  if (cfg.calibrate_iters() < 1) return fail(InvalidArgument("--calibrate-iters must be >= 1"), me);
  StatusOr<ClusterModel> base = resolve_cluster(cfg.cluster());
  if (!base.ok()) return fail(base.status(), me);
  const int64_t D = cfg.hidden() > 0 ? cfg.hidden() : 256;
  const int64_t F = cfg.ffn_hidden() > 0 ? cfg.ffn_hidden() : 512;

  // Tiers from the hosts: every host must hold the same number of ranks.
  const std::vector<std::string> hosts = rank_hosts(comm);
  std::vector<std::string> names = hosts;
  std::sort(names.begin(), names.end());
  names.erase(std::unique(names.begin(), names.end()), names.end());
  const int per_host = static_cast<int>(std::count(hosts.begin(), hosts.end(), hosts[me]));
  for (const std::string& h : names)
    if (std::count(hosts.begin(), hosts.end(), h) != per_host)
      return fail(InvalidArgument("--calibrate: hosts hold different numbers of ranks (" + h +
                                  "); give every host the same"),
                  me);
  for (int r = 0; r < P; ++r)
    if (hosts[r] != hosts[(r / per_host) * per_host])
      return fail(InvalidArgument("--calibrate: ranks are not laid out host by host (rank " +
                                  std::to_string(r) + " on " + hosts[r] +
                                  "); the projection places rank q on node q / gpus_per_node"),
                  me);
  const int peers[2] = {per_host - 1, P - per_host};
  std::vector<char> self(static_cast<size_t>(P)), same(self.size()), other(self.size()),
      all(self.size());
  for (int d = 0; d < P; ++d) {
    self[d] = d == me;
    same[d] = d != me && hosts[d] == hosts[me];
    other[d] = hosts[d] != hosts[me];
    all[d] = d != me;
  }

  DispatcherOptions dopt;
  StatusOr<std::unique_ptr<Dispatcher>> disp = Dispatcher::create(&comm, P, D, dopt);
  if (!disp.ok()) return fail(disp.status(), me);
  const double row_bytes = static_cast<double>(D) * sizeof(float);
  // 1 row .. 4 MiB per peer at D = 256.
  const std::vector<int64_t> sizes = {1, 8, 64, 256, 1024, 4096};
  struct Pattern {
    const char* name;
    const std::vector<char>* to;
    bool rows_to[3];  // self, same node, other node
  };
  std::vector<Pattern> patterns = {{"self", &self, {true, false, false}}};
  if (peers[0] > 0) patterns.push_back({"same_node", &same, {false, true, false}});
  if (peers[1] > 0) patterns.push_back({"other_node", &other, {false, false, true}});
  if (peers[0] > 0 && peers[1] > 0) patterns.push_back({"all", &all, {false, true, true}});
  if (me == 0)
    std::printf(
        "calibrate: %d ranks on %zu host(s) (%d per host), rows of D = %lld floats, %d "
        "timed exchanges per point (the slowest rank's time, median)\n",
        P, names.size(), per_host, static_cast<long long>(D), cfg.calibrate_iters());
  std::vector<CalibrationSample> samples;
  int64_t seq = 0;
  for (const Pattern& p : patterns)
    for (int64_t n : sizes) {
      CalibrationSample s = calibration_sample(p.name, peers, p.rows_to, n, row_bytes);
      s.measured_s = time_exchange(comm, **disp, *p.to, n, D, cfg.calibrate_iters(), &seq);
      if (me == 0) {
        std::printf("  %-10s %6lld rows/peer  %10.1f us\n", p.name, static_cast<long long>(n),
                    s.measured_s * 1e6);
        std::fflush(stdout);
      }
      samples.push_back(s);
    }
  StatusOr<CalibrationFit> fit = fit_link_tiers(&samples);
  if (!fit.ok()) return fail(fit.status(), me);
  const int64_t expert_rows = 2048;
  const double expert_s = time_expert(comm, D, F, expert_rows, cfg.calibrate_iters());
  const double flops = 6.0 * static_cast<double>(expert_rows * D * F) / expert_s;
  if (me != 0) return 0;

  ClusterModel c = *base;
  LinkTier* tiers[3] = {&c.same_rank, &c.same_node, &c.other_node};
  for (int t = 0; t < 3; ++t)
    if (fit->measured[t]) *tiers[t] = fit->tier[t];
  char when[32];
  const std::time_t now = std::time(nullptr);
  std::strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&now));
  json j = {{"format", "switchyard.cluster"},
            {"version", 1},
            {"name", "calibrated"},
            {"gpus_per_node", per_host},
            {"flops", flops},
            {"same_node", tier_json(c.same_node)},
            {"other_node", tier_json(c.other_node)},
            {"same_rank", {{"bandwidth_GBps", c.same_rank.bandwidth_Bps / 1e9}}}};
  json cal = {{"when", when},
              {"ranks", P},
              {"hosts", names},
              {"ranks_per_host", per_host},
              {"row_bytes", row_bytes},
              {"iterations", cfg.calibrate_iters()},
              {"fit_error_pct", {{"max", fit->max_error_pct}, {"median", fit->median_error_pct}}},
              {"expert", {{"rows", expert_rows}, {"D", D}, {"F", F}, {"seconds", expert_s}}},
              {"samples", json::array()}};
  const char* const keys[3] = {"same_rank", "same_node", "other_node"};
  for (int t = 0; t < 3; ++t)
    cal[keys[t]] = fit->measured[t] ? "measured" : "not measured (no such pairs): from " + c.name;
  for (const CalibrationSample& s : samples)
    cal["samples"].push_back({{"pattern", s.pattern},
                              {"rows_per_peer", s.rows_per_peer},
                              {"measured_s", s.measured_s},
                              {"fitted_s", s.fitted_s}});
  j["calibration"] = cal;
  std::error_code ec;
  std::filesystem::create_directories(cfg.out(), ec);
  const std::string path = cfg.out() + "/cluster.json";
  const std::string text = j.dump(1) + "\n";
  if (Status st = write_file_atomic(path, {{text.data(), text.size()}}); !st.ok())
    return fail(st, me);
  std::printf("self copy  measured: bandwidth %.3f GB/s\n", c.same_rank.bandwidth_Bps / 1e9);
  for (int t = 1; t < 3; ++t) {
    const LinkTier& k = *tiers[t];
    const std::string how =
        fit->measured[t] ? "measured" : "not measured (one host), from " + c.name;
    std::printf("%-10s %s: latency %.2f us, bandwidth %.3f GB/s\n",
                t == 1 ? "same-node" : "other-node", how.c_str(), k.latency_s * 1e6,
                k.bandwidth_Bps / 1e9);
  }
  std::printf("expert FFN: %.1f GFLOP/s per rank (SwiGLU D %lld F %lld, %lld rows)\n", flops / 1e9,
              static_cast<long long>(D), static_cast<long long>(F),
              static_cast<long long>(expert_rows));
  std::printf("fit error over %zu samples: median %.1f%%, max %.1f%%\nwrote %s\n", samples.size(),
              fit->median_error_pct, fit->max_error_pct, path.c_str());
  return 0;
}

}  // namespace sy::launch
