// Tests of the NCCL backend (comm/nccl_communicator.h): the checks mpi_communicator_test makes of
// the MPI backend, on DEVICE buffers, plus host-pointer staging (the per-peer counts of the
// dispatcher), stream ordering and the setup. ctest runs it under mpiexec at NP 1 (label gpu):
// NCCL needs one GPU per rank and refuses two ranks on one device, so more ranks need a machine
// with as many GPUs (run it by hand there: mpirun -np N nccl_communicator_test). When no device
// is visible every test skips with "no CUDA device visible: <cudaGetErrorString>" and the run
// passes; with too few devices for the ranks on a host, every test skips saying so.
//
// The rest of the rules are mpi_communicator_test's: every rank runs every test, data is seeded
// by rank so each rank checks its own result, EXPECT (not ASSERT) between collectives.
//
// Other modes (the failure tests in tests/comm/CMakeLists.txt run them through run_expect.sh):
//   --probe-device     no MPI: exit 0 when a CUDA device is visible, else print why and exit 77
//   --hang-timeout     one rank's stream is held by a sleeping host function while it enters an
//                      allreduce: its deadline (SY_COLLECTIVE_TIMEOUT_S) must end the job, exit 20
//   --abort CODE       NcclCommunicator::abort(CODE, ...) must end the job with CODE
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>
#include <mpi.h>

#include <chrono>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "comm/local_communicator.h"
#include "comm/mpi_communicator.h"
#include "comm/nccl_communicator.h"
#include "tests/comm/comm_test_util.h"
#include "tests/comm/mpi_test_main.h"

namespace sy {
namespace {

using testutil::encode;
using testutil::kSentinel;

MpiCommunicator* g_mpi = nullptr;    // the bootstrap (run_all_tests_mpi)
NcclCommunicator* g_nccl = nullptr;  // null when the tests skip or the setup failed
std::string g_skip;                  // why every test skips
std::string g_error;                 // a setup failure with devices present: every test fails

// Every test starts with this: skip where no device is usable, fail where setup failed.
#define REQUIRE_NCCL()                             \
  do {                                             \
    if (!g_error.empty()) FAIL() << g_error;       \
    if (g_nccl == nullptr) GTEST_SKIP() << g_skip; \
  } while (0)

void cuda_ok(cudaError_t e, const char* what) {
  SY_CHECK(e == cudaSuccess) << what << ": " << cudaGetErrorString(e);
}

// "" when this process sees a device, else why not ("no CUDA device visible: ...").
std::string no_device_reason() {
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    cudaGetLastError();
    return std::string("no CUDA device visible: ") + cudaGetErrorString(e);
  }
  if (n <= 0) return "no CUDA device visible: cudaGetDeviceCount found none";
  return "";
}

// The rank on this host and the number of ranks on it (the CUDA backend's device choice).
void local_rank(int* rank, int* size) {
  MPI_Comm node;
  MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node);
  MPI_Comm_rank(node, rank);
  MPI_Comm_size(node, size);
  MPI_Comm_free(&node);
}

