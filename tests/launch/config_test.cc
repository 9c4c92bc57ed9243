#include <gtest/gtest.h>

#include "launch/config.h"

namespace sy::launch {
namespace {

TEST(RunConfig, EmbeddedDefaultParsesAndValidates) {
  auto cfg = load_run_config("");
  ASSERT_TRUE(cfg.ok()) << cfg.status().ToString();
  EXPECT_TRUE(validate_run_config(*cfg).ok());
  EXPECT_EQ(cfg->moe().router().name(), "linear");
  MoeStackConfig sc = to_stack_config(*cfg, 50257);
  EXPECT_EQ(sc.layer.router.vocab_size, 50257);
  EXPECT_EQ(sc.layer.num_experts, cfg->moe().num_experts());
}

TEST(RunConfig, OverridesReachNestedFieldsAndCheckTypes) {
  auto cfg = load_run_config("");
  ASSERT_TRUE(cfg.ok());
  ASSERT_TRUE(apply_override(&*cfg, "moe.top_k=4").ok());
  ASSERT_TRUE(apply_override(&*cfg, "moe.router.name=mlp").ok());
  ASSERT_TRUE(apply_override(&*cfg, "moe.router.name=\"hash\"").ok());
  ASSERT_TRUE(apply_override(&*cfg, "moe.capacity_factor=-1").ok());
  ASSERT_TRUE(apply_override(&*cfg, "moe.router.norm_topk_prob=true").ok());
  EXPECT_EQ(cfg->moe().top_k(), 4);
  EXPECT_EQ(cfg->moe().router().name(), "hash");
  EXPECT_EQ(cfg->moe().capacity_factor(), -1.0);
  EXPECT_TRUE(cfg->moe().router().norm_topk_prob());

  for (const char* bad : {"moe.top_k=four", "moe.nope=1", "moe=3", "moe.router=x", "top_k", "=3",
                          "moe.top_k.x=1", "moe.router.norm_topk_prob=maybe"}) {
    Status s = apply_override(&*cfg, bad);
    EXPECT_FALSE(s.ok()) << bad;
    EXPECT_EQ(s.exit_code(), kExitConfig) << bad;
    EXPECT_NE(s.message().find("--set"), std::string::npos) << s.message();
  }
}

TEST(RunConfig, UnknownFieldsAndSyntaxErrorsNameTheLine) {
  auto bad = parse_run_config("moe { d_model: 8\n  top_kk: 2 }", "x.pbtxt");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("x.pbtxt:2:"), std::string::npos) << bad.status().message();
  EXPECT_NE(bad.status().message().find("top_kk"), std::string::npos);
  EXPECT_FALSE(parse_run_config("moe { d_model: \"eight\" }", "y").ok());
  EXPECT_FALSE(parse_run_config("moe { d_model: 8", "z").ok());
  EXPECT_FALSE(load_run_config("/nonexistent/config.pbtxt").ok());
}

TEST(RunConfig, InvalidValuesAreRejected) {
  const char* cases[] = {"moe.top_k=17",           "moe.num_experts=0",
                         "moe.d_model=-4",         "moe.router.name=nope",
                         "data.group_tokens=0",    "data.batch_groups=0",
                         "moe.drop_policy=random", "moe.num_layers=0",
                         "data.max_tokens=-1",     "comm.collective_timeout_s=-2"};
  for (const char* c : cases) {
    auto cfg = load_run_config("");
    ASSERT_TRUE(cfg.ok());
    ASSERT_TRUE(apply_override(&*cfg, c).ok()) << c;
    Status s = validate_run_config(*cfg);
    EXPECT_FALSE(s.ok()) << c;
    EXPECT_EQ(s.exit_code(), kExitConfig) << c << ": " << s.ToString();
  }
}

}  // namespace
}  // namespace sy::launch
