// Backward through the BERT-MoE encoder and its MLM head (issue 12, section 4): the gradient of a
// masked-LM loss (targets at a few positions only) with token types and a padding mask, for every
// parameter kind and for the input embedding rows, against central finite differences, on a
// stored bert_moe checkpoint and on one upcycled from a dense BERT; which parameters a
// router-only run trains; and the masked-LM masking itself (deterministic, 15% / 80-10-10).
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "runtime/io/hf_checkpoint.h"
#include "runtime/kernels/loss.h"
#include "runtime/model/bert_moe.h"
#include "runtime/train/mlm.h"
#include "tests/runtime/moe_test_util.h"

namespace sy {
namespace {
using json = nlohmann::json;
namespace fs = std::filesystem;

constexpr int64_t kV = 40;

// 2 layers (layer 1 MoE when moe), 2 heads of 8, FFN 20, LayerNorm eps 1e-5.
json TinyConfig(bool moe) {
  json c = {{"vocab_size", kV},         {"hidden_size", 16},        {"num_hidden_layers", 2},
            {"num_attention_heads", 2}, {"intermediate_size", 20},  {"max_position_embeddings", 16},
            {"type_vocab_size", 2},     {"initializer_range", 0.3}, {"layer_norm_eps", 1e-5}};
  if (moe) {
    c["num_experts"] = 4;
    c["moe_every"] = 2;
    c["num_experts_per_tok"] = 2;
  }
  return c;
}

std::string WriteTiny(const std::string& tag, bool moe) {
  const std::string dir =
      (fs::temp_directory_path() / ("bert_grad_" + std::to_string(::getpid()) + "_" + tag))
          .string();
  fs::remove_all(dir);
  SY_CHECK(write_random_bert_checkpoint(dir, TinyConfig(moe), 31, moe).ok());
  return dir;
}

// stored: a bert_moe checkpoint; else a dense one upcycled to 4 noisy experts every 2 layers.
std::unique_ptr<BertMoeModel> LoadTiny(const std::string& dir, bool stored, ModelTrain train) {
  auto ck = HfCheckpoint::Open(dir);
  SY_CHECK(ck.ok()) << ck.status().ToString();
  BertMoeOptions opt;
  opt.train = train;
  if (!stored) {
    opt.num_experts = 4;
    opt.moe_every = 2;
    opt.top_k = 2;
    opt.upcycle_noise = 0.2f;
    opt.router.init_std = 0.3f;
  }
  auto m = BertMoeModel::load(*ck, opt, nullptr);
  SY_CHECK(m.ok()) << m.status().ToString();
  return std::move(m).value();
}

struct Batch {
  std::vector<int32_t> ids, types, targets;
  std::vector<uint8_t> mask;
};

// 12 tokens, the last 3 padding (mask 0), two segments, targets at 4 real positions.
Batch MakeBatch() {
  Batch b;
  for (int t = 0; t < 12; ++t) {
    b.ids.push_back((t * 7 + 3) % kV);
    b.types.push_back(t < 5 ? 0 : 1);
    b.mask.push_back(t < 9 ? 1 : 0);
    b.targets.push_back(t == 1 || t == 4 || t == 6 || t == 8 ? (t * 5 + 1) % kV : -1);
  }
  return b;
}

// Mean loss over the targets, and every MoE layer's top-k choices (a finite difference whose
// perturbation flips one is skipped: the loss is not differentiable there).
double Loss(BertMoeModel& m, const Batch& b, std::vector<int32_t>* routing) {
  Tensor logits;
  const int64_t T = static_cast<int64_t>(b.ids.size());
  SY_CHECK(m.forward(b.ids.data(), b.types.data(), T, &logits, b.mask.data()).ok());
  int64_t n = 0;
  const double sum = cross_entropy_sum(logits.ptr(), b.targets.data(), T, kV, &n);
  routing->clear();
  for (MoeLayer* l : m.moe_layers())
    routing->insert(routing->end(), l->router_output().topk_ids_TK.begin(),
                    l->router_output().topk_ids_TK.end());
  return sum / static_cast<double>(n);
}

Status Backprop(BertMoeModel& m, const Batch& b) {
  const int64_t T = static_cast<int64_t>(b.ids.size());
  m.zero_grad();
  Tensor logits;
  SY_RETURN_IF_ERROR(m.forward(b.ids.data(), b.types.data(), T, &logits, b.mask.data()));
  int64_t n = 0;
  cross_entropy_sum(logits.ptr(), b.targets.data(), T, kV, &n);
  std::vector<float> dlogits(logits.data.size());
  cross_entropy_backward(logits.ptr(), b.targets.data(), T, kV, 1.0f / static_cast<float>(n),
                         dlogits.data());
  return m.backward(dlogits.data());
}

void CheckFiniteDifferences(bool stored) {
  const std::string dir = WriteTiny(stored ? "stored" : "upcycled", stored);
  auto m = LoadTiny(dir, stored, ModelTrain::kAll);
  const Batch b = MakeBatch();
  ASSERT_TRUE(Backprop(*m, b).ok());
  std::vector<int32_t> routing0, routing;
  const double base = Loss(*m, b, &routing0);
  ASSERT_GT(base, 1.0);
  const int64_t D = 16;
  std::map<std::string, int> checked;
  int skipped = 0;
  const float eps = 1e-2f;
  auto check = [&](ModelParam& p, int64_t i) {
    float& w = p.value->data[static_cast<size_t>(i)];
    const float w0 = w;
    w = w0 + eps;
    const double lp = Loss(*m, b, &routing);
    const bool same_p = routing == routing0;
    w = w0 - eps;
    const double lm = Loss(*m, b, &routing);
    const bool same_m = routing == routing0;
    w = w0;
    if (!same_p || !same_m) {
      ++skipped;
      return;
    }
    const double fd = (lp - lm) / (2.0 * eps);
    EXPECT_NEAR(p.grad->data[static_cast<size_t>(i)], fd, 2e-3 + 3e-2 * std::fabs(fd))
        << p.name << "[" << i << "]" << (stored ? " (stored)" : " (upcycled)");
    ++checked[testing_util::ParamKind(p.name)];
  };
  for (ModelParam& p : m->parameters()) {
    ASSERT_NE(p.grad, nullptr) << p.name << " has no gradient in kAll";
    const int64_t numel = p.value->numel();
    for (int64_t s = 0; s < 3; ++s) check(p, (s * 7919 + 13) % numel);
    // The inputs: rows of the sequence's own tokens, positions and token types, including a
    // padding position (its embedding still feeds its own query row).
    const std::string& n = p.name;
    if (n == "bert.embeddings.word_embeddings.weight")
      for (int t : {0, 4, 10}) check(p, b.ids[t] * D + (t * 3) % D);
    if (n == "bert.embeddings.position_embeddings.weight")
      for (int t : {2, 7, 11}) check(p, t * D + (t * 5) % D);
    if (n == "bert.embeddings.token_type_embeddings.weight")
      for (int t : {1, 9}) check(p, b.types[t] * D + t);
  }
  for (const char* kind : {"bert.embeddings.word_embeddings.weight",
                           "bert.embeddings.position_embeddings.weight",
                           "bert.embeddings.token_type_embeddings.weight",
                           "bert.embeddings.LayerNorm.weight",
                           "bert.embeddings.LayerNorm.bias",
                           "bert.encoder.layer.#.attention.self.query.weight",
                           "bert.encoder.layer.#.attention.self.query.bias",
                           "bert.encoder.layer.#.attention.self.key.weight",
                           "bert.encoder.layer.#.attention.self.value.weight",
                           "bert.encoder.layer.#.attention.self.value.bias",
                           "bert.encoder.layer.#.attention.output.dense.weight",
                           "bert.encoder.layer.#.attention.output.dense.bias",
                           "bert.encoder.layer.#.attention.output.LayerNorm.weight",
                           "bert.encoder.layer.#.attention.output.LayerNorm.bias",
                           "bert.encoder.layer.#.intermediate.dense.weight",
                           "bert.encoder.layer.#.intermediate.dense.bias",
                           "bert.encoder.layer.#.output.dense.weight",
                           "bert.encoder.layer.#.output.dense.bias",
                           "bert.encoder.layer.#.output.LayerNorm.weight",
                           "bert.encoder.layer.#.output.LayerNorm.bias",
                           "bert.encoder.layer.#.moe.gate.weight",
                           "bert.encoder.layer.#.moe.experts.fc#",
                           "bert.encoder.layer.#.moe.experts.fc#_bias",
                           "cls.predictions.transform.dense.weight",
                           "cls.predictions.transform.dense.bias",
                           "cls.predictions.transform.LayerNorm.weight",
                           "cls.predictions.transform.LayerNorm.bias",
                           "cls.predictions.bias"})
    EXPECT_GT(checked[kind], 0) << kind << " never checked";
  EXPECT_LT(skipped, 20);
  fs::remove_all(dir);
}

TEST(BertMoeGrad, StoredMoeMatchesFiniteDifferences) {
  CheckFiniteDifferences(/*stored=*/true);
}

TEST(BertMoeGrad, UpcycledMatchesFiniteDifferences) {
  CheckFiniteDifferences(/*stored=*/false);
}

// Padding keys get no gradient through attention: a padded token's embedding reaches the loss
// only through its own (unmasked) query row, never as a key or value of the real rows. So with
// targets on real rows only, changing a padded token's id changes no loss.
TEST(BertMoeGrad, PaddingKeysAreInvisible) {
  const std::string dir = WriteTiny("pad", true);
  auto m = LoadTiny(dir, true, ModelTrain::kAll);
  Batch b = MakeBatch();
  std::vector<int32_t> r;
  const double l0 = Loss(*m, b, &r);
  b.ids[10] = (b.ids[10] + 11) % kV;
  EXPECT_EQ(Loss(*m, b, &r), l0);
  fs::remove_all(dir);
}

TEST(BertMoeGrad, RouterOnlyTrainsTheRoutersAndNothingElse) {
  for (bool stored : {true, false}) {
    const std::string dir = WriteTiny(stored ? "r_stored" : "r_up", stored);
    auto m = LoadTiny(dir, stored, ModelTrain::kRouters);
    ASSERT_TRUE(Backprop(*m, MakeBatch()).ok());
    int gates = 0;
    for (ModelParam& p : m->parameters()) {
      const bool is_gate =
          testing_util::ParamKind(p.name) == "bert.encoder.layer.#.moe.gate.weight";
      EXPECT_EQ(p.grad != nullptr, is_gate) << p.name;
      if (!is_gate) continue;
      ++gates;
      double norm = 0;
      for (float g : p.grad->data) norm += static_cast<double>(g) * g;
      EXPECT_GT(norm, 0.0) << p.name << ": the loss does not reach the router";
    }
    EXPECT_EQ(gates, 1);  // layer 1 is the only MoE layer
    fs::remove_all(dir);
  }
}

// Replaced routers (train --router): a hybrid started from the linear gate routes as it did,
// an MLP router trains (its gradients reach every parameter) and config() names it.
TEST(BertMoeGrad, ReplacedRoutersRouteAndTrain) {
  const std::string dir = WriteTiny("replace", true);
  auto m = LoadTiny(dir, true, ModelTrain::kRouters);
  const Batch b = MakeBatch();
  std::vector<int32_t> before, after;
  Loss(*m, b, &before);
  auto old = m->replace_routers("hybrid", 5, 8);
  ASSERT_TRUE(old.ok()) << old.status().ToString();
  EXPECT_EQ((*old)[0], nullptr);  // layer 0 is dense
  ASSERT_NE((*old)[1], nullptr);
  Loss(*m, b, &after);
  EXPECT_EQ(after, before);
  ASSERT_TRUE(m->replace_routers("mlp", 5, 8).ok());
  EXPECT_EQ(m->config().router, "mlp");
  EXPECT_EQ(m->config().router_hidden, 8);
  EXPECT_EQ(m->replace_routers("no_such_router", 5, 8).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(m->config().router, "mlp");  // unchanged by the failed call
  ASSERT_TRUE(Backprop(*m, b).ok());
  int gates = 0;
  for (ModelParam& p : m->parameters()) {
    if (p.name.find(".moe.gate.") == std::string::npos) {
      EXPECT_EQ(p.grad, nullptr) << p.name;
      continue;
    }
    ASSERT_NE(p.grad, nullptr) << p.name;
    double norm = 0;
    for (float g : p.grad->data) norm += static_cast<double>(g) * g;
    EXPECT_GT(norm, 0.0) << p.name;
    ++gates;
  }
  EXPECT_GE(gates, 2);  // the MLP's layers
  fs::remove_all(dir);
}

TEST(BertMoeGrad, InferenceModelRefusesBackward) {
  const std::string dir = WriteTiny("inf", true);
  auto m = LoadTiny(dir, true, ModelTrain::kNone);
  Batch b = MakeBatch();
  std::vector<int32_t> r;
  Loss(*m, b, &r);
  std::vector<float> d(12 * kV, 0.0f);
  EXPECT_EQ(m->backward(d.data()).code(), StatusCode::kInvalidArgument);
  auto ck = HfCheckpoint::Open(dir);
  BertMoeOptions opt;
  opt.train = ModelTrain::kAll;
  opt.expert_bits = 4;
  EXPECT_EQ(BertMoeModel::load(*ck, opt, nullptr).status().code(), StatusCode::kInvalidArgument);
  fs::remove_all(dir);
}

// ---- the masked-LM masking ----

TEST(MaskedLm, DeterministicAndDistributedAsBert) {
  MlmConfig c;
  c.seed = 7;
  c.vocab_size = 30522;
  c.mask_id = 103;
  c.never_chosen = {101, 102};
  std::vector<int32_t> ids(4000);
  for (size_t t = 0; t < ids.size(); ++t) ids[t] = static_cast<int32_t>(1000 + t % 500);
  ids[0] = 101;
  ids[1] = 102;
  int64_t chosen = 0, masked = 0, random = 0, kept = 0, n = 0;
  for (int64_t step = 0; step < 5; ++step)
    for (int64_t seq = 0; seq < 5; ++seq) {
      std::vector<int32_t> in, tg, in2, tg2;
      mlm_mask(c, step, seq, ids, &in, &tg);
      mlm_mask(c, step, seq, ids, &in2, &tg2);
      ASSERT_EQ(in, in2);  // a function of (seed, step, sequence, position) only
      ASSERT_EQ(tg, tg2);
      EXPECT_EQ(tg[0], -1);  // never chosen
      EXPECT_EQ(tg[1], -1);
      for (size_t t = 0; t < ids.size(); ++t) {
        ++n;
        if (tg[t] < 0) {
          EXPECT_EQ(in[t], ids[t]);  // unchosen positions are untouched
          continue;
        }
        EXPECT_EQ(tg[t], ids[t]);  // the target is the original token
        ++chosen;
        if (in[t] == 103)
          ++masked;
        else if (in[t] == ids[t])
          ++kept;
        else
          ++random;
        EXPECT_GE(in[t], 0);
        EXPECT_LT(in[t], 30522);
      }
    }
  // 100000 positions: 15% chosen (sd 0.11%); of ~15000 chosen 80 / 10 / 10 (sd 0.33%, 0.25%).
  const double pc = static_cast<double>(chosen) / n;
  EXPECT_NEAR(pc, 0.15, 0.006);
  EXPECT_NEAR(static_cast<double>(masked) / chosen, 0.8, 0.015);
  EXPECT_NEAR(static_cast<double>(random) / chosen, 0.1, 0.012);
  EXPECT_NEAR(static_cast<double>(kept) / chosen, 0.1, 0.012);
  // Another step, sequence or seed draws other positions.
  std::vector<int32_t> a, ta, b2, tb;
  mlm_mask(c, 0, 0, ids, &a, &ta);
  mlm_mask(c, 1, 0, ids, &b2, &tb);
  EXPECT_NE(ta, tb);
  mlm_mask(c, 0, 1, ids, &b2, &tb);
  EXPECT_NE(ta, tb);
  c.seed = 8;
  mlm_mask(c, 0, 0, ids, &b2, &tb);
  EXPECT_NE(ta, tb);
}

TEST(MaskedLm, BadConfigIsInvalidArgument) {
  MlmConfig c;
  c.vocab_size = 50;
  EXPECT_EQ(c.validate().code(), StatusCode::kInvalidArgument);  // [MASK] 103 outside V
  c.mask_id = 3;
  EXPECT_TRUE(c.validate().ok());
  c.mask_prob = 1.5;
  EXPECT_EQ(c.validate().code(), StatusCode::kInvalidArgument);
  c.mask_prob = 0.15;
  c.replace_random = 0.3;
  EXPECT_EQ(c.validate().code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace sy
