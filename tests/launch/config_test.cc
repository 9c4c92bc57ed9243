#include <gtest/gtest.h>

#include "launch/config.h"
#include "launch/infer_run.h"

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

// The commands' own configs (proto/commands.proto): the same parsing and overriding, proto2
// defaults written out for printing, and a printed config reads back to the same message.
TEST(CommandConfigs, DefaultsComeFromTheProtoAndPrintedConfigsReadBack) {
  switchyard::TrainConfig t;
  ASSERT_TRUE(parse_text_config("steps: 5 distill { lr: 0.5 }", "t.pbtxt", &t).ok());
  EXPECT_EQ(t.steps(), 5);
  EXPECT_EQ(t.seq_len(), 128);  // absent: the .proto default
  EXPECT_FALSE(t.has_seq_len());
  fill_defaults(&t);
  EXPECT_TRUE(t.has_seq_len());
  EXPECT_TRUE(t.distill().has_iterations());
  EXPECT_EQ(t.distill().lr(), 0.5);
  const std::string text = config_text(t);
  EXPECT_NE(text.find("seq_len: 128"), std::string::npos) << text;
  EXPECT_NE(text.find("corpus: \"sotu\""), std::string::npos) << text;
  switchyard::TrainConfig back;
  ASSERT_TRUE(parse_text_config(text, "printed", &back).ok());
  EXPECT_EQ(config_text(back), text);
  EXPECT_TRUE(validate_train_config(back).ok());
  EXPECT_EQ(config_field_text(switchyard::TrainConfig::default_instance(), "corpus"), "sotu");
  EXPECT_EQ(config_field_text(switchyard::TrainConfig::default_instance(), "distill.iterations"),
            "300");
  EXPECT_EQ(config_field_kind(switchyard::TrainConfig::default_instance(), "lr"), "FLOAT");
}

TEST(CommandConfigs, FieldsAreSetByPathWithErrorsNamingTheSource) {
  switchyard::TrainConfig t;
  ASSERT_TRUE(apply_override(&t, "distill.enabled=false").ok());
  ASSERT_TRUE(set_config_field(&t, "corpus", "\"quoted\" \\ text", "--corpus").ok());
  EXPECT_FALSE(t.distill().enabled());
  EXPECT_EQ(t.corpus(), "\"quoted\" \\ text");  // a flag's text is taken as it is
  Status s = set_config_field(&t, "steps", "x", "--steps");
  EXPECT_EQ(s.exit_code(), kExitConfig);
  EXPECT_EQ(s.message(), "--steps: 'x' is not a valid int64");
  s = apply_override(&t, "no_such=1");
  EXPECT_EQ(s.exit_code(), kExitConfig);
  EXPECT_EQ(s.message(), "--set no_such: no field 'no_such' in TrainConfig");
  auto bad = parse_run_config("model { model: \"m\" seq_lenn: 4 }", "m.pbtxt");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("m.pbtxt:1:"), std::string::npos);
  EXPECT_NE(bad.status().message().find("seq_lenn"), std::string::npos);
}

TEST(CommandConfigs, ValidationNamesTheField) {
  struct Case {
    const char* set;
    const char* names;
  };
  for (const Case& c :
       {Case{"steps=0", "steps"}, Case{"what=some", "what"}, Case{"quantize=int3", "quantize"},
        Case{"on_nonfinite=go", "on_nonfinite"}, Case{"save_every=2", "checkpoint_dir"},
        Case{"distill.lr=0", "distill.lr"}}) {
    switchyard::TrainConfig t;
    ASSERT_TRUE(apply_override(&t, c.set).ok()) << c.set;
    Status s = validate_train_config(t);
    EXPECT_EQ(s.exit_code(), kExitConfig) << c.set;
    EXPECT_NE(s.message().find(c.names), std::string::npos) << c.set << ": " << s.message();
  }
  switchyard::ModelInferConfig m;
  m.set_model("dir");
  m.set_token_ids("1,2");
  EXPECT_TRUE(validate_model_infer_config(m).ok());
  for (const char* set : {"prompt=hi", "quantize=int3", "repeat=0", "seq_len=4", "quant_group=0"}) {
    switchyard::ModelInferConfig bad = m;
    ASSERT_TRUE(apply_override(&bad, set).ok()) << set;
    Status s = validate_model_infer_config(bad);
    EXPECT_EQ(s.exit_code(), kExitConfig) << set;
    const std::string field = std::string(set).substr(0, std::string(set).find('='));
    EXPECT_NE(s.message().find(field), std::string::npos) << set << ": " << s.message();
  }
  switchyard::TokenizeConfig tk;
  EXPECT_NE(validate_tokenize_config(tk).message().find("tokenizer"), std::string::npos);
  switchyard::CompareConfig cmp;
  cmp.set_a("a.npy");
  EXPECT_NE(validate_compare_config(cmp).message().find("b ("), std::string::npos);
  cmp.set_b("b.npy");
  EXPECT_TRUE(validate_compare_config(cmp).ok());
  ASSERT_TRUE(apply_override(&cmp, "atol=-1").ok());
  EXPECT_EQ(validate_compare_config(cmp).exit_code(), kExitConfig);
  switchyard::ReportConfig rep;
  EXPECT_EQ(validate_report_config(rep).exit_code(), kExitConfig);
  EXPECT_NE(validate_report_config(rep).message().find("dir"), std::string::npos);
}

