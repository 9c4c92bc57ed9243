// Multi-rank tests of the MPI backend (ctest runs this under mpiexec with 1, 2 and 4 ranks).
// Every rank runs every test; data is seeded by rank so each rank checks its own result; the
// final verdict is the MAX over ranks, so the job fails when any rank failed. Only rank 0
// prints the full GoogleTest output; other ranks print their failures, prefixed by the rank.
//
// Tests must reach the same collectives on every rank: use EXPECT (not ASSERT) between
// collectives, or a failure on one rank leaves the others waiting until the deadline.
#include <gtest/gtest.h>
#include <mpi.h>

#include <climits>
#include <cstring>
#include <memory>

#include "comm/local_communicator.h"
#include "comm/mpi_communicator.h"
#include "tests/comm/comm_test_util.h"
#include "tests/comm/mpi_test_main.h"

namespace sy {
namespace {

using testutil::encode;

MpiCommunicator* g_comm = nullptr;

TEST(MpiCommunicator, RankAndSizeMatchWorld) {
  int r = -1, p = -1;
  MPI_Comm_rank(MPI_COMM_WORLD, &r);
  MPI_Comm_size(MPI_COMM_WORLD, &p);
  EXPECT_EQ(g_comm->rank(), r);
  EXPECT_EQ(g_comm->size(), p);
  EXPECT_STREQ(g_comm->backend(), "mpi");
}

TEST(MpiCommunicator, SequenceNumbersAgree) {
  const int P = g_comm->size();
  const int64_t mine = g_comm->seq();
  std::vector<int64_t> all(P, -1);
  g_comm->allgather(&mine, all.data(), 1, {"test.seq"});
  for (int q = 0; q < P; ++q) EXPECT_EQ(all[q], mine) << "rank " << q;
  EXPECT_EQ(g_comm->seq(), mine + 1);
  g_comm->barrier({"test.barrier"});
  EXPECT_EQ(g_comm->seq(), mine + 2);
}

TEST(MpiCommunicator, AlltoallInt64AndInt32) {
  const int P = g_comm->size(), r = g_comm->rank();
  for (int64_t count : {1, 5}) {
    std::vector<int64_t> send(P * count), recv(P * count, -1);
    std::vector<int32_t> send32(P * count), recv32(P * count, -1);
    for (int p = 0; p < P; ++p) {
      for (int64_t i = 0; i < count; ++i) {
        send[p * count + i] = encode(r, p, i);
        send32[p * count + i] = r * 1000 + p * 10 + static_cast<int32_t>(i);
      }
    }
    g_comm->alltoall(send.data(), recv.data(), count, {"test.alltoall64"});
    g_comm->alltoall(send32.data(), recv32.data(), count, {"test.alltoall32"});
    for (int q = 0; q < P; ++q) {
      for (int64_t i = 0; i < count; ++i) {
        EXPECT_EQ(recv[q * count + i], encode(q, r, i)) << "from " << q;
        EXPECT_EQ(recv32[q * count + i], q * 1000 + r * 10 + i) << "from " << q;
      }
    }
  }
}

// 3-byte elements: exercises the contiguous datatype with an odd size.
TEST(MpiCommunicator, AlltoallOddElementSize) {
  struct Tri {
    uint8_t b[3];
  };
  const int P = g_comm->size(), r = g_comm->rank();
  std::vector<Tri> send(P), recv(P);
  for (int p = 0; p < P; ++p) send[p] = {{uint8_t(r), uint8_t(p), uint8_t(r ^ p ^ 0x5a)}};
  g_comm->alltoall(send.data(), recv.data(), 1, {"test.alltoall3"});
  for (int q = 0; q < P; ++q) {
    EXPECT_EQ(recv[q].b[0], q);
    EXPECT_EQ(recv[q].b[1], r);
    EXPECT_EQ(recv[q].b[2], q ^ r ^ 0x5a);
  }
}

// Random counts per peer (0 included), seeded by rank; counts exchanged first, then rows.
TEST(MpiCommunicator, AlltoallvRandomCounts) {
  const int P = g_comm->size(), r = g_comm->rank();
  for (uint64_t seed = 0; seed < 40; ++seed) {
    const int64_t W = seed % 3 == 0 ? 1 : 4, max_rows = seed % 5 == 0 ? 1 : 9;
    CollectiveTag tag{"test.alltoallv", static_cast<int>(seed % 4), static_cast<int64_t>(seed)};
    const auto ex = testutil::exchange_rows(*g_comm, seed, max_rows, W, tag);
    EXPECT_EQ(testutil::check_exchange(ex, P, r, seed, max_rows, W), "") << "seed " << seed;
  }
}

TEST(MpiCommunicator, AlltoallvRejectsCountsBeyondInt) {
  // Every rank makes the same bad call, so no rank waits for another.
  const int P = g_comm->size();
  std::vector<int64_t> counts(P, 0), displs(P, 0);
  counts[P - 1] = int64_t{INT_MAX} + 1;
  const std::vector<int64_t> zeros(P, 0);
  int64_t send = 0, recv = 0;
  const VLayout bad{counts.data(), displs.data(), int64_t{1} << 40};
  const VLayout ok{zeros.data(), displs.data(), 1};
  const int64_t before = g_comm->seq();
  Status st = g_comm->alltoallv(&send, bad, &recv, ok, 1, {"moe.dispatch", 3, 17});
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("moe.dispatch seq " + std::to_string(before) + " layer 3 step 17"),
            std::string::npos)
      << st.message();
  EXPECT_NE(st.message().find("does not fit an MPI int"), std::string::npos) << st.message();
  g_comm->barrier({"test.after_bad_alltoallv"});  // the ranks are still in step
}

// The blocked exchange: every (peer, block) lands in its own place, gaps stay untouched, also
// with empty blocks and peers (seed 0: all empty; seed 1: everything to rank 0).
// Each peer's blocks as one merged message (the default), one message per block (merge 0), and
// a threshold in between, so that some peers merge and others do not.
TEST(MpiCommunicator, AlltoallvBlocksRandomCounts) {
  const int P = g_comm->size(), r = g_comm->rank();
  for (const int64_t merge : {kDefaultExchangeMergeBytes, int64_t{0}, int64_t{96}}) {
    g_comm->set_merge_bytes(merge);
    for (uint64_t seed = 0; seed < 16; ++seed) {
      const int64_t B = 1 + seed % 4, W = 1 + seed % 3;
      const auto ex = testutil::exchange_blocks(*g_comm, seed, 9, W, B, {"test.blocks", 0, 0});
      EXPECT_EQ(testutil::check_blocks(ex, P, r, B, W), "")
          << "seed " << seed << " merge " << merge;
    }
  }
  g_comm->set_merge_bytes(kDefaultExchangeMergeBytes);
}

// Non-blocking blocked exchanges (what the MoE layer's overlap uses): three in flight at once,
// moved along by progress(), finished in reverse order, each with its own layout; the results
// are those of the blocking call, merged or not. A test reports done only when done.
TEST(MpiCommunicator, StartedBlockExchangesFinishInAnyOrder) {
  const int P = g_comm->size(), r = g_comm->rank();
  for (const int64_t merge : {kDefaultExchangeMergeBytes, int64_t{0}}) {
    g_comm->set_merge_bytes(merge);
    for (uint64_t seed = 0; seed < 6; ++seed) {
      const int64_t W = 1 + seed % 3;
      std::vector<testutil::BlockExchange> ex;
      std::vector<Communicator::Pending> x(3);
      for (int k = 0; k < 3; ++k)
        ex.push_back(testutil::prepare_blocks(*g_comm, seed * 3 + k, 9, W, 1 + k));
      const int64_t seq0 = g_comm->seq();
      for (int k = 0; k < 3; ++k) {
        const int64_t B = 1 + k;
        ex[k].status = g_comm->start_alltoallv_blocks_bytes(
            ex[k].send.data(),
            {B, ex[k].send_counts.data(), ex[k].send_displs.data(), ex[k].send_cap},
            ex[k].recv.data(),
            {B, ex[k].recv_counts.data(), ex[k].recv_displs.data(), ex[k].recv_cap},
            W * static_cast<int64_t>(sizeof(int64_t)), {"test.started", k, 0}, &x[k]);
        EXPECT_EQ(x[k].seq, seq0 + k);
      }
      for (int i = 0; i < 10; ++i) g_comm->progress();
      for (int k = 2; k >= 0; --k) {
        if (g_comm->test_alltoallv_blocks(&x[k])) {  // then every message is here already
          EXPECT_EQ(testutil::check_blocks(ex[k], P, r, 1 + k, W), "") << "tested, seed " << seed;
        }
        g_comm->finish_alltoallv_blocks(&x[k]);
        EXPECT_FALSE(x[k].started());
        EXPECT_EQ(testutil::check_blocks(ex[k], P, r, 1 + k, W), "")
            << "seed " << seed << " exchange " << k << " merge " << merge;
      }
    }
  }
  g_comm->set_merge_bytes(kDefaultExchangeMergeBytes);
}

TEST(MpiCommunicator, AllreduceSumMinMax) {
  const int P = g_comm->size(), r = g_comm->rank();
  const int n = 6;
  for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kMin, ReduceOp::kMax}) {
    std::vector<double> d(n), d_out(n);
    std::vector<float> f(n);
    std::vector<int64_t> i64(n);
    std::vector<int32_t> i32(n);
    for (int i = 0; i < n; ++i) {
      d[i] = (r + 1) * (i + 1) * 0.5;
      f[i] = static_cast<float>((r + 1) * (i - 2));
      i64[i] = (int64_t{r} - P / 2) * (int64_t{1} << 40) + i;  // needs all 64 bits
      i32[i] = (r + 1) * (i + 1);
    }
    g_comm->allreduce(d.data(), d_out.data(), n, op, {"test.allreduce"});  // out of place
    g_comm->allreduce(f.data(), n, op, {"test.allreduce"});                // in place
    g_comm->allreduce(i64.data(), n, op, {"test.allreduce"});
    g_comm->allreduce(i32.data(), n, op, {"test.allreduce"});
    const int64_t tri = int64_t{P} * (P + 1) / 2;  // sum of (r + 1) over ranks
    for (int i = 0; i < n; ++i) {
      const int64_t base = int64_t{1} << 40;
      if (op == ReduceOp::kSum) {
        EXPECT_DOUBLE_EQ(d_out[i], tri * (i + 1) * 0.5);
        EXPECT_FLOAT_EQ(f[i], static_cast<float>(tri * (i - 2)));
        int64_t s = 0;
        for (int q = 0; q < P; ++q) s += (int64_t{q} - P / 2) * base + i;
        EXPECT_EQ(i64[i], s);
        EXPECT_EQ(i32[i], tri * (i + 1));
      } else {
        const bool mn = op == ReduceOp::kMin;
        // (r + 1) * (i - 2) is smallest at r = P - 1 when i < 2.
        const int fr = (mn == (i - 2 < 0)) ? P : 1;
        EXPECT_DOUBLE_EQ(d_out[i], (mn ? 1 : P) * (i + 1) * 0.5);
        EXPECT_FLOAT_EQ(f[i], static_cast<float>(fr * (i - 2)));
        EXPECT_EQ(i64[i], ((mn ? 0 : P - 1) - int64_t{P} / 2) * base + i);
        EXPECT_EQ(i32[i], (mn ? 1 : P) * (i + 1));
      }
    }
  }
}