// "" and the device made current when this rank has a device of its own, else why not. The
// verdict is the same on every rank (a rank that skipped would leave the others waiting).
std::string select_device() {
  int lr = 0, ls = 1;
  local_rank(&lr, &ls);
  std::string why = no_device_reason();
  if (why.empty()) {
    int n = 0;
    cuda_ok(cudaGetDeviceCount(&n), "cudaGetDeviceCount");
    if (n < ls) {
      why = "needs one CUDA device per rank (NCCL refuses two ranks on one device): " +
            std::to_string(ls) + " ranks on this host, " + std::to_string(n) + " devices visible";
    } else {
      cuda_ok(cudaSetDevice(lr), "cudaSetDevice");
    }
  }
  int ok = why.empty() ? 1 : 0;
  MPI_Allreduce(MPI_IN_PLACE, &ok, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
  if (!ok && why.empty()) why = "another rank has no CUDA device of its own";
  return why;
}

// Creates the NCCL communicator before the first test and destroys it after the last (while
// the bootstrap and MPI are still up).
class NcclEnvironment : public ::testing::Environment {
 public:
  void SetUp() override {
    g_skip = select_device();
    if (!g_skip.empty()) return;
    auto c = NcclCommunicator::create(g_mpi);
    if (!c.ok()) {
      g_error = "NCCL communicator setup failed with devices visible: " + c.status().ToString();
      return;
    }
    comm_ = std::move(c).value();
    g_nccl = comm_.get();
  }
  void TearDown() override {
    g_nccl = nullptr;
    comm_.reset();
  }

 private:
  std::unique_ptr<NcclCommunicator> comm_;
};

// A cudaMalloc'd array. Uploads and downloads are synchronous (cudaMemcpy on the legacy
// stream, which the communicator's blocking stream is ordered with).
template <typename T>
class DeviceVec {
 public:
  explicit DeviceVec(size_t n) : n_(n) {
    if (n_ > 0) cuda_ok(cudaMalloc(&p_, n_ * sizeof(T)), "cudaMalloc");
  }
  explicit DeviceVec(const std::vector<T>& h) : DeviceVec(h.size()) { upload(h); }
  ~DeviceVec() {
    if (p_ != nullptr) cudaFree(p_);
  }
  DeviceVec(const DeviceVec&) = delete;
  DeviceVec& operator=(const DeviceVec&) = delete;

  T* get() const { return static_cast<T*>(p_); }
  size_t size() const { return n_; }
  void upload(const std::vector<T>& h) {
    SY_CHECK_EQ(h.size(), n_);
    if (n_ > 0) cuda_ok(cudaMemcpy(p_, h.data(), n_ * sizeof(T), cudaMemcpyHostToDevice), "upload");
  }
  std::vector<T> download() const {
    std::vector<T> h(n_);
    if (n_ > 0)
      cuda_ok(cudaMemcpy(h.data(), p_, n_ * sizeof(T), cudaMemcpyDeviceToHost), "download");
    return h;
  }

 private:
  void* p_ = nullptr;
  size_t n_;
};

// testutil::exchange_rows with the rows in device memory (counts: device or host, the
// dispatcher's way). check_exchange() checks the result as for the MPI backend.
testutil::Exchange exchange_rows_device(Communicator& c, uint64_t seed, int64_t max_rows, int64_t W,
                                        bool device_counts, const CollectiveTag& tag) {
  const int P = c.size(), r = c.rank();
  const std::vector<int64_t> rows = testutil::send_rows(P, r, seed, max_rows);
  std::vector<int64_t> send_displs;
  const int64_t send_cap = testutil::reversed_displs(rows, 1, &send_displs);
  std::vector<int64_t> send(send_cap * W, kSentinel);
  for (int p = 0; p < P; ++p) {
    for (int64_t j = 0; j < rows[p] * W; ++j) send[send_displs[p] * W + j] = encode(r, p, j);
  }
  testutil::Exchange ex;
  ex.recv_rows.assign(P, -1);
  const CollectiveTag count_tag{"test.counts", tag.layer, tag.step};
  if (device_counts) {
    DeviceVec<int64_t> d_rows(rows), d_recv_rows(ex.recv_rows);
    c.alltoall(d_rows.get(), d_recv_rows.get(), 1, count_tag);
    ex.recv_rows = d_recv_rows.download();
  } else {
    c.alltoall(rows.data(), ex.recv_rows.data(), 1, count_tag);
  }
  const int64_t recv_cap = testutil::reversed_displs(ex.recv_rows, 2, &ex.recv_displs);
  DeviceVec<int64_t> d_send(send), d_recv(std::vector<int64_t>(recv_cap * W, kSentinel));
  ex.status = c.alltoallv(d_send.get(), {rows.data(), send_displs.data(), send_cap}, d_recv.get(),
                          {ex.recv_rows.data(), ex.recv_displs.data(), recv_cap}, W, tag);
  ex.recv = d_recv.download();
  return ex;
}

// testutil::exchange_blocks with device buffers (the layouts stay on the host).
testutil::BlockExchange exchange_blocks_device(Communicator& c, uint64_t seed, int64_t max_rows,
                                               int64_t W, int64_t B, const CollectiveTag& tag) {
  const int P = c.size(), r = c.rank();
  const std::vector<int64_t> sc = testutil::block_rows(P, r, seed, B, max_rows);
  std::vector<int64_t> sd;
  const int64_t send_cap = testutil::reversed_displs(sc, 1, &sd);
  std::vector<int64_t> send(send_cap * W, kSentinel);
  for (int p = 0; p < P; ++p) {
    for (int64_t b = 0; b < B; ++b) {
      for (int64_t j = 0; j < sc[p * B + b] * W; ++j) {
        send[sd[p * B + b] * W + j] = encode(r, p, (b << 20) + j);
      }
    }
  }
  testutil::BlockExchange ex;
  ex.recv_counts.assign(P * B, 0);
  for (int q = 0; q < P; ++q) {
    const std::vector<int64_t> from_q = testutil::block_rows(P, q, seed, B, max_rows);
    for (int64_t b = 0; b < B; ++b) ex.recv_counts[q * B + b] = from_q[r * B + b];
  }
  const int64_t recv_cap = testutil::reversed_displs(ex.recv_counts, 2, &ex.recv_displs);
  DeviceVec<int64_t> d_send(send), d_recv(std::vector<int64_t>(recv_cap * W, kSentinel));
  ex.status =
      c.alltoallv_blocks(d_send.get(), {B, sc.data(), sd.data(), send_cap}, d_recv.get(),
                         {B, ex.recv_counts.data(), ex.recv_displs.data(), recv_cap}, W, tag);
  ex.recv = d_recv.download();
  return ex;
}

// The factory fails with a Status, never a crash: without a bootstrap, and (collectively, on
// every rank) where no rank sees a device: the one test that runs on a machine without a GPU.
TEST(NcclCommunicatorFactory, ErrorsAreStatuses) {
  auto none = make_nccl_communicator(nullptr);
  EXPECT_FALSE(none.ok());
  EXPECT_EQ(none.status().code(), StatusCode::kInvalidArgument);
  const std::string mine = no_device_reason();
  int no_device_anywhere = mine.empty() ? 0 : 1;
  MPI_Allreduce(MPI_IN_PLACE, &no_device_anywhere, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
  if (!no_device_anywhere) GTEST_SKIP() << "a CUDA device is visible (the other tests use it)";
  auto c = make_nccl_communicator(g_mpi);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(c.status().message().find("communicator 'nccl': rank 0: " + mine), std::string::npos)
      << c.status().message();
}

TEST(NcclCommunicator, RankSizeBackendStreamDevice) {
  REQUIRE_NCCL();
  EXPECT_EQ(g_nccl->rank(), g_mpi->rank());
  EXPECT_EQ(g_nccl->size(), g_mpi->size());
  EXPECT_STREQ(g_nccl->backend(), "nccl");
  EXPECT_TRUE(g_nccl->device_buffers());
  EXPECT_NE(g_nccl->stream(), nullptr);
  int dev = -1;
  cuda_ok(cudaGetDevice(&dev), "cudaGetDevice");
  EXPECT_EQ(g_nccl->device(), dev);
  EXPECT_EQ(g_nccl->timeout(), g_mpi->timeout());  // the deadline comes from the bootstrap
}

TEST(NcclCommunicator, SequenceNumbersAgree) {
  REQUIRE_NCCL();
  const int P = g_nccl->size();
  const int64_t mine = g_nccl->seq();
  std::vector<int64_t> all(P, -1);
  g_nccl->allgather(&mine, all.data(), 1, {"test.seq"});  // host buffers: staged
  for (int q = 0; q < P; ++q) EXPECT_EQ(all[q], mine) << "rank " << q;
  EXPECT_EQ(g_nccl->seq(), mine + 1);
  const double before = g_nccl->collective_seconds();
  g_nccl->barrier({"test.barrier"});
  EXPECT_EQ(g_nccl->seq(), mine + 2);
  EXPECT_GT(g_nccl->collective_seconds(), before);
}

TEST(NcclCommunicator, AlltoallInt64AndInt32OnDevice) {
  REQUIRE_NCCL();
  const int P = g_nccl->size(), r = g_nccl->rank();
  for (int64_t count : {1, 5}) {
    std::vector<int64_t> send(P * count);
    std::vector<int32_t> send32(P * count);
    for (int p = 0; p < P; ++p) {
      for (int64_t i = 0; i < count; ++i) {
        send[p * count + i] = encode(r, p, i);
        send32[p * count + i] = r * 1000 + p * 10 + static_cast<int32_t>(i);
      }
    }
    DeviceVec<int64_t> d_send(send), d_recv(std::vector<int64_t>(P * count, -1));
    DeviceVec<int32_t> d_send32(send32), d_recv32(std::vector<int32_t>(P * count, -1));
    g_nccl->alltoall(d_send.get(), d_recv.get(), count, {"test.alltoall64"});
    g_nccl->alltoall(d_send32.get(), d_recv32.get(), count, {"test.alltoall32"});
    const std::vector<int64_t> recv = d_recv.download();
    const std::vector<int32_t> recv32 = d_recv32.download();
    for (int q = 0; q < P; ++q) {
      for (int64_t i = 0; i < count; ++i) {
        EXPECT_EQ(recv[q * count + i], encode(q, r, i)) << "from " << q;
        EXPECT_EQ(recv32[q * count + i], q * 1000 + r * 10 + i) << "from " << q;
      }
    }
  }
}

// 3-byte elements: NCCL moves bytes, so any element size works.
TEST(NcclCommunicator, AlltoallOddElementSizeOnDevice) {
  REQUIRE_NCCL();
  struct Tri {
    uint8_t b[3];
  };
  const int P = g_nccl->size(), r = g_nccl->rank();
  std::vector<Tri> send(P);
  for (int p = 0; p < P; ++p) send[p] = {{uint8_t(r), uint8_t(p), uint8_t(r ^ p ^ 0x5a)}};
  DeviceVec<Tri> d_send(send), d_recv(P);
  g_nccl->alltoall(d_send.get(), d_recv.get(), 1, {"test.alltoall3"});
  const std::vector<Tri> recv = d_recv.download();
  for (int q = 0; q < P; ++q) {
    EXPECT_EQ(recv[q].b[0], q);
    EXPECT_EQ(recv[q].b[1], r);
    EXPECT_EQ(recv[q].b[2], q ^ r ^ 0x5a);
  }
}

// Random counts per peer (0 included; seed 0: all empty, seed 1: all to rank 0), gaps in both
// layouts that must stay untouched; counts exchanged on the device or the host.
TEST(NcclCommunicator, AlltoallvRandomCountsOnDevice) {
  REQUIRE_NCCL();
  const int P = g_nccl->size(), r = g_nccl->rank();
  for (uint64_t seed = 0; seed < 40; ++seed) {
    const int64_t W = seed % 3 == 0 ? 1 : 4, max_rows = seed % 5 == 0 ? 1 : 9;
    const CollectiveTag tag{"test.alltoallv", static_cast<int>(seed % 4),
                            static_cast<int64_t>(seed)};
    const auto ex = exchange_rows_device(*g_nccl, seed, max_rows, W, seed % 2 == 0, tag);
    EXPECT_EQ(testutil::check_exchange(ex, P, r, seed, max_rows, W), "") << "seed " << seed;
  }
}

TEST(NcclCommunicator, AlltoallvRejectsCountsBeyondInt) {
  REQUIRE_NCCL();
  const int P = g_nccl->size();
  std::vector<int64_t> counts(P, 0), displs(P, 0);
  counts[P - 1] = int64_t{INT_MAX} + 1;
  const std::vector<int64_t> zeros(P, 0);
  DeviceVec<int64_t> d_send(1), d_recv(1);
  const VLayout bad{counts.data(), displs.data(), int64_t{1} << 40};
  const VLayout ok{zeros.data(), displs.data(), 1};
  const int64_t before = g_nccl->seq();
  Status st = g_nccl->alltoallv(d_send.get(), bad, d_recv.get(), ok, 1, {"moe.dispatch", 3, 17});
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("moe.dispatch seq " + std::to_string(before) + " layer 3 step 17"),
            std::string::npos)
      << st.message();
  g_nccl->barrier({"test.after_bad_alltoallv"});  // the ranks are still in step
}

TEST(NcclCommunicator, AlltoallvBlocksRandomCountsOnDevice) {
  REQUIRE_NCCL();
  const int P = g_nccl->size(), r = g_nccl->rank();
  for (uint64_t seed = 0; seed < 16; ++seed) {
    const int64_t B = 1 + seed % 4, W = 1 + seed % 3;
    const auto ex = exchange_blocks_device(*g_nccl, seed, 9, W, B, {"test.blocks", 0, 0});
    EXPECT_EQ(testutil::check_blocks(ex, P, r, B, W), "") << "seed " << seed;
  }
}

// Every dtype and op, out of place (double) and in place (the rest), on device buffers.
TEST(NcclCommunicator, AllreduceSumMinMaxOnDevice) {
  REQUIRE_NCCL();
  const int P = g_nccl->size(), r = g_nccl->rank();
  const int n = 6;
  for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kMin, ReduceOp::kMax}) {
    std::vector<double> d(n);
    std::vector<float> f(n);
    std::vector<int64_t> i64(n);
    std::vector<int32_t> i32(n);
    for (int i = 0; i < n; ++i) {
      d[i] = (r + 1) * (i + 1) * 0.5;
      f[i] = static_cast<float>((r + 1) * (i - 2));
      i64[i] = (int64_t{r} - P / 2) * (int64_t{1} << 40) + i;  // needs all 64 bits
      i32[i] = (r + 1) * (i + 1);
    }
    DeviceVec<double> dd(d), dd_out(n);
    DeviceVec<float> df(f);
    DeviceVec<int64_t> di64(i64);
    DeviceVec<int32_t> di32(i32);
    g_nccl->allreduce(dd.get(), dd_out.get(), n, op, {"test.allreduce"});  // out of place
    g_nccl->allreduce(df.get(), n, op, {"test.allreduce"});                // in place
    g_nccl->allreduce(di64.get(), n, op, {"test.allreduce"});
    g_nccl->allreduce(di32.get(), n, op, {"test.allreduce"});
    const std::vector<double> d_out = dd_out.download();
    f = df.download();
    i64 = di64.download();
    i32 = di32.download();
    const int64_t tri = int64_t{P} * (P + 1) / 2;
    const int64_t base = int64_t{1} << 40;
    for (int i = 0; i < n; ++i) {
      if (op == ReduceOp::kSum) {
        EXPECT_DOUBLE_EQ(d_out[i], tri * (i + 1) * 0.5);
        EXPECT_FLOAT_EQ(f[i], static_cast<float>(tri * (i - 2)));
        int64_t s = 0;
        for (int q = 0; q < P; ++q) s += (int64_t{q} - P / 2) * base + i;
        EXPECT_EQ(i64[i], s);
        EXPECT_EQ(i32[i], tri * (i + 1));
      } else {
        const bool mn = op == ReduceOp::kMin;
        const int fr = (mn == (i - 2 < 0)) ? P : 1;
        EXPECT_DOUBLE_EQ(d_out[i], (mn ? 1 : P) * (i + 1) * 0.5);
        EXPECT_FLOAT_EQ(f[i], static_cast<float>(fr * (i - 2)));
        EXPECT_EQ(i64[i], ((mn ? 0 : P - 1) - int64_t{P} / 2) * base + i);
        EXPECT_EQ(i32[i], (mn ? 1 : P) * (i + 1));
      }
    }
  }
}

