// Adding a router, shown: this file defines one and registers it with the one line below;
// nothing in routers/, the registry, the model or the trainer names it. The test checks that it
// is listed (after the built-ins), built by make_router, passes the generic gradient checks
// (router_gradient_checks.h) and runs inside a MoE layer.
#include <gtest/gtest.h>

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "routers/registry.h"
#include "runtime/core/rng.h"
#include "runtime/moe/moe_layer.h"
#include "tests/routers/router_gradient_checks.h"
#include "tests/routers/router_test_util.h"

namespace sy {
namespace {

// toy: s_e = a_e * (R x)_e. R [E, D] is a fixed random projection drawn from the seed (not a
// parameter); the scale a = `scale` [E] is learned and starts at 1.
class ToyRouter final : public Router {
 public:
  explicit ToyRouter(const RouterConfig& cfg) : Router(cfg), R_ED_({cfg.num_experts, cfg.d_model}) {
    fill_normal(R_ED_.ptr(), R_ED_.numel(), 1.0f, cfg.seed, /*stream=*/0);
    scale_ = add_param("scale", {cfg.num_experts});
    std::fill(scale_->value.data.begin(), scale_->value.data.end(), 1.0f);
  }
  int64_t flops_per_token() const override { return 2 * cfg_.num_experts * cfg_.d_model; }

 protected:
  void compute_scores(const float* x_TD, const int32_t*, int64_t T, float* s_TE) override {
    const int64_t D = cfg_.d_model, E = cfg_.num_experts;
    x_ = x_TD;
    proj_TE_.resize({T, E});
    for (int64_t t = 0; t < T; ++t)
      for (int64_t e = 0; e < E; ++e) {
        float p = 0.0f;
        for (int64_t d = 0; d < D; ++d) p += R_ED_.at(e, d) * x_TD[t * D + d];
        proj_TE_.at(t, e) = p;
        s_TE[t * E + e] = scale_->value.data[static_cast<size_t>(e)] * p;
      }
  }
  void backward_scores(const float* ds_TE, float* dx_TD) override {
    const int64_t D = cfg_.d_model, E = cfg_.num_experts, T = proj_TE_.shape[0];
    for (int64_t t = 0; t < T; ++t)
      for (int64_t e = 0; e < E; ++e) {
        const float ds = ds_TE[t * E + e];
        scale_->grad.data[static_cast<size_t>(e)] += ds * proj_TE_.at(t, e);
        if (!dx_TD) continue;
        const float g = ds * scale_->value.data[static_cast<size_t>(e)];
        for (int64_t d = 0; d < D; ++d) dx_TD[t * D + d] += g * R_ED_.at(e, d);
      }
  }

 private:
  Tensor R_ED_;
  Param* scale_;
  const float* x_ = nullptr;  // the caller keeps x alive until backward
  Tensor proj_TE_;            // R x of the last forward
};

std::unique_ptr<Router> make_toy_router(const RouterConfig& cfg) {
  return std::make_unique<ToyRouter>(cfg);
}

}  // namespace

SY_REGISTER_ROUTER(toy, 100, "s = a * (R x): fixed random R, learned scale a (a test's toy)",
                   make_toy_router, nullptr);

namespace {

RouterConfig ToyConfig(int64_t D, int64_t E, int64_t K) {
  RouterConfig cfg;
  cfg.name = "toy";
  cfg.d_model = D;
  cfg.num_experts = E;
  cfg.top_k = K;
  return cfg;
}

TEST(ToyRouter, IsListedAfterTheBuiltins) {
  const std::vector<std::string> names = router_names();
  ASSERT_FALSE(names.empty());
  EXPECT_EQ(names.back(), "toy");
  EXPECT_EQ(names.front(), kDefaultRouterName);
  const RouterInfo& info = router_registry().back();
  EXPECT_EQ(info.order, 100);
  EXPECT_NE(std::string(info.file).find("toy_router_test.cc"), std::string::npos) << info.file;
  // Loops over the learned routers (tests, distillation, fine-tuning) pick it up.
  const std::vector<std::string> learned = testing::learned_router_names();
  EXPECT_NE(std::find(learned.begin(), learned.end(), "toy"), learned.end());
}

TEST(ToyRouter, MakeRouterBuildsAndValidatesIt) {
  auto r = make_router(ToyConfig(8, 4, 2));
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ((*r)->name(), "toy");
  EXPECT_EQ((*r)->num_params(), 4);
  EXPECT_EQ((*r)->flops_per_token(), 2 * 4 * 8);
  EXPECT_TRUE((*r)->differentiable());
  auto bad = make_router(ToyConfig(8, 4, 5));
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("top_k (5) must be <= num_experts (4)"), std::string::npos)
      << bad.status().ToString();
  // A second registration under its name is refused, naming this file.
  RouterInfo again = router_registry().back();
  const Status st = register_router(again);
  EXPECT_NE(st.message().find("router 'toy' registered twice"), std::string::npos) << st.ToString();
}

// The generic gradient checks, on the toy alone (the built-ins run in router_gradients_test).
INSTANTIATE_TEST_SUITE_P(Toy, RouterGradientTest, ::testing::ValuesIn(default_grad_cases({"toy"})),
                         grad_case_name);

// The MoE layer takes it by name like any built-in: forward, backward, a gradient on `scale`.
TEST(ToyRouter, RoutesAMoeLayer) {
  MoeLayerConfig c;
  c.d_model = 8;
  c.ffn_hidden = 6;
  c.num_experts = 4;
  c.top_k = 2;
  c.init_std = 0.5f;
  c.router.name = "toy";
  auto l = MoeLayer::create(c);
  ASSERT_TRUE(l.ok()) << l.status().ToString();
  EXPECT_EQ((*l)->router().name(), "toy");
  constexpr int64_t T = 10;
  std::vector<float> x(T * 8), y(T * 8), dy(T * 8, 1.0f), dx(T * 8);
  fill_normal(x.data(), T * 8, 1.0f, 3, 4);
  ASSERT_TRUE((*l)->forward(x.data(), nullptr, T, y.data()).ok());
  (*l)->backward(dy.data(), dx.data());
  double mass = 0;
  for (float g : (*l)->router().find_param("scale")->grad.data) mass += std::fabs(g);
  EXPECT_GT(mass, 0.0);
}

}  // namespace
}  // namespace sy
