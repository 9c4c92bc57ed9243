// The layers are device-clean: each case builds one component twice, on "cpu" and on "devsim"
// (both deterministic), feeds both the same inputs (uploaded into the backend's memory) and
// requires BITWISE equal results. devsim's memory faults on a host dereference and its ops
// reject host pointers (runtime/backend/devsim/), and its arithmetic is the CPU backend's, so
// a layer passes only when it never touches its backend's memory from the host and never hands
// a host buffer to an op. A failure here dies with the message naming the op and the operand
// (or a SIGSEGV: run under gdb for the host loop that read device memory).
//
// Legend: T tokens, D hidden, F expert hidden, E experts, K top-k, V vocabulary.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include "routers/registry.h"
#include "runtime/backend/backend.h"
#include "runtime/backend/ops.h"
#include "runtime/model/bert_moe.h"
#include "runtime/moe/moe_layer.h"
#include "runtime/train/distill.h"
#include "runtime/train/trainer.h"
#include "tests/runtime/moe_test_util.h"
#include "tests/runtime/qwen_test_util.h"

namespace sy {
namespace {

using testing_util::Make;
using testing_util::Normal;

constexpr int64_t kD = 8, kF = 6, kE = 4, kK = 2, kT = 16, kV = 32;

// Bitwise equality of two host copies, naming the first differing element.
template <typename T>
void ExpectBitwise(const std::vector<T>& cpu, const std::vector<T>& dev, const std::string& what) {
  ASSERT_EQ(cpu.size(), dev.size()) << what;
  if (cpu.empty() || std::memcmp(cpu.data(), dev.data(), cpu.size() * sizeof(T)) == 0) return;
  for (size_t i = 0; i < cpu.size(); ++i)
    if (std::memcmp(&cpu[i], &dev[i], sizeof(T)) != 0) {
      ADD_FAILURE() << what << " differs at " << i << " of " << cpu.size() << ": cpu " << cpu[i]
                    << ", devsim " << dev[i];
      return;
    }
}

// The inputs of one layer case, on the host; each run uploads them into its backend's memory.
struct LayerInputs {
  std::vector<float> x_TD = Normal(kT * kD, 1), dy_TD = Normal(kT * kD, 2);
  std::vector<int32_t> ids_T;
  std::vector<uint8_t> mask_T;  // empty: every token real
  LayerInputs() {
    for (int64_t t = 0; t < kT; ++t) ids_T.push_back(static_cast<int32_t>((t * 7 + 3) % kV));
  }
};

// What one run produced, read back to the host.
struct LayerResult {
  std::vector<float> y_TD, dx_TD, logits_TE, probs_TE, weights_TK;
  std::vector<int32_t> ids_TK;
  std::vector<std::pair<std::string, std::vector<float>>> values, grads;  // named_params()
  MoeStepStats stats;
  double aux_loss = 0;
};

struct RunOptions {
  bool fit_table = false;  // routers that fit a token table get one from the inputs' ids
  bool aux = false;        // Switch aux-loss dprobs into backward (differentiable routers)
};

// forward, then backward with dy (and the aux loss's dprobs when o.aux), of the layer cfg
// built on backend.
LayerResult RunLayer(MoeLayerConfig cfg, const char* backend, const LayerInputs& in,
                     const RunOptions& o) {
  const ExecContext* ctx = make_context(backend, /*deterministic=*/true);
  SY_CHECK(ctx != nullptr) << "backend " << backend << " is not registered";
  cfg.exec = ctx;
  std::unique_ptr<MoeLayer> l = Make(cfg);
  if (o.fit_table && l->router().fits_token_table()) {
    std::vector<int64_t> freq_V(kV, 0);
    for (int32_t id : in.ids_T) freq_V[static_cast<size_t>(id)] += 1 + id % 3;
    SY_CHECK_OK(l->router().fit_token_table(freq_V));
  }
  Memory* m = ctx->backend;
  DeviceArray<float> x(m, in.x_TD), y(m, in.x_TD.size()), dy(m, in.dy_TD), dx(m, in.x_TD.size());
  DeviceArray<int32_t> ids(m, in.ids_T);
  DeviceArray<uint8_t> mask(m, in.mask_T);
  const int32_t* ids_T = l->router().needs_token_ids() ? ids.data() : nullptr;
  const uint8_t* mask_T = in.mask_T.empty() ? nullptr : mask.data();
  SY_CHECK_OK(l->forward(x.data(), ids_T, kT, y.data(), mask_T));

  LayerResult r;
  const RouterOutput& ro = l->router_output();
  r.y_TD = y.to_host();
  r.logits_TE = ro.logits_TE.data.to_host();
  r.probs_TE = ro.probs_TE.data.to_host();
  r.weights_TK = ro.topk_weights_TK.data.to_host();
  r.ids_TK = ro.topk_ids_TK.to_host();
  r.stats = l->last_stats();
  MoeAuxGrads aux;
  DeviceArray<float> dprobs(m);
  if (o.aux) {
    dprobs.resize(static_cast<size_t>(kT * kE));
    r.aux_loss = ops::switch_aux_loss(*ctx, ro.probs_TE.ptr(), ro.topk_ids_TK.data(), kT, kE, kK,
                                      0.1f, dprobs.data(), false);
    aux.dprobs_TE = dprobs.data();
  }
  l->zero_grad();
  l->backward(dy.data(), dx.data(), &aux);
  r.dx_TD = dx.to_host();
  for (auto& [name, p] : l->named_params()) {
    r.values.emplace_back(name, p->value.data.to_host());
    r.grads.emplace_back(name, p->grad.data.to_host());
  }
  return r;
}

void ExpectSameRun(const LayerResult& c, const LayerResult& d, const std::string& what) {
  ExpectBitwise(c.y_TD, d.y_TD, what + ": y");
  ExpectBitwise(c.dx_TD, d.dx_TD, what + ": dx");
  ExpectBitwise(c.logits_TE, d.logits_TE, what + ": router logits");
  ExpectBitwise(c.probs_TE, d.probs_TE, what + ": router probs");
  ExpectBitwise(c.weights_TK, d.weights_TK, what + ": top-k weights");
  ExpectBitwise(c.ids_TK, d.ids_TK, what + ": top-k ids");
  EXPECT_EQ(c.aux_loss, d.aux_loss) << what << ": aux loss";
  ASSERT_EQ(c.values.size(), d.values.size()) << what;
  for (size_t i = 0; i < c.values.size(); ++i) {
    ASSERT_EQ(c.values[i].first, d.values[i].first) << what;
    ExpectBitwise(c.values[i].second, d.values[i].second, what + ": " + c.values[i].first);
  }
  ASSERT_EQ(c.grads.size(), d.grads.size()) << what;
  for (size_t i = 0; i < c.grads.size(); ++i)
    ExpectBitwise(c.grads[i].second, d.grads[i].second, what + ": d " + c.grads[i].first);
  const MoeStepStats &a = c.stats, &b = d.stats;
  EXPECT_EQ(a.T, b.T) << what;
  EXPECT_EQ(a.tokens, b.tokens) << what;
  EXPECT_EQ(a.routed, b.routed) << what;
  EXPECT_EQ(a.kept, b.kept) << what;
  EXPECT_EQ(a.dropped, b.dropped) << what;
  EXPECT_EQ(a.routed_E, b.routed_E) << what;
  EXPECT_EQ(a.kept_E, b.kept_E) << what;
  EXPECT_EQ(a.dropped_E, b.dropped_E) << what;
  EXPECT_EQ(a.exchange.rows_sent_P, b.exchange.rows_sent_P) << what;
  EXPECT_EQ(a.exchange.rows_recv_e, b.exchange.rows_recv_e) << what;
}

MoeLayerConfig LayerConfig(const std::string& router) {
  MoeLayerConfig c;
  c.d_model = kD;
  c.ffn_hidden = kF;
  c.num_experts = kE;
  c.top_k = kK;
  c.capacity_factor = 1.0;  // C = ceil(16 * 2 / 4) = 8: skewed routers drop
  c.shared_expert_hidden = 5;
  c.init_std = 0.5f;
  c.router.name = router;
  c.router.hidden = 12;
  c.router.num_heads = 2;
  c.router.init_std = 1.0f;
  c.router.vocab_size = kV;
  c.seed = 42;
  return c;
}

// Every registered router (hash also with a balanced table), SwiGLU experts with drops and a
// shared expert, norm_topk_prob off and on, with and without a mask: y, dx, every parameter's
// gradient (with the Switch aux loss's dprobs for differentiable routers), the router's
// output and the step's counts.
TEST(DevsimLayers, MoeLayerEveryRouterMatchesCpuBitwise) {
  int64_t dropped = 0, runs = 0;
  for (const std::string& router : router_names()) {
    for (bool table : {false, true}) {
      for (bool norm : {false, true}) {
        for (bool masked : {false, true}) {
          MoeLayerConfig cfg = LayerConfig(router);
          cfg.router.norm_topk_prob = norm;
          auto probe = make_router(cfg.resolved_router());
          ASSERT_TRUE(probe.ok()) << probe.status().ToString();
          if (table && !(*probe)->fits_token_table()) continue;
          LayerInputs in;
          if (masked)
            for (int64_t t = 0; t < kT; ++t) in.mask_T.push_back(t % 5 != 2);
          RunOptions o;
          o.fit_table = table;
          o.aux = (*probe)->differentiable();
          const std::string what = router + (table ? " (table)" : "") +
                                   (norm ? " norm_topk_prob" : "") + (masked ? " masked" : "");
          SCOPED_TRACE(what);
          const LayerResult c = RunLayer(cfg, "cpu", in, o);
          const LayerResult d = RunLayer(cfg, "devsim", in, o);
          ExpectSameRun(c, d, what);
          dropped += c.stats.dropped;
          ++runs;
        }
      }
    }
  }
  EXPECT_GE(runs, 4 * static_cast<int64_t>(router_names().size()));
  EXPECT_GT(dropped, 0) << "capacity_factor 1.0 should drop somewhere";
}

// BERT's GELU experts, and frozen int8 experts (quantized at build; SwiGLU and GELU): forward,
// dx and the router's gradients.
TEST(DevsimLayers, MoeLayerGeluAndInt8ExpertsMatchCpuBitwise) {
  struct Case {
    const char* what;
    ExpertKind kind;
    int bits;
  };
  for (const Case& k : {Case{"gelu", ExpertKind::kGelu, 32}, Case{"int8", ExpertKind::kSwiGLU, 8},
                        Case{"gelu int8", ExpertKind::kGelu, 8}}) {
    SCOPED_TRACE(k.what);
    MoeLayerConfig cfg = LayerConfig("linear");
    cfg.expert_kind = k.kind;
    cfg.expert_bits = k.bits;
    cfg.quant_group = 4;
    cfg.train_experts = k.bits == 32;
    const RunOptions o;
    const LayerInputs in;
    const LayerResult c = RunLayer(cfg, "cpu", in, o);
    const LayerResult d = RunLayer(cfg, "devsim", in, o);
    ExpectSameRun(c, d, k.what);
  }
}

// ---- the models (token ids are host arrays, as the Model interface takes them) -------------
//
// DISABLED_ while runtime/model and runtime/train are being converted to the backend's memory
// (issue 10): the models still keep activations and caches in host vectors. Enable them once
// the conversion lands; each then proves its model device-clean like the layer cases above.

// A tiny Qwen2-MoE (qwen2_moe_grad_test's shape): 2 layers, the second dense, 4 experts top-2
// with a shared expert.
std::string TinyQwen(const std::string& tag) {
  const std::string dir = TempModelDir("devsim_" + tag);
  const nlohmann::json cfg = {{"vocab_size", 40},           {"hidden_size", 16},
                              {"num_hidden_layers", 2},     {"num_attention_heads", 4},
                              {"num_key_value_heads", 2},   {"intermediate_size", 20},
                              {"moe_intermediate_size", 8}, {"shared_expert_intermediate_size", 12},
                              {"num_experts", 4},           {"num_experts_per_tok", 2},
                              {"mlp_only_layers", {1}},     {"initializer_range", 0.3}};
  SY_CHECK_OK(write_random_qwen2_moe_checkpoint(dir, cfg, 21));
  return dir;
}

std::vector<int32_t> TokenIds(int64_t T, int64_t V) {
  std::vector<int32_t> ids;
  for (int64_t t = 0; t < T; ++t) ids.push_back(static_cast<int32_t>((t * 7 + 3) % V));
  return ids;
}

struct ModelResult {
  std::vector<std::vector<float>> logits;  // per forward call
  std::vector<std::pair<std::string, std::vector<float>>> grads;
};

void ExpectSameModel(const ModelResult& c, const ModelResult& d) {
  ASSERT_EQ(c.logits.size(), d.logits.size());
  for (size_t i = 0; i < c.logits.size(); ++i)
    ExpectBitwise(c.logits[i], d.logits[i], "logits of forward " + std::to_string(i));
  ASSERT_EQ(c.grads.size(), d.grads.size());
  for (size_t i = 0; i < c.grads.size(); ++i) {
    ASSERT_EQ(c.grads[i].first, d.grads[i].first);
    ExpectBitwise(c.grads[i].second, d.grads[i].second, "d " + c.grads[i].first);
  }
}

// Prefill of 10 tokens, then two decode steps through the KV cache (inference, drops at
// capacity_factor 1.0).
ModelResult RunQwenInference(const std::string& dir, const char* backend) {
  Qwen2MoeOptions opt;
  opt.exec = make_context(backend, /*deterministic=*/true);
  opt.capacity_factor = 1.0;
  auto m = LoadQwen(dir, opt);
  SY_CHECK(m != nullptr);
  const std::vector<int32_t> ids = TokenIds(12, 40);
  ModelResult r;
  Tensor logits;
  SY_CHECK_OK(m->forward(ids.data(), 10, &logits));
  r.logits.push_back(logits.data.to_host());
  for (int64_t t = 10; t < 12; ++t) {
    SY_CHECK_OK(m->forward(ids.data() + t, 1, &logits, /*all_logits=*/false));
    r.logits.push_back(logits.data.to_host());
  }
  return r;
}

// One training forward and backward (every parameter trained, the aux loss on); dlogits is
// uploaded into the backend's memory.
ModelResult RunQwenTraining(const std::string& dir, const char* backend) {
  Qwen2MoeOptions opt;
  opt.exec = make_context(backend, /*deterministic=*/true);
  opt.train = Qwen2MoeTrain::kAll;
  auto m = LoadQwen(dir, opt);
  SY_CHECK(m != nullptr);
  constexpr int64_t T = 12, V = 40;
  const std::vector<int32_t> ids = TokenIds(T, V);
  ModelResult r;
  m->zero_grad();
  m->reset_cache();
  Tensor logits;
  SY_CHECK_OK(m->forward(ids.data(), T, &logits));
  r.logits.push_back(logits.data.to_host());
  const DeviceArray<float> dlogits(m->ctx().backend, Normal(T * V, 5, 0.1f));
  SY_CHECK_OK(m->backward(dlogits.data(), /*aux_alpha=*/0.01f));
  for (const ModelParam& p : m->parameters())
    r.grads.emplace_back(p.name, p.grad ? p.grad->data.to_host() : std::vector<float>());
  return r;
}

TEST(DevsimLayers, Qwen2MoeForwardAndDecodeMatchCpuBitwise) {
  const std::string dir = TinyQwen("infer");
  const ModelResult c = RunQwenInference(dir, "cpu");
  const ModelResult d = RunQwenInference(dir, "devsim");
  ExpectSameModel(c, d);
  std::filesystem::remove_all(dir);
}

TEST(DevsimLayers, Qwen2MoeBackwardMatchesCpuBitwise) {
  const std::string dir = TinyQwen("train");
  const ModelResult c = RunQwenTraining(dir, "cpu");
  const ModelResult d = RunQwenTraining(dir, "devsim");
  ASSERT_FALSE(c.grads.empty());
  ExpectSameModel(c, d);
  std::filesystem::remove_all(dir);
}

// Three AdamW training steps of every weight (two sequences each, the Switch loss on, clipping
// active): losses, gradient norms and every weight afterwards.
ModelResult RunQwenTrainerSteps(const std::string& dir, const char* backend) {
  Qwen2MoeOptions opt;
  opt.exec = make_context(backend, /*deterministic=*/true);
  opt.train = Qwen2MoeTrain::kAll;
  auto m = LoadQwen(dir, opt);
  SY_CHECK(m != nullptr);
  AdamWConfig ac;
  ac.lr = 1e-2;
  ac.clip_norm = 0.5;
  Trainer tr(*m, nullptr, ac);
  tr.set_router_aux_loss(0.01f);
  ModelResult r;
  for (int s = 0; s < 3; ++s) {
    const std::vector<int32_t> a = TokenIds(9, 40), b = TokenIds(7, 40);
    auto res = tr.step({a, b});
    SY_CHECK(res.ok()) << res.status().ToString();
    r.logits.push_back({static_cast<float>(res->loss), static_cast<float>(res->grad_norm),
                        static_cast<float>(res->aux_loss)});
  }
  for (const ModelParam& p : m->parameters()) r.grads.emplace_back(p.name, p.value->data.to_host());
  return r;
}

TEST(DevsimLayers, Qwen2MoeTrainerStepsMatchCpuBitwise) {
  const std::string dir = TinyQwen("trainer");
  const ModelResult c = RunQwenTrainerSteps(dir, "cpu");
  const ModelResult d = RunQwenTrainerSteps(dir, "devsim");
  ASSERT_FALSE(c.grads.empty());
  ExpectSameModel(c, d);
  std::filesystem::remove_all(dir);
}

// The distillation warm start of an MLP router from a linear gate (host router inputs, as the
// model's capture gives them): the student's weights and the agreement before and after.
ModelResult RunDistill(const char* backend) {
  const ExecContext* ctx = make_context(backend, /*deterministic=*/true);
  RouterConfig rc;
  rc.d_model = 12;
  rc.num_experts = 6;
  rc.top_k = 2;
  rc.init_std = 0.5f;
  rc.name = "linear";
  auto teacher = make_router(rc);
  rc.name = "mlp";
  rc.hidden = 8;
  auto student = make_router(rc);
  SY_CHECK(teacher.ok() && student.ok());
  (*teacher)->set_context(ctx);
  (*student)->set_context(ctx);
  const int64_t T = 20;
  const std::vector<float> x = Normal(T * rc.d_model, 7);
  DistillConfig cfg;
  cfg.iterations = 5;
  auto rep = distill_router(**teacher, **student, x.data(), nullptr, T, nullptr, cfg);
  SY_CHECK(rep.ok()) << rep.status().ToString();
  ModelResult r;
  r.logits.push_back({static_cast<float>(rep->before.kl), static_cast<float>(rep->after.kl),
                      static_cast<float>(rep->after.top1)});
  for (const Param& p : (*student)->params()) r.grads.emplace_back(p.name, p.value.data.to_host());
  return r;
}

TEST(DevsimLayers, DistillWarmStartMatchesCpuBitwise) {
  const ModelResult c = RunDistill("cpu");
  const ModelResult d = RunDistill("devsim");
  ASSERT_NE(c.logits[0][0], c.logits[0][1]) << "the fit changed nothing";
  ExpectSameModel(c, d);
}

// A dense BERT upcycled to 4 GELU experts top-2 (noisy copies, so the experts differ), and a
// bert_moe checkpoint with int8 experts: logits and the final hidden states.
ModelResult RunBert(const std::string& dir, bool upcycle, const char* backend) {
  BertMoeOptions opt;
  opt.exec = make_context(backend, /*deterministic=*/true);
  if (upcycle) {
    opt.num_experts = 4;
    opt.top_k = 2;
    opt.upcycle_noise = 0.5f;
    opt.router.init_std = 0.5f;
    opt.capacity_factor = 1.0;
  } else {
    opt.expert_bits = 8;
    opt.quant_group = 16;
  }
  auto ck = HfCheckpoint::Open(dir);
  SY_CHECK(ck.ok()) << ck.status().ToString();
  auto m = BertMoeModel::load(*ck, opt, nullptr);
  SY_CHECK(m.ok()) << m.status().ToString();
  const std::vector<int32_t> ids = TokenIds(13, 50);
  Tensor logits;
  SY_CHECK_OK((*m)->forward(ids.data(), nullptr, 13, &logits));
  ModelResult r;
  r.logits.push_back(logits.data.to_host());
  r.logits.push_back((*m)->last_hidden().data.to_host());
  return r;
}

TEST(DevsimLayers, BertMoeForwardMatchesCpuBitwise) {
  for (bool upcycle : {true, false}) {
    SCOPED_TRACE(upcycle ? "upcycled dense BERT" : "bert_moe checkpoint, int8 experts");
    const std::string dir = TempModelDir(upcycle ? "devsim_bert" : "devsim_bert_moe");
    nlohmann::json cfg = {{"vocab_size", 50},        {"hidden_size", 32},
                          {"num_hidden_layers", 2},  {"num_attention_heads", 4},
                          {"intermediate_size", 48}, {"max_position_embeddings", 40},
                          {"type_vocab_size", 2},    {"initializer_range", 0.1}};
    if (!upcycle) {
      cfg["num_experts"] = 4;
      cfg["num_experts_per_tok"] = 2;
    }
    SY_CHECK_OK(write_random_bert_checkpoint(dir, cfg, 7, /*moe=*/!upcycle));
    const ModelResult c = RunBert(dir, upcycle, "cpu");
    const ModelResult d = RunBert(dir, upcycle, "devsim");
    ExpectSameModel(c, d);
    std::filesystem::remove_all(dir);
  }
}

// BERT-MoE masked-LM training (backward through LayerNorm, GELU, masked attention, the MLM head,
// GELU experts; AdamW) on devsim gives the CPU's bytes.
ModelResult RunBertTrainerSteps(const std::string& dir, const char* backend) {
  auto ck = HfCheckpoint::Open(dir);
  SY_CHECK(ck.ok());
  BertMoeOptions opt;
  opt.exec = make_context(backend, /*deterministic=*/true);
  opt.train = ModelTrain::kAll;
  auto m = BertMoeModel::load(*ck, opt, nullptr);
  SY_CHECK(m.ok()) << m.status().ToString();
  AdamWConfig ac;
  ac.lr = 1e-2;
  ac.clip_norm = 0.5;
  Trainer tr(**m, nullptr, ac);
  tr.set_router_aux_loss(0.01f);
  MlmConfig mlm;
  mlm.mask_id = 3;
  mlm.mask_prob = 0.3;
  SY_CHECK_OK(tr.set_masked_lm(mlm));
  ModelResult r;
  for (int s = 0; s < 3; ++s) {
    const std::vector<int32_t> a = TokenIds(9, 50), b = TokenIds(7, 50);
    auto res = tr.step({a, b});
    SY_CHECK(res.ok()) << res.status().ToString();
    r.logits.push_back({static_cast<float>(res->loss), static_cast<float>(res->grad_norm),
                        static_cast<float>(res->aux_loss)});
  }
  for (const ModelParam& p : (*m)->parameters())
    r.grads.emplace_back(p.name, p.value->data.to_host());
  return r;
}

TEST(DevsimLayers, BertMoeTrainerStepsMatchCpuBitwise) {
  const std::string dir = TempModelDir("devsim_bert_train");
  nlohmann::json cfg = {{"vocab_size", 50},         {"hidden_size", 32},
                        {"num_hidden_layers", 2},   {"num_attention_heads", 4},
                        {"intermediate_size", 48},  {"max_position_embeddings", 40},
                        {"num_experts", 4},         {"moe_every", 2},
                        {"num_experts_per_tok", 2}, {"initializer_range", 0.1}};
  SY_CHECK_OK(write_random_bert_checkpoint(dir, cfg, 9, /*moe=*/true));
  const ModelResult c = RunBertTrainerSteps(dir, "cpu");
  const ModelResult d = RunBertTrainerSteps(dir, "devsim");
  ASSERT_FALSE(c.grads.empty());
  ExpectSameModel(c, d);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace sy
