// A tiny multi-rank program for the failure tests (tests/comm/run_expect.sh): a few "steps",
// each a dispatch-like exchange (counts by alltoall, rows by alltoallv) and an allreduce,
// under the collective deadline, with SY_FAULT injected at the top of every step.
//
//   comm_fault_main [--steps N] [--check-fail-rank R] [--abort-rank R --abort-code C]
//
// --check-fail-rank: that rank fails an SY_CHECK at step 1 (the abort hook must end every
// rank with exit code 1). --abort-rank: that rank calls Communicator::abort(C) at step 1.
// Prints "comm_fault_main: rank r done after N steps" on success.
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "comm/fault.h"
#include "comm/mpi_communicator.h"
#include "tests/comm/comm_test_util.h"

int main(int argc, char** argv) {
  sy::MpiRuntime mpi(&argc, &argv);
  int steps = 4, check_fail_rank = -1, abort_rank = -1, abort_code = 1;
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
    } else {
      std::fprintf(stderr,
                   "usage: %s [--steps N] [--check-fail-rank R] [--abort-rank R "
                   "--abort-code C]\n",
                   argv[0]);
      return sy::kExitUsage;
    }
  }

  sy::MpiCommunicator comm;
  const int r = comm.rank(), P = comm.size();
  for (int64_t step = 0; step < steps; ++step) {
    sy::inject_process_faults(r, step);
    if (step == 1 && r == check_fail_rank) SY_CHECK(false) << "injected check failure";
    if (step == 1 && r == abort_rank) comm.abort(abort_code, "injected abort at step 1");

    const uint64_t seed = 100 + static_cast<uint64_t>(step);
    const auto ex = sy::testutil::exchange_rows(comm, seed, 6, 4, {"fault_test.dispatch", 0, step});
    const std::string err = sy::testutil::check_exchange(ex, P, r, seed, 6, 4);
    // Agree on the verdict first, so every rank fails together (RELIABILITY A6).
    int64_t bad = err.empty() ? 0 : 1;
    comm.allreduce(&bad, 1, sy::ReduceOp::kSum, {"fault_test.verdict", 0, step});
    SY_CHECK_EQ(bad, 0) << "exchange check failed at step " << step << ": " << err;
  }
  comm.barrier({"fault_test.end"});
  std::printf("comm_fault_main: rank %d done after %d steps\n", r, steps);
  return 0;
}