TEST(NcclCommunicator, AllgatherOnDevice) {
  REQUIRE_NCCL();
  const int P = g_nccl->size(), r = g_nccl->rank();
  const int64_t count = 3;
  std::vector<int64_t> mine(count);
  for (int64_t i = 0; i < count; ++i) mine[i] = encode(r, 0, i);
  DeviceVec<int64_t> d_mine(mine), d_all(std::vector<int64_t>(P * count, -1));
  g_nccl->allgather(d_mine.get(), d_all.get(), count, {"test.allgather"});
  const std::vector<int64_t> all = d_all.download();
  for (int q = 0; q < P; ++q) {
    for (int64_t i = 0; i < count; ++i) EXPECT_EQ(all[q * count + i], encode(q, 0, i));
  }
}

// Empty calls are collective no-ops: null buffers are fine and the sequence still advances.
TEST(NcclCommunicator, ZeroCountsAreNoOps) {
  REQUIRE_NCCL();
  const int P = g_nccl->size();
  const int64_t before = g_nccl->seq();
  g_nccl->alltoall<int64_t>(nullptr, nullptr, 0, {"test.empty"});
  g_nccl->allreduce<double>(nullptr, nullptr, 0, ReduceOp::kSum, {"test.empty"});
  g_nccl->allgather<int32_t>(nullptr, nullptr, 0, {"test.empty"});
  const std::vector<int64_t> zeros(P, 0);
  EXPECT_TRUE(g_nccl
                  ->alltoallv<float>(nullptr, {zeros.data(), zeros.data(), 0}, nullptr,
                                     {zeros.data(), zeros.data(), 0}, 4, {"test.empty"})
                  .ok());
  const std::vector<int64_t> zeros_b(P * 3, 0);
  EXPECT_TRUE(g_nccl
                  ->alltoallv_blocks<float>(nullptr, {3, zeros_b.data(), zeros_b.data(), 0},
                                            nullptr, {3, zeros_b.data(), zeros_b.data(), 0}, 4,
                                            {"test.empty"})
                  .ok());
  EXPECT_EQ(g_nccl->seq(), before + 5);
  g_nccl->barrier({"test.after_empty"});
}

