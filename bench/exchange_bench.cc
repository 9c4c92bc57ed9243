// The dispatcher's exchange (count exchange + dispatch + return) beside a raw MPI_Alltoallv of
// exactly the same bytes, in the same run. A plain MPI program (not Google Benchmark: every
// rank must take part in every timed call).
//
//   mpirun -np 2 build/bench/exchange_bench [--iters N] [--warmup W] [--experts E]
//                                           [--mode blocks|single|all] [--payload-kib N]...
//
// Shape: rows of D = 2048 floats; payload per rank 64 KiB .. 64 MiB = A rows of kept
// assignments (T = A / K tokens, top-k K = 2); balanced routing: assignment t*K+k goes to
// expert (t*K+k) % E (E = 8 by default), so every rank sends the same number of rows to every
// expert and R = A on every rank.
//
// Measured per iteration, each after a barrier, back to back (the order rotates every
// iteration), on the same buffers (so both find the same data in cache):
//   dispatcher: dispatch() (count exchange + rows out) + return_rows(), once per ExchangeMode
//               (what a forward MoE layer does)
//   raw:        MPI_Alltoallv there and MPI_Alltoallv back (blocking, MPI_COMM_WORLD), with
//               the same per-peer counts and a contiguous row datatype: the floor for moving
//               these bytes with MPI. The dispatcher also exchanges counts and lays rows out
//               expert-major; that overhead is what the ratio shows.
// Each iteration's time is the MAX over ranks (a collective is as slow as its slowest rank).
// Columns: dispatch_us, raw_us = medians over iterations; ratio = the median over iterations
// of dispatcher / raw within the same iteration (a pair run back to back sees the same load,
// so this is the robust number on a shared machine); ratio_min = min / min (noise only adds
// time); counts_us, rows_us, return_us = rank 0's medians of DispatchStats' phases
// (count_exchange_s, dispatch_s, return_s).
// Bandwidth = (bytes sent to + received from OTHER ranks, both directions, by one rank) / time:
// per-rank algorithm bandwidth of the round trip, self block excluded.
//
// Target: ratio <= 1.1 at >= 1 MiB per rank. kBlocks with each peer's blocks merged into one
// message (the MPI backend's default, SY_EXCHANGE_MERGE_BYTES): 0.79-0.84 at 1 MiB, P = 2; with
// one message per block (SY_EXCHANGE_MERGE_BYTES=0) 1.19-1.21 (see ExchangeMode in
// comm/dispatcher.h for the tables and why).
#include <mpi.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "comm/dispatcher.h"
#include "comm/mpi_communicator.h"

