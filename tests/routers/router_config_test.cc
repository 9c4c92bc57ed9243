// Router configuration: parameter counts and FLOPs against the docs/routers.md formulas, and
// make_router() rejecting bad configurations with a message that names the problem.
#include <gtest/gtest.h>

#include <algorithm>
#include <iterator>
#include <string>
#include <vector>

#include "routers/registry.h"

namespace sy {
namespace {

// The built-in routers (routers/*.cc), in their listing order.
const char* const kBuiltins[] = {"linear",        "attention", "mlp",        "hybrid",
                                 "mlp_hadamard",  "hash",      "noisy_topk", "sigmoid_bias",
                                 "expert_choice", "sinkhorn"};

RouterConfig config(const std::string& name, int64_t D, int64_t E, int64_t K, int64_t H = 0) {
  RouterConfig cfg;
  cfg.name = name;
  cfg.d_model = D;
  cfg.num_experts = E;
  cfg.top_k = K;
  cfg.hidden = H;
  return cfg;
}

// Qwen1.5-MoE-A2.7B's router shape: d = 2048, E = 60, h = 128.
TEST(RouterConfig, ParamCountsAndFlopsMatchFormulas) {
  const int64_t d = 2048, E = 60, h = 128;
  struct Expect {
    const char* name;
    int64_t params;
    int64_t madds;  // per token
  };
  const Expect expect[] = {
      {"linear", E * d, E * d},
      {"attention", h * d + E * h, d * h + h * E},
      {"mlp", d * h + h + h * E + E, d * h + h * E},
      {"hybrid", E * d + d * h + h + h * E + E + 1, E * d + d * h + h * E},
      {"mlp_hadamard", 2 * d * h + h * E, 2 * d * h + h * E},
  };
  for (const Expect& x : expect) {
    auto r = make_router(config(x.name, d, E, 4, h));
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_EQ((*r)->num_params(), x.params) << x.name;
    EXPECT_EQ((*r)->flops_per_token(), 2 * x.madds) << x.name;
  }
  EXPECT_EQ(make_router(config("hybrid", d, E, 4, h)).value()->num_params(), 392893);

  // hidden = 0 picks the default (128); heads do not change the attention router's size.
  RouterConfig attn = config("attention", d, E, 4, 0);
  attn.num_heads = 4;
  auto r = make_router(attn);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ((*r)->num_params(), h * d + E * h);
}

TEST(RouterConfig, ParameterNamesAndShapes) {
  auto hyb = make_router(config("hybrid", 6, 5, 2, 4));
  ASSERT_TRUE(hyb.ok());
  EXPECT_EQ((*hyb)->find_param("weight")->value.shape, (std::vector<int64_t>{5, 6}));
  EXPECT_EQ((*hyb)->find_param("fc1.weight")->value.shape, (std::vector<int64_t>{4, 6}));
  EXPECT_EQ((*hyb)->find_param("fc1.bias")->value.shape, (std::vector<int64_t>{4}));
  EXPECT_EQ((*hyb)->find_param("fc2.weight")->value.shape, (std::vector<int64_t>{5, 4}));
  EXPECT_EQ((*hyb)->find_param("fc2.bias")->value.shape, (std::vector<int64_t>{5}));
  EXPECT_EQ((*hyb)->find_param("mix")->value.data, (std::vector<float>{0.0f}));
  for (const char* bias : {"fc1.bias", "fc2.bias"})
    for (float v : (*hyb)->find_param(bias)->value.data) EXPECT_EQ(v, 0.0f) << bias;

  auto attn = make_router(config("attention", 6, 5, 2, 4));
  ASSERT_TRUE(attn.ok());
  EXPECT_EQ((*attn)->find_param("query.weight")->value.shape, (std::vector<int64_t>{4, 6}));
  EXPECT_EQ((*attn)->find_param("keys")->value.shape, (std::vector<int64_t>{5, 4}));

  auto had = make_router(config("mlp_hadamard", 6, 5, 2, 4));
  ASSERT_TRUE(had.ok());
  EXPECT_EQ((*had)->find_param("gate_proj.weight")->value.shape, (std::vector<int64_t>{4, 6}));
  EXPECT_EQ((*had)->find_param("up_proj.weight")->value.shape, (std::vector<int64_t>{4, 6}));
  EXPECT_EQ((*had)->find_param("out.weight")->value.shape, (std::vector<int64_t>{5, 4}));
}

// Expects make_router(cfg) to fail with InvalidArgument and a message containing `needle`.
void expect_rejected(const RouterConfig& cfg, const std::string& needle) {
  auto r = make_router(cfg);
  ASSERT_FALSE(r.ok()) << cfg.name << ": expected an error mentioning '" << needle << "'";
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << r.status().ToString();
  EXPECT_NE(r.status().message().find(needle), std::string::npos)
      << cfg.name << ": message '" << r.status().message() << "' does not mention '" << needle
      << "'";
}

TEST(RouterConfig, BadConfigsAreRejectedWithAClearMessage) {
  for (const std::string& name : router_names()) {
    SCOPED_TRACE(name);
    expect_rejected(config(name, 8, 4, 5), "top_k (5) must be <= num_experts (4)");
    expect_rejected(config(name, 8, 0, 1), "num_experts must be >= 1");
    expect_rejected(config(name, -3, 4, 1), "d_model must be >= 1 (got -3)");
    expect_rejected(config(name, 8, 4, 0), "top_k must be >= 1");
    expect_rejected(config(name, 8, 4, 1, -2), "router hidden must be >= 0");
  }
  expect_rejected(config("no_such_router", 8, 4, 1), "unknown router 'no_such_router'");

  RouterConfig attn = config("attention", 8, 4, 1, 6);
  attn.num_heads = 4;
  expect_rejected(attn, "router hidden (6) must be divisible by num_heads (4)");
  attn.hidden = 0;  // default 128
  attn.num_heads = 3;
  expect_rejected(attn, "router hidden (128) must be divisible by num_heads (3)");
  attn.num_heads = 0;
  expect_rejected(attn, "num_heads must be >= 1");
  attn.num_heads = 4;
  EXPECT_TRUE(make_router(attn).ok());
}

// Every built-in registered itself (the linker kept every router file: routers/CMakeLists.txt),
// first and in this order, whatever the static-initialization order.
TEST(RouterConfig, RegistryListsTheBuiltinsInOrder) {
  const std::vector<std::string> names = router_names();
  ASSERT_GE(names.size(), std::size(kBuiltins));
  for (size_t i = 0; i < std::size(kBuiltins); ++i) EXPECT_EQ(names[i], kBuiltins[i]) << i;
  for (const RouterInfo& r : router_registry()) EXPECT_GT(std::string(r.summary).size(), 0u);
}

TEST(RouterConfig, DuplicateOrIncompleteRegistrationIsAClearError) {
  const size_t before = router_registry().size();
  const RouterInfo linear = router_registry().front();
  RouterInfo again = linear;
  again.file = "elsewhere.cc";
  const Status st = register_router(again);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("router 'linear' registered twice"), std::string::npos)
      << st.ToString();
  EXPECT_NE(st.message().find("routers/linear.cc"), std::string::npos) << st.ToString();
  EXPECT_NE(st.message().find("elsewhere.cc"), std::string::npos) << st.ToString();
  RouterInfo unnamed = linear;
  unnamed.name = "";
  EXPECT_EQ(register_router(unnamed).code(), StatusCode::kInvalidArgument);
  RouterInfo no_factory = linear;
  no_factory.name = "no_factory";
  no_factory.make = nullptr;
  EXPECT_EQ(register_router(no_factory).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(router_registry().size(), before);  // nothing was added
}

}  // namespace
}  // namespace sy
