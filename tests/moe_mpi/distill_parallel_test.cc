// The distillation warm start (runtime/train/distill.h) on P ranks against 1 rank: the same 4
// sequences, split over the ranks (rank r: sequences r, r+P, ...), every rank loading the same
// tiny checkpoint (written by each rank into its own folder) expert-parallel; the reference loads
// it alone and sees all 4 sequences. The fitted students must agree with the reference within float
// rounding of the cross-rank gradient sums (the order of the sums differs with P), amplified over
// the Adam iterations: parameters within 1e-4 of the largest one (measured up to 6e-6 on 2 and
// 4 ranks), KL within 1e-4 relative. The same for a BERT-MoE encoder (warm_start_routers on any
// Model, through its set_moe_input_capture).
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>

#include "runtime/io/hf_checkpoint.h"
#include "runtime/kernels/cpu_kernels.h"
#include "runtime/model/bert_moe.h"
#include "runtime/model/qwen2_moe.h"
#include "runtime/train/distill.h"
#include "tests/comm/mpi_test_main.h"
#include "tests/runtime/qwen_test_util.h"

namespace sy {
namespace {
using json = nlohmann::json;
namespace fs = std::filesystem;

MpiCommunicator* g_comm = nullptr;

// The sequences of the test: `all` for the reference, this rank's share in `mine`.
void Sequences(int64_t vocab, std::vector<std::vector<int32_t>>* all,
               std::vector<std::vector<int32_t>>* mine) {
  const int P = g_comm->size(), r = g_comm->rank();
  for (int s = 0; s < 4; ++s) {
    std::vector<int32_t> seq;
    for (int t = 0; t < 24 + 3 * s; ++t)
      seq.push_back(static_cast<int32_t>((t * 13 + s * 7 + t * t) % vocab));
    if (s % P == r) mine->push_back(seq);
    all->push_back(seq);
  }
}

// Warm-starts `router` on the reference (1 rank, all sequences) and on the P ranks (their own
// sequences) and compares the fitted students.
void ExpectSameWarmStart(Model& ref, Model& par, const char* router,
                         const std::vector<std::vector<int32_t>>& all,
                         const std::vector<std::vector<int32_t>>& mine) {
  const int P = g_comm->size(), r = g_comm->rank();
  DistillConfig dc;
  dc.iterations = 100;
  dc.max_tokens = 0;  // all: the ranks' tokens together are the reference's
  auto a = warm_start_routers(ref, nullptr, router, 3, 16, all, dc);
  auto b = warm_start_routers(par, g_comm, router, 3, 16, mine, dc);
  ASSERT_TRUE(a.ok() && b.ok()) << a.status().ToString() << " " << b.status().ToString();
  if (r == 0)
    std::printf("P=%d %s %s", P, ref.model_type().c_str(), format_distill_report(*b).c_str());
  EXPECT_EQ(a->tokens, b->tokens);
  ASSERT_EQ(a->layers.size(), b->layers.size());
  ASSERT_FALSE(a->layers.empty());
  for (size_t l = 0; l < a->layers.size(); ++l) {
    const DistillLayerReport &x = a->layers[l], &y = b->layers[l];
    EXPECT_NEAR(x.before.kl, y.before.kl, 1e-6 * x.before.kl) << router << " layer " << l;
    EXPECT_NEAR(x.after.kl, y.after.kl, 1e-4 * x.after.kl) << router << " layer " << l;
    EXPECT_LT(y.after.kl, 0.5 * y.before.kl) << router << " layer " << l;
  }
  double worst_ratio = 0;
  std::vector<MoeLayer*> la = ref.sparse_layers(), lb = par.sparse_layers();
  ASSERT_EQ(la.size(), lb.size());
  for (size_t l = 0; l < la.size(); ++l) {
    auto& pa = la[l]->router().params();
    auto& pb = lb[l]->router().params();
    ASSERT_EQ(pa.size(), pb.size());
    for (size_t i = 0; i < pa.size(); ++i) {
      double worst = 0, scale = 0;
      for (size_t j = 0; j < pa[i].value.data.size(); ++j) {
        worst = std::max(worst, std::fabs(double{pa[i].value.data[j]} - pb[i].value.data[j]));
        scale = std::max(scale, std::fabs(double{pa[i].value.data[j]}));
      }
      EXPECT_LE(worst, 1e-4 * scale) << router << " layer " << l << " " << pa[i].name;
      worst_ratio = std::max(worst_ratio, worst / scale);
    }
  }
  if (r == 0)
    std::printf("P=%d %s %s: largest parameter difference from 1 rank %.2e of the largest value\n",
                P, ref.model_type().c_str(), router, worst_ratio);
}

TEST(DistillParallel, PRanksMatchOneRank) {
  const std::string dir = TempModelDir("distillpar");
  json cfg = SmallTrainConfig();
  cfg["initializer_range"] = 0.2;
  ASSERT_TRUE(write_random_qwen2_moe_checkpoint(dir, cfg, 61).ok());
  auto ck = HfCheckpoint::Open(dir);
  ASSERT_TRUE(ck.ok());
  std::vector<std::vector<int32_t>> all, mine;
  Sequences(64, &all, &mine);
  for (const char* router : {"attention", "mlp_hadamard"}) {
    Qwen2MoeOptions opt;
    opt.exec = sy::make_context("cpu", /*deterministic=*/true);  // row-stable GEMMs
    opt.train = Qwen2MoeTrain::kRouters;
    auto ref = Qwen2MoeModel::load(*ck, opt, nullptr);
    auto par = Qwen2MoeModel::load(*ck, opt, g_comm);
    ASSERT_TRUE(ref.ok() && par.ok());
    ExpectSameWarmStart(**ref, **par, router, all, mine);
  }
  fs::remove_all(dir);
}

TEST(DistillParallel, BertMoePRanksMatchOneRank) {
  const std::string dir = TempModelDir("distillpar-bert");
  const json cfg = {{"vocab_size", 64},         {"hidden_size", 32},
                    {"num_hidden_layers", 2},   {"num_attention_heads", 2},
                    {"intermediate_size", 64},  {"max_position_embeddings", 64},
                    {"num_experts", 4},         {"moe_every", 1},
                    {"num_experts_per_tok", 2}, {"initializer_range", 0.2}};
  ASSERT_TRUE(write_random_bert_checkpoint(dir, cfg, 61, /*moe=*/true).ok());
  auto ck = HfCheckpoint::Open(dir);
  ASSERT_TRUE(ck.ok());
  std::vector<std::vector<int32_t>> all, mine;
  Sequences(64, &all, &mine);
  for (const char* router : {"attention", "mlp"}) {
    BertMoeOptions opt;
    opt.exec = sy::make_context("cpu", /*deterministic=*/true);
    opt.train = ModelTrain::kRouters;
    auto ref = BertMoeModel::load(*ck, opt, nullptr);
    auto par = BertMoeModel::load(*ck, opt, g_comm);
    ASSERT_TRUE(ref.ok() && par.ok()) << ref.status().ToString() << par.status().ToString();
    ExpectSameWarmStart(**ref, **par, router, all, mine);
  }
  fs::remove_all(dir);
}

}  // namespace
}  // namespace sy

int main(int argc, char** argv) {
  return sy::testutil::run_all_tests_mpi(&argc, &argv, &sy::g_comm);
}
