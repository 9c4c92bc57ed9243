// A BERT encoder (Hugging Face BertForMaskedLM) whose FFNs may be Mixture-of-Experts layers of
// GELU experts, loaded from a dense BERT checkpoint (and then "upcycled": every chosen FFN
// becomes E copies of itself behind a fresh router) or from the MoE form written below.
// Inference, router studies, and training (BertMoeOptions::train: backward through every part
// below, for the masked-language-model objective of runtime/train/mlm.h).
//
//   x = LayerNorm(word[ids] + position[0..T-1] + token_type[type_ids]; embeddings.LayerNorm)
//   per layer i:  x = LayerNorm(x + Wo Attn(Wq x + bq, Wk x + bk, Wv x + bv) + bo)
//   (attention.output.LayerNorm)
//                 x = LayerNorm(x + FFN_i(x)) (output.LayerNorm)
//   FFN_i(x) = W2 GELU(W1 x + b1) + b2   (intermediate.dense, output.dense; exact erf GELU)
//            or, in an MoE layer, sum_{k < K} w_k Expert_{e_k}(x) with each expert such an FFN
//            (ExpertKind::kGelu), p = router(x), (e_k, w_k) its top-K, w renormalized to sum 1
//            only when norm_topk_prob
//   logits = LayerNorm(GELU(Wt x + bt); transform.LayerNorm) word^T + cls.predictions.bias
// Attention is bidirectional, multi-head, scale 1/sqrt(head_dim); padding keys (attention
// mask 0) get probability 0, as Hugging Face's extended attention mask. All LayerNorms use
// layer_norm_eps. The decoder is tied to the word embeddings (cls.predictions.decoder.* in a
// checkpoint is ignored, as are pooler and next-sentence tensors).
//
// Which layers are MoE: layer i (0-based) when (i + 1) % moe_every == 0. moe_every = 1: every
// layer; moe_every = 2: layers 1, 3, 5, ... (every other layer, the second of each pair, as in
// GShard and Switch Transformer).
//
// Tensor names. Dense ("bert", Hugging Face's own):
//   bert.embeddings.{word_embeddings [V, D], position_embeddings [maxpos, D],
//                    token_type_embeddings [types, D]}.weight,
//                    bert.embeddings.LayerNorm.{weight,bias} [D]
//   bert.encoder.layer.{i}.attention.self.{query,key,value}.{weight [D, D], bias [D]}
//   bert.encoder.layer.{i}.attention.output.dense.{weight [D, D], bias [D]}
//   bert.encoder.layer.{i}.attention.output.LayerNorm.{weight,bias} [D]
//   bert.encoder.layer.{i}.intermediate.dense.{weight [F, D], bias [F]}
//   bert.encoder.layer.{i}.output.dense.{weight [D, F], bias [D]}
//   bert.encoder.layer.{i}.output.LayerNorm.{weight,bias} [D]
//   cls.predictions.transform.dense.{weight [D, D], bias [D]}
//   cls.predictions.transform.LayerNorm.{weight,bias} [D], cls.predictions.bias [V]
// MoE form ("bert_moe", this project's): the same, except that in an MoE layer i the two FFN
// dense layers are replaced by
//   bert.encoder.layer.{i}.moe.gate.<router param>       the router's parameters by their names;
//                                                        the linear router: moe.gate.weight [E, D]
//   bert.encoder.layer.{i}.moe.experts.{j}.intermediate.dense.{weight [Fe, D], bias [Fe]}
//   bert.encoder.layer.{i}.moe.experts.{j}.output.dense.{weight [D, Fe], bias [D]}
// (the LayerNorms stay where they were). Loading it reads only the rank's experts.
//
// config.json keys (BertConfig's; defaults as Hugging Face's where it has one):
//   model_type "bert" | "bert_moe" (default "bert"), hidden_act "gelu" only,
//   position_embedding_type "absolute" only, vocab_size, hidden_size, num_hidden_layers,
//   num_attention_heads (required), intermediate_size (required), max_position_embeddings 512,
//   type_vocab_size 2, layer_norm_eps 1e-12, initializer_range 0.02 (random writer only).
//   bert_moe adds: num_experts (required, >= 1), moe_every 1, num_experts_per_tok 1,
//   moe_intermediate_size (= intermediate_size), norm_topk_prob false, router "linear",
//   router_hidden 0 (router default), router_num_heads 1.
//
// Parallelism: embeddings, attention, LayerNorms, dense FFNs, routers and the MLM head are
// replicated on every rank of `comm` (same weights, same tokens); each MoE layer's experts are
// split E/P per rank and each rank holds (and reads, or copies when upcycling) only its own
// E/P experts. The MoE FFN runs token-sharded (runtime/model/token_sharded_moe.h); with the
// default dropless capacity and a deterministic ExecContext, P ranks give bitwise the logits
// of 1 rank. forward() is COLLECTIVE over comm.
//
// Legend: T tokens, D hidden, F dense FFN hidden, Fe expert hidden, V vocabulary, E experts,
// K top-k, P ranks.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "comm/communicator.h"
#include "routers/router.h"
#include "runtime/core/status.h"
#include "runtime/core/tensor.h"
#include "runtime/io/hf_checkpoint.h"
#include "runtime/model/model.h"
#include "runtime/model/token_sharded_moe.h"
#include "runtime/moe/moe_layer.h"

