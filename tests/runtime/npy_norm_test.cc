#include <gtest/gtest.h>

#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "runtime/core/rng.h"
#include "runtime/io/npy.h"
#include "runtime/kernels/norm.h"

namespace sy {
namespace {

TEST(Npy, RoundTripKeepsShapeAndBits) {
  const std::string path = ::testing::TempDir() + "/sy_npy_test.npy";
  std::vector<float> data(3 * 5);
  fill_normal(data.data(), 15, 1.0f, 1, 2);
  data[4] = -0.0f;
  ASSERT_TRUE(npy_write_f32(path, data.data(), {3, 5}).ok());
  std::vector<float> back;
  std::vector<int64_t> shape;
  ASSERT_TRUE(npy_read_f32(path, &back, &shape).ok());
  EXPECT_EQ(shape, (std::vector<int64_t>{3, 5}));
  ASSERT_EQ(back.size(), data.size());
  EXPECT_EQ(0, std::memcmp(back.data(), data.data(), data.size() * sizeof(float)));
  // Header is padded so the data starts at a multiple of 64 bytes (numpy's rule).
  FILE* f = std::fopen(path.c_str(), "rb");
  ASSERT_NE(f, nullptr);
  std::fseek(f, 0, SEEK_END);
  EXPECT_EQ((std::ftell(f) - 15 * 4) % 64, 0);
  std::fclose(f);
}

TEST(Npy, RejectsTruncatedAndForeignFiles) {
  const std::string path = ::testing::TempDir() + "/sy_npy_bad.npy";
  std::vector<float> data(8, 1.0f);
  ASSERT_TRUE(npy_write_f32(path, data.data(), {8}).ok());
  ASSERT_EQ(0, truncate(path.c_str(), 100));
  std::vector<float> back;
  std::vector<int64_t> shape;
  Status s = npy_read_f32(path, &back, &shape);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("truncated"), std::string::npos) << s.ToString();
  FILE* f = std::fopen(path.c_str(), "wb");
  std::fputs("not numpy at all", f);
  std::fclose(f);
  EXPECT_FALSE(npy_read_f32(path, &back, &shape).ok());
  EXPECT_FALSE(npy_read_f32(path + ".missing", &back, &shape).ok());
}

TEST(RmsNorm, ForwardMatchesDefinitionAndBackwardMatchesFiniteDifferences) {
  const int64_t T = 3, D = 7;
  std::vector<float> x(T * D), w(D), dy(T * D), y(T * D), rstd(T);
  fill_normal(x.data(), T * D, 1.0f, 3, 0);
  fill_normal(w.data(), D, 1.0f, 3, 1);
  fill_normal(dy.data(), T * D, 1.0f, 3, 2);
  const float eps = 1e-6f;
  rmsnorm_forward(x.data(), w.data(), y.data(), rstd.data(), T, D, eps);
  for (int64_t t = 0; t < T; ++t) {
    double ss = 0;
    for (int64_t i = 0; i < D; ++i) ss += double(x[t * D + i]) * x[t * D + i];
    const double r = 1.0 / std::sqrt(ss / D + eps);
    for (int64_t i = 0; i < D; ++i) EXPECT_NEAR(y[t * D + i], x[t * D + i] * r * w[i], 1e-5);
  }
  std::vector<float> dx(T * D, 0.0f), dw(D, 0.0f);
  rmsnorm_backward(x.data(), w.data(), rstd.data(), dy.data(), dx.data(), dw.data(), T, D);
  auto loss = [&](const std::vector<float>& xx, const std::vector<float>& ww) {
    std::vector<float> yy(T * D);
    rmsnorm_forward(xx.data(), ww.data(), yy.data(), nullptr, T, D, eps);
    double l = 0;
    for (int64_t i = 0; i < T * D; ++i) l += double(yy[i]) * dy[i];
    return l;
  };
  const float h = 1e-3f;
  for (int64_t i = 0; i < T * D; ++i) {
    auto xp = x, xm = x;
    xp[i] += h;
    xm[i] -= h;
    EXPECT_NEAR(dx[i], (loss(xp, w) - loss(xm, w)) / (2 * h), 2e-3) << "x " << i;
  }
  for (int64_t i = 0; i < D; ++i) {
    auto wp = w, wm = w;
    wp[i] += h;
    wm[i] -= h;
    EXPECT_NEAR(dw[i], (loss(x, wp) - loss(x, wm)) / (2 * h), 2e-3) << "w " << i;
  }
}

}  // namespace
}  // namespace sy
