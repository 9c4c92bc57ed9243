// A tiny multi-rank program for the failure tests (tests/comm/run_expect.sh): a few "steps",
// each a dispatch-like exchange (counts by alltoall, rows by alltoallv) and an allreduce,
// under the collective deadline, with SY_FAULT injected at the top of every step.
//
//   comm_fault_main [--steps N] [--check-fail-rank R] [--abort-rank R --abort-code C]
//                   [--dispatch [--zero-rank R]] [--blocks-mismatch [merged-]more|less]
//
// --check-fail-rank: that rank fails an SY_CHECK at step 1 (the abort hook must end every
// rank with exit code 1). --abort-rank: that rank calls Communicator::abort(C) at step 1.
// --dispatch: each step is a comm::Dispatcher round trip instead (E = 2P experts, D = 4,
// layer 0; SY_FAULT=corrupt_count applies); --zero-rank R: rank R has no tokens and every
// token goes to rank 0's experts (no hang). --blocks-mismatch: at step 1, rank 0 posts
// one row more (or less) than rank 1 sends it in an alltoallv_blocks with no count exchange
// (the backend's own per-message check must end the job with exit 22); merged-more|less: the
// same on the second of two blocks that travel as one message.
// Prints "comm_fault_main: rank r done after N steps" on success.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <vector>

#include "comm/dispatcher.h"
#include "comm/fault.h"
#include "comm/mpi_communicator.h"
#include "tests/comm/comm_test_util.h"

namespace {

// One Dispatcher round trip at `step`; the rows come back transformed by (global expert + 1).
// Returns false when they do not.
bool dispatch_step(sy::Communicator& comm, sy::Dispatcher& disp, int64_t step, int zero_rank) {
  const int r = comm.rank();
  const int64_t E = disp.num_experts(), D = disp.hidden(), e = disp.local_experts();
  std::mt19937_64 rng(1000 * static_cast<uint64_t>(step) + static_cast<uint64_t>(r));
  std::vector<int32_t> kept_E(E, 0);
  if (r != zero_rank) {
    for (int64_t g = 0; g < E; ++g) {
      if (zero_rank < 0 || g < e) kept_E[g] = 1 + static_cast<int32_t>(rng() % 5);
    }
  }
  int64_t A = 0;
  for (int32_t n : kept_E) A += n;
  std::vector<float> x(A * D), y(A * D), recv;
  for (int64_t i = 0; i < A * D; ++i) x[i] = static_cast<float>(r * 100000 + i);
  sy::DispatchHandle h;
  const sy::CollectiveTag tag{"fault_test.dispatch", 0, step};
  disp.dispatch(kept_E.data(), x.data(), A, tag, &h, &recv);
  for (int64_t j = 0; j < e; ++j) {
    for (int64_t i = h.local_offsets_e1()[j] * D; i < h.local_offsets_e1()[j + 1] * D; ++i) {
      recv[i] *= static_cast<float>(disp.first_local_expert() + j + 1);
    }
  }
  disp.return_rows(&h, recv.data(), y.data(), tag);
  bool ok = true;
  for (int64_t g = 0, a = 0; g < E; ++g) {
    for (int64_t end = a + kept_E[g]; a < end; ++a) {
      for (int64_t d = 0; d < D; ++d)
        ok &= y[a * D + d] == x[a * D + d] * static_cast<float>(g + 1);
    }
  }
  return ok;
}

// Rank 1 sends rank 0 three rows in block 0; rank 0 expects 3 + delta. merged: two blocks
// (3 rows, then 2; block 1 is where rank 0 expects 2 + delta), small enough for the MPI backend
// to send them as one message, so its check is on the merged total.
void blocks_mismatch(sy::Communicator& comm, int delta, bool merged) {
  const int P = comm.size(), r = comm.rank();
  const int64_t B = merged ? 2 : 1;
  std::vector<int64_t> sc(P * B, 0), sd(P * B, 0), rc(P * B, 0), rd(P * B, 0);
  if (r == 1) {
    sc[0] = 3;
    if (merged) sc[1] = 2, sd[1] = 3;
  }
  if (r == 0) {
    rc[B] = merged ? 3 : 3 + delta;
    if (merged) rc[B + 1] = 2 + delta, rd[B + 1] = 3;
  }
  std::vector<float> send(8, 1.f), recv(8, 0.f);
  SY_CHECK_OK(comm.alltoallv_blocks(send.data(), {B, sc.data(), sd.data(), 8}, recv.data(),
                                    {B, rc.data(), rd.data(), 8}, 1, {"fault_test.blocks", 0, 1}));
}

}  // namespace

