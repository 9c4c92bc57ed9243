// One interface for every model the runtime runs (Qwen2-MoE decoders, BERT / BERT-MoE
// encoders), so that the commands, the trainer and the load reports never ask which model it
// is. A new model is one file: a class implementing Model plus one SY_REGISTER_MODEL line.
//
//   load_model(checkpoint)  -> the loader registered for config.json's model_type
//   forward(ids)            -> logits; a decoder continues its KV cache (reset_cache() first to
//                              start at position 0), an encoder always starts at position 0
//   backward(dlogits)       -> parameter gradients, where the model trains (trainable())
//   moe_layer(i)            -> layer i's MoE layer (null for a dense layer)
//   set_step(s)             -> the step every MoE collective is tagged with (faults, messages)
//   generate(...)           -> decoders: new tokens through the KV cache
//
// Parallelism as in each model's header: replicated weights, experts split E/P over the ranks
// of the communicator it was loaded with; forward(), backward() and generate() are COLLECTIVE.
//
// Legend: T tokens, V vocabulary.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "comm/communicator.h"
#include "comm/placement.h"
#include "routers/router.h"
#include "runtime/core/status.h"
#include "runtime/core/tensor.h"
#include "runtime/io/hf_checkpoint.h"
#include "runtime/model/sampling.h"
#include "runtime/moe/moe_layer.h"

namespace sy {

// What a training run updates: nothing (inference), the routers only (every other weight
// frozen; experts may stay quantized), or everything (fp32 experts).
enum class ModelTrain { kNone, kRouters, kAll };

// A parameter by its Hugging Face name. grad is null when the parameter is not trained.
// expert: a routed expert tensor (stacked [E/P, ...] on this rank: local, never all-reduced).
// moe_summed: a router or shared-expert tensor, whose gradient the MoE layer itself sums over
// the ranks (MoeLayer::allreduce_replicated_grads); the caller must not sum it again.
struct ModelParam {
  std::string name;
  Tensor* value = nullptr;
  Tensor* grad = nullptr;
  bool expert = false;
  bool moe_summed = false;
  bool router = false;  // a router's parameter (the MoE layer's gate.*)
};

// A routed-expert tensor as a checkpoint stores it: parameters() holds this rank's experts
// stacked [E/P, ...] under `stacked`; the checkpoint holds one tensor per global expert j,
// named global(j), of `shape` (runtime/train/checkpoint.h saves and resumes through it).
struct ExpertTensorKind {
  std::string stacked;
  std::function<std::string(int64_t j)> global;
  std::vector<int64_t> shape;
};

// Bytes this rank holds, by kind (for the memory report). Encoders have no KV cache.
struct ModelMemory {
  int64_t replicated_bytes = 0;   // embeddings, attention, norms, routers, shared experts, head
  int64_t expert_bytes = 0;       // this rank's routed experts (quantized storage when quantized)
  int64_t expert_bytes_fp32 = 0;  // the same experts in fp32
  int64_t kv_cache_bytes = 0;     // allocated KV cache
  int64_t activation_bytes = 0;   // the forward's buffers, MoE layers included (not the logits)
};

// `moe.placement`: which rank holds which routed experts (comm/placement.h), the same map for
// every MoE layer. Each rank loads the experts the map gives it, by global id, from the
// checkpoint; results are bitwise those of the contiguous placement (deterministic mode).
struct ModelPlacement {
  std::shared_ptr<const ExpertPlacement> map;  // null: contiguous (expert e on rank e / (E/P))
  std::string file;                            // where map was read from (named in errors)

