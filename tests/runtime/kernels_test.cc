// CPU kernels against simple references: softmax / top-k under hostile logits (NaN, Inf,
// huge values), activations and their gradients against finite differences, and the GEMM family
// against naive loops, including empty dimensions.
#include "runtime/kernels/cpu_kernels.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <vector>

#include "runtime/core/rng.h"
#include "runtime/kernels/loss.h"
#include "runtime/kernels/math.h"
#include "runtime/kernels/rows.h"

namespace sy {
namespace {

const float kInf = INFINITY;
const float kNaN = NAN;

std::vector<float> randn(int64_t n, float scale, uint64_t seed) {
  std::vector<float> v(static_cast<size_t>(n));
  Rng rng(seed);
  for (float& x : v) x = static_cast<float>(rng.normal()) * scale;
  return v;
}

// The reference top-k: sort indices by value descending, ties by lower index, NaN last.
std::vector<int32_t> reference_topk(const float* v, int n, int k) {
  std::vector<int32_t> idx(static_cast<size_t>(n));
  std::iota(idx.begin(), idx.end(), 0);
  auto key = [&](int32_t i) { return std::isnan(v[i]) ? -kInf : v[i]; };
  std::stable_sort(idx.begin(), idx.end(), [&](int32_t a, int32_t b) { return key(a) > key(b); });
  idx.resize(static_cast<size_t>(k));
  return idx;
}

void expect_valid_distribution(const float* p, int64_t n, const char* what) {
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    ASSERT_TRUE(std::isfinite(p[i])) << what << " entry " << i;
    ASSERT_GE(p[i], 0.0f) << what << " entry " << i;
    sum += p[i];
  }
  EXPECT_NEAR(sum, 1.0, 1e-6) << what;
}

TEST(Softmax, HostileRowsGiveFiniteDistributions) {
  const int64_t E = 6;
  const std::vector<float> s = {
      1e4f,  -1e4f, 0.0f,  1e4f,  -1e4f, 5.0f,   // huge, with a tie at the max
      -1e4f, -1e4f, -1e4f, -1e4f, -1e4f, -1e4f,  // all hugely negative, all tied
      -kInf, 3.0f,  -kInf, 3.0f,  -1.0f, -kInf,  // -inf mixed with finite
      -kInf, -kInf, -kInf, -kInf, -kInf, -kInf,  // fully masked
      0.0f,  0.0f,  0.0f,  0.0f,  0.0f,  0.0f,   // zero router
  };
  const int64_t T = static_cast<int64_t>(s.size()) / E;
  std::vector<float> p(s.size());
  softmax_rows(s.data(), p.data(), T, E);
  for (int64_t t = 0; t < T; ++t) expect_valid_distribution(&p[t * E], E, "row");
  EXPECT_FLOAT_EQ(p[0], 0.5f);
  EXPECT_FLOAT_EQ(p[3], 0.5f);
  EXPECT_EQ(p[1], 0.0f);
  for (int e = 0; e < E; ++e) EXPECT_FLOAT_EQ(p[E + e], 1.0f / E);
  EXPECT_EQ(p[2 * E + 0], 0.0f);
  EXPECT_EQ(p[2 * E + 2], 0.0f);
  EXPECT_FLOAT_EQ(p[2 * E + 1], p[2 * E + 3]);
  for (int e = 0; e < E; ++e) EXPECT_FLOAT_EQ(p[3 * E + e], 1.0f / E);
  // Top-2 per row: ties to the lower id, and masked entries never beat finite ones.
  std::vector<int32_t> ids(T * 2);
  std::vector<float> vals(T * 2);
  topk_rows(p.data(), T, E, 2, ids.data(), vals.data());
  EXPECT_EQ(ids[0], 0);
  EXPECT_EQ(ids[1], 3);
  EXPECT_EQ(ids[2], 0);
  EXPECT_EQ(ids[3], 1);
  EXPECT_EQ(ids[4], 1);
  EXPECT_EQ(ids[5], 3);
  EXPECT_EQ(ids[6], 0);
  EXPECT_EQ(ids[7], 1);
  EXPECT_EQ(ids[8], 0);
  EXPECT_EQ(ids[9], 1);
}

TEST(Softmax, SumsToOneForManyShapes) {
  for (int64_t E : {1, 2, 3, 8, 16, 60, 64, 128, 256}) {
    for (float scale : {0.0f, 1.0f, 30.0f, 1e4f}) {
      const int64_t T = 16;
      std::vector<float> s = randn(T * E, scale, static_cast<uint64_t>(E * 1000 + scale));
      std::vector<float> p(s.size());
      softmax_rows(s.data(), p.data(), T, E);
      for (int64_t t = 0; t < T; ++t) expect_valid_distribution(&p[t * E], E, "random row");
    }
  }
}

TEST(Softmax, DeterministicAcrossCalls) {
  const int64_t T = 32, E = 60;
  std::vector<float> s = randn(T * E, 5.0f, 4);
  std::vector<float> p1(s.size()), p2(s.size());
  softmax_rows(s.data(), p1.data(), T, E);
  softmax_rows(s.data(), p2.data(), T, E);
  EXPECT_EQ(p1, p2);
}

TEST(Softmax, LogSumExpAndBackward) {
  const int64_t T = 3, E = 5;
  std::vector<float> s = {1e4f,  1e4f,  0,    -1,    2, -kInf, -kInf, -kInf,
                          -kInf, -kInf, 0.5f, -0.5f, 1, 2,     -kInf};
  std::vector<float> lse(T);
  logsumexp_rows(s.data(), lse.data(), T, E);
  EXPECT_FLOAT_EQ(lse[0], 1e4f + std::log(2.0f));
  EXPECT_EQ(lse[1], -kInf);
  EXPECT_NEAR(lse[2], std::log(std::exp(0.5) + std::exp(-0.5) + std::exp(1) + std::exp(2)), 1e-6);

  // softmax_backward_rows against finite differences of L = sum_i w_i softmax(s)_i.
  const int64_t n = 6;
  std::vector<double> sd = {0.3, -1.2, 2.0, 0.0, 0.7, -0.4};
  const std::vector<double> w = {1.0, -2.0, 0.5, 3.0, -1.0, 0.25};
  auto loss = [&](const std::vector<double>& x) {
    double m = *std::max_element(x.begin(), x.end()), z = 0, L = 0;
    for (double v : x) z += std::exp(v - m);
    for (int i = 0; i < n; ++i) L += w[i] * std::exp(x[i] - m) / z;
    return L;
  };
  std::vector<float> sf(sd.begin(), sd.end()), p(n), dp(w.begin(), w.end()), ds(n, 1.0f);
  softmax_rows(sf.data(), p.data(), 1, n);
  softmax_backward_rows(p.data(), dp.data(), ds.data(), 1, n, /*accumulate=*/true);
  for (int i = 0; i < n; ++i) {
    std::vector<double> up = sd, dn = sd;
    up[i] += 1e-5;
    dn[i] -= 1e-5;
    EXPECT_NEAR(ds[i] - 1.0f, (loss(up) - loss(dn)) / 2e-5, 1e-5) << i;
  }
}

TEST(TopK, MatchesStableSortForEveryK) {
  for (int64_t E : {1, 2, 5, 16, 60}) {
    const int64_t T = 20;
    std::vector<float> v = randn(T * E, 1.0f, static_cast<uint64_t>(E));
    // Plant ties: quantize some rows coarsely.
    for (int64_t t = 0; t < T; t += 3)
      for (int64_t e = 0; e < E; ++e) v[t * E + e] = std::round(v[t * E + e]);
    for (int64_t k = 1; k <= E; ++k) {
      std::vector<int32_t> ids(T * k);
      std::vector<float> vals(T * k);
      topk_rows(v.data(), T, E, k, ids.data(), vals.data());
      for (int64_t t = 0; t < T; ++t) {
        const std::vector<int32_t> ref =
            reference_topk(&v[t * E], static_cast<int>(E), static_cast<int>(k));
        for (int64_t j = 0; j < k; ++j) {
          ASSERT_EQ(ids[t * k + j], ref[j]) << "E=" << E << " k=" << k << " t=" << t;
          ASSERT_EQ(vals[t * k + j], v[t * E + ref[j]]);
        }
      }
    }
  }
}

TEST(TopK, AllTiedPicksLowestIds) {
  const int64_t E = 8;
  std::vector<float> v(E, 0.125f);
  for (int64_t k = 1; k <= E; ++k) {
    std::vector<int32_t> ids(k);
    std::vector<float> vals(k);
    topk_rows(v.data(), 1, E, k, ids.data(), vals.data());
    for (int64_t j = 0; j < k; ++j) EXPECT_EQ(ids[j], j);
  }
}

TEST(TopK, NaNNeverGivesOutOfRangeIds) {
  const int64_t E = 7;
  const std::vector<std::vector<float>> rows = {
      {kNaN, kNaN, kNaN, kNaN, kNaN, kNaN, kNaN},
      {kNaN, 0.1f, kNaN, 0.5f, kNaN, 0.2f, kNaN},
      {0.3f, kNaN, kNaN, kNaN, kNaN, kNaN, 0.4f},
      {kNaN, -kInf, kInf, kNaN, 0.0f, -kInf, kNaN},
  };
  for (const std::vector<float>& row : rows) {
    for (int64_t k = 1; k <= E; ++k) {
      std::vector<int32_t> ids(k, -1);
      std::vector<float> vals(k);
      topk_rows(row.data(), 1, E, k, ids.data(), vals.data());
      std::vector<bool> seen(E, false);
      for (int64_t j = 0; j < k; ++j) {
        ASSERT_GE(ids[j], 0);
        ASSERT_LT(ids[j], E);
        EXPECT_FALSE(seen[ids[j]]) << "duplicate id " << ids[j];
        seen[ids[j]] = true;
      }
      // Finite values always come before NaN, in descending order.
      const std::vector<int32_t> ref = reference_topk(row.data(), E, static_cast<int>(k));
      for (int64_t j = 0; j < k; ++j) {
        if (std::isnan(row[ref[j]])) continue;
        EXPECT_EQ(ids[j], ref[j]) << "k=" << k << " j=" << j;
      }
    }
  }
  // Through softmax: a NaN logit poisons the row's probabilities, ids stay in range.
  std::vector<float> s = {1.0f, kNaN, 2.0f, 0.5f, -1.0f, 0.0f, 3.0f}, p(E);
  softmax_rows(s.data(), p.data(), 1, E);
  EXPECT_FALSE(all_finite(p.data(), E));
  std::vector<int32_t> ids(3);
  std::vector<float> vals(3);
  topk_rows(p.data(), 1, E, 3, ids.data(), vals.data());
  for (int32_t id : ids) EXPECT_TRUE(id >= 0 && id < E);
}

// Double-precision references for the activations.
double gelu_ref(double x) {
  return 0.5 * x * (1.0 + std::erf(x / std::sqrt(2.0)));
}
double silu_ref(double x) {
  return x / (1.0 + std::exp(-x));
}

TEST(Activations, ValuesAndGradientsMatchReferences) {
  std::vector<float> xs;
  for (float x = -12.0f; x <= 12.0f; x += 0.173f) xs.push_back(x);
  for (float x : {0.0f, -0.0f, 1e-6f, -1e-6f, 30.0f, -30.0f, 88.0f, -88.0f}) xs.push_back(x);
  const double h = 1e-4;
  for (float x : xs) {
    const double g = gelu_ref(x), s = silu_ref(x);
    EXPECT_NEAR(gelu(x), g, 1e-6 + 2e-6 * std::fabs(g)) << x;
    EXPECT_NEAR(silu(x), s, 1e-6 + 2e-6 * std::fabs(s)) << x;
    const double dg = (gelu_ref(x + h) - gelu_ref(x - h)) / (2 * h);
    const double dsl = (silu_ref(x + h) - silu_ref(x - h)) / (2 * h);
    EXPECT_NEAR(gelu_grad(x), dg, 1e-5 + 1e-5 * std::fabs(dg)) << x;
    EXPECT_NEAR(silu_grad(x), dsl, 1e-5 + 1e-5 * std::fabs(dsl)) << x;
    EXPECT_TRUE(std::isfinite(gelu_grad(x)) && std::isfinite(silu_grad(x))) << x;
  }
  // The array kernels apply the scalar functions.
  const int64_t n = static_cast<int64_t>(xs.size());
  std::vector<float> a = xs, b = xs, dy = randn(n, 1.0f, 3), dxg(n), dxs(n);
  gelu_inplace(a.data(), n);
  silu_inplace(b.data(), n);
  gelu_backward(xs.data(), dy.data(), dxg.data(), n);
  silu_backward(xs.data(), dy.data(), dxs.data(), n);
  for (int64_t i = 0; i < n; ++i) {
    EXPECT_EQ(a[i], gelu(xs[i]));
    EXPECT_EQ(b[i], silu(xs[i]));
    EXPECT_EQ(dxg[i], dy[i] * gelu_grad(xs[i]));
    EXPECT_EQ(dxs[i], dy[i] * silu_grad(xs[i]));
  }
}

// exp_poly (SiLU's exponential, math.h) against glibc's expf: within 2 ulp on [-87, 88], and its
// edges: NaN stays NaN, +-inf and values past the range clamp to e^88 / e^-87.
TEST(Activations, ExpPolyWithinTwoUlpOfExpf) {
  double worst = 0;
  for (float x = -87.0f; x <= 88.0f; x += 0.00731f) {
    const float e = expf(x), p = exp_poly(x);
    const float ulp = std::nextafter(e, kInf) - e;
    worst = std::max(worst, std::fabs(static_cast<double>(p) - e) / ulp);
  }
  EXPECT_LE(worst, 2.0);
  EXPECT_EQ(exp_poly(0.0f), 1.0f);
  EXPECT_TRUE(std::isnan(exp_poly(kNaN)));
  EXPECT_EQ(exp_poly(kInf), exp_poly(88.0f));
  EXPECT_EQ(exp_poly(1000.0f), exp_poly(88.0f));
  EXPECT_EQ(exp_poly(-kInf), exp_poly(-87.0f));
  EXPECT_TRUE(std::isfinite(exp_poly(88.0f)) && exp_poly(-87.0f) > 0.0f);
  EXPECT_TRUE(std::isnan(silu(kNaN)) && std::isnan(silu_grad(kNaN)));
  EXPECT_EQ(sigmoid_poly(200.0f), 1.0f);
}

// The SwiGLU loops (vector_rows.cc: vectorized, cloned per instruction set) give the scalar
// per-element functions' bits, at every length (vector bodies and remainders) and on special
// values, and the backward also in place (dg == da).
TEST(Activations, SwigluRowsAreTheScalarCodeBitwise) {
  for (int64_t n : {1, 3, 7, 8, 15, 16, 17, 31, 33, 64, 67, 1000}) {
    std::vector<float> g = randn(n, 4.0f, 40 + n), u = randn(n, 1.0f, 41 + n),
                       da = randn(n, 1.0f, 42 + n);
    const float specials[] = {kNaN, kInf, -kInf, 88.5f, -88.5f, -0.0f, 1e-30f, -40.0f};
    for (int64_t i = 0; i < n && i < 8; ++i) g[(i * 5) % n] = specials[i];
    std::vector<float> a(n), dg(n), du(n), inplace = da, du2(n);
    swiglu_rows(g.data(), u.data(), a.data(), n);
    swiglu_backward_rows(g.data(), u.data(), da.data(), dg.data(), du.data(), n);
    swiglu_backward_rows(g.data(), u.data(), inplace.data(), inplace.data(), du2.data(), n);
    for (int64_t i = 0; i < n; ++i) {
      float eg, eu;
      swiglu_backward_elem(g[i], u[i], da[i], &eg, &eu);
      const float ea = silu(g[i]) * u[i];
      auto same = [](float x, float y) { return std::memcmp(&x, &y, sizeof x) == 0; };
      EXPECT_TRUE(same(a[i], ea) || (std::isnan(a[i]) && std::isnan(ea))) << n << " " << i;
      EXPECT_TRUE(same(dg[i], eg) || (std::isnan(dg[i]) && std::isnan(eg))) << n << " " << i;
      EXPECT_TRUE(same(du[i], eu) || (std::isnan(du[i]) && std::isnan(eu))) << n << " " << i;
      EXPECT_TRUE(same(inplace[i], dg[i]) || (std::isnan(inplace[i]) && std::isnan(dg[i])));
      EXPECT_TRUE(same(du2[i], du[i]) || (std::isnan(du2[i]) && std::isnan(du[i])));
    }
  }
}

// exp_neg_poly (the cross-entropy's exponential in double, math.h) against glibc's exp on
// [-708, 0]: within 4 ulp; its edges clamp (x > 0 to 1, below -708 to e^-708), NaN stays NaN.
TEST(Activations, ExpNegPolyWithinFourUlpOfExp) {
  double worst = 0;
  for (double x = -708.0; x <= 0.0; x += 0.00131) {
    const double e = std::exp(x), p = exp_neg_poly(x);
    worst = std::max(worst, std::fabs(p - e) / (std::nextafter(e, kInf) - e));
  }
  for (double x = -1.0; x <= 0.0; x += 1.0 / 4096.0) {  // the range most logits fall in
    const double e = std::exp(x), p = exp_neg_poly(x);
    worst = std::max(worst, std::fabs(p - e) / (std::nextafter(e, kInf) - e));
  }
  EXPECT_LE(worst, 4.0);
  EXPECT_EQ(exp_neg_poly(0.0), 1.0);
  EXPECT_EQ(exp_neg_poly(3.0), 1.0);
  EXPECT_EQ(exp_neg_poly(-kInf), exp_neg_poly(-708.0));
  EXPECT_GT(exp_neg_poly(-708.0), 0.0);
  EXPECT_LT(exp_neg_poly(-708.0), 1e-300);
  EXPECT_TRUE(std::isnan(exp_neg_poly(std::nan(""))));
}

// The cross-entropy's row loops (vector_rows.cc, vectorized and cloned) give the bits of the
// same arithmetic one element at a time in their lane order (element j in lane j % kLossLanes,
// lanes added in order), at every length.
TEST(CrossEntropyRows, AreTheScalarLaneOrderBitwise) {
  auto same = [](double x, double y) { return std::memcmp(&x, &y, sizeof x) == 0; };
  for (int64_t n : {1, 5, 15, 16, 17, 33, 100, 50257}) {
    std::vector<float> x = randn(n, 3.0f, 60 + n);
    if (n > 7) x[7] = -kInf;
    float m = -kInf;
    for (float v : x) m = v > m ? v : m;
    EXPECT_EQ(loss_row_max(x.data(), n), m) << n;
    double lane_e[kLossLanes] = {}, lane_p[kLossLanes] = {};
    std::vector<float> p_ref(n);
    for (int64_t j = 0; j < n; ++j) {
      lane_e[j % kLossLanes] += exp_neg_poly(static_cast<double>(x[j]) - m);
      p_ref[j] = exp_poly(x[j] - m);
      lane_p[j % kLossLanes] += static_cast<double>(p_ref[j]);
    }
    double z_e = 0.0, z_p = 0.0;
    for (int k = 0; k < kLossLanes; ++k) z_e += lane_e[k], z_p += lane_p[k];
    EXPECT_TRUE(same(loss_row_sum_exp(x.data(), n, m), z_e)) << n;
    std::vector<float> p(n);
    EXPECT_TRUE(same(loss_row_exp(x.data(), n, m, p.data()), z_p)) << n;
    EXPECT_EQ(0, std::memcmp(p.data(), p_ref.data(), sizeof(float) * n)) << n;
    std::vector<float> q = p;
    loss_row_scale(q.data(), n, 0.37f, 1.0f / 3.0f);
    for (int64_t j = 0; j < n; ++j) EXPECT_EQ(q[j], p[j] * 0.37f * (1.0f / 3.0f)) << n << " " << j;
  }
  EXPECT_EQ(loss_row_max(nullptr, 0), -kInf);
}

// The AdamW loop (vector_rows.cc, vectorized and cloned) gives adamw_element's bits, with and
// without weight decay, at every length.
TEST(AdamWUpdate, IsTheScalarElementBitwise) {
  for (double wd : {0.0, 0.1}) {
    AdamWStep st;
    st.beta1 = 0.9f;
    st.beta2 = 0.95f;
    st.clip = 0.731;
    st.bc1 = 0.271;
    st.bc2 = 0.0975;
    st.eps = 1e-8;
    st.lr = 3e-4;
    st.weight_decay = wd;
    for (int64_t n : {1, 5, 8, 13, 64, 1001}) {
      std::vector<float> w = randn(n, 1.0f, 60 + n), g = randn(n, 0.1f, 61 + n),
                         m = randn(n, 0.01f, 62 + n), v = randn(n, 0.01f, 63 + n);
      for (float& x : v) x = x * x;
      std::vector<float> w2 = w, m2 = m, v2 = v;
      adamw_update(w.data(), g.data(), m.data(), v.data(), n, st);
      const AdamWScalars k = adamw_scalars(st);
      int bad = 0;
      for (int64_t i = 0; i < n; ++i) {
        adamw_element(k, g[i], &w2[i], &m2[i], &v2[i]);
        bad += std::memcmp(&w[i], &w2[i], 4) != 0 || std::memcmp(&m[i], &m2[i], 4) != 0 ||
               std::memcmp(&v[i], &v2[i], 4) != 0;
      }
      EXPECT_EQ(bad, 0) << "n " << n << " wd " << wd;
    }
  }
}

TEST(AllFinite, DetectsNaNAndInf) {
  std::vector<float> v = {0.0f, 1e30f, -1e30f};
  EXPECT_TRUE(all_finite(v.data(), 3));
  EXPECT_TRUE(all_finite(nullptr, 0));
  v[1] = kNaN;
  EXPECT_FALSE(all_finite(v.data(), 3));
  v[1] = -kInf;
  EXPECT_FALSE(all_finite(v.data(), 3));
}

// C = alpha op(A) op(B) + beta C with explicit leading dimensions, in double.
void naive_gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
                int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j) {
      double acc = 0.0;
      for (int64_t k = 0; k < K; ++k) {
        const double a = ta ? A[k * lda + i] : A[i * lda + k];
        const double b = tb ? B[j * ldb + k] : B[k * ldb + j];
        acc += a * b;
      }
      const double c = beta == 0.0f ? 0.0 : beta * static_cast<double>(C[i * ldc + j]);
      C[i * ldc + j] = static_cast<float>(alpha * acc + c);
    }
}