// Host buffers (pageable: std::vector) are staged through the device: the helpers the MPI
// backend is tested with, unchanged.
TEST(NcclCommunicator, HostBuffersAreStaged) {
  REQUIRE_NCCL();
  const int P = g_nccl->size(), r = g_nccl->rank();
  for (uint64_t seed = 0; seed < 12; ++seed) {
    const int64_t W = 1 + seed % 3;
    const auto ex = testutil::exchange_rows(*g_nccl, seed, 7, W, {"test.host", 0, int64_t(seed)});
    EXPECT_EQ(testutil::check_exchange(ex, P, r, seed, 7, W), "") << "seed " << seed;
  }
  for (uint64_t seed = 0; seed < 6; ++seed) {
    const int64_t B = 1 + seed % 3;
    const auto ex = testutil::exchange_blocks(*g_nccl, seed, 5, 2, B, {"test.host", 0, 0});
    EXPECT_EQ(testutil::check_blocks(ex, P, r, B, 2), "") << "seed " << seed;
  }
  std::vector<int64_t> x(4), y(4, -1);
  for (int i = 0; i < 4; ++i) x[i] = (r + 1) * (i + 1);
  g_nccl->allreduce(x.data(), y.data(), 4, ReduceOp::kSum, {"test.host"});
  g_nccl->allreduce(x.data(), 4, ReduceOp::kMax, {"test.host"});  // in place
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(y[i], int64_t{P} * (P + 1) / 2 * (i + 1));
    EXPECT_EQ(x[i], int64_t{P} * (i + 1));
  }
  std::vector<int64_t> send(P * 2), recv(P * 2, -1);
  for (int p = 0; p < P; ++p) {
    send[2 * p] = encode(r, p, 0);
    send[2 * p + 1] = encode(r, p, 1);
  }
  g_nccl->alltoall(send.data(), recv.data(), 2, {"test.host"});
  for (int q = 0; q < P; ++q) {
    EXPECT_EQ(recv[2 * q], encode(q, r, 0));
    EXPECT_EQ(recv[2 * q + 1], encode(q, r, 1));
  }
}

