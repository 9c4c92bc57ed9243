// The Qwen2-MoE decoder (the architecture of Qwen1.5-MoE-A2.7B), forward for prefill and for
// decoding with a KV cache, loaded from a Hugging Face checkpoint folder with its tensor names,
// experts split across the ranks of a Communicator.
//
//   h = embed[ids]
//   per layer i:  h += o_proj( Attn( RoPE(q_proj a), RoPE(k_proj a), v_proj a ) ),
//                     a = RMSNorm(h; input_layernorm)       (causal, grouped-query, q/k/v biased)
//                 h += FFN_i(RMSNorm(h; post_attention_layernorm))
//   logits = lm_head( RMSNorm(h; model.norm) )
// FFN_i is the MoE block when num_experts > 0, i is not in mlp_only_layers and
// (i + 1) % decoder_sparse_step == 0, else a dense SwiGLU MLP of intermediate_size:
//   MoE(x) = sum_{k < K} w_k Expert_{e_k}(x) + sigmoid(shared_expert_gate . x) SharedExpert(x)
//   with p = softmax(gate x), (e_k, w_k) its top-K, w renormalized only if norm_topk_prob.
//
// Hugging Face tensor names (config.json keys in Qwen2MoeConfig below):
//   model.embed_tokens.weight [V, D]          model.norm.weight [D]       lm_head.weight [V, D]
//   model.layers.{i}.input_layernorm.weight [D]  .post_attention_layernorm.weight [D]
//   model.layers.{i}.self_attn.{q,k,v}_proj.{weight,bias}  [nH*hd | nKV*hd, D], o_proj.weight
//   model.layers.{i}.mlp.gate.weight [E, D]   (linear router; another router kind persisted by
//                                              switchyard stores its parameters as
//                                              model.layers.{i}.mlp.gate.<router param name>)
//   model.layers.{i}.mlp.experts.{j}.{gate,up}_proj.weight [F, D], .down_proj.weight [D, F]
//   model.layers.{i}.mlp.shared_expert.{gate,up,down}_proj.weight, .shared_expert_gate.weight
//   model.layers.{i}.mlp.{gate,up,down}_proj.weight  (dense layers)
//
// Parallelism: attention, norms, embeddings, the router, the shared expert and the LM head are
// replicated on every rank of `comm` (every rank runs the same tokens); the routed experts of
// each MoE layer are split E/P per rank, and each rank reads ONLY its experts' tensors from the
// checkpoint. The MoE FFN runs token-sharded (runtime/model/token_sharded_moe.h): dropless by
// default, as Hugging Face computes it, so P ranks give the logits of 1 rank (bitwise with
// a deterministic ExecContext). forward() is COLLECTIVE over comm.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "comm/communicator.h"
#include "runtime/core/status.h"
#include "runtime/core/tensor.h"
#include "runtime/io/hf_checkpoint.h"
#include "runtime/model/model.h"
#include "runtime/model/token_sharded_moe.h"
#include "runtime/moe/moe_layer.h"

namespace sy {

struct Qwen2MoeConfig {
  int64_t vocab_size = 0;                       // V
  int64_t hidden_size = 0;                      // D
  int64_t num_hidden_layers = 0;                // L
  int64_t num_attention_heads = 0;              // nH
  int64_t num_key_value_heads = 0;              // nKV
  int64_t head_dim = 0;                         // D / nH
  int64_t intermediate_size = 0;                // dense MLP hidden
  int64_t moe_intermediate_size = 0;            // F per routed expert
  int64_t shared_expert_intermediate_size = 0;  // Fs; 0 = no shared expert
  int64_t num_experts = 0;                      // E
  int64_t num_experts_per_tok = 1;              // K
  bool norm_topk_prob = false;
  double rms_norm_eps = 1e-6;
  double rope_theta = 1e6;
  int64_t max_position_embeddings = 32768;
  int64_t decoder_sparse_step = 1;
  std::vector<int64_t> mlp_only_layers;
  bool tie_word_embeddings = false;
  double router_aux_loss_coef = 0.001;  // read and kept for training (issue 5)
  double initializer_range = 0.02;      // used by the random writer only
  // The router kind of every MoE layer (switchyard's own config.json keys; Hugging Face
  // configs have none and mean "linear"): "switchyard_router" (a registered router name),
  // "switchyard_router_hidden" (H, > 0 for attention / mlp / hybrid / mlp_hadamard; 0 =
  // RouterConfig::kDefaultHidden) and "switchyard_router_seed" (layer i uses router_seed + i:
  // what defines a router without parameters, such as hash's hash functions). to_json() writes
  // them only when router != kDefaultRouterName.
  std::string router = kDefaultRouterName;
  int64_t router_hidden = 0;
  uint64_t router_seed = 0;
  // "switchyard_router_balance_rate" (written when > 0): RouterConfig::balance_rate of every
  // MoE layer's router, kept and replaced ones alike; its bias is mlp.gate.balance_bias (zero
  // when the checkpoint has none).
  double router_balance_rate = 0.0;

