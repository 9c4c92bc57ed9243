// The Hugging Face tensor names of a Qwen2-MoE checkpoint (the layout qwen2_moe.h lists), built
// in this one place for the loader, the random writer, the trainer's checkpoint and the tests.
//
// Shapes: V vocabulary, D hidden, nH / nKV query / key-value heads, hd head dim, F expert
// hidden, Fs shared-expert hidden, Fd dense-MLP hidden (intermediate_size).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace sy {

struct Qwen2MoeConfig;

inline constexpr const char* kQwen2MoeEmbedName = "model.embed_tokens.weight";  // [V, D]
inline constexpr const char* kQwen2MoeFinalNormName = "model.norm.weight";      // [D]
inline constexpr const char* kQwen2MoeLmHeadName = "lm_head.weight";            // [V, D]
// A routed expert's projections, in checkpoint order.
inline constexpr const char* kQwen2MoeExpertProjs[] = {"gate_proj", "up_proj", "down_proj"};

// One tensor of a layer: its name, its shape, and whether it is an RMSNorm weight (the random
// writer sets those to ones and draws every other tensor from a normal).
struct Qwen2MoeTensor {
  std::string name;
  std::vector<int64_t> shape;
  bool norm = false;
};

// "model.layers.{layer}.{rest}".
std::string qwen2_moe_layer_name(int64_t layer, const std::string& rest);
// "model.layers.{layer}.mlp.experts.{expert}.{proj}.weight": one routed expert in a checkpoint.
std::string qwen2_moe_expert_name(int64_t layer, int64_t expert, const std::string& proj);
// "model.layers.{layer}.mlp.experts.{proj}": a model's stacked [experts, ...] parameter.
std::string qwen2_moe_stacked_expert_name(int64_t layer, const std::string& proj);
// The inverse of qwen2_moe_stacked_expert_name; false for any other name.
bool qwen2_moe_parse_stacked_expert(const std::string& name, int64_t* layer, std::string* proj);
// "model.layers.{layer}.mlp.gate.": the prefix of every parameter of the layer's router.
std::string qwen2_moe_router_prefix(int64_t layer);
bool qwen2_moe_is_router_param(const std::string& name);
// The layer of a "model.layers.{i}." name; -1 for the embeddings, final norm and LM head.
int64_t qwen2_moe_layer_of(const std::string& name);

// Every layer's tensors before its MLP, in this order: input_layernorm [D],
// post_attention_layernorm [D], q_proj weight [nH*hd, D] and bias [nH*hd], k_proj and v_proj
// weight [nKV*hd, D] and bias [nKV*hd], o_proj weight [D, nH*hd].
std::vector<Qwen2MoeTensor> qwen2_moe_attention_tensors(const Qwen2MoeConfig& c, int64_t layer);
// A dense layer's MLP: gate_proj, up_proj [Fd, D], down_proj [D, Fd].
std::vector<Qwen2MoeTensor> qwen2_moe_dense_mlp_tensors(const Qwen2MoeConfig& c, int64_t layer);
// One routed expert of an MoE layer: gate_proj, up_proj [F, D], down_proj [D, F].
std::vector<Qwen2MoeTensor> qwen2_moe_expert_tensors(const Qwen2MoeConfig& c, int64_t layer,
                                                     int64_t expert);
// An MoE layer's shared expert (gate_proj, up_proj [Fs, D], down_proj [D, Fs]) and its gate
// shared_expert_gate [1, D]; empty when the model has none (Fs = 0).
std::vector<Qwen2MoeTensor> qwen2_moe_shared_expert_tensors(const Qwen2MoeConfig& c, int64_t layer);

}  // namespace sy