namespace {

constexpr int64_t kD = 2048, kK = 2;

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

double max_over_ranks(double t) {
  MPI_Allreduce(MPI_IN_PLACE, &t, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
  return t;
}

struct Result {  // one dispatcher mode at one payload
  double disp_med_s, raw_med_s, paired_ratio, min_ratio;
  double counts_med_s, dispatch_med_s, return_med_s;  // rank 0's phases (DispatchStats)
  int64_t remote_bytes;                               // per rank, one direction (sent + received)
};

// Times raw and every dispatcher in `disps` back to back in each iteration (the order rotates
// from one iteration to the next), so every ratio compares runs made under the same load.
std::vector<Result> run_payload(sy::Communicator& comm, const std::vector<sy::Dispatcher*>& disps,
                                int64_t payload_bytes, int E, int iters, int warmup) {
  const int P = comm.size(), r = comm.rank();
  const int M = static_cast<int>(disps.size());
  const int64_t A =
      std::max<int64_t>(1, payload_bytes / (kD * static_cast<int64_t>(sizeof(float))));
  // Balanced routing of T = A / K tokens with top-k K: counts per global expert.
  std::vector<int32_t> kept_E(E, 0);
  for (int64_t a = 0; a < A; ++a) kept_E[a % E] += 1;
  // Raw MPI uses the dispatcher's buffers too (balanced routing: R = A), so both find the same
  // data in cache.
  std::vector<float> x_AD(A * kD), y_AD(A * kD), recv_RD(A * kD);
  for (int64_t i = 0; i < A * kD; ++i) x_AD[i] = static_cast<float>((i * 7 + r) % 1000) * 1e-3f;
  std::vector<sy::DispatchHandle> h(M);

  const int64_t e = E / P;
  // Raw alltoallv layout: the same per-peer row counts as the dispatcher's (balanced: symmetric).
  std::vector<int> cnt(P), dsp(P);
  for (int d = 0, off = 0; d < P; ++d) {
    int n = 0;
    for (int64_t j = 0; j < e; ++j) n += kept_E[d * e + j];
    cnt[d] = n;
    dsp[d] = off;
    off += n;
  }
  MPI_Datatype row;
  MPI_Type_contiguous(static_cast<int>(kD), MPI_FLOAT, &row);
  MPI_Type_commit(&row);

  std::vector<double> tr;
  std::vector<std::vector<double>> td(M), ratio(M), tcount(M), tdisp(M), tret(M);
  std::vector<double> t(M + 1);  // [0, M): dispatchers, M: raw
  for (int it = 0; it < warmup + iters; ++it) {
    for (int k = 0; k <= M; ++k) {
      const int m = (k + it) % (M + 1);
      MPI_Barrier(MPI_COMM_WORLD);
      const double t0 = MPI_Wtime();
      if (m < M) {
        const sy::CollectiveTag tag{"bench", 0, it};
        disps[m]->dispatch(kept_E.data(), x_AD.data(), A, tag, &h[m], &recv_RD);
        disps[m]->return_rows(&h[m], recv_RD.data(), y_AD.data(), tag);
      } else {
        MPI_Alltoallv(x_AD.data(), cnt.data(), dsp.data(), row, recv_RD.data(), cnt.data(),
                      dsp.data(), row, MPI_COMM_WORLD);
        MPI_Alltoallv(recv_RD.data(), cnt.data(), dsp.data(), row, y_AD.data(), cnt.data(),
                      dsp.data(), row, MPI_COMM_WORLD);
      }
      t[m] = max_over_ranks(MPI_Wtime() - t0);
    }
    if (it < warmup) continue;
    tr.push_back(t[M]);
    for (int m = 0; m < M; ++m) {
      td[m].push_back(t[m]);
      ratio[m].push_back(t[m] / t[M]);
      tcount[m].push_back(h[m].stats().count_exchange_s);
      tdisp[m].push_back(h[m].stats().dispatch_s);
      tret[m].push_back(h[m].stats().return_s);
    }
  }
  MPI_Type_free(&row);
  // The round trip with no transform must give the input back, bit for bit.
  int bad = std::memcmp(x_AD.data(), y_AD.data(), x_AD.size() * sizeof(float)) != 0;
  MPI_Allreduce(MPI_IN_PLACE, &bad, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  SY_CHECK_EQ(bad, 0) << "round trip changed the rows";
  std::vector<Result> res;
  const double raw_min = *std::min_element(tr.begin(), tr.end());
  for (int m = 0; m < M; ++m) {
    res.push_back({median(td[m]), median(tr), median(ratio[m]),
                   *std::min_element(td[m].begin(), td[m].end()) / raw_min, median(tcount[m]),
                   median(tdisp[m]), median(tret[m]), h[m].stats().load.remote_bytes()});
  }
  return res;
}

}  // namespace

int main(int argc, char** argv) {
  sy::MpiRuntime mpi(&argc, &argv);
  int iters = 20, warmup = 3, E = 8;
  std::string mode_arg = "all";
  std::vector<int64_t> payloads_kib;  // empty: the standard list
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (i + 1 < argc && a == "--iters") {
      iters = std::atoi(argv[++i]);
    } else if (i + 1 < argc && a == "--warmup") {
      warmup = std::atoi(argv[++i]);
    } else if (i + 1 < argc && a == "--experts") {
      E = std::atoi(argv[++i]);
    } else if (i + 1 < argc && a == "--mode") {
      mode_arg = argv[++i];
    } else if (i + 1 < argc && a == "--payload-kib") {
      payloads_kib.push_back(std::atoll(argv[++i]));
    } else {
      if (mpi.world_rank() == 0) {
        std::fprintf(stderr,
                     "usage: %s [--iters N] [--warmup W] [--experts E] "
                     "[--mode blocks|single|all] [--payload-kib N]...\n",
                     argv[0]);
      }
      return sy::kExitUsage;
    }
  }
  if (payloads_kib.empty()) payloads_kib = {64, 256, 1024, 4096, 16384, 65536};
  std::vector<sy::ExchangeMode> modes;
  if (mode_arg == "blocks" || mode_arg == "all") modes.push_back(sy::ExchangeMode::kBlocks);
  if (mode_arg == "single" || mode_arg == "all") modes.push_back(sy::ExchangeMode::kSingle);
  if (modes.empty() || iters < 1 || warmup < 0 || payloads_kib.front() < 1) {
    if (mpi.world_rank() == 0) std::fprintf(stderr, "bad --mode, --iters or --warmup\n");
    return sy::kExitUsage;
  }

  sy::MpiCommunicator comm;
  const int P = comm.size();
  if (!sy::Dispatcher::check_sizes(E, P).ok()) {
    if (comm.rank() == 0)
      std::fprintf(stderr, "%s\n", sy::Dispatcher::check_sizes(E, P).ToString().c_str());
    return sy::kExitConfig;
  }
  if (comm.rank() == 0) {
    std::printf(
        "exchange_bench: P=%d E=%d (e=%d per rank) K=%lld D=%lld, %d iterations after %d "
        "warm-up; dispatcher = count exchange + dispatch + return, raw = 2 x "
        "MPI_Alltoallv of the same bytes; blocks merged per peer up to %lld bytes "
        "(SY_EXCHANGE_MERGE_BYTES)\n",
        P, E, E / P, static_cast<long long>(kK), static_cast<long long>(kD), iters, warmup,
        static_cast<long long>(comm.merge_bytes()));
    std::printf("%-11s %9s %12s %10s %7s %9s %9s %9s %10s %10s %10s\n", "mode", "payload",
                "dispatch_us", "raw_us", "ratio", "ratio_min", "disp_GB/s", "raw_GB/s", "counts_us",
                "rows_us", "return_us");
  }
  const int64_t kib = 1024;
  std::vector<std::unique_ptr<sy::Dispatcher>> owned;
  std::vector<sy::Dispatcher*> disps;
  for (sy::ExchangeMode mode : modes) {
    sy::DispatcherOptions opt;
    opt.mode = mode;
    auto disp = sy::Dispatcher::create(&comm, E, kD, opt);
    SY_CHECK_OK(disp.status());
    owned.push_back(std::move(disp.value()));
    disps.push_back(owned.back().get());
  }
  for (int64_t payload_kib : payloads_kib) {
    const std::vector<Result> res = run_payload(comm, disps, payload_kib * kib, E, iters, warmup);
    for (size_t m = 0; m < res.size() && comm.rank() == 0; ++m) {
      const Result& x = res[m];
      const double bytes = 2.0 * static_cast<double>(x.remote_bytes);  // there and back
      std::printf("%-11s %6lldKiB %12.1f %10.1f %7.3f %9.3f %9.2f %9.2f %10.1f %10.1f %10.1f\n",
                  sy::exchange_mode_name(modes[m]), static_cast<long long>(payload_kib),
                  x.disp_med_s * 1e6, x.raw_med_s * 1e6, x.paired_ratio, x.min_ratio,
                  bytes / x.disp_med_s * 1e-9, bytes / x.raw_med_s * 1e-9, x.counts_med_s * 1e6,
                  x.dispatch_med_s * 1e6, x.return_med_s * 1e6);
      std::fflush(stdout);
    }
  }
  return 0;
}
