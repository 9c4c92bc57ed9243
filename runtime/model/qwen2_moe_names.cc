#include "runtime/model/qwen2_moe_names.h"

#include <cstdlib>

#include "runtime/model/qwen2_moe.h"

namespace sy {
namespace {

constexpr const char* kLayerPrefix = "model.layers.";
constexpr const char* kExpertsInfix = ".mlp.experts.";

// gate_proj and up_proj [rows, cols], down_proj [cols, rows], under `prefix`.
std::vector<Qwen2MoeTensor> SwiGluTensors(const std::string& prefix, int64_t rows, int64_t cols) {
  return {{prefix + "gate_proj.weight", {rows, cols}},
          {prefix + "up_proj.weight", {rows, cols}},
          {prefix + "down_proj.weight", {cols, rows}}};
}

}  // namespace

std::string qwen2_moe_layer_name(int64_t layer, const std::string& rest) {
  return kLayerPrefix + std::to_string(layer) + "." + rest;
}

std::string qwen2_moe_expert_name(int64_t layer, int64_t expert, const std::string& proj) {
  return qwen2_moe_stacked_expert_name(layer, std::to_string(expert) + "." + proj + ".weight");
}

std::string qwen2_moe_stacked_expert_name(int64_t layer, const std::string& proj) {
  return kLayerPrefix + std::to_string(layer) + kExpertsInfix + proj;
}

bool qwen2_moe_parse_stacked_expert(const std::string& name, int64_t* layer, std::string* proj) {
  const std::string pre = kLayerPrefix, mid_text = kExpertsInfix;
  const size_t mid = name.find(mid_text);
  if (name.rfind(pre, 0) != 0 || mid == std::string::npos) return false;
  *layer = std::stoll(name.substr(pre.size(), mid - pre.size()));
  *proj = name.substr(mid + mid_text.size());
  return true;
}

std::string qwen2_moe_router_prefix(int64_t layer) {
  return qwen2_moe_layer_name(layer, "mlp.gate.");
}

bool qwen2_moe_is_router_param(const std::string& name) {
  return name.find(".mlp.gate.") != std::string::npos;
}

int64_t qwen2_moe_layer_of(const std::string& name) {
  const std::string prefix = kLayerPrefix;
  if (name.compare(0, prefix.size(), prefix) != 0) return -1;
  return std::strtoll(name.c_str() + prefix.size(), nullptr, 10);
}

std::vector<Qwen2MoeTensor> qwen2_moe_attention_tensors(const Qwen2MoeConfig& c, int64_t layer) {
  const int64_t D = c.hidden_size, q = c.num_attention_heads * c.head_dim,
                kv = c.num_key_value_heads * c.head_dim;
  auto name = [layer](const char* rest) { return qwen2_moe_layer_name(layer, rest); };
  return {{name("input_layernorm.weight"), {D}, /*norm=*/true},
          {name("post_attention_layernorm.weight"), {D}, /*norm=*/true},
          {name("self_attn.q_proj.weight"), {q, D}},
          {name("self_attn.q_proj.bias"), {q}},
          {name("self_attn.k_proj.weight"), {kv, D}},
          {name("self_attn.k_proj.bias"), {kv}},
          {name("self_attn.v_proj.weight"), {kv, D}},
          {name("self_attn.v_proj.bias"), {kv}},
          {name("self_attn.o_proj.weight"), {D, q}}};
}

std::vector<Qwen2MoeTensor> qwen2_moe_dense_mlp_tensors(const Qwen2MoeConfig& c, int64_t layer) {
  return SwiGluTensors(qwen2_moe_layer_name(layer, "mlp."), c.intermediate_size, c.hidden_size);
}

std::vector<Qwen2MoeTensor> qwen2_moe_expert_tensors(const Qwen2MoeConfig& c, int64_t layer,
                                                     int64_t expert) {
  return SwiGluTensors(qwen2_moe_stacked_expert_name(layer, std::to_string(expert) + "."),
                       c.moe_intermediate_size, c.hidden_size);
}

std::vector<Qwen2MoeTensor> qwen2_moe_shared_expert_tensors(const Qwen2MoeConfig& c,
                                                            int64_t layer) {
  const int64_t Fs = c.shared_expert_intermediate_size, D = c.hidden_size;
  if (Fs <= 0) return {};
  std::vector<Qwen2MoeTensor> out =
      SwiGluTensors(qwen2_moe_layer_name(layer, "mlp.shared_expert."), Fs, D);
  out.push_back({qwen2_moe_layer_name(layer, "mlp.shared_expert_gate.weight"), {1, D}});
  return out;
}

}  // namespace sy
