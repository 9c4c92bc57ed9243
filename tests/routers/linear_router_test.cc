#include <gtest/gtest.h>

#include "routers/registry.h"

namespace sy {
namespace {

TEST(LinearRouter, ScoresAreWx) {
  RouterConfig cfg;
  cfg.d_model = 3;
  cfg.num_experts = 4;
  cfg.top_k = 2;
  auto r = make_router(cfg);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  Tensor W({4, 3});
  for (int i = 0; i < 12; ++i) W.data[i] = static_cast<float>(i % 5) - 2.0f;
  ASSERT_TRUE((*r)->set_param("weight", W).ok());
  const float x[3] = {1.0f, -1.0f, 0.5f};
  RouterOutput out;
  (*r)->forward(x, nullptr, 1, &out);
  for (int e = 0; e < 4; ++e) {
    float s = 0;
    for (int d = 0; d < 3; ++d) s += W.at(e, d) * x[d];
    EXPECT_FLOAT_EQ(out.logits_TE.at(0, e), s);
  }
  EXPECT_EQ((*r)->num_params(), 12);
}

}  // namespace
}  // namespace sy
