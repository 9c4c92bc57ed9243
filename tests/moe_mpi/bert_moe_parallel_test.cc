// "P ranks give the same logits as 1 rank" for the BERT-MoE encoder (ctest: mpiexec with 1, 2
// and 4 ranks): every rank writes the same random checkpoint (its own copy, from the same
// seed), loads it twice - the 1-rank reference (comm = null: all E experts) and the expert-
// parallel model over the world communicator (E/P experts) - runs the same tokens through
// both and compares.
//
// What must hold: the logits and final hidden states are BITWISE equal (memcmp). Attention,
// embeddings, dense FFNs and the head are replicated and computed identically on every rank;
// the MoE layers run token-sharded (TokenShardedMoe) with dropless capacity, and main() turns
// on row-stable GEMMs, so every token's expert output has the bits of the 1-rank batch. Each
// rank holds exactly E/P experts (the slice [r*E/P, (r+1)*E/P)) and 1/P of the expert bytes.
//
// Every rank reaches every collective (EXPECT, never ASSERT, between forwards).
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "runtime/core/rng.h"
#include "runtime/kernels/cpu_kernels.h"
#include "runtime/model/bert_moe.h"
#include "tests/comm/mpi_test_main.h"

namespace sy {
namespace {
using json = nlohmann::json;
namespace fs = std::filesystem;

MpiCommunicator* g_comm = nullptr;

struct Case {
  std::string name;
  bool moe_checkpoint = false;  // false: a dense BERT upcycled at load
  int64_t layers = 2, experts = 4, top_k = 2, moe_every = 1, T = 13;
  std::string router = "linear";
  float noise = 0.1f;
  int bits = 32;
  bool padding = false;
};

json CaseConfig(const Case& c) {
  json j{{"vocab_size", 64},         {"hidden_size", 32},       {"num_hidden_layers", c.layers},
         {"num_attention_heads", 4}, {"intermediate_size", 64}, {"max_position_embeddings", 32},
         {"initializer_range", 0.1}};
  if (c.moe_checkpoint) {
    j["num_experts"] = c.experts;
    j["moe_every"] = c.moe_every;
    j["num_experts_per_tok"] = c.top_k;
  }
  return j;
}

void RunCase(const Case& c) {
  SCOPED_TRACE("case " + c.name + " (rank " + std::to_string(g_comm->rank()) + " of " +
               std::to_string(g_comm->size()) + ")");
  const int P = g_comm->size(), r = g_comm->rank();
  const std::string dir =
      (fs::temp_directory_path() / ("bert_moe_par_" + std::to_string(::getpid()) + "_" + c.name))
          .string();
  const Status ws = write_random_bert_checkpoint(dir, CaseConfig(c), 17, c.moe_checkpoint);
  EXPECT_TRUE(ws.ok()) << ws.ToString();
  auto ck = HfCheckpoint::Open(dir);
  EXPECT_TRUE(ck.ok()) << ck.status().ToString();
  if (!ws.ok() || !ck.ok()) return;  // the same on every rank: nobody reaches a collective
  BertMoeOptions opt;
  opt.exec = sy::make_context("cpu", /*deterministic=*/true);  // row-stable GEMMs
  if (!c.moe_checkpoint) {
    opt.num_experts = c.experts;
    opt.top_k = c.top_k;
    opt.moe_every = c.moe_every;
    opt.upcycle_noise = c.noise;
    opt.router.name = c.router;
    opt.router.init_std = 0.5f;
  }
  opt.expert_bits = c.bits;
  opt.capacity_factor = 0.0;  // dropless
  auto ref = BertMoeModel::load(*ck, opt, nullptr);
  auto par = BertMoeModel::load(*ck, opt, g_comm);
  fs::remove_all(dir);
  EXPECT_TRUE(ref.ok()) << ref.status().ToString();
  EXPECT_TRUE(par.ok()) << par.status().ToString();
  if (!ref.ok() || !par.ok()) return;

  // Each rank holds its E/P experts, and only those.
  const int64_t e = c.experts / P;
  const std::vector<MoeLayer*> layers = (*par)->moe_layers();
  EXPECT_FALSE(layers.empty());
  for (MoeLayer* l : layers) {
    EXPECT_EQ(l->num_local_experts(), e);
    EXPECT_EQ(l->first_local_expert(), r * e);
    EXPECT_EQ(l->experts().config().num_experts, e);
    if (c.bits == 32) {
      EXPECT_EQ(l->find_param("experts.fc1")->value.shape[0], e);
    } else {
      EXPECT_EQ(l->experts().quantized_fc1().size(), static_cast<size_t>(e));
    }
  }
  EXPECT_EQ((*par)->memory().expert_bytes * P, (*ref)->memory().expert_bytes);

  std::vector<int32_t> ids(static_cast<size_t>(c.T)), types(ids.size(), 0);
  Rng rng(99);
  for (int32_t& v : ids) v = static_cast<int32_t>(rng.below(64));
  for (size_t t = ids.size() / 2; t < ids.size(); ++t) types[t] = 1;
  std::vector<uint8_t> mask(ids.size(), 1);
  if (c.padding)
    for (size_t t = ids.size() - 3; t < ids.size(); ++t) mask[t] = 0;
  Tensor l1, lp;
  const Status s1 = (*ref)->forward(ids.data(), types.data(), c.T, &l1, mask.data());
  const Status sp = (*par)->forward(ids.data(), types.data(), c.T, &lp, mask.data());
  EXPECT_TRUE(s1.ok()) << s1.ToString();
  EXPECT_TRUE(sp.ok()) << sp.ToString();
  EXPECT_EQ(l1.shape, lp.shape);
  EXPECT_EQ(l1.numel(), c.T * 64);
  if (l1.numel() == lp.numel()) {
    EXPECT_EQ(0, std::memcmp(l1.ptr(), lp.ptr(), l1.data.size() * sizeof(float)))
        << "logits differ from the 1-rank model";
  }
  const Tensor& h1 = (*ref)->last_hidden();
  const Tensor& hp = (*par)->last_hidden();
  EXPECT_EQ(h1.data, hp.data) << "hidden states differ from the 1-rank model";
  // The exchange really moved rows: the routed assignments of all ranks add up to T * K per
  // MoE layer (dropless).
  int64_t kept = 0;
  for (MoeLayer* l : layers) kept += l->plan().total_kept;
  g_comm->allreduce(&kept, 1, ReduceOp::kSum, {"test.kept"});
  EXPECT_EQ(kept, static_cast<int64_t>(layers.size()) * c.T * c.top_k);
}

TEST(BertMoeParallel, UpcycledLinearTop2) {
  Case c;
  c.name = "up_linear";
  RunCase(c);
}

TEST(BertMoeParallel, UpcycledHashTop1EveryOtherLayerWithPadding) {
  Case c;
  c.name = "up_hash";
  c.layers = 4;
  c.moe_every = 2;
  c.experts = 8;
  c.top_k = 1;
  c.router = "hash";
  c.padding = true;
  RunCase(c);
}

TEST(BertMoeParallel, MoeCheckpointFewTokens) {
  Case c;
  c.name = "moe_ck";
  c.moe_checkpoint = true;
  c.layers = 4;
  c.moe_every = 2;
  c.T = 3;  // with 4 ranks one rank routes no token
  RunCase(c);
}

TEST(BertMoeParallel, MoeCheckpointInt8Experts) {
  Case c;
  c.name = "moe_int8";
  c.moe_checkpoint = true;
  c.bits = 8;
  c.T = 21;
  RunCase(c);
}

TEST(BertMoeParallel, UpcycledMlpRouterInt4) {
  Case c;
  c.name = "up_mlp_int4";
  c.router = "mlp";
  c.bits = 4;
  RunCase(c);
}

}  // namespace
}  // namespace sy

int main(int argc, char** argv) {
  return sy::testutil::run_all_tests_mpi(&argc, &argv, &sy::g_comm);
}