// Large float / double sums go through the chunked point-to-point allreduce: every value is the
// sum over ranks in rank order, bit for bit (each rank recomputes every rank's data), in place
// and out of place, for counts that do not split evenly, tiny and empty chunks included.
TEST(MpiCommunicator, ChunkedAllreduceSumsInRankOrder) {
  const int P = g_comm->size(), r = g_comm->rank();
  auto value = [](int q, int64_t i) {
    return static_cast<double>(((q + 3) * 7919 + i * 104729) % 1000003) * 1e-3 - 500.0 + 0.1 * q;
  };
  g_comm->set_p2p_allreduce_bytes(1);  // every size takes the chunked path
  for (int64_t n : {int64_t{1}, int64_t{3}, int64_t{17}, int64_t{1000}, int64_t{100003}}) {
    std::vector<float> f(n), f_out(n);
    std::vector<double> d(n);
    for (int64_t i = 0; i < n; ++i) {
      f[i] = static_cast<float>(value(r, i));
      d[i] = value(r, i) * 1.000001;
    }
    const std::vector<float> f_in = f;
    g_comm->allreduce(f_in.data(), f_out.data(), n, ReduceOp::kSum, {"test.allreduce_chunks"});
    g_comm->allreduce(f.data(), n, ReduceOp::kSum, {"test.allreduce_chunks"});  // in place
    g_comm->allreduce(d.data(), n, ReduceOp::kSum, {"test.allreduce_chunks"});
    int bad = 0;
    for (int64_t i = 0; i < n; ++i) {
      float ef = static_cast<float>(value(0, i));
      double ed = value(0, i) * 1.000001;
      for (int q = 1; q < P; ++q) {
        ef += static_cast<float>(value(q, i));
        ed += value(q, i) * 1.000001;
      }
      bad += f_out[i] != ef || f[i] != ef || d[i] != ed;
    }
    EXPECT_EQ(bad, 0) << "n " << n;
  }
  g_comm->set_p2p_allreduce_bytes(int64_t{1} << 18);
}

