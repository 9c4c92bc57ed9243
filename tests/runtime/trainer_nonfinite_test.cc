// Non-finite detection of the training step on one rank (runtime/train/trainer.h): a real NaN
// (a poisoned embedding row) and each injected fault are found at the right stage and layer;
// kSkip leaves weights and AdamW state bitwise unchanged and later steps train; kStop returns
// kNonFinite (exit code 24); the consecutive-skip limit stops; a resumed step index is the one
// faults and messages use. (Agreement across ranks: tests/moe_mpi/trainer_nonfinite_parallel_test.)
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <limits>

#include "runtime/io/hf_checkpoint.h"
#include "runtime/train/trainer.h"
#include "tests/runtime/qwen_test_util.h"

namespace sy {
namespace {
using json = nlohmann::json;
namespace fs = std::filesystem;

std::vector<std::vector<int32_t>> Batch(int step) {
  std::vector<std::vector<int32_t>> out;
  for (int s = 0; s < 2; ++s) {
    std::vector<int32_t> seq;
    for (int t = 0; t < 10 + s; ++t) seq.push_back((t * 13 + s * 7 + step * 5) % 64);
    out.push_back(seq);
  }
  return out;
}

std::vector<std::vector<float>> Weights(Qwen2MoeModel& m) {
  std::vector<std::vector<float>> w;
  for (Qwen2MoeParam& p : m.parameters()) w.push_back(p.value->data);
  return w;
}

FaultSpec Fault(FaultKind kind, int64_t step, int layer) {
  FaultSpec f;
  f.kind = kind;
  f.rank = 0;
  f.step = step;
  f.layer = layer;
  return f;
}

class TrainerNonFinite : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = TempModelDir("trainnan1");
    json cfg = SmallTrainConfig();
    ASSERT_TRUE(write_random_qwen2_moe_checkpoint(dir_, cfg, 71).ok());
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::unique_ptr<Qwen2MoeModel> Load(Qwen2MoeTrain what = Qwen2MoeTrain::kAll) {
    return LoadQwen(dir_, what);
  }
  static AdamWConfig Adam() {
    AdamWConfig ac;
    ac.lr = 1e-2;
    ac.total_steps = 10;
    return ac;
  }

  // Two clean steps, then step 2 under `faults` must be skipped with `expected`, leaving weights
  // and the optimizer bitwise as they were; step 3 trains again.
  void ExpectSkipAtStep2(const std::vector<FaultSpec>& faults, const std::string& expected,
                         Qwen2MoeTrain what = Qwen2MoeTrain::kAll) {
    auto m = Load(what);
    Trainer tr(*m, nullptr, Adam());
    tr.set_faults(faults);
    for (int s = 0; s < 2; ++s) {
      auto r = tr.step(Batch(s));
      ASSERT_TRUE(r.ok() && !r->skipped) << "step " << s;
    }
    const auto w = Weights(*m);
    const AdamW::State st = tr.optimizer().state();
    auto r = tr.step(Batch(2));
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_TRUE(r->skipped);
    EXPECT_EQ(r->step, 2);
    EXPECT_EQ(r->nonfinite, expected);
    EXPECT_EQ(Weights(*m), w) << "a skipped step changed weights";
    EXPECT_EQ(tr.optimizer().state().step, st.step) << "AdamW counted a skipped step";
    EXPECT_EQ(tr.optimizer().state().moments, st.moments);
    for (Qwen2MoeParam& p : m->parameters()) {
      if (!p.grad) continue;
      for (float g : p.grad->data) ASSERT_EQ(g, 0.0f) << p.name << ": gradient not zeroed";
    }
    EXPECT_EQ(tr.skipped_steps(), 1);
    auto next = tr.step(Batch(3));
    ASSERT_TRUE(next.ok());
    EXPECT_FALSE(next->skipped);
    EXPECT_TRUE(std::isfinite(next->loss) && std::isfinite(next->grad_norm));
    EXPECT_NE(Weights(*m), w);
    EXPECT_EQ(tr.optimizer().step(), 3);
    EXPECT_EQ(tr.step_index(), 4);
  }