  bool is_sparse(int64_t layer) const;
  // From config.json, every value type- and range-checked (kBadInput naming key and file).
  static StatusOr<Qwen2MoeConfig> from_json(const JsonConfigReader& r);
  static StatusOr<Qwen2MoeConfig> from_checkpoint(const HfCheckpoint& ck);
  // The config.json object Hugging Face would write (model_type "qwen2_moe").
  nlohmann::json to_json() const;
};

// A small default for `switchyard init --arch qwen2_moe` and tests: the Qwen1.5-MoE shape
// scaled down (Qwen's vocabulary, so the real tokenizer fits).
nlohmann::json default_qwen2_moe_config();

// Writes a fresh random model (N(0, initializer_range^2) weights, unit norms, small biases) in
// the Hugging Face layout: config.json + model.safetensors, or shards when the tensors exceed
// max_shard_bytes. `config` is a (partial) config.json object over the defaults above.
// Tensors are drawn from (seed, tensor name) when their shard is written, so the writer holds
// one shard at a time (max_shard_bytes) and a model of any size can be written.
Status write_random_qwen2_moe_checkpoint(const std::string& dir, const nlohmann::json& config,
                                         uint64_t seed, SafeDtype dtype = SafeDtype::kF32,
                                         int64_t max_shard_bytes = int64_t{2} << 30);

// What a training run updates, a parameter, the bytes held: the model interface's (model.h).
using Qwen2MoeTrain = ModelTrain;
using Qwen2MoeParam = ModelParam;
using Qwen2MoeMemory = ModelMemory;

struct Qwen2MoeOptions {
  Qwen2MoeTrain train = Qwen2MoeTrain::kNone;  // kAll needs expert_bits 32
  int expert_bits = 32;                        // 32, or 8 / 4: routed experts quantized at load
  int64_t quant_group = 128;                   // input columns per scale when quantized
  double capacity_factor = 0.0;                // <= 0: dropless (Hugging Face semantics)
  int64_t max_cache_tokens = 0;  // KV cache limit in tokens; 0 = max_position_embeddings
  // The router: "" (default) = the checkpoint's (Qwen2MoeConfig::router, "linear" for Hugging
  // Face checkpoints), every parameter read from mlp.gate.*. Another registered router name
  // loads the checkpoint's router and then replaces it with a fresh one of that kind
  // (Qwen2MoeModel::replace_routers: router studies, fine-tuning); config() then describes it.
  std::string router;
  int64_t router_hidden = 0;  // H of a replaced router; 0 = RouterConfig::kDefaultHidden
  uint64_t seed = 1234;       // for a replaced router (layer i: seed + i)
  // RouterConfig::balance_rate of every router, kept or replaced; < 0: the checkpoint's
  // (Qwen2MoeConfig::router_balance_rate).
  double balance_rate = -1.0;
  ModelPlacement placement;  // which rank holds which experts (null map: contiguous)
  // Where the model runs (backend, deterministic flag: make_context()); null =
  // default_context(). Must outlive the model.
  const ExecContext* exec = nullptr;
};

// Seconds spent per part of the last forward (last_times()) or backward (last_backward_times())
// on this rank, laps of one clock, so the parts add up to total_s: embed_s the lookup (backward:
// the scatter into its gradient); attention_s each layer's attention block (input RMSNorm, q/k/v
// projections, biases, RoPE, scores and values, o_proj and its residual); moe_s / dense_mlp_s the
// FFN block (post-attention RMSNorm, the MoE layer or dense MLP, the residual); head_s the final
// RMSNorm and the LM head (backward: with the gradient buffers' setup).
struct Qwen2MoeTimes {
  double embed_s = 0, attention_s = 0, moe_s = 0, dense_mlp_s = 0, head_s = 0, total_s = 0;
};

class Qwen2MoeModel : public Model {
 public:
  // Reads the replicated tensors and this rank's experts (E % P == 0 or kInvalidArgument).
  // COLLECTIVE only in that every rank must call it; it does not communicate.
  static StatusOr<std::unique_ptr<Qwen2MoeModel>> load(const HfCheckpoint& ck,
                                                       const Qwen2MoeOptions& opt,
                                                       Communicator* comm);

