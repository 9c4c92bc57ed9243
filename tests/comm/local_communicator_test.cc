// The single-process backend (the reference), and the argument checks every backend shares.
#include "comm/local_communicator.h"

#include <gtest/gtest.h>

#include <climits>

#include "tests/comm/comm_test_util.h"

namespace sy {
namespace {

TEST(LocalCommunicator, Identity) {
  LocalCommunicator c;
  EXPECT_EQ(c.rank(), 0);
  EXPECT_EQ(c.size(), 1);
  EXPECT_STREQ(c.backend(), "local");
}

TEST(LocalCommunicator, AlltoallvHonoursDisplacements) {
  LocalCommunicator c;
  for (uint64_t seed = 0; seed < 20; ++seed) {
    const int64_t W = 1 + seed % 3;
    const auto ex = testutil::exchange_rows(c, seed, 8, W, {"test.local", 0, int64_t(seed)});
    EXPECT_EQ(testutil::check_exchange(ex, 1, 0, seed, 8, W), "") << "seed " << seed;
  }
}

TEST(LocalCommunicator, AllreduceIsIdentityInAndOutOfPlace) {
  LocalCommunicator c;
  std::vector<float> x = {1.f, -2.f, 3.5f}, y(3);
  for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kMin, ReduceOp::kMax}) {
    c.allreduce(x.data(), y.data(), 3, op, {"test.local"});
    EXPECT_EQ(x, y);
    c.allreduce(x.data(), 3, op, {"test.local"});
    EXPECT_EQ(x, (std::vector<float>{1.f, -2.f, 3.5f}));
  }
  std::vector<int64_t> i = {int64_t{1} << 50, -3};
  c.allreduce(i.data(), 2, ReduceOp::kSum, {"test.local"});
  EXPECT_EQ(i[0], int64_t{1} << 50);
}

TEST(LocalCommunicator, AlltoallAndAllgatherCopy) {
  LocalCommunicator c;
  std::vector<int32_t> a = {7, 8, 9}, b(3);
  c.alltoall(a.data(), b.data(), 3, {"test.local"});
  EXPECT_EQ(a, b);
  std::vector<double> g = {0.5, 1.5}, h(2);
  c.allgather(g.data(), h.data(), 2, {"test.local"});
  EXPECT_EQ(g, h);
}

TEST(Communicator, SequenceCountsEveryCollective) {
  LocalCommunicator c;
  EXPECT_EQ(c.seq(), 0);
  int64_t x = 1, y = 0;
  c.barrier({"b"});
  c.allreduce(&x, 1, ReduceOp::kSum, {"r"});
  c.alltoall(&x, &y, 1, {"a"});
  c.allgather(&x, &y, 1, {"g"});
  EXPECT_EQ(c.seq(), 4);
  EXPECT_EQ(Communicator::describe({"moe.combine", 2, 9}, 4), "moe.combine seq 4 layer 2 step 9");
}

// Bad alltoallv layouts are refused before any data moves, and the message names the call.
TEST(Communicator, AlltoallvValidation) {
  LocalCommunicator c;
  int64_t send[4] = {1, 2, 3, 4}, recv[4] = {0, 0, 0, 0};
  auto call = [&](int64_t sc, int64_t sd, int64_t scap, int64_t rc, int64_t rd, int64_t rcap,
                  int64_t elem_bytes = 8) {
    return c.alltoallv_bytes(send, {&sc, &sd, scap}, recv, {&rc, &rd, rcap}, elem_bytes,
                             {"moe.dispatch", 1, 5});
  };
  EXPECT_TRUE(call(2, 0, 4, 2, 2, 4).ok());
  EXPECT_EQ(recv[2], 1);
  EXPECT_EQ(recv[3], 2);
  const struct {
    Status st;
    const char* fragment;
  } cases[] = {
      {call(-1, 0, 4, 2, 0, 4), "negative"},
      {call(2, -1, 4, 2, 0, 4), "negative"},
      {call(int64_t{INT_MAX} + 1, 0, int64_t{1} << 40, 2, 0, 4), "does not fit an MPI int"},
      {call(2, int64_t{INT_MAX} + 1, int64_t{1} << 40, 2, 0, 4), "does not fit an MPI int"},
      {call(2, 3, 4, 2, 0, 4), "runs past the buffer"},
      {call(2, 0, 4, 2, 3, 4), "recv peer 0"},
      {call(2, 0, 4, 2, 0, 4, 0), "element bytes 0"},
      {call(2, 0, 4, 2, 0, 4, int64_t{INT_MAX} + 1), "element bytes"},
  };
  for (const auto& k : cases) {
    EXPECT_EQ(k.st.code(), StatusCode::kInvalidArgument);
    EXPECT_NE(k.st.message().find("moe.dispatch seq"), std::string::npos) << k.st.message();
    EXPECT_NE(k.st.message().find("layer 1 step 5"), std::string::npos) << k.st.message();
    EXPECT_NE(k.st.message().find(k.fragment), std::string::npos) << k.st.message();
  }
}

