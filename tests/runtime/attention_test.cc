// Attention backward, RoPE's inverse and the cross-entropy loss against finite differences.
// The forward kernels run in fp32, so every check perturbs a float input by eps ~ 1e-3 (using
// the perturbation actually stored, (x + eps) - x), sums the loss in double, and compares
// central differences to the analytic gradient with a relative tolerance whose floor scales
// with the gradient's size: fp32 rounding of a loss of O(10) over 2 eps leaves ~1e-4 of noise.
#include "runtime/kernels/attention.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <vector>

#include "runtime/backend/ops.h"
#include "runtime/core/rng.h"
#include "runtime/kernels/loss.h"

namespace sy {
namespace {

constexpr float kEps = 1e-3f;
constexpr double kRelTol = 1e-2;

std::vector<float> randn(int64_t n, float scale, uint64_t seed) {
  std::vector<float> v(static_cast<size_t>(n));
  Rng rng(seed);
  for (float& x : v) x = static_cast<float>(rng.normal()) * scale;
  return v;
}

double dot(const std::vector<float>& a, const std::vector<float>& b) {
  double s = 0.0;
  for (size_t i = 0; i < a.size(); ++i) s += static_cast<double>(a[i]) * b[i];
  return s;
}

// Central differences of loss() with respect to up to max_checks coordinates of x (all of
// them when x is small), against grad. err = |fd - grad| / max(|fd|, |grad|, 0.05 * max|grad|).
void expect_grad_matches_fd(std::vector<float>* x, const std::vector<float>& grad,
                            const std::function<double()>& loss, const char* what,
                            int max_checks = 96) {
  ASSERT_EQ(x->size(), grad.size()) << what;
  double gmax = 0.0;
  for (float g : grad) gmax = std::max(gmax, static_cast<double>(std::fabs(g)));
  const double floor = std::max(0.05 * gmax, 1e-6);
  const size_t n = x->size();
  const size_t stride = std::max<size_t>(1, n / static_cast<size_t>(max_checks));
  double worst = 0.0;
  for (size_t i = 0; i < n; i += stride) {
    const float x0 = (*x)[i];
    (*x)[i] = x0 + kEps;
    const double hi_step = static_cast<double>((*x)[i]) - x0;
    const double lp = loss();
    (*x)[i] = x0 - kEps;
    const double lo_step = static_cast<double>(x0) - (*x)[i];
    const double lm = loss();
    (*x)[i] = x0;
    const double fd = (lp - lm) / (hi_step + lo_step);
    const double g = grad[i];
    const double err = std::fabs(fd - g) / std::max({std::fabs(fd), std::fabs(g), floor});
    worst = std::max(worst, err);
    EXPECT_LE(err, kRelTol) << what << "[" << i << "]: analytic " << g << ", fd " << fd;
  }
  EXPECT_LE(worst, kRelTol) << what;
}

struct AttentionCase {
  int64_t T, Tk, pos0;
  AttentionShape shape;
  std::vector<uint8_t> key_mask;  // empty = all keys real
};

// Checks dq, dk, dv of L = <ops::attention_forward(default_context(), q, k, v), W> by finite
// differences. dk and dv start at a nonzero value (they accumulate), dq at garbage (it is written).
void check_attention_backward(const AttentionCase& c, uint64_t seed) {
  const AttentionShape& s = c.shape;
  const int64_t ldq = s.num_heads * s.head_dim, ldk = s.num_kv_heads * s.head_dim;
  std::vector<float> q = randn(c.T * ldq, 1.0f, seed), k = randn(c.Tk * ldk, 1.0f, seed + 1),
                     v = randn(c.Tk * ldk, 1.0f, seed + 2), w = randn(c.T * ldq, 1.0f, seed + 3);
  const uint8_t* mask = c.key_mask.empty() ? nullptr : c.key_mask.data();
  std::vector<float> out(static_cast<size_t>(c.T * ldq));
  auto loss = [&] {
    ops::attention_forward(default_context(), q.data(), k.data(), v.data(), out.data(), c.T, c.Tk,
                           c.pos0, s, mask);
    return dot(out, w);
  };

  const float dq_garbage = 7.0f, dkv_init = 0.25f;
  std::vector<float> dq(q.size(), dq_garbage), dk(k.size(), dkv_init), dv(v.size(), dkv_init);
  ops::attention_backward(default_context(), q.data(), k.data(), v.data(), w.data(), dq.data(),
                          dk.data(), dv.data(), c.T, c.Tk, c.pos0, s, mask);
  // The backend takes the scratch from the context's workspace: 2 T Tk floats.
  EXPECT_GE(default_context().workspace->bytes(), 2 * c.T * c.Tk * 4);
  for (float& x : dk) x -= dkv_init;
  for (float& x : dv) x -= dkv_init;

  expect_grad_matches_fd(&q, dq, loss, "dq");
  expect_grad_matches_fd(&k, dk, loss, "dk");
  expect_grad_matches_fd(&v, dv, loss, "dv");
}

AttentionShape make_shape(int64_t nH, int64_t nKV, int64_t hd, bool causal) {
  AttentionShape s;
  s.num_heads = nH;
  s.num_kv_heads = nKV;
  s.head_dim = hd;
  s.causal = causal;
  s.scale = 1.0f / std::sqrt(static_cast<float>(hd));
  return s;
}

TEST(AttentionBackward, CausalDecodeLikeWithOffset) {
  // Three query rows at positions 4..6 over a 7-key cache: row t sees keys 0..4+t.
  check_attention_backward({3, 7, 4, make_shape(2, 2, 8, true), {}}, 11);
}

TEST(AttentionBackward, CausalPrefill) {
  check_attention_backward({5, 5, 0, make_shape(2, 1, 4, true), {}}, 21);
}

TEST(AttentionBackward, BidirectionalWithKeyMask) {
  AttentionCase c{4, 6, 0, make_shape(2, 2, 8, false), {1, 0, 1, 1, 0, 1}};
  check_attention_backward(c, 31);

  // Masked keys get no gradient at all: not through the scores, not through the values.
  const AttentionShape& s = c.shape;
  const int64_t ldq = s.num_heads * s.head_dim, ldk = s.num_kv_heads * s.head_dim;
  const std::vector<float> q = randn(c.T * ldq, 1.0f, 1), k = randn(c.Tk * ldk, 1.0f, 2),
                           v = randn(c.Tk * ldk, 1.0f, 3), w = randn(c.T * ldq, 1.0f, 4);
  std::vector<float> dq(q.size()), dk(k.size()), dv(v.size());
  ops::attention_backward(default_context(), q.data(), k.data(), v.data(), w.data(), dq.data(),
                          dk.data(), dv.data(), c.T, c.Tk, c.pos0, s, c.key_mask.data());
  for (int64_t j = 0; j < c.Tk; ++j) {
    if (c.key_mask[static_cast<size_t>(j)]) continue;
    for (int64_t i = 0; i < ldk; ++i) {
      EXPECT_EQ(dk[static_cast<size_t>(j * ldk + i)], 0.0f) << "key " << j;
      EXPECT_EQ(dv[static_cast<size_t>(j * ldk + i)], 0.0f) << "key " << j;
    }
  }
}

TEST(AttentionBackward, GroupedQuery) {
  // nH = 4 over nKV = 2: heads 0, 1 share kv head 0 and heads 2, 3 share kv head 1, so dk and
  // dv sum two query heads each.
  check_attention_backward({5, 7, 2, make_shape(4, 2, 4, true), {}}, 41);
  check_attention_backward({4, 4, 0, make_shape(4, 2, 4, false), {}}, 42);
}

TEST(AttentionBackward, RowWithNoVisibleKey) {
  // Causal from position 0 with key 0 masked: query row 0 sees nothing, its output is zero and
  // so is its dq; the other rows still get correct gradients.
  AttentionCase c{4, 4, 0, make_shape(2, 1, 4, true), {0, 1, 1, 1}};
  check_attention_backward(c, 51);

  const AttentionShape& s = c.shape;
  const int64_t ldq = s.num_heads * s.head_dim, ldk = s.num_kv_heads * s.head_dim;
  const std::vector<float> q = randn(c.T * ldq, 1.0f, 5), k = randn(c.Tk * ldk, 1.0f, 6),
                           v = randn(c.Tk * ldk, 1.0f, 7), w = randn(c.T * ldq, 1.0f, 8);
  std::vector<float> dq(q.size(), 7.0f), dk(k.size()), dv(v.size());
  ops::attention_backward(default_context(), q.data(), k.data(), v.data(), w.data(), dq.data(),
                          dk.data(), dv.data(), c.T, c.Tk, c.pos0, s, c.key_mask.data());
  for (int64_t i = 0; i < ldq; ++i) EXPECT_EQ(dq[static_cast<size_t>(i)], 0.0f) << i;
  bool rest_nonzero = false;
  for (size_t i = static_cast<size_t>(ldq); i < dq.size(); ++i) rest_nonzero |= dq[i] != 0.0f;
  EXPECT_TRUE(rest_nonzero);
}

TEST(AttentionBackward, EmptyKeysWriteZeroDq) {
  const AttentionShape s = make_shape(2, 1, 4, true);
  std::vector<float> q(2 * 8, 1.0f), w(2 * 8, 1.0f), dq(2 * 8, 7.0f);
  ops::attention_backward(default_context(), q.data(), nullptr, nullptr, w.data(), dq.data(),
                          nullptr, nullptr, 2, 0, 0, s, nullptr);
  for (float x : dq) EXPECT_EQ(x, 0.0f);
}

TEST(Rope, InverseUndoesForward) {
  const int64_t T = 6, heads = 3, hd = 16, ld = heads * hd + 5, pos0 = 1000;
  const std::vector<float> inv_freq = rope_inv_freq(hd, 1e6);
  const std::vector<float> x0 = randn(T * ld, 1.0f, 61);
  std::vector<float> x = x0;
  rope_apply(x.data(), T, heads, hd, ld, pos0, inv_freq);
  double moved = 0.0;
  for (size_t i = 0; i < x.size(); ++i) moved = std::max(moved, double(std::fabs(x[i] - x0[i])));
  EXPECT_GT(moved, 1e-2) << "the forward rotation did nothing";
  rope_apply(x.data(), T, heads, hd, ld, pos0, inv_freq, /*inverse=*/true);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t i = 0; i < ld; ++i) {
      const size_t at = static_cast<size_t>(t * ld + i);
      if (i >= heads * hd) {
        EXPECT_EQ(x[at], x0[at]) << "row padding touched at " << t << ", " << i;
      } else {
        EXPECT_NEAR(x[at], x0[at], 1e-6 * std::max(1.0f, std::fabs(x0[at]))) << t << ", " << i;
      }
    }
}

TEST(Rope, InverseIsTheTranspose) {
  // <R x, y> = <x, R^T y>: the inverse rotation is the backward of the forward one.
  const int64_t T = 5, heads = 2, hd = 8, ld = heads * hd, pos0 = 3;
  const std::vector<float> inv_freq = rope_inv_freq(hd, 10000.0);
  const std::vector<float> x = randn(T * ld, 1.0f, 71), y = randn(T * ld, 1.0f, 72);
  std::vector<float> rx = x, rty = y;
  rope_apply(rx.data(), T, heads, hd, ld, pos0, inv_freq);
  rope_apply(rty.data(), T, heads, hd, ld, pos0, inv_freq, /*inverse=*/true);
  double mag = 0.0;
  for (size_t i = 0; i < x.size(); ++i) mag += std::fabs(double(x[i]) * y[i]);
  EXPECT_NEAR(dot(rx, y), dot(x, rty), 1e-6 * mag);
}

TEST(CrossEntropy, GradientMatchesFiniteDifferences) {
  const int64_t T = 4, V = 11;
  const std::vector<int32_t> target = {3, -1, 0, 10};
  std::vector<float> logits = randn(T * V, 2.0f, 81);
  std::vector<float> dlogits(logits.size(), 7.0f);
  cross_entropy_backward(logits.data(), target.data(), T, V, 1.0f, dlogits.data());
  auto loss = [&] {
    int64_t n = 0;
    return cross_entropy_sum(logits.data(), target.data(), T, V, &n);
  };
  expect_grad_matches_fd(&logits, dlogits, loss, "dlogits", 1000);

  // scale multiplies the whole gradient (the caller passes 1 / N).
  std::vector<float> scaled(logits.size());
  cross_entropy_backward(logits.data(), target.data(), T, V, 1.0f / 3.0f, scaled.data());
  for (size_t i = 0; i < scaled.size(); ++i) EXPECT_NEAR(scaled[i], dlogits[i] / 3.0f, 1e-7f) << i;
}

TEST(CrossEntropy, IgnoredRowsContributeNothing) {
  const int64_t T = 3, V = 7;
  const std::vector<int32_t> target = {-1, 2, -1};
  std::vector<float> logits = randn(T * V, 1.0f, 91);
  int64_t count = -1;
  const double with = cross_entropy_sum(logits.data(), target.data(), T, V, &count);
  EXPECT_EQ(count, 1);
  // Garbage in an ignored row changes neither the loss nor the counted rows' gradient.
  for (int64_t j = 0; j < V; ++j) logits[static_cast<size_t>(j)] = 1e30f;
  EXPECT_EQ(cross_entropy_sum(logits.data(), target.data(), T, V, &count), with);
  EXPECT_EQ(count, 1);
  std::vector<float> d(logits.size(), 7.0f);
  cross_entropy_backward(logits.data(), target.data(), T, V, 1.0f, d.data());
  for (int64_t t : {0, 2})
    for (int64_t j = 0; j < V; ++j) EXPECT_EQ(d[static_cast<size_t>(t * V + j)], 0.0f) << t;
  double row_sum = 0.0;
  for (int64_t j = 0; j < V; ++j) row_sum += d[static_cast<size_t>(V + j)];
  EXPECT_NEAR(row_sum, 0.0, 1e-6);

  const std::vector<int32_t> none = {-1, -1, -1};
  EXPECT_EQ(cross_entropy_sum(logits.data(), none.data(), T, V, &count), 0.0);
  EXPECT_EQ(count, 0);
}

TEST(CrossEntropy, UniformLogitsGiveLogV) {
  const int64_t T = 3, V = 1000;
  const std::vector<int32_t> target = {0, 517, 999};
  for (float level : {0.0f, 2.5f, -40.0f, 1e4f}) {  // large offsets must not overflow exp
    const std::vector<float> logits(static_cast<size_t>(T * V), level);
    int64_t count = 0;
    const double sum = cross_entropy_sum(logits.data(), target.data(), T, V, &count);
    ASSERT_EQ(count, T);
    EXPECT_NEAR(sum / static_cast<double>(count), std::log(static_cast<double>(V)), 1e-9)
        << "level " << level;
  }
}

TEST(CrossEntropyDeathTest, TargetOutOfRangeIsABug) {
  const std::vector<float> logits(4, 0.0f);
  const std::vector<int32_t> too_big = {4}, too_small = {-2};
  int64_t count = 0;
  EXPECT_DEATH(cross_entropy_sum(logits.data(), too_big.data(), 1, 4, &count), "cross-entropy");
  EXPECT_DEATH(cross_entropy_sum(logits.data(), too_small.data(), 1, 4, &count), "cross-entropy");
  std::vector<float> d(4);
  EXPECT_DEATH(cross_entropy_backward(logits.data(), too_big.data(), 1, 4, 1.0f, d.data()),
               "cross-entropy");
}

}  // namespace
}  // namespace sy