// One side on the device, the other on the host, both ways.
TEST(NcclCommunicator, MixedHostAndDeviceBuffers) {
  REQUIRE_NCCL();
  const int P = g_nccl->size(), r = g_nccl->rank();
  std::vector<int64_t> send(P * 3);
  for (int p = 0; p < P; ++p) {
    for (int i = 0; i < 3; ++i) send[p * 3 + i] = encode(r, p, i);
  }
  DeviceVec<int64_t> d_send(send), d_recv(std::vector<int64_t>(P * 3, -1));
  std::vector<int64_t> h_recv(P * 3, -1);
  g_nccl->alltoall(d_send.get(), h_recv.data(), 3, {"test.mixed"});  // device -> host
  g_nccl->alltoall(send.data(), d_recv.get(), 3, {"test.mixed"});    // host -> device
  const std::vector<int64_t> recv = d_recv.download();
  for (int q = 0; q < P; ++q) {
    for (int i = 0; i < 3; ++i) {
      EXPECT_EQ(h_recv[q * 3 + i], encode(q, r, i));
      EXPECT_EQ(recv[q * 3 + i], encode(q, r, i));
    }
  }
  std::vector<double> x = {1.0 + r, 2.0};
  DeviceVec<double> d_y(2);
  g_nccl->allreduce(x.data(), d_y.get(), 2, ReduceOp::kSum, {"test.mixed"});
  const std::vector<double> y = d_y.download();
  EXPECT_DOUBLE_EQ(y[0], P + P * (P - 1) / 2.0);
  EXPECT_DOUBLE_EQ(y[1], 2.0 * P);
}