TEST(Communicator, AlltoallvBlocksValidation) {
  LocalCommunicator c;
  int64_t send[4] = {1, 2, 3, 4}, recv[4] = {0, 0, 0, 0};
  int64_t sc[2] = {1, 2}, sd[2] = {0, 1}, rc[2] = {1, 2}, rd[2] = {3, 0};
  // Block 0 (one element) to the end, block 1 (two) to the front.
  EXPECT_TRUE(c.alltoallv_blocks_bytes(send, {2, sc, sd, 4}, recv, {2, rc, rd, 4}, 8,
                                       {"moe.dispatch", 1, 5})
                  .ok());
  EXPECT_EQ(recv[0], 2);
  EXPECT_EQ(recv[1], 3);
  EXPECT_EQ(recv[2], 0);
  EXPECT_EQ(recv[3], 1);
  int64_t past[2] = {0, 3};
  const struct {
    Status st;
    const char* fragment;
  } cases[] = {
      {c.alltoallv_blocks_bytes(send, {2, sc, sd, 4}, recv, {1, rc, rd, 4}, 8,
                                {"moe.dispatch", 1, 5}),
       "must be equal"},
      {c.alltoallv_blocks_bytes(send, {0, sc, sd, 4}, recv, {0, rc, rd, 4}, 8,
                                {"moe.dispatch", 1, 5}),
       "must be equal and in [1,"},
      {c.alltoallv_blocks_bytes(send, {2, sc, sd, 4}, recv, {2, rc, past, 4}, 8,
                                {"moe.dispatch", 1, 5}),
       "recv peer 0 block 1 count 2 displacement 3 capacity 4: runs past the buffer"},
  };
  for (const auto& k : cases) {
    EXPECT_EQ(k.st.code(), StatusCode::kInvalidArgument);
    EXPECT_NE(k.st.message().find("moe.dispatch seq"), std::string::npos) << k.st.message();
    EXPECT_NE(k.st.message().find(k.fragment), std::string::npos) << k.st.message();
  }
}

TEST(LocalCommunicatorDeathTest, MismatchedCountsAreABug) {
  LocalCommunicator c;
  int64_t send[4] = {}, recv[4] = {};
  int64_t sc = 2, rc = 3, d = 0;
  EXPECT_DEATH((void)c.alltoallv_bytes(send, {&sc, &d, 4}, recv, {&rc, &d, 4}, 8, {"x", 0, 0}),
               "send/recv counts");
}

TEST(LocalCommunicatorDeathTest, AbortExitsWithCode) {
  LocalCommunicator c;
  EXPECT_EXIT(c.abort(23, "checkpoint shard 3 is corrupt"), ::testing::ExitedWithCode(23),
              "rank 0 on .*: checkpoint shard 3 is corrupt");
}

TEST(CollectiveTimeout, Parse) {
  EXPECT_DOUBLE_EQ(parse_collective_timeout(nullptr).value(), 600.0);
  EXPECT_DOUBLE_EQ(parse_collective_timeout("").value(), 600.0);
  EXPECT_DOUBLE_EQ(parse_collective_timeout("3").value(), 3.0);
  EXPECT_DOUBLE_EQ(parse_collective_timeout("0.5").value(), 0.5);
  EXPECT_DOUBLE_EQ(parse_collective_timeout("0").value(), 0.0);
  for (const char* bad : {"abc", "-1", "5s", "inf", "nan"}) {
    auto t = parse_collective_timeout(bad);
    EXPECT_FALSE(t.ok()) << bad;
    if (!t.ok()) {
      EXPECT_EQ(t.status().exit_code(), kExitConfig);
    }
  }
}

TEST(ExchangeMergeBytes, Parse) {
  EXPECT_EQ(parse_exchange_merge_bytes(nullptr).value(), kDefaultExchangeMergeBytes);
  EXPECT_EQ(parse_exchange_merge_bytes("").value(), kDefaultExchangeMergeBytes);
  EXPECT_EQ(parse_exchange_merge_bytes("0").value(), 0);
  EXPECT_EQ(parse_exchange_merge_bytes("1048576").value(), 1048576);
  for (const char* bad : {"abc", "-1", "+4", " 4", "4k", "1e6", "99999999999999999999"}) {
    auto b = parse_exchange_merge_bytes(bad);
    EXPECT_FALSE(b.ok()) << bad;
    if (!b.ok()) {
      EXPECT_EQ(b.status().exit_code(), kExitConfig);
    }
  }
}

}  // namespace
}  // namespace sy