// compare and report: their positional arguments are fields too; defaults from the .proto and
// the printed config reads back.
TEST(CommandConfigs, CompareAndReportPrintAndReadBack) {
  switchyard::CompareConfig c;
  ASSERT_TRUE(parse_text_config("a: \"x.npy\" rtol: 1e-5", "c.pbtxt", &c).ok());
  ASSERT_TRUE(apply_override(&c, "b=y.npy").ok());  // a bare string
  EXPECT_EQ(c.b(), "y.npy");
  EXPECT_EQ(c.atol(), 0.0);
  EXPECT_FALSE(c.has_atol());
  fill_defaults(&c);
  const std::string text = config_text(c);
  EXPECT_NE(text.find("atol: 0"), std::string::npos) << text;
  switchyard::CompareConfig back;
  ASSERT_TRUE(parse_text_config(text, "printed", &back).ok());
  EXPECT_EQ(config_text(back), text);
  EXPECT_TRUE(validate_compare_config(back).ok());
  EXPECT_EQ(config_field_kind(switchyard::CompareConfig::default_instance(), "atol"), "FLOAT");

  switchyard::ReportConfig r;
  ASSERT_TRUE(apply_override(&r, "dir=out/run").ok());
  ASSERT_TRUE(set_config_field(&r, "quiet", "true", "--quiet").ok());
  fill_defaults(&r);
  const std::string rtext = config_text(r);
  EXPECT_NE(rtext.find("out: \"\""), std::string::npos) << rtext;
  EXPECT_NE(rtext.find("quiet: true"), std::string::npos) << rtext;
  switchyard::ReportConfig rback;
  ASSERT_TRUE(parse_text_config(rtext, "printed", &rback).ok());
  EXPECT_EQ(config_text(rback), rtext);
  EXPECT_TRUE(validate_report_config(rback).ok());
  EXPECT_EQ(config_field_text(switchyard::ReportConfig::default_instance(), "quiet"), "false");
}

// The settings agree_settings compares across ranks: every field of the printed config by its
// path, so a mismatch can name it.
TEST(ConfigSettings, FlattensNestedAndRepeatedFields) {
  const std::vector<Setting> s = config_settings(
      "lr: 0.001\nmoe {\n  d_model: 256\n  router {\n    name: \"mlp\"\n  }\n}\n"
      "sets: \"a\"\nsets: \"b\"\ndata {\n  corpus: \"x: y\"\n}\n");
  ASSERT_EQ(s.size(), 6u);
  EXPECT_EQ(s[0].name, "lr");
  EXPECT_EQ(s[0].value, "0.001");
  EXPECT_EQ(s[1].name, "moe.d_model");
  EXPECT_EQ(s[2].name, "moe.router.name");
  EXPECT_EQ(s[2].value, "\"mlp\"");
  EXPECT_EQ(s[3].name, "sets");
  EXPECT_EQ(s[4].name, "sets[1]");
  EXPECT_EQ(s[4].value, "\"b\"");
  EXPECT_EQ(s[5].name, "data.corpus");
  EXPECT_EQ(s[5].value, "\"x: y\"");
  // A real config: every line is one setting.
  switchyard::TrainConfig t;
  t.set_lr(2e-3);
  t.mutable_distill()->set_iterations(7);
  const std::vector<Setting> ts = config_settings(config_text(t));
  ASSERT_EQ(ts.size(), 2u);
  EXPECT_EQ(ts[0].name, "lr");
  EXPECT_EQ(ts[1].name, "distill.iterations");
  EXPECT_EQ(ts[1].value, "7");
}

}  // namespace
}  // namespace sy::launch
