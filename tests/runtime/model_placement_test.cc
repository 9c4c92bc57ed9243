// A placement file for a checkpoint's MoE layers (ModelPlacement, `moe.placement`): what it is
// checked against, and a 1-rank model with a permuted placement (its experts laid out in the
// file's order, through the dispatcher over itself) giving the contiguous model's logits
// bitwise. Several ranks: tests/launch/models_e2e.sh.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "comm/local_communicator.h"
#include "runtime/backend/backend.h"
#include "runtime/model/model.h"
#include "runtime/model/qwen2_moe.h"
#include "tests/runtime/qwen_test_util.h"

namespace sy {
namespace {

ModelPlacement Placed(int64_t E, std::vector<std::vector<int32_t>> experts_of_rank) {
  auto p = std::make_shared<ExpertPlacement>();
  p->num_experts = E;
  p->ranks = static_cast<int>(experts_of_rank.size());
  p->experts_of_rank = std::move(experts_of_rank);
  return {p, "/some/perm.json"};
}

// The check's message, or "" when it passes.
std::string Refusal(const ModelPlacement& p, int64_t E, int P) {
  const Status st = p.check(E, P);
  if (st.ok()) return "";
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << st.ToString();
  return st.message();
}

TEST(ModelPlacement, TakesOneCopyOfEachExpertEPerRank) {
  EXPECT_EQ(Refusal(ModelPlacement(), 8, 4), "");  // no file: contiguous, any run
  EXPECT_EQ(Refusal(ModelPlacement(), 0, 1), "");
  EXPECT_EQ(Refusal(Placed(8, {{7, 2, 5, 0}, {3, 6, 1, 4}}), 8, 2), "");
  EXPECT_EQ(Refusal(Placed(4, {{3, 1, 0, 2}}), 4, 1), "");
}

TEST(ModelPlacement, RefusesAnotherRunNamingTheFile) {
  const ModelPlacement p = Placed(8, {{7, 2, 5, 0}, {3, 6, 1, 4}});
  const std::string want = "moe.placement /some/perm.json: places 8 experts on 2 ranks; ";
  EXPECT_EQ(Refusal(p, 8, 4), want + "this run has 8 experts per MoE layer on 4 ranks");
  EXPECT_EQ(Refusal(p, 16, 2), want + "this run has 16 experts per MoE layer on 2 ranks");
  EXPECT_EQ(Refusal(p, 0, 2), want + "this run has 0 experts per MoE layer on 2 ranks");
  // Replicas (projections only) and an uneven split: the placement's own message, named.
  const std::string replicas = Refusal(Placed(4, {{0, 1, 2}, {2, 3}}), 4, 2);
  EXPECT_EQ(replicas.rfind("moe.placement /some/perm.json: placement: expert 2 is on 2 ranks", 0),
            0u)
      << replicas;
  const std::string uneven = Refusal(Placed(4, {{0, 1, 2}, {3}}), 4, 2);
  EXPECT_EQ(uneven.rfind("moe.placement /some/perm.json: placement: ", 0), 0u) << uneven;
}

TEST(ModelPlacement, PermutedOneRankQwenIsBitwiseContiguous) {
  const std::string dir = TempModelDir("qwen_placed");
  ASSERT_TRUE(write_random_qwen2_moe_checkpoint(dir, SmallTrainConfig(), 21).ok());
  LocalCommunicator comm;
  Qwen2MoeOptions opt;
  opt.exec = make_context("cpu", /*deterministic=*/true);
  auto contiguous = LoadQwen(dir, opt, &comm);
  opt.placement = Placed(8, {{6, 1, 7, 3, 0, 5, 2, 4}});
  auto placed = LoadQwen(dir, opt, &comm);
  opt.placement = Placed(8, {{0, 1}, {2, 3}, {4, 5}, {6, 7}});  // for 4 ranks
  auto ck = HfCheckpoint::Open(dir);
  ASSERT_TRUE(ck.ok());
  const Status wrong = Qwen2MoeModel::load(*ck, opt, &comm).status();
  std::filesystem::remove_all(dir);
  ASSERT_TRUE(contiguous && placed);
  EXPECT_EQ(wrong.code(), StatusCode::kInvalidArgument) << wrong.ToString();
  for (MoeLayer* l : placed->sparse_layers())
    EXPECT_EQ(l->local_expert_ids(), (std::vector<int32_t>{6, 1, 7, 3, 0, 5, 2, 4}));
  std::vector<int32_t> ids(20);
  for (size_t t = 0; t < ids.size(); ++t) ids[t] = static_cast<int32_t>((t * 37 + 5) % 64);
  Tensor a, b;
  ASSERT_TRUE(contiguous->forward(ids.data(), 20, &a).ok());
  ASSERT_TRUE(placed->forward(ids.data(), 20, &b).ok());
  ASSERT_EQ(a.numel(), b.numel());
  EXPECT_EQ(0, std::memcmp(a.ptr(), b.ptr(), a.data.size() * sizeof(float)));
}

}  // namespace
}  // namespace sy