namespace sy {

struct BertMoeConfig {
  int64_t vocab_size = 0;           // V
  int64_t hidden_size = 0;          // D
  int64_t num_hidden_layers = 0;    // L
  int64_t num_attention_heads = 0;  // nH
  int64_t head_dim = 0;             // D / nH
  int64_t intermediate_size = 0;    // F
  int64_t max_position_embeddings = 512;
  int64_t type_vocab_size = 2;
  double layer_norm_eps = 1e-12;
  double initializer_range = 0.02;
  // MoE form (0 experts: a dense "bert").
  int64_t num_experts = 0;  // E
  int64_t moe_every = 1;
  int64_t num_experts_per_tok = 1;    // K
  int64_t moe_intermediate_size = 0;  // Fe
  bool norm_topk_prob = false;
  std::string router = kDefaultRouterName;
  int64_t router_hidden = 0;
  int64_t router_num_heads = 1;
  // "router_balance_rate" (written when > 0): RouterConfig::balance_rate of every MoE router.
  double router_balance_rate = 0.0;

  bool is_moe() const { return num_experts > 0; }
  bool is_moe_layer(int64_t layer) const { return num_experts > 0 && (layer + 1) % moe_every == 0; }
  // From config.json, every value type- and range-checked (kBadInput naming key and file).
  static StatusOr<BertMoeConfig> from_json(const JsonConfigReader& r);
  static StatusOr<BertMoeConfig> from_checkpoint(const HfCheckpoint& ck);
  // The config.json object: model_type "bert_moe" with the MoE keys when is_moe(), else "bert".
  nlohmann::json to_json() const;
};

// A small BERT for `switchyard init --arch bert_moe` and tests: BERT-base's vocabulary (30522)
// and positions (512), 4 layers of width 128, 4 heads, FFN 512; with moe, 8 experts every
// other layer, top-2, linear router.
nlohmann::json default_bert_config(bool moe = false);

// Writes a fresh random model in the layout above: config.json + model.safetensors (or shards
// over max_shard_bytes). `config` is a (partial) config.json object over default_bert_config(moe);
// moe = false writes a dense "bert" (MoE keys ignored), moe = true a "bert_moe". Weights are
// N(0, initializer_range^2), and so are biases and LayerNorm offsets, with LayerNorm scales
// 1 + N(0, initializer_range^2): nonzero everywhere, so a loader that drops a term is caught.
// Each tensor is drawn from (seed, tensor name); routers from (seed, layer).
Status write_random_bert_checkpoint(const std::string& dir, const nlohmann::json& config,
                                    uint64_t seed, bool moe, SafeDtype dtype = SafeDtype::kF32,
                                    int64_t max_shard_bytes = int64_t{2} << 30);
// The tensors write_random_bert_checkpoint writes for a (validated) config, in write order.
std::vector<std::pair<std::string, Tensor>> random_bert_tensors(const BertMoeConfig& c,
                                                                uint64_t seed);

struct BertMoeOptions {
  // A dense checkpoint: num_experts > 0 upcycles every MoE layer (moe_every) to E experts that
  // copy its FFN, with a freshly initialized router; 0 keeps the model dense.
  // A bert_moe checkpoint: 0 = the checkpoint's E / moe_every; another value is
  // kInvalidArgument. top_k may differ from the checkpoint's (an inference-time choice).
  int64_t num_experts = 0;
  int64_t moe_every = 0;  // 0: the checkpoint's, or 1 when upcycling
  int64_t top_k = 0;      // 0: the checkpoint's num_experts_per_tok, or 1 when upcycling
  // Upcycling: the router to create (name, hidden, num_heads, norm_topk_prob, init_std, seed;
  // layer i draws from seed + i). A bert_moe checkpoint's router kind, sizes and
  // norm_topk_prob come from its config.json instead; only seed is used (hash router tables).
  RouterConfig router;
  // kRouters: gradients for the routers only (every other weight frozen; experts may be
  // quantized); kAll: every parameter (fp32 experts). kNone: inference, no activations kept.
  ModelTrain train = ModelTrain::kNone;
  double capacity_factor = 0.0;  // <= 0: dropless (the Hugging Face semantics)
  // Upcycling: expert j's weight copies are W (1 + upcycle_noise * n), n ~ N(0, 1) drawn per
  // element from (seed, tensor name, global expert j): the same on any number of ranks.
  // Biases are copied exactly. 0 = exact copies.
  float upcycle_noise = 0.0f;
  int expert_bits = 32;        // 32, or 8 / 4: expert fc1/fc2 quantized at load (biases fp32)
  int64_t quant_group = 128;   // input columns per scale when quantized
  uint64_t seed = 1234;        // upcycling noise
  double balance_rate = -1.0;  // RouterConfig::balance_rate of every router; < 0: config.json's
  ModelPlacement placement;    // which rank holds which experts (null map: contiguous)
  // Where the model runs (backend, deterministic flag: make_context()); null =
  // default_context(). Must outlive the model.
  const ExecContext* exec = nullptr;
};

// Bytes this rank holds, by kind (no KV cache or activations counted).
using BertMoeMemory = ModelMemory;

// Seconds per part of the last forward on this rank.
struct BertMoeTimes {
  double embed_s = 0, attention_s = 0, dense_ffn_s = 0, moe_s = 0, head_s = 0, total_s = 0;
};

class BertMoeModel : public Model {
 public:
  // Reads the replicated tensors and this rank's experts (E % P == 0 or kInvalidArgument).
  // Every rank must call it; it does not communicate. Errors: kBadInput naming the tensor or
  // config key (missing, wrong shape, non-finite, bad value), kInvalidArgument for options.
  static StatusOr<std::unique_ptr<BertMoeModel>> load(const HfCheckpoint& ck,
                                                      const BertMoeOptions& opt,
                                                      Communicator* comm);

