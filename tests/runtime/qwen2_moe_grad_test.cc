// Backward through the whole Qwen2-MoE decoder (issue 5, item 1): the language-model loss's
// gradient of every parameter kind against central finite differences, and which parameters a
// router-only run trains.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "runtime/io/hf_checkpoint.h"
#include "runtime/kernels/balance.h"
#include "runtime/kernels/loss.h"
#include "runtime/model/qwen2_moe.h"
#include "tests/runtime/moe_test_util.h"
#include "tests/runtime/qwen_test_util.h"

namespace sy {
namespace {
using json = nlohmann::json;
namespace fs = std::filesystem;

std::string TinyCheckpoint(const std::string& tag) {
  const std::string dir = TempModelDir("qgrad_" + tag);
  json cfg = {{"vocab_size", 40},           {"hidden_size", 16},
              {"num_hidden_layers", 2},     {"num_attention_heads", 4},
              {"num_key_value_heads", 2},   {"intermediate_size", 20},
              {"moe_intermediate_size", 8}, {"shared_expert_intermediate_size", 12},
              {"num_experts", 4},           {"num_experts_per_tok", 2},
              {"mlp_only_layers", {1}},     {"initializer_range", 0.3}};
  EXPECT_TRUE(write_random_qwen2_moe_checkpoint(dir, cfg, 21).ok());
  return dir;
}

struct Batch {
  std::vector<int32_t> ids, targets;  // targets: the next token, -1 for the last
};

Batch MakeBatch(int64_t T, int64_t V) {
  Batch b;
  for (int64_t t = 0; t < T; ++t) b.ids.push_back(static_cast<int32_t>((t * 7 + 3) % V));
  for (int64_t t = 0; t + 1 < T; ++t) b.targets.push_back(b.ids[static_cast<size_t>(t + 1)]);
  b.targets.push_back(-1);
  return b;
}

// Mean loss of one forward, and the top-k choices of every MoE layer (to skip a finite
// difference whose perturbation changed the routing: the loss is not differentiable there).
double Loss(Qwen2MoeModel& m, const Batch& b, std::vector<int32_t>* routing) {
  m.reset_cache();
  Tensor logits;
  EXPECT_TRUE(m.forward(b.ids.data(), static_cast<int64_t>(b.ids.size()), &logits).ok());
  int64_t n = 0;
  const double sum =
      cross_entropy_sum(logits.ptr(), b.targets.data(), logits.shape[0], logits.shape[1], &n);
  routing->clear();
  for (MoeLayer* l : m.moe_layers())
    if (l)
      routing->insert(routing->end(), l->router_output().topk_ids_TK.begin(),
                      l->router_output().topk_ids_TK.end());
  return sum / static_cast<double>(n);
}

// Fresh gradients of the mean next-token loss of the batch.
Status Backprop(Qwen2MoeModel& m, const Batch& b) {
  const int64_t T = static_cast<int64_t>(b.ids.size()), V = m.config().vocab_size;
  m.zero_grad();
  m.reset_cache();
  Tensor logits;
  SY_RETURN_IF_ERROR(m.forward(b.ids.data(), T, &logits));
  int64_t n = 0;
  cross_entropy_sum(logits.ptr(), b.targets.data(), T, V, &n);
  std::vector<float> dlogits(logits.data.size());
  cross_entropy_backward(logits.ptr(), b.targets.data(), T, V, 1.0f / static_cast<float>(n),
                         dlogits.data());
  return m.backward(dlogits.data());
}

TEST(Qwen2MoeGrad, EveryParameterKindMatchesFiniteDifferences) {
  const std::string dir = TinyCheckpoint("fd");
  auto m = LoadQwen(dir, Qwen2MoeTrain::kAll);
  const Batch b = MakeBatch(12, 40);
  std::vector<int32_t> routing0, routing;
  // Analytic gradient of the mean loss.
  ASSERT_TRUE(Backprop(*m, b).ok());
  const double base = Loss(*m, b, &routing0);
  ASSERT_GT(base, 1.0);

  std::map<std::string, int> checked;
  int skipped = 0;
  const float eps = 1e-2f;
  for (Qwen2MoeParam& p : m->parameters()) {
    ASSERT_NE(p.grad, nullptr) << p.name << " has no gradient in kAll";
    const int64_t numel = p.value->numel();
    for (int64_t s = 0; s < 3; ++s) {
      const int64_t i = (s * 7919 + 13) % numel;
      float& w = p.value->data[static_cast<size_t>(i)];
      const float w0 = w;
      w = w0 + eps;
      const double lp = Loss(*m, b, &routing);
      const bool same_p = routing == routing0;
      w = w0 - eps;
      const double lm = Loss(*m, b, &routing);
      const bool same_m = routing == routing0;
      w = w0;
      if (!same_p || !same_m) {  // the perturbation flipped a top-k choice
        ++skipped;
        continue;
      }
      const double fd = (lp - lm) / (2.0 * eps);
      const double g = p.grad->data[static_cast<size_t>(i)];
      EXPECT_NEAR(g, fd, 2e-3 + 3e-2 * std::fabs(fd)) << p.name << "[" << i << "]";
      ++checked[testing_util::ParamKind(p.name)];
    }
  }
  // Every kind was checked at least once (a routing flip may skip single coordinates).
  for (const char* kind : {"model.embed_tokens.weight",
                           "model.norm.weight",
                           "lm_head.weight",
                           "model.layers.#.input_layernorm.weight",
                           "model.layers.#.self_attn.q_proj.weight",
                           "model.layers.#.self_attn.q_proj.bias",
                           "model.layers.#.self_attn.k_proj.weight",
                           "model.layers.#.self_attn.k_proj.bias",
                           "model.layers.#.self_attn.v_proj.weight",
                           "model.layers.#.self_attn.v_proj.bias",
                           "model.layers.#.self_attn.o_proj.weight",
                           "model.layers.#.post_attention_layernorm.weight",
                           "model.layers.#.mlp.gate.weight",
                           "model.layers.#.mlp.experts.gate_proj",
                           "model.layers.#.mlp.experts.up_proj",
                           "model.layers.#.mlp.experts.down_proj",
                           "model.layers.#.mlp.shared_expert.gate_proj.weight",
                           "model.layers.#.mlp.shared_expert.up_proj.weight",
                           "model.layers.#.mlp.shared_expert.down_proj.weight",
                           "model.layers.#.mlp.shared_expert_gate.weight",
                           "model.layers.#.mlp.gate_proj.weight",
                           "model.layers.#.mlp.up_proj.weight",
                           "model.layers.#.mlp.down_proj.weight"})
    EXPECT_GT(checked[kind], 0) << kind << " never checked";
  EXPECT_LT(skipped, 20);
  fs::remove_all(dir);
}

// The Switch load-balancing loss (backward's aux_alpha) through the model: d(loss + aux) for the
// router, the attention before it and the embeddings against finite differences, where aux is
// recomputed from each MoE layer's router output (f constant: routing flips are skipped).
TEST(Qwen2MoeGrad, LoadBalancingLossMatchesFiniteDifferences) {
  const std::string dir = TinyCheckpoint("aux");
  auto m = LoadQwen(dir, Qwen2MoeTrain::kAll);
  const Batch b = MakeBatch(12, 40);
  const float alpha = 0.5f;
  auto objective = [&](std::vector<int32_t>* routing) {
    double j = Loss(*m, b, routing);
    for (MoeLayer* l : m->moe_layers())
      if (l) {
        const RouterOutput& ro = l->router_output();
        j += switch_aux_loss(ro.probs_TE.ptr(), ro.topk_ids_TK.data(), ro.T, ro.E, ro.K, alpha,
                             nullptr, false);
      }
    return j;
  };
  // Analytic: the mean cross-entropy's dlogits plus the aux term inside backward().
  const int64_t T = static_cast<int64_t>(b.ids.size()), V = m->config().vocab_size;
  m->zero_grad();
  m->reset_cache();
  Tensor logits;
  ASSERT_TRUE(m->forward(b.ids.data(), T, &logits).ok());
  int64_t n = 0;
  cross_entropy_sum(logits.ptr(), b.targets.data(), T, V, &n);
  std::vector<float> dlogits(logits.data.size());
  cross_entropy_backward(logits.ptr(), b.targets.data(), T, V, 1.0f / static_cast<float>(n),
                         dlogits.data());
  ASSERT_TRUE(m->backward(dlogits.data(), alpha).ok());
  EXPECT_GT(m->last_aux_loss(), 0.0);
  std::vector<int32_t> routing0, routing;
  objective(&routing0);
  int checked = 0;
  const float eps = 1e-2f;
  for (Qwen2MoeParam& p : m->parameters()) {
    if (p.name != "model.layers.0.mlp.gate.weight" && p.name != "model.embed_tokens.weight" &&
        p.name != "model.layers.0.self_attn.q_proj.weight")
      continue;
    for (int64_t s = 0; s < 6; ++s) {
      const int64_t i = (s * 7919 + 13) % p.value->numel();
      float& w = p.value->data[static_cast<size_t>(i)];
      const float w0 = w;
      w = w0 + eps;
      const double jp = objective(&routing);
      const bool same_p = routing == routing0;
      w = w0 - eps;
      const double jm = objective(&routing);
      const bool same_m = routing == routing0;
      w = w0;
      if (!same_p || !same_m) continue;
      const double fd = (jp - jm) / (2.0 * eps);
      EXPECT_NEAR(p.grad->data[static_cast<size_t>(i)], fd, 2e-3 + 3e-2 * std::fabs(fd))
          << p.name << "[" << i << "]";
      ++checked;
    }
  }
  EXPECT_GE(checked, 10);
  fs::remove_all(dir);
}

TEST(Qwen2MoeGrad, RouterOnlyTrainsTheGatesAndNothingElse) {
  const std::string dir = TinyCheckpoint("routers");
  auto m = LoadQwen(dir, Qwen2MoeTrain::kRouters);
  const Batch b = MakeBatch(12, 40);
  ASSERT_TRUE(Backprop(*m, b).ok());
  int gates = 0;
  for (Qwen2MoeParam& p : m->parameters()) {
    const bool is_gate = testing_util::ParamKind(p.name) == "model.layers.#.mlp.gate.weight";
    EXPECT_EQ(p.grad != nullptr, is_gate) << p.name;
    if (!is_gate) continue;
    ++gates;
    double norm = 0;
    for (float g : p.grad->data) norm += static_cast<double>(g) * g;
    EXPECT_GT(norm, 0.0) << p.name << ": the loss does not reach the router";
  }
  EXPECT_EQ(gates, 1);  // layer 0 is the only MoE layer
  fs::remove_all(dir);
}

}  // namespace
}  // namespace sy