  // OK without a map, or when it places the model's E experts on its P ranks, each once and
  // E/P per rank (what MoeLayer runs; replicas only exist in projections); else
  // InvalidArgument (exit 21) naming the file. E = 0 (a dense model) takes no map.
  Status check(int64_t E, int P) const;
};

// The load options every model understands; those of one architecture are ignored by others.
struct ModelOptions {
  ModelTrain train = ModelTrain::kNone;  // kAll needs expert_bits 32
  int expert_bits = 32;                  // 32, or 8 / 4: routed experts quantized at load
  int64_t quant_group = 128;             // input columns per scale when quantized
  double capacity_factor = 0.0;          // <= 0: dropless (Hugging Face semantics)
  std::string router;                    // "": the checkpoint's; else replace every router
  uint64_t seed = 1234;                  // a replaced router's (layer i: seed + i), upcycling noise
  // RouterConfig::balance_rate of every router, kept or replaced (a balance bias the checkpoint
  // lacks starts at zero); < 0: the checkpoint's (config.json).
  double balance_rate = -1.0;
  // BERT: a dense checkpoint is upcycled to this many experts per MoE layer (0 = keep it dense,
  // or the bert_moe checkpoint's), every moe_every-th layer, top-k experts per token, copies
  // with multiplicative N(0, upcycle_noise^2) noise.
  int64_t upcycle_experts = 0;
  int64_t moe_every = 0;
  int64_t experts_top_k = 0;
  double upcycle_noise = 0.0;
  ModelPlacement placement;  // contiguous unless a placement file was given
  // Where the model runs (backend, deterministic flag: make_context()); null =
  // default_context(). Must outlive the model.
  const ExecContext* exec = nullptr;
};

class Model {
 public:
  virtual ~Model() = default;

  // ---- what it is ----
  virtual std::string model_type() const = 0;  // config.json's: qwen2_moe | bert | bert_moe
  virtual bool is_decoder() const = 0;         // KV cache, generation, next-token loss
  virtual int64_t vocab_size() const = 0;      // V
  virtual int64_t max_positions() const = 0;
  virtual nlohmann::json config_json() const = 0;  // the config.json it would write
  // One line for the start-up banner: layers, widths, experts (and per rank of P), vocabulary.
  virtual std::string describe(int P) const = 0;

  // ---- forward ----
  // T tokens -> logits: [T, V] when all_logits (every rank gets all rows), else [1, V] for the
  // last token. A decoder runs them at positions cache_len() .. cache_len() + T - 1; an encoder
  // (no cache) at 0 .. T - 1. COLLECTIVE: every rank passes the same tokens, or its own with
  // set_replicated_tokens(false).
  virtual Status forward(const int32_t* ids, int64_t T, Tensor* logits, bool all_logits = true) = 0;
  virtual void reset_cache() {}
  virtual int64_t cache_len() const { return 0; }
  // false: every rank runs its OWN tokens (any T, also 0); default true: the same tokens.
  virtual void set_replicated_tokens(bool r) = 0;
  // The last forward on this rank: its wall time, and its split by part as one line.
  virtual double last_forward_seconds() const = 0;
  virtual std::string last_forward_split() const = 0;

  // ---- training (loaded with ModelOptions::train != kNone) ----
  virtual bool trainable() const { return false; }
  // Backward of the last forward (from position 0, all_logits): dlogits [T, V] -> gradients
  // (+=) of every trained parameter. aux_alpha > 0 adds the MoE layers' load-balancing loss.
  virtual Status backward(const float* dlogits_TV, float aux_alpha = 0.0f);
  virtual double last_aux_loss() const { return 0.0; }
  virtual std::vector<ModelParam> parameters() { return {}; }
  void zero_grad();  // every trained parameter's gradient
  // Several backward() calls per step: defer the MoE layers' cross-rank gradient sums
  // (MoeLayer::set_defer_grad_allreduce) and call allreduce_moe_grads() once after the last
  // one (COLLECTIVE).
  void set_defer_moe_grad_allreduce(bool defer);
  void allreduce_moe_grads();
  // MoE layer `layer`'s routed-expert tensors in checkpoint terms (empty for a dense layer).
  virtual std::vector<ExpertTensorKind> expert_tensor_kinds(int64_t layer) const {
    (void)layer;
    return {};
  }