  // The model as loaded: after upcycling, the bert_moe config (E, moe_every, K, router).
  const BertMoeConfig& config() const { return cfg_; }

  // One sequence of T tokens at positions 0..T-1 -> logits [T, V] (resized). type_ids [T]
  // may be null (all 0); attention_mask [T] may be null (all real; 0 = padding key).
  // COLLECTIVE: every rank passes the same tokens. kInvalidArgument for T over
  // max_position_embeddings or ids out of range (checked before any collective, the same on
  // every rank).
  Status forward(const int32_t* ids, const int32_t* type_ids, int64_t T, Tensor* logits,
                 const uint8_t* attention_mask = nullptr);
  // The encoder only (no MLM head): fills last_hidden().
  Status encode(const int32_t* ids, const int32_t* type_ids, int64_t T,
                const uint8_t* attention_mask = nullptr);
  // Final hidden states of the last forward / encode [T, D] (after the last output.LayerNorm).
  const Tensor& last_hidden() const { return hidden_; }

  // false: every rank runs its OWN sequence (any T, also 0); the MoE layers exchange those
  // tokens as they are (token_sharded_moe.h). Default true: every rank passes the same tokens.
  void set_replicated_tokens(bool r) override { sharded_->set_replicated(r); }

  bool is_moe_layer(int64_t i) const { return cfg_.is_moe_layer(i); }
  // Swaps every MoE layer's router for a fresh `name` router (layer i seeded seed + i, the
  // layer's D / E / K, norm_topk_prob and router_num_heads; hidden 0 = the router's default)
  // and returns the old ones by layer (null for dense layers). A router that can start from
  // the old one does (Router::init_from: a hybrid from a linear gate routes as it did).
  // config() describes the new routers afterwards. Not collective; every rank makes the same
  // call. Built before anything is swapped: a bad name or size changes nothing.
  StatusOr<std::vector<std::unique_ptr<Router>>> replace_routers(const std::string& name,
                                                                 uint64_t seed,
                                                                 int64_t hidden) override;
  // While set, every forward() / encode() appends each MoE layer's router input (the
  // attention block's output LayerNorm, [T, D]) to (*sink)[layer] (model.h).
  bool set_moe_input_capture(std::vector<std::vector<float>>* sink) override {
    capture_ = sink;
    return true;
  }
  // MoE layers in layer order (dense layers skipped), for metrics and reports.
  std::vector<MoeLayer*> moe_layers();
  // Layer i's MoE layer, or null when it is dense.
  MoeLayer* moe_layer(int64_t i) override { return layers_[static_cast<size_t>(i)].moe.get(); }
  BertMoeMemory memory() const override;
  const ExecContext& ctx() const override { return *exec_; }
  const BertMoeTimes& last_times() const { return times_; }