// Pinned host memory (cudaMallocHost) is host memory too: staged, with the gaps kept.
TEST(NcclCommunicator, PinnedHostBuffersAreStaged) {
  REQUIRE_NCCL();
  const int P = g_nccl->size(), r = g_nccl->rank();
  int64_t* send = nullptr;
  int64_t* recv = nullptr;
  cuda_ok(cudaMallocHost(reinterpret_cast<void**>(&send), sizeof(int64_t) * P), "cudaMallocHost");
  // recv: peer q's element at 2q + 1, the even slots are gaps.
  cuda_ok(cudaMallocHost(reinterpret_cast<void**>(&recv), sizeof(int64_t) * 2 * P),
          "cudaMallocHost");
  std::vector<int64_t> ones(P, 1), send_displs(P), recv_displs(P);
  for (int p = 0; p < P; ++p) {
    send[p] = encode(r, p, 7);
    send_displs[p] = p;
    recv_displs[p] = 2 * p + 1;
    recv[2 * p] = recv[2 * p + 1] = kSentinel;
  }
  const Status st = g_nccl->alltoallv(send, {ones.data(), send_displs.data(), P}, recv,
                                      {ones.data(), recv_displs.data(), 2 * P}, 1, {"test.pinned"});
  EXPECT_TRUE(st.ok()) << st.ToString();
  for (int q = 0; q < P; ++q) {
    EXPECT_EQ(recv[2 * q], kSentinel) << "gap before peer " << q;
    EXPECT_EQ(recv[2 * q + 1], encode(q, r, 7)) << "from " << q;
  }
  cudaFreeHost(send);
  cudaFreeHost(recv);
}

