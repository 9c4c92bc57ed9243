// The main() of the multi-rank GoogleTest programs (ctest runs them under mpiexec with 1, 2
// and 4 ranks): every rank runs every test, only rank 0 prints the full GoogleTest output,
// other ranks print their failures prefixed by the rank, and the exit code is the MAX over
// ranks, so the job fails when any rank failed.
//
// Tests must reach the same collectives on every rank: use EXPECT (not ASSERT) between
// collectives, or a failure on one rank leaves the others waiting until the deadline.
#pragma once

#include <gtest/gtest.h>
#include <mpi.h>

#include <cstdio>
#include <memory>

#include "comm/mpi_communicator.h"

namespace sy {
namespace testutil {

// Prints only failures, prefixed by the rank (ranks other than 0).
class RankFailurePrinter : public ::testing::EmptyTestEventListener {
 public:
  explicit RankFailurePrinter(int rank) : rank_(rank) {}
  void OnTestPartResult(const ::testing::TestPartResult& r) override {
    if (!r.failed()) return;
    std::fprintf(stderr, "[rank %d] %s:%d: Failure\n%s\n", rank_,
                 r.file_name() ? r.file_name() : "?", r.line_number(), r.summary());
  }
  void OnTestEnd(const ::testing::TestInfo& info) override {
    if (info.result()->Failed()) {
      std::fprintf(stderr, "[rank %d] FAILED %s.%s\n", rank_, info.test_suite_name(), info.name());
    }
  }

 private:
  int rank_;
};

// Runs every test with *global pointing at a world communicator whose deadline is 30 s (a test
// bug that leaves one rank behind ends the run quickly instead of at ctest's limit).
inline int run_all_tests_mpi(int* argc, char*** argv, MpiCommunicator** global) {
  MpiRuntime mpi(argc, argv);
  ::testing::InitGoogleTest(argc, *argv);
  if (mpi.world_rank() != 0) {
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
    listeners.Append(new RankFailurePrinter(mpi.world_rank()));
  }
  int rc = 0;
  {
    auto comm = std::make_unique<MpiCommunicator>();
    comm->set_timeout(30);
    *global = comm.get();
    rc = RUN_ALL_TESTS();
    *global = nullptr;
  }
  MPI_Allreduce(MPI_IN_PLACE, &rc, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  return rc;
}

}  // namespace testutil
}  // namespace sy
