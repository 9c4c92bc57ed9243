#include "comm/fault.h"

#include <gtest/gtest.h>

namespace sy {
namespace {

TEST(FaultParse, EmptyIsNoFaults) {
  auto f = parse_faults("");
  ASSERT_TRUE(f.ok());
  EXPECT_TRUE(f->empty());
  EXPECT_TRUE(parse_faults(" ; ")->empty());
}

TEST(FaultParse, FullSpec) {
  auto f = parse_faults("nan_logits@rank=1,step=2,layer=0,arg=x");
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  ASSERT_EQ(f->size(), 1u);
  const FaultSpec& s = (*f)[0];
  EXPECT_EQ(s.kind, FaultKind::kNanLogits);
  EXPECT_EQ(s.rank, 1);
  EXPECT_EQ(s.step, 2);
  EXPECT_EQ(s.layer, 0);
  EXPECT_EQ(s.arg, "x");
}

TEST(FaultParse, StepAndLayerDefaultToAny) {
  auto f = parse_faults("slow@rank=1,arg=1000ms");
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  const FaultSpec& s = (*f)[0];
  EXPECT_EQ(s.step, -1);
  EXPECT_EQ(s.layer, -1);
  EXPECT_TRUE(s.matches(FaultKind::kSlow, 1, 0, -1));
  EXPECT_TRUE(s.matches(FaultKind::kSlow, 1, 99, 3));
  EXPECT_FALSE(s.matches(FaultKind::kSlow, 0, 1, -1));
  EXPECT_FALSE(s.matches(FaultKind::kHang, 1, 1, -1));
}

TEST(FaultParse, MatchesStepAndLayer) {
  const FaultSpec s = (*parse_faults("inf_grad@rank=0,step=3,layer=1"))[0];
  EXPECT_TRUE(s.matches(FaultKind::kInfGrad, 0, 3, 1));
  EXPECT_FALSE(s.matches(FaultKind::kInfGrad, 0, 2, 1));
  EXPECT_FALSE(s.matches(FaultKind::kInfGrad, 0, 3, 0));
  EXPECT_FALSE(s.matches(FaultKind::kInfGrad, 0, 3, -1));  // outside any layer
}

TEST(FaultParse, EveryKnownKind) {
  const char* kinds[] = {"kill",      "abort",      "throw",         "exit",
                         "hang",      "nan_logits", "inf_grad",      "corrupt_count",
                         "oom",       "enospc",     "crash_in_save", "bitflip_on_write",
                         "abort_hang"};
  for (const char* k : kinds) {
    auto f = parse_faults(std::string(k) + "@rank=0,step=1");
    ASSERT_TRUE(f.ok()) << k << ": " << f.status().ToString();
    EXPECT_STREQ(fault_kind_name((*f)[0].kind), k);
  }
  EXPECT_TRUE(parse_faults("slow@rank=0,arg=5ms").ok());
}

TEST(FaultParse, SeveralFaults) {
  auto f = parse_faults("kill@rank=1,step=3; inf_grad@rank=0,step=2");
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  ASSERT_EQ(f->size(), 2u);
  EXPECT_EQ((*f)[0].kind, FaultKind::kKill);
  EXPECT_EQ((*f)[1].kind, FaultKind::kInfGrad);
  EXPECT_EQ((*f)[1].rank, 0);
}

void expect_error(const std::string& text, const std::string& fragment) {
  auto f = parse_faults(text);
  ASSERT_FALSE(f.ok()) << text;
  EXPECT_EQ(f.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(f.status().exit_code(), kExitConfig);
  EXPECT_NE(f.status().message().find(fragment), std::string::npos)
      << text << " -> " << f.status().message();
}

TEST(FaultParse, Errors) {
  expect_error("explode@rank=0", "unknown kind 'explode'");
  expect_error("explode@rank=0", "known: kill, abort");
  expect_error("kill", "expected <kind>@rank=");
  expect_error("kill@step=1", "rank=<r> is required");
  expect_error("kill@rank=x", "bad rank 'x'");
  expect_error("kill@rank=-1", "bad rank");
  expect_error("kill@rank=0,step=1.5", "bad step");
  expect_error("kill@rank=0,layer=", "bad layer");
  expect_error("kill@rank=0,when=3", "unknown key 'when'");
  expect_error("kill@rank=0,step", "is not key=value");
  expect_error("slow@rank=0", "slow needs arg");
  expect_error("slow@rank=0,arg=3h", "bad duration unit");
  expect_error("exit@rank=0,arg=300", "exit arg");
  expect_error("corrupt_count@rank=0,arg=x", "corrupt_count arg");
  expect_error("corrupt_count@rank=0,arg=0", "non-zero integer delta");
  EXPECT_TRUE(parse_faults("corrupt_count@rank=1,step=1,layer=0,arg=-3").ok());
  expect_error("kill@rank=0;bogus@rank=1", "unknown kind 'bogus'");
}

TEST(FaultParse, Durations) {
  EXPECT_DOUBLE_EQ(parse_duration_seconds("1000ms").value(), 1.0);
  EXPECT_DOUBLE_EQ(parse_duration_seconds("2s").value(), 2.0);
  EXPECT_DOUBLE_EQ(parse_duration_seconds("250us").value(), 250e-6);
  EXPECT_DOUBLE_EQ(parse_duration_seconds("40").value(), 0.04);  // bare = ms
  EXPECT_FALSE(parse_duration_seconds("").ok());
  EXPECT_FALSE(parse_duration_seconds("-1s").ok());
  EXPECT_FALSE(parse_duration_seconds("fast").ok());
}

// Without SY_FAULT (ctest does not set it) nothing fires and injection is a no-op.
TEST(FaultActive, UnsetMeansNothingFires) {
  if (std::getenv("SY_FAULT")) GTEST_SKIP() << "SY_FAULT is set in this environment";
  EXPECT_TRUE(active_faults().empty());
  EXPECT_FALSE(fault_fires(FaultKind::kKill, 0, 0));
  inject_process_faults(0, 0);
}

}  // namespace
}  // namespace sy