// The staging buffer grows for a large host exchange and smaller ones still come out right.
TEST(NcclCommunicator, StagingBufferGrows) {
  REQUIRE_NCCL();
  const int P = g_nccl->size(), r = g_nccl->rank();
  const int64_t W = 4096;  // 32 KiB rows
  for (uint64_t seed = 2; seed < 6; ++seed) {
    const auto big = testutil::exchange_rows(*g_nccl, seed, 9, W, {"test.grow", 0, int64_t(seed)});
    EXPECT_EQ(testutil::check_exchange(big, P, r, seed, 9, W), "") << "seed " << seed;
    int64_t rows_in = 0;
    for (int64_t n : big.recv_rows) rows_in += n;
    // The staged receive range alone holds every received row.
    EXPECT_GE(g_nccl->scratch_bytes(), rows_in * W * static_cast<int64_t>(sizeof(int64_t)));
    const auto small =
        testutil::exchange_rows(*g_nccl, seed, 3, 1, {"test.grow", 1, int64_t(seed)});
    EXPECT_EQ(testutil::check_exchange(small, P, r, seed, 3, 1), "") << "seed " << seed;
  }
}

// Work enqueued on stream() before a collective, and on the legacy default stream (the
// communicator's stream is a blocking one), is ordered before it: no synchronization needed.
TEST(NcclCommunicator, OrderedAfterStreamWork) {
  REQUIRE_NCCL();
  const int P = g_nccl->size(), r = g_nccl->rank();
  const int n = 1 << 20;  // 4 MiB: a copy that takes a moment
  std::vector<int32_t> v(n, r + 1);
  DeviceVec<int32_t> src(v), buf(n), out(n);
  cuda_ok(cudaMemsetAsync(buf.get(), 0, n * sizeof(int32_t), g_nccl->stream()), "memset");
  cuda_ok(cudaMemcpyAsync(buf.get(), src.get(), n * sizeof(int32_t), cudaMemcpyDeviceToDevice,
                          g_nccl->stream()),
          "cudaMemcpyAsync");
  g_nccl->allreduce(buf.get(), out.get(), n, ReduceOp::kSum, {"test.ordered"});
  std::vector<int32_t> got = out.download();
  const int32_t want = P * (P + 1) / 2;
  EXPECT_EQ(got.front(), want);
  EXPECT_EQ(got.back(), want);
  // The legacy default stream (stream 0): what a context without a stream uses.
  cuda_ok(cudaMemsetAsync(buf.get(), 0, n * sizeof(int32_t), nullptr), "memset");
  cuda_ok(
      cudaMemcpyAsync(buf.get(), src.get(), n * sizeof(int32_t), cudaMemcpyDeviceToDevice, nullptr),
      "cudaMemcpyAsync");
  g_nccl->allreduce(buf.get(), out.get(), n, ReduceOp::kMax, {"test.ordered"});
  got = out.download();
  EXPECT_EQ(got.front(), P);
  EXPECT_EQ(got.back(), P);
}

// With one rank the single-process backend is the reference: same bytes for the same calls,
// on device buffers and on staged host buffers.
TEST(NcclCommunicator, LocalBackendMatchesNcclWithOneRank) {
  REQUIRE_NCCL();
  if (g_nccl->size() != 1) GTEST_SKIP() << "compares against the 1-rank backend: needs P = 1";
  LocalCommunicator local;
  for (uint64_t seed = 0; seed < 12; ++seed) {
    const int64_t W = 1 + seed % 3;
    const CollectiveTag tag{"test.self", 0, int64_t(seed)};
    const auto a = exchange_rows_device(*g_nccl, seed, 7, W, seed % 2 == 1, tag);
    const auto h = testutil::exchange_rows(*g_nccl, seed, 7, W, tag);
    const auto b = testutil::exchange_rows(local, seed, 7, W, tag);
    EXPECT_EQ(a.recv, b.recv) << "seed " << seed;
    EXPECT_EQ(h.recv, b.recv) << "seed " << seed;
    EXPECT_EQ(a.recv_rows, b.recv_rows) << "seed " << seed;
  }
  for (uint64_t seed = 0; seed < 6; ++seed) {
    const int64_t B = 1 + seed % 3;
    const auto a = exchange_blocks_device(*g_nccl, seed, 5, 2, B, {"test.self", 0, 0});
    const auto b = testutil::exchange_blocks(local, seed, 5, 2, B, {"test.self", 0, 0});
    EXPECT_EQ(a.recv, b.recv) << "seed " << seed;
  }
  std::vector<double> x = {1.5, -2.0, 3.25}, yb(3);
  DeviceVec<double> dx(x), dy(3);
  g_nccl->allreduce(dx.get(), dy.get(), 3, ReduceOp::kSum, {"test.self"});
  local.allreduce(x.data(), yb.data(), 3, ReduceOp::kSum, {"test.self"});
  EXPECT_EQ(dy.download(), yb);
  std::vector<int32_t> g = {4, 5}, gb(2);
  DeviceVec<int32_t> dg(g), dga(2);
  g_nccl->allgather(dg.get(), dga.get(), 2, {"test.self"});
  local.allgather(g.data(), gb.data(), 2, {"test.self"});
  EXPECT_EQ(dga.download(), gb);
}