int main(int argc, char** argv) {
  sy::MpiRuntime mpi(&argc, &argv);
  int steps = 4, check_fail_rank = -1, abort_rank = -1, abort_code = 1, zero_rank = -1;
  int blocks_delta = 0;
  bool use_dispatcher = false, blocks_merged = false;
  for (int i = 1; i < argc; ++i) {
    auto next = [&]() {
      SY_CHECK(i + 1 < argc) << "missing value after " << argv[i];
      return std::atoi(argv[++i]);
    };
    if (!std::strcmp(argv[i], "--steps")) {
      steps = next();
    } else if (!std::strcmp(argv[i], "--check-fail-rank")) {
      check_fail_rank = next();
    } else if (!std::strcmp(argv[i], "--abort-rank")) {
      abort_rank = next();
    } else if (!std::strcmp(argv[i], "--abort-code")) {
      abort_code = next();
    } else if (!std::strcmp(argv[i], "--dispatch")) {
      use_dispatcher = true;
    } else if (!std::strcmp(argv[i], "--zero-rank")) {
      zero_rank = next();
    } else if (!std::strcmp(argv[i], "--blocks-mismatch") && i + 1 < argc) {
      const std::string how = argv[++i];
      blocks_merged = how.rfind("merged-", 0) == 0;
      blocks_delta = how == "more" || how == "merged-more" ? 1 : -1;
    } else {
      std::fprintf(
          stderr,
          "usage: %s [--steps N] [--check-fail-rank R] [--abort-rank R "
          "--abort-code C] [--dispatch [--zero-rank R]] [--blocks-mismatch [merged-]more|less]\n",
          argv[0]);
      return sy::kExitUsage;
    }
  }

  sy::MpiCommunicator comm;
  const int r = comm.rank(), P = comm.size();
  std::unique_ptr<sy::Dispatcher> dispatcher;
  if (use_dispatcher) dispatcher = std::move(sy::Dispatcher::create(&comm, 2 * P, 4).value());
  for (int64_t step = 0; step < steps; ++step) {
    sy::inject_process_faults(r, step);
    if (step == 1 && r == check_fail_rank) SY_CHECK(false) << "injected check failure";
    if (step == 1 && r == abort_rank) comm.abort(abort_code, "injected abort at step 1");

    if (step == 1 && blocks_delta != 0 && P > 1) blocks_mismatch(comm, blocks_delta, blocks_merged);

    std::string err;
    if (dispatcher) {
      if (!dispatch_step(comm, *dispatcher, step, zero_rank)) err = "dispatcher round trip differs";
    } else {
      const uint64_t seed = 100 + static_cast<uint64_t>(step);
      const auto ex =
          sy::testutil::exchange_rows(comm, seed, 6, 4, {"fault_test.dispatch", 0, step});
      err = sy::testutil::check_exchange(ex, P, r, seed, 6, 4);
    }
    // Agree on the verdict first, so every rank fails together (no rank left waiting).
    int64_t bad = err.empty() ? 0 : 1;
    comm.allreduce(&bad, 1, sy::ReduceOp::kSum, {"fault_test.verdict", 0, step});
    SY_CHECK_EQ(bad, 0) << "exchange check failed at step " << step << ": " << err;
  }
  comm.barrier({"fault_test.end"});
  std::printf("comm_fault_main: rank %d done after %d steps\n", r, steps);
  return 0;
}