  std::string dir_;
};

TEST(NonFinitePolicy, Parse) {
  EXPECT_EQ(*parse_nonfinite_policy("skip"), NonFinitePolicy::kSkip);
  EXPECT_EQ(*parse_nonfinite_policy("stop"), NonFinitePolicy::kStop);
  EXPECT_FALSE(parse_nonfinite_policy("abort").ok());
  EXPECT_STREQ(nonfinite_policy_name(NonFinitePolicy::kStop), "stop");
}

TEST_F(TrainerNonFinite, CleanStepsAreNotSkipped) {
  auto m = Load();
  Trainer tr(*m, nullptr, Adam());
  tr.set_faults({});
  for (int s = 0; s < 3; ++s) {
    auto r = tr.step(Batch(s));
    ASSERT_TRUE(r.ok());
    EXPECT_FALSE(r->skipped);
    EXPECT_TRUE(r->nonfinite.empty());
  }
}

TEST_F(TrainerNonFinite, InjectedFaultsAreNamed) {
  ExpectSkipAtStep2({Fault(FaultKind::kNanLogits, 2, -1)},
                    "non-finite logits on rank 0, layer -1, step 2");
  ExpectSkipAtStep2({Fault(FaultKind::kNanLogits, 2, 1)},
                    "non-finite router scores on rank 0, layer 1, step 2");
  ExpectSkipAtStep2({Fault(FaultKind::kInfGrad, 2, 0)},
                    "non-finite gradient on rank 0, layer 0, step 2 "
                    "(model.layers.0.mlp.gate.weight)");
  // Router-only training: only router gradients exist; the same fault, the same verdict.
  ExpectSkipAtStep2({Fault(FaultKind::kInfGrad, 2, -1)},
                    "non-finite gradient on rank 0, layer 0, step 2 "
                    "(model.layers.0.mlp.gate.weight)",
                    Qwen2MoeTrain::kRouters);
}

// Not a fault hook: a NaN in the weights reaches layer 0's router first.
TEST_F(TrainerNonFinite, RealNanIsFoundAtTheFirstRouter) {
  auto m = Load();
  Trainer tr(*m, nullptr, Adam());
  tr.set_faults({});
  Tensor* embed = m->parameters()[0].value;
  ASSERT_EQ(m->parameters()[0].name, "model.embed_tokens.weight");
  const int32_t tok = Batch(0)[0][3];
  const float saved = embed->data[static_cast<size_t>(tok) * 32];
  embed->data[static_cast<size_t>(tok) * 32] = std::numeric_limits<float>::quiet_NaN();
  auto r = tr.step(Batch(0));
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->skipped);
  EXPECT_EQ(r->nonfinite, "non-finite router scores on rank 0, layer 0, step 0");
  embed->data[static_cast<size_t>(tok) * 32] = saved;
  auto next = tr.step(Batch(1));
  ASSERT_TRUE(next.ok());
  EXPECT_FALSE(next->skipped);
}

TEST_F(TrainerNonFinite, StopPolicyReturnsNonFinite) {
  auto m = Load();
  Trainer tr(*m, nullptr, Adam());
  tr.set_nonfinite_policy(NonFinitePolicy::kStop);
  tr.set_faults({Fault(FaultKind::kInfGrad, 1, 1)});
  ASSERT_TRUE(tr.step(Batch(0)).ok());
  const auto w = Weights(*m);
  auto r = tr.step(Batch(1));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kNonFinite);
  EXPECT_EQ(r.status().exit_code(), 24);
  EXPECT_EQ(r.status().message(),
            "non-finite gradient on rank 0, layer 1, step 1 (model.layers.1.mlp.gate.weight)");
  EXPECT_EQ(Weights(*m), w);
  EXPECT_EQ(tr.optimizer().step(), 1);
}

TEST_F(TrainerNonFinite, ConsecutiveSkipLimitStops) {
  auto m = Load();
  Trainer tr(*m, nullptr, Adam());
  tr.set_nonfinite_policy(NonFinitePolicy::kSkip, 2);
  FaultSpec every = Fault(FaultKind::kNanLogits, -1, -1);  // every step
  tr.set_faults({every});
  auto a = tr.step(Batch(0));
  ASSERT_TRUE(a.ok());
  EXPECT_TRUE(a->skipped);
  auto b = tr.step(Batch(1));
  ASSERT_FALSE(b.ok());
  EXPECT_EQ(b.status().code(), StatusCode::kNonFinite);
  EXPECT_EQ(b.status().message(),
            "non-finite logits on rank 0, layer -1, step 1: 2 consecutive steps skipped "
            "(limit 2)");
  // A clean step in between resets the count.
  auto m2 = Load();
  Trainer t2(*m2, nullptr, Adam());
  t2.set_nonfinite_policy(NonFinitePolicy::kSkip, 2);
  t2.set_faults({Fault(FaultKind::kNanLogits, 0, -1), Fault(FaultKind::kNanLogits, 2, -1)});
  for (int s = 0; s < 3; ++s) {
    auto r = t2.step(Batch(s));
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_EQ(r->skipped, s != 1);
  }
}

TEST_F(TrainerNonFinite, ResumedStepIndexNamesTheStep) {
  auto m = Load();
  Trainer tr(*m, nullptr, Adam());
  tr.set_step_index(10);
  tr.set_faults({Fault(FaultKind::kNanLogits, 11, -1)});
  auto a = tr.step(Batch(0));
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->step, 10);
  EXPECT_FALSE(a->skipped);
  auto b = tr.step(Batch(1));
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->step, 11);
  EXPECT_EQ(b->nonfinite, "non-finite logits on rank 0, layer -1, step 11");
  EXPECT_EQ(tr.step_index(), 12);
}

}  // namespace
}  // namespace sy