TEST(Gemm, MatchesNaiveForAllTransposesAndPadding) {
  for (int64_t K : {0, 1, 7, 64}) {
    for (bool ta : {false, true}) {
      for (bool tb : {false, true}) {
        for (float beta : {0.0f, 0.5f}) {
          const int64_t M = 5, N = 6, pad = 3;
          const int64_t lda = (ta ? M : K) + pad, ldb = (tb ? K : N) + pad, ldc = N + pad;
          std::vector<float> A = randn((ta ? K : M) * lda + 1, 1.0f, 1);
          std::vector<float> B = randn((tb ? N : K) * ldb + 1, 1.0f, 2);
          std::vector<float> C = randn(M * ldc, 1.0f, 3), R = C;
          if (beta == 0.0f) C[0] = kNaN;  // beta == 0 must overwrite, not scale, C
          gemm(ta, tb, M, N, K, 1.5f, A.data(), lda, B.data(), ldb, beta, C.data(), ldc);
          naive_gemm(ta, tb, M, N, K, 1.5f, A.data(), lda, B.data(), ldb, beta, R.data(), ldc);
          for (int64_t i = 0; i < M; ++i)
            for (int64_t j = 0; j < ldc; ++j) {
              const size_t at = static_cast<size_t>(i * ldc + j);
              if (j >= N) {  // padding columns untouched
                EXPECT_EQ(C[at], R[at]);
                continue;
              }
              EXPECT_NEAR(C[at], R[at], 1e-5f * (1.0f + std::sqrt(static_cast<float>(K))))
                  << "K=" << K << " ta=" << ta << " tb=" << tb << " beta=" << beta;
            }
        }
      }
    }
  }
}

