// The devsim backend (runtime/backend/devsim/) fails the way device memory does: host code that
// reads its arrays, ops given host pointers, and raw dereferences of its pointers all die. That
// is what makes a layer test run on "devsim" a proof that the layer is device-clean. (Its
// results are the CPU backend's: backend_conformance_test runs every case on it.)
#include <gtest/gtest.h>

#include <csignal>
#include <vector>

#include "runtime/backend/backend.h"
#include "runtime/backend/ops.h"
#include "runtime/core/tensor.h"
#include "runtime/kernels/capacity.h"

namespace sy {
namespace {

class Devsim : public ::testing::Test {
 protected:
  void SetUp() override {
    GTEST_FLAG_SET(death_test_style, "threadsafe");  // OpenBLAS may have started threads
    ASSERT_NE(be, nullptr) << "devsim is not registered";
  }
  Backend* be = find_backend("devsim");
  const ExecContext& c = *make_context("devsim", /*deterministic=*/false);
};

TEST_F(Devsim, IsADeviceTheHostCannotRead) {
  EXPECT_STREQ(be->name(), "devsim");
  EXPECT_EQ(be->device().str(), "devsim");
  EXPECT_FALSE(be->host_accessible());
  EXPECT_EQ(be->alloc(0), nullptr);

  Tensor t = Tensor::from_host({2, 3}, {1, 2, 3, 4, 5, 6}, be);
  EXPECT_FALSE(t.data.host_accessible());
  EXPECT_EQ(t.data.to_host(), std::vector<float>({1, 2, 3, 4, 5, 6}));  // copies are fine
  EXPECT_DEATH(
      {
        volatile float x = t.data[0];
        (void)x;
      },
      "cannot read");
  EXPECT_DEATH(
      {
        volatile float x = t.at(1, 2);
        (void)x;
      },
      "cannot read");
}

TEST_F(Devsim, OpsRejectHostPointers) {
  Tensor x({4, 3}, 1.0f, be), out({2, 3}, be);
  DeviceArray<int32_t> order(be, std::vector<int32_t>{0, 2});
  ops::gather_rows(c, x.ptr(), order.data(), 2, 1, 3, out.ptr());  // all devsim: fine
  std::vector<float> host_x(12, 1.0f);
  EXPECT_DEATH(ops::gather_rows(c, host_x.data(), order.data(), 2, 1, 3, out.ptr()),
               "devsim gather_rows: x_TD is a host pointer, not devsim memory");
  EXPECT_DEATH(ops::silu_inplace(c, host_x.data(), 12), "devsim silu_inplace: x is a host pointer");

  // A capacity plan whose index arrays are host memory cannot receive devsim indices.
  DeviceArray<int32_t> ids(be, std::vector<int32_t>{0, 1});
  CapacityPlan host_plan;
  EXPECT_DEATH(
      ops::capacity_plan(c, ids.data(), nullptr, 2, 2, 1, 8, CapacityConfig(), nullptr, &host_plan),
      "devsim capacity_plan: the plan's index arrays are in 'host' memory");
}

// The emulation faults like device memory: a devsim pointer is non-canonical on x86-64, so a
// host load or store through it is a SIGSEGV, not a read of the bytes behind it.
TEST_F(Devsim, RawDereferenceFaults) {
#if !defined(__x86_64__)
  GTEST_SKIP() << "the tag faults on x86-64 only (AArch64 loads ignore the top byte)";
#endif
  float* p = static_cast<float*>(be->alloc(16 * sizeof(float)));
  ASSERT_NE(p, nullptr);
  EXPECT_EXIT(
      {
        volatile float x = p[3];
        (void)x;
      },
      ::testing::KilledBySignal(SIGSEGV), "");
  EXPECT_DEATH(*static_cast<volatile float*>(p) = 1.0f, ".*");
  be->free(p);
}

}  // namespace
}  // namespace sy