  // ---- training (BertMoeOptions::train != kNone) ----
  // Backward of the last forward / encode + head (forward() with any mask and type ids):
  // dlogits [T, V] -> gradients (+=) of every trained parameter. COLLECTIVE like forward().
  // With replicated tokens every rank gets the full gradient of the replicated parameters;
  // with set_replicated_tokens(false) each rank's covers its own tokens and the caller
  // all-reduces them (the MoE layers all-reduce their routers' gradients themselves).
  // aux_alpha > 0 adds every MoE layer's Switch load-balancing loss (as Qwen2MoeModel).
  Status backward(const float* dlogits_TV, float aux_alpha = 0.0f) override;
  bool trainable() const override { return train_ != ModelTrain::kNone; }
  double last_aux_loss() const override { return aux_loss_; }
  // Hugging Face names (header); MoE tensors as bert.encoder.layer.{i}.moe.<MoeLayer name>
  // (moe.gate.<router param>, moe.experts.fc1 / fc1_bias / fc2 / fc2_bias stacked [E/P, ...]).
  std::vector<ModelParam> parameters() override;
  // moe.experts.{fc1, fc1_bias, fc2, fc2_bias}: moe.experts.{j}.{intermediate,output}.dense.*.
  std::vector<ExpertTensorKind> expert_tensor_kinds(int64_t layer) const override;