TEST(Gemm, EmptyOutputIsANoOp) {
  float c = 42.0f;
  gemm(false, false, 0, 3, 4, 1.0f, nullptr, 4, nullptr, 3, 0.0f, &c, 3);
  gemm(false, false, 3, 0, 4, 1.0f, nullptr, 4, nullptr, 0, 0.0f, &c, 0);
  EXPECT_EQ(c, 42.0f);
}

TEST(Linear, ForwardAndBackwardMatchNaiveLoops) {
  for (int64_t T : {0, 1, 9}) {
    for (int64_t I : {0, 1, 13}) {
      const int64_t O = 4;
      std::vector<float> x = randn(T * I, 1.0f, 5), W = randn(O * I, 1.0f, 6);
      std::vector<float> dy = randn(T * O, 1.0f, 7);
      std::vector<float> y(T * O, 9.0f), y_ref(T * O, 0.0f);
      linear_forward(x.data(), W.data(), y.data(), T, I, O);
      for (int64_t t = 0; t < T; ++t)
        for (int64_t o = 0; o < O; ++o) {
          double acc = 0;
          for (int64_t i = 0; i < I; ++i) acc += double(x[t * I + i]) * W[o * I + i];
          y_ref[t * O + o] = static_cast<float>(acc);
        }
      for (int64_t i = 0; i < T * O; ++i) EXPECT_NEAR(y[i], y_ref[i], 1e-5) << T << " " << I;

      // beta accumulates into y.
      std::vector<float> y2(T * O, 1.0f);
      linear_forward(x.data(), W.data(), y2.data(), T, I, O, /*beta=*/1.0f);
      for (int64_t i = 0; i < T * O; ++i) EXPECT_NEAR(y2[i], y_ref[i] + 1.0f, 1e-5);

      std::vector<float> dW(O * I, 0.5f), dW_ref(O * I, 0.5f);
      std::vector<float> dx(T * I, 0.25f), dx_ref(T * I, 0.25f);
      linear_backward(x.data(), W.data(), dy.data(), dW.data(), dx.data(), T, I, O,
                      /*accumulate_dx=*/true);
      for (int64_t o = 0; o < O; ++o)
        for (int64_t i = 0; i < I; ++i) {
          double acc = 0;
          for (int64_t t = 0; t < T; ++t) acc += double(dy[t * O + o]) * x[t * I + i];
          dW_ref[o * I + i] += static_cast<float>(acc);  // dW always accumulates
        }
      for (int64_t t = 0; t < T; ++t)
        for (int64_t i = 0; i < I; ++i) {
          double acc = 0;
          for (int64_t o = 0; o < O; ++o) acc += double(dy[t * O + o]) * W[o * I + i];
          dx_ref[t * I + i] += static_cast<float>(acc);
        }
      for (int64_t i = 0; i < O * I; ++i) EXPECT_NEAR(dW[i], dW_ref[i], 1e-5) << T << " " << I;
      for (int64_t i = 0; i < T * I; ++i) EXPECT_NEAR(dx[i], dx_ref[i], 1e-5) << T << " " << I;

      // accumulate_dx = false overwrites; null outputs are skipped.
      std::vector<float> dx2(T * I, 123.0f);
      linear_backward(x.data(), W.data(), dy.data(), nullptr, dx2.data(), T, I, O, false);
      for (int64_t i = 0; i < T * I; ++i) EXPECT_NEAR(dx2[i], dx_ref[i] - 0.25f, 1e-5);
    }
  }
}

}  // namespace
}  // namespace sy