  // ---- MoE layers ----
  virtual int64_t num_layers() const = 0;
  virtual MoeLayer* moe_layer(int64_t layer) = 0;  // null for a dense layer
  // The MoE layers in layer order, dense layers left out (metrics, load reports).
  std::vector<MoeLayer*> sparse_layers();
  // Swaps every MoE layer's router for a fresh `name` router and returns the old ones, indexed
  // by layer (null for dense layers). Not collective; every rank makes the same call.
  virtual StatusOr<std::vector<std::unique_ptr<Router>>> replace_routers(const std::string& name,
                                                                         uint64_t seed,
                                                                         int64_t hidden);
  // While set, every forward() appends each MoE layer's router input (what its router reads, of
  // this rank's T tokens, [T, D] row-major, host memory) to (*sink)[layer]; the caller sizes
  // sink to num_layers() (dense layers' entries stay empty). Null stops capturing. Returns
  // false for a model that cannot capture (the distillation warm start needs it).
  virtual bool set_moe_input_capture(std::vector<std::vector<float>>* sink) {
    (void)sink;
    return false;
  }

 protected:
  // For replace_routers: fresh[i] (built for MoE layer i; null for dense layers) starts from
  // the layer's router where it can (Router::init_from: hybrid from a linear gate routes
  // bitwise like it), then takes its place; returns the old routers, indexed by layer.
  StatusOr<std::vector<std::unique_ptr<Router>>> install_routers(
      std::vector<std::unique_ptr<Router>> fresh);
  // For parameters(): MoE layer `moe`'s parameters appended to *out, each named prefix + its
  // layer-local name: gate.* the router, experts.* this rank's routed experts, the rest the
  // shared expert (the layer sums the gate's and the shared expert's gradients over the ranks).
  static void append_moe_params(MoeLayer& moe, const std::string& prefix,
                                std::vector<ModelParam>* out);

 public:
  // The step every MoE layer's collectives are tagged with from now on: the training step, or
  // the inference step (sequence batch, generated token). SY_FAULT's step=s matches it.
  void set_step(int64_t step);

  virtual ModelMemory memory() const = 0;
  // The execution context the model's operations run on (its backend and deterministic flag).
  virtual const ExecContext& ctx() const = 0;

  // ---- generation (decoders) ----
  // Continues after a forward whose last row of logits is last_logits_V: up to max_new_tokens
  // tokens, each picked on rank 0 (sample_token) and shared, then run through the KV cache
  // (not the last one). Generated token s is tagged step s. Stops early when the cache is
  // full. on_token(id) runs on every rank after each token. COLLECTIVE over comm; a failed
  // decode on any rank fails every rank.
  // last_logits_V: host memory (host_readable() of the prompt's logits).
  StatusOr<std::vector<int32_t>> generate(const float* last_logits_V, int64_t max_new_tokens,
                                          const SamplingConfig& sampling, Communicator& comm,
                                          const std::function<void(int32_t)>& on_token);
  // OK when every MoE layer's router can route one token at a time through the KV cache;
  // InvalidArgument (exit 21) naming the first router whose choice depends on the batch
  // (Router::batch_dependent: expert choice). generate() checks it first.
  Status check_decodable();
};

// Models by config.json's model_type. Each model file registers its loader with one line,
//   SY_REGISTER_MODEL(qwen2_moe, "qwen2_moe", LoadQwen2Moe);
// and load_model() opens a checkpoint with the loader of its model_type (kBadInput naming the
// file and the known types otherwise). COLLECTIVE only in that every rank must call it.
using ModelLoader = StatusOr<std::unique_ptr<Model>> (*)(const HfCheckpoint& ck,
                                                         const ModelOptions& opt,
                                                         Communicator* comm);
bool register_model(const char* model_type, ModelLoader load);  // fatal on a duplicate type
std::vector<std::string> model_types();                         // sorted
StatusOr<std::unique_ptr<Model>> load_model(const HfCheckpoint& ck, const ModelOptions& opt,
                                            Communicator* comm);

#define SY_REGISTER_MODEL(ident, model_type, loader) \
  static const bool sy_model_registered_##ident = ::sy::register_model(model_type, loader)

// The products of config.json sizes that a model allocates: the embedding (vocab_size x
// hidden_size) and one layer's routed experts (matrices x num_experts x moe_intermediate_size x
// hidden_size), each computed without overflow and at most 2^36 values; BadInput naming `where`
// (the file) and the keys otherwise, before anything is allocated.
Status check_model_products(const std::string& where, int64_t vocab_size, int64_t hidden_size,
                            int64_t num_experts, int64_t moe_intermediate_size, int64_t matrices);

}  // namespace sy