  // ---- the rest of the Model interface (model.h): an encoder ----
  // The whole sequence at positions 0..T-1, token types 0, no padding; logits [T, V] always.
  Status forward(const int32_t* ids, int64_t T, Tensor* logits, bool all_logits) override {
    (void)all_logits;
    return forward(ids, nullptr, T, logits);
  }
  std::string model_type() const override { return cfg_.is_moe() ? "bert_moe" : "bert"; }
  bool is_decoder() const override { return false; }
  int64_t vocab_size() const override { return cfg_.vocab_size; }
  int64_t max_positions() const override { return cfg_.max_position_embeddings; }
  nlohmann::json config_json() const override { return cfg_.to_json(); }
  std::string describe(int P) const override;
  double last_forward_seconds() const override { return times_.total_s; }
  std::string last_forward_split() const override;
  int64_t num_layers() const override { return static_cast<int64_t>(layers_.size()); }

 private:
  struct Layer {
    Tensor wq, bq, wk, bk, wv, bv;  // [D, D], [D]
    Tensor wo, bo, ln1_w, ln1_b;    // attention.output.dense, attention.output.LayerNorm
    Tensor w1, b1, w2, b2;          // dense FFN [F, D], [F], [D, F], [D] (empty when MoE)
    Tensor ln2_w, ln2_b;            // output.LayerNorm
    std::unique_ptr<MoeLayer> moe;  // MoE layers
    // Gradients of the replicated tensors (allocated when they are trained), same order.
    Tensor d_wq, d_bq, d_wk, d_bk, d_wv, d_bv, d_wo, d_bo, d_ln1_w, d_ln1_b;
    Tensor d_w1, d_b1, d_w2, d_b2, d_ln2_w, d_ln2_b;
    // The last forward's activations (training): the layer input, q, k, v, the attention
    // output, the two LayerNorms' inputs (residual sums), their outputs' first (x_mid), and the
    // dense FFN's pre-activation and GELU.
    DeviceArray<float> x_in, q, k, v, ctx, s1, x_mid, s2, pre, act;
  };
  // Every replicated tensor with its gradient slot, by Hugging Face name (layer tensors of
  // dense FFNs only when the layer is dense).
  std::vector<std::pair<std::string, std::pair<Tensor*, Tensor*>>> replicated_slots();
  BertMoeModel() = default;
  Status load_layer(const HfCheckpoint& ck, const BertMoeOptions& opt, bool upcycle, int64_t i);
  Status check_inputs(const int32_t* ids, const int32_t* type_ids, int64_t T) const;
  void move_weights_to(Memory* m);

  BertMoeConfig cfg_;
  Communicator* comm_ = nullptr;
  const ExecContext* exec_ = &default_context();
  Tensor word_, pos_, type_, emb_ln_w_, emb_ln_b_;              // embeddings
  Tensor head_w_, head_b_, head_ln_w_, head_ln_b_, head_bias_;  // MLM head
  Tensor d_word_, d_pos_, d_type_, d_emb_ln_w_, d_emb_ln_b_;
  Tensor d_head_w_, d_head_b_, d_head_ln_w_, d_head_ln_b_, d_head_bias_;
  ModelTrain train_ = ModelTrain::kNone;
  // Training: the last forward's embedding sum (LayerNorm input), head pre-activation, GELU and
  // transformed rows, its length and whether it had a padding mask; backward scratch.
  DeviceArray<float> s0_, head_pre_, head_act_, head_out_;
  int64_t last_T_ = -1;
  bool last_masked_ = false, last_has_head_ = false;
  DeviceArray<float> dx_, ds_, dm_, dq_, dk_, dv_, dctx_, dpre_;
  double aux_loss_ = 0;
  DeviceArray<float> aux_dprobs_;
  std::vector<Layer> layers_;
  std::unique_ptr<TokenShardedMoe> sharded_;
  // Activations of the last forward.
  Tensor hidden_;
  DeviceArray<float> q_, k_, v_, ctx_, y_, pre_, act_;
  DeviceArray<int32_t> ids_dev_, type_ids_dev_;  // the inputs where the ops run
  DeviceArray<uint8_t> mask_dev_;
  Memory* mem() const { return exec_->backend; }  // where every tensor of the model lives
  BertMoeTimes times_;
  std::vector<std::vector<float>>* capture_ = nullptr;  // set_moe_input_capture
};

}  // namespace sy