  const Qwen2MoeConfig& config() const { return cfg_; }
  const ExecContext& ctx() const override { return *exec_; }

  // Runs T new tokens at positions cache_len() .. cache_len() + T - 1, appending their keys and
  // values to the KV cache. logits: [T, V] when all_logits (the LM head runs token-sharded
  // and is allgathered: every rank gets all rows), else [1, V] for the last token ([0, V]
  // when T = 0). COLLECTIVE: every rank passes the same tokens.
  Status forward(const int32_t* ids, int64_t T, Tensor* logits, bool all_logits = true) override;
  int64_t cache_len() const override { return cache_len_; }
  // false: every rank runs its OWN tokens (different sequences, any T, also 0), the MoE layers
  // exchange them with the experts' owners as they are and the LM head stays local. Default
  // true: every rank passes the same tokens (see the header comment).
  void set_replicated_tokens(bool r) override { sharded_->set_replicated(r); }
  void reset_cache() override { cache_len_ = 0; }

  // ---- training (Qwen2MoeOptions::train != kNone) ----
  // Backward of the last forward, which must have started at position 0 (reset_cache() first)
  // with all_logits: dlogits [T, V] -> parameter gradients (+=) of every trained parameter.
  // COLLECTIVE like forward(). In replicated-tokens mode every rank gets the full gradient of
  // the replicated parameters; with set_replicated_tokens(false) each rank's gradient covers
  // its own tokens and the caller all-reduces them (the MoE layers all-reduce their routers'
  // and shared experts' gradients themselves).
  // aux_alpha > 0 adds the Switch load-balancing loss of every MoE layer
  // (runtime/kernels/balance.h, alpha * E * sum_e f_e P_e over the tokens each rank routed in the
  // last forward) to the gradient; last_aux_loss() is its value summed over the layers (this rank's
  // tokens).
  Status backward(const float* dlogits_TV, float aux_alpha = 0.0f) override;
  double last_aux_loss() const override { return aux_loss_; }
  std::vector<Qwen2MoeParam> parameters() override;
  // model.layers.{i}.mlp.experts.{gate,up,down}_proj: experts.{j}.{proj}.weight.
  std::vector<ExpertTensorKind> expert_tensor_kinds(int64_t layer) const override;

  // ---- routers ----
  // Swaps every MoE layer's router for a fresh `name` router (RouterConfig: hidden, seed + layer
  // index, the layer's D / E / K and norm_topk_prob) and returns the old ones, indexed by layer
  // (null for dense layers): the teachers of a distillation warm start (runtime/train/distill.h).
  // A hybrid replacing a linear gate starts as that gate: its `weight` is the gate's W and its
  // mix g is 0, so it routes bitwise like it until trained. config().router / router_hidden /
  // router_seed describe the new routers afterwards (config().to_json() records them). Not
  // collective; every rank must make the same call (routers are replicated).
  StatusOr<std::vector<std::unique_ptr<Router>>> replace_routers(const std::string& name,
                                                                 uint64_t seed,
                                                                 int64_t hidden) override;
  // While set, every forward() appends each MoE layer's router input (the RMS-normalized x of
  // its T tokens, [T, D] row-major) to (*sink)[layer]; the caller sizes sink to
  // num_hidden_layers (dense layers' entries stay empty). Null stops capturing.
  bool set_moe_input_capture(std::vector<std::vector<float>>* sink) override {
    capture_ = sink;
    return true;
  }