// A call leaves the caller's current device as it found it (needs a second device).
TEST(NcclCommunicator, RestoresTheCurrentDevice) {
  REQUIRE_NCCL();
  int n = 0;
  cuda_ok(cudaGetDeviceCount(&n), "cudaGetDeviceCount");
  int other_ok = n >= 2 ? 1 : 0;
  MPI_Allreduce(MPI_IN_PLACE, &other_ok, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
  if (!other_ok) GTEST_SKIP() << "needs a second CUDA device on every rank's host";
  const int mine = g_nccl->device(), other = (mine + 1) % n;
  std::vector<int64_t> x = {g_nccl->rank()}, y(1);
  cuda_ok(cudaSetDevice(other), "cudaSetDevice");
  g_nccl->allreduce(x.data(), y.data(), 1, ReduceOp::kSum, {"test.device"});
  int now = -1;
  cuda_ok(cudaGetDevice(&now), "cudaGetDevice");
  cuda_ok(cudaSetDevice(mine), "cudaSetDevice");
  EXPECT_EQ(now, other);
  EXPECT_EQ(y[0], int64_t{g_nccl->size()} * (g_nccl->size() - 1) / 2);
}

// ---- the failure modes (run_expect.sh) ----

void CUDART_CB sleep_on_stream(void* seconds) {
  std::this_thread::sleep_for(std::chrono::duration<double>(*static_cast<double*>(seconds)));
}

// Sets the device up as the tests do; exits 3 when it cannot (the probe passed, so a failure).
std::unique_ptr<NcclCommunicator> failure_mode_comm(MpiCommunicator* mpi) {
  const std::string why = select_device();
  auto c = why.empty() ? NcclCommunicator::create(mpi)
                       : StatusOr<std::unique_ptr<NcclCommunicator>>(Internal(why));
  if (!c.ok()) {
    std::fprintf(stderr, "nccl_communicator_test: setup failed: %s\n",
                 c.status().ToString().c_str());
    std::exit(3);
  }
  return std::move(c).value();
}

int run_failure_mode(int* argc, char*** argv, bool hang, int abort_code) {
  MpiRuntime mpi_runtime(argc, argv);
  MpiCommunicator mpi;
  auto nccl = failure_mode_comm(&mpi);
  DeviceVec<int64_t> x(std::vector<int64_t>(4, 1)), y(4);
  nccl->allreduce(x.get(), y.get(), 4, ReduceOp::kSum, {"test.warmup"});
  if (hang) {
    // Rank 0's stream is held by a host function for far longer than the deadline.
    static double hold_s = 8;
    if (nccl->rank() == 0) {
      cuda_ok(cudaLaunchHostFunc(nccl->stream(), &sleep_on_stream, &hold_s), "cudaLaunchHostFunc");
    }
    nccl->allreduce(x.get(), y.get(), 4, ReduceOp::kSum, {"test.hang", 3, 7});
    std::fprintf(stderr, "nccl_communicator_test: the deadline did not fire\n");
    return 1;
  }
  nccl->abort(abort_code, "injected abort through the NCCL communicator");
}

}  // namespace
}  // namespace sy

int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--probe-device") == 0) {
      const std::string why = sy::no_device_reason();
      if (why.empty()) return 0;
      std::printf("%s\n", why.c_str());
      return 77;
    }
    if (std::strcmp(argv[i], "--hang-timeout") == 0) {
      return sy::run_failure_mode(&argc, &argv, true, 0);
    }
    if (std::strcmp(argv[i], "--abort") == 0 && i + 1 < argc) {
      return sy::run_failure_mode(&argc, &argv, false, std::atoi(argv[i + 1]));
    }
  }
  ::testing::AddGlobalTestEnvironment(new sy::NcclEnvironment);
  return sy::testutil::run_all_tests_mpi(&argc, &argv, &sy::g_mpi);
}