TEST(MpiCommunicator, Allgather) {
  const int P = g_comm->size(), r = g_comm->rank();
  const int64_t count = 3;
  std::vector<int64_t> mine(count), all(P * count, -1);
  for (int64_t i = 0; i < count; ++i) mine[i] = encode(r, 0, i);
  g_comm->allgather(mine.data(), all.data(), count, {"test.allgather"});
  for (int q = 0; q < P; ++q) {
    for (int64_t i = 0; i < count; ++i) EXPECT_EQ(all[q * count + i], encode(q, 0, i));
  }
}

// The single-process backend is the reference: with one rank (MPI_COMM_SELF) the MPI backend
// must give exactly the same bytes for the same calls.
TEST(MpiCommunicator, LocalBackendMatchesMpiWithOneRank) {
  MpiCommunicator self(MPI_COMM_SELF);
  LocalCommunicator local;
  ASSERT_EQ(self.size(), 1);
  for (uint64_t seed = 0; seed < 12; ++seed) {
    const int64_t W = 1 + seed % 3;
    const auto a = testutil::exchange_rows(self, seed, 7, W, {"test.self", 0, int64_t(seed)});
    const auto b = testutil::exchange_rows(local, seed, 7, W, {"test.self", 0, int64_t(seed)});
    EXPECT_EQ(a.recv, b.recv) << "seed " << seed;
    EXPECT_EQ(a.recv_rows, b.recv_rows) << "seed " << seed;
    EXPECT_EQ(testutil::check_exchange(b, 1, 0, seed, 7, W), "");
  }
  for (uint64_t seed = 0; seed < 6; ++seed) {
    const int64_t B = 1 + seed % 3;
    const auto a = testutil::exchange_blocks(self, seed, 5, 2, B, {"test.self", 0, 0});
    const auto b = testutil::exchange_blocks(local, seed, 5, 2, B, {"test.self", 0, 0});
    EXPECT_EQ(a.recv, b.recv) << "seed " << seed;
    EXPECT_EQ(testutil::check_blocks(b, 1, 0, B, 2), "") << "seed " << seed;
  }
  std::vector<double> x = {1.5, -2.0, 3.25}, ya(3), yb(3);
  self.allreduce(x.data(), ya.data(), 3, ReduceOp::kSum, {"test.self"});
  local.allreduce(x.data(), yb.data(), 3, ReduceOp::kSum, {"test.self"});
  EXPECT_EQ(ya, yb);
  std::vector<int32_t> g = {4, 5}, ga(2), gb(2);
  self.allgather(g.data(), ga.data(), 2, {"test.self"});
  local.allgather(g.data(), gb.data(), 2, {"test.self"});
  EXPECT_EQ(ga, gb);
  self.barrier({"test.self"});
  local.barrier({"test.self"});
  EXPECT_EQ(self.seq(), local.seq());
}

}  // namespace
}  // namespace sy

int main(int argc, char** argv) {
  return sy::testutil::run_all_tests_mpi(&argc, &argv, &sy::g_comm);
}
