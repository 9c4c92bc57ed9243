// AdamW with warm-up + cosine schedule and global-norm clipping (runtime/train/adamw.h).
#include "runtime/train/adamw.h"

#include <gtest/gtest.h>

#include <cmath>

namespace sy {
namespace {

TEST(AdamW, Schedule) {
  AdamWConfig c;
  c.lr = 1.0;
  c.warmup_steps = 4;
  c.total_steps = 14;
  c.min_lr_ratio = 0.1;
  AdamW opt(c);
  EXPECT_DOUBLE_EQ(opt.lr_at(0), 0.25);
  EXPECT_DOUBLE_EQ(opt.lr_at(3), 1.0);
  EXPECT_DOUBLE_EQ(opt.lr_at(4), 1.0);                // cosine starts at the peak
  EXPECT_NEAR(opt.lr_at(9), 0.1 + 0.9 * 0.5, 1e-12);  // halfway
  EXPECT_NEAR(opt.lr_at(14), 0.1, 1e-12);             // the floor
  EXPECT_NEAR(opt.lr_at(100), 0.1, 1e-12);            // and it stays there
  EXPECT_TRUE(c.validate().ok());
  c.lr = 0;
  EXPECT_FALSE(c.validate().ok());
}

// Three steps on one scalar against the equations evaluated by hand in double.
TEST(AdamW, MatchesTheEquations) {
  AdamWConfig c;
  c.lr = 0.1;
  c.beta1 = 0.9;
  c.beta2 = 0.99;
  c.eps = 1e-8;
  c.clip_norm = 0;  // no clipping
  c.total_steps = 1000;
  c.min_lr_ratio = 1.0;  // constant lr
  AdamW opt(c);
  Tensor w({1, 1}, 2.0f), g({1, 1});
  double m = 0, v = 0, wd = 2.0;
  const double grads[3] = {0.5, -1.0, 0.25};
  for (int s = 0; s < 3; ++s) {
    g.data[0] = static_cast<float>(grads[s]);
    opt.update({{"w", &w, &g}}, grads[s] * grads[s]);
    m = 0.9 * m + 0.1 * grads[s];
    v = 0.99 * v + 0.01 * grads[s] * grads[s];
    const double mh = m / (1 - std::pow(0.9, s + 1)), vh = v / (1 - std::pow(0.99, s + 1));
    wd -= 0.1 * mh / (std::sqrt(vh) + 1e-8);
    EXPECT_NEAR(w.data[0], wd, 1e-6) << "step " << s;
  }
  EXPECT_EQ(opt.step(), 3);
}

TEST(AdamW, ClipsByTheGlobalNormAndDecaysMatricesOnly) {
  AdamWConfig c;
  c.clip_norm = 1.0;
  c.weight_decay = 0.5;
  c.lr = 0.01;
  c.min_lr_ratio = 1.0;
  AdamW opt(c);
  Tensor mat({2, 2}, 1.0f), bias({2}, 1.0f), gm({2, 2}, 0.0f), gb({2}, 0.0f);
  // Zero gradients: only the decay moves the matrix; the bias stays.
  EXPECT_DOUBLE_EQ(opt.update({{"mat", &mat, &gm}, {"bias", &bias, &gb}}, 0.0), 1.0);
  EXPECT_NEAR(mat.data[0], 1.0 - 0.01 * 0.5, 1e-7);
  EXPECT_EQ(bias.data[0], 1.0f);
  // A norm of 10 against a clip of 1: factor 0.1.
  gb.data = {6.0f, 8.0f};
  EXPECT_NEAR(opt.update({{"bias", &bias, &gb}}, AdamW::grad_sq_sum({{"bias", &bias, &gb}})), 0.1,
              1e-12);
}

TEST(AdamW, StateRoundTripResumesExactly) {
  AdamWConfig c;
  c.total_steps = 10;
  c.warmup_steps = 2;
  Tensor w1({3}, 1.0f), w2({3}, 1.0f), g({3});
  AdamW a(c), b(c);
  for (int s = 0; s < 6; ++s) {
    g.data = {0.1f * s, -0.2f, 0.3f};
    if (s == 3) b.set_state(a.state());  // b resumes from a's state after 3 steps
    if (s == 3) w2 = w1;
    a.update({{"w", &w1, &g}}, AdamW::grad_sq_sum({{"w", &w1, &g}}));
    if (s >= 3) b.update({{"w", &w2, &g}}, AdamW::grad_sq_sum({{"w", &w2, &g}}));
  }
  EXPECT_EQ(w1.data, w2.data);  // bitwise
  EXPECT_EQ(a.step(), b.step());
}

}  // namespace
}  // namespace sy