  // Final hidden states of the last forward [T, D] (after model.norm).
  const Tensor& last_hidden() const { return hidden_; }
  // MoE layers (null for dense layers), for metrics and load reports.
  std::vector<MoeLayer*> moe_layers();
  Qwen2MoeMemory memory() const override;
  const Qwen2MoeTimes& last_times() const { return times_; }
  const Qwen2MoeTimes& last_backward_times() const { return bwd_times_; }

  // ---- the rest of the Model interface (model.h) ----
  std::string model_type() const override { return "qwen2_moe"; }
  bool is_decoder() const override { return true; }
  int64_t vocab_size() const override { return cfg_.vocab_size; }
  int64_t max_positions() const override { return cfg_.max_position_embeddings; }
  nlohmann::json config_json() const override { return cfg_.to_json(); }
  std::string describe(int P) const override;
  double last_forward_seconds() const override { return times_.total_s; }
  std::string last_forward_split() const override;
  bool trainable() const override { return training(); }
  int64_t num_layers() const override { return static_cast<int64_t>(layers_.size()); }
  MoeLayer* moe_layer(int64_t i) override { return layers_[static_cast<size_t>(i)].moe.get(); }

 private:
  // Activations of one layer's last forward, kept for backward when training.
  struct Saved {
    DeviceArray<float> x_in, a1, rstd1, q, att, x_mid, a2, rstd2, g, u, act;
  };
  struct Layer {
    Tensor ln1, ln2;  // [D]
    Tensor wq, bq, wk, bk, wv, bv, wo;
    std::unique_ptr<MoeLayer> moe;      // sparse layers
    Tensor mlp_gate, mlp_up, mlp_down;  // dense layers
    // Gradients of the replicated tensors (allocated when they are trained).
    Tensor d_ln1, d_ln2, d_wq, d_bq, d_wk, d_bk, d_wv, d_bv, d_wo, d_mlp_gate, d_mlp_up, d_mlp_down;
    Saved saved;
    DeviceArray<float> k_cache, v_cache;  // [rows, nKV*hd], rows [0, cache_len) valid; grows
  };
  Qwen2MoeModel() = default;

  Qwen2MoeConfig cfg_;
  Qwen2MoeOptions opt_;
  const ExecContext* exec_ = &default_context();
  Communicator* comm_ = nullptr;
  Tensor embed_, final_norm_, lm_head_;  // lm_head_ empty when tied
  Tensor d_embed_, d_final_norm_, d_lm_head_;
  DeviceArray<float> x_final_, rstd_final_;  // saved for backward
  std::vector<int32_t> ids_;                 // the last forward's tokens (training; host)
  DeviceArray<int32_t> ids_dev_;             // the last forward's tokens where the ops run
  bool last_from_zero_ = false;
  bool training() const { return opt_.train != Qwen2MoeTrain::kNone; }
  std::vector<Layer> layers_;
  std::vector<float> inv_freq_;
  int64_t cache_len_ = 0, max_cache_ = 0;
  std::unique_ptr<TokenShardedMoe> sharded_;
  // Activations of the last forward.
  Tensor hidden_;
  DeviceArray<float> x_, a_, q_, att_, y_, g_, u_, act_, head_slice_;
  DeviceArray<float> dh_, dx_, da_, datt_, dq_, dk_, dv_;  // backward scratch
  Qwen2MoeTimes times_, bwd_times_;
  std::vector<std::vector<float>>* capture_ = nullptr;  // set_moe_input_capture
  double aux_loss_ = 0;
  DeviceArray<float> aux_dprobs_;
  Memory* mem() const { return exec_->backend; }  // where every tensor of the model lives
};

}  // namespace sy
