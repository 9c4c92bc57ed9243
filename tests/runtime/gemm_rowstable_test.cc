#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <cstring>
#include <vector>

#include "runtime/core/rng.h"
#include "runtime/kernels/cpu_kernels.h"
#include "runtime/kernels/gemm_rowstable.h"

namespace sy {
namespace {

std::vector<float> randn(int64_t n, uint64_t seed) {
  std::vector<float> v(static_cast<size_t>(n));
  fill_normal(v.data(), n, 1.0f, seed, 0);
  return v;
}

TEST(GemmRowStable, MatchesReferenceNTAndNN) {
  for (auto [M, N, K] : {std::array<int64_t, 3>{5, 7, 3}, {33, 17, 70}, {1, 64, 257}}) {
    auto x = randn(M * K, 1), W = randn(N * K, 2), y0 = randn(M * N, 3);
    for (float beta : {0.0f, 1.0f, 0.5f}) {
      auto y = y0, z = y0;
      gemm_nt_rowstable(x.data(), W.data(), y.data(), M, N, K, 0.75f, beta);
      gemm_nn_rowstable(x.data(), W.data(), z.data(), M, N, K, 0.75f, beta);  // W as [K, N]
      for (int64_t m = 0; m < M; ++m)
        for (int64_t n = 0; n < N; ++n) {
          double nt = 0, nn = 0;
          for (int64_t k = 0; k < K; ++k) {
            nt += double(x[m * K + k]) * W[n * K + k];
            nn += double(x[m * K + k]) * W[k * N + n];
          }
          const double tol = 1e-5 * (1 + std::sqrt(double(K)));
          EXPECT_NEAR(y[m * N + n], 0.75 * nt + beta * y0[m * N + n], tol);
          EXPECT_NEAR(z[m * N + n], 0.75 * nn + beta * y0[m * N + n], tol);
        }
    }
  }
}

// The promise: a row's bits do not depend on the batch it is in or its position there.
TEST(GemmRowStable, RowResultsDoNotDependOnTheBatch) {
  const int64_t M = 100, N = 37, K = 45;
  auto x = randn(M * K, 4), W = randn(N * K, 5);
  std::vector<float> full(M * N), part(M * N);
  linear_forward(x.data(), W.data(), full.data(), M, K, N, 0.0f, /*deterministic=*/true);
  for (int64_t off : {0, 1, 13, 50}) {
    for (int64_t rows : {1, 3, 16, 49}) {
      if (off + rows > M) continue;
      linear_forward(x.data() + off * K, W.data(), part.data(), rows, K, N, 0.0f, true);
      EXPECT_EQ(0, std::memcmp(part.data(), full.data() + off * N, rows * N * sizeof(float)))
          << "rows " << rows << " at " << off;
    }
  }
}

}  // namespace
}  // namespace sy
