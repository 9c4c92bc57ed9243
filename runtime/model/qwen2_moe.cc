#include "runtime/model/qwen2_moe.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>

#include "routers/registry.h"
#include "runtime/backend/ops.h"
#include "runtime/core/json_input.h"
#include "runtime/core/rng.h"
#include "runtime/core/timing.h"
#include "runtime/model/qwen2_moe_names.h"

namespace sy {
namespace {
using json = nlohmann::json;

constexpr auto Now = now_seconds;

// A layer's attention-block tensors (value, gradient) in qwen2_moe_attention_tensors order, and
// its dense MLP's in qwen2_moe_dense_mlp_tensors order. (A template, so it can take the model's
// private Layer.)
using TensorSlots = std::vector<std::pair<Tensor*, Tensor*>>;
template <typename LayerT>
TensorSlots AttentionSlots(LayerT& L) {
  return {{&L.ln1, &L.d_ln1}, {&L.ln2, &L.d_ln2}, {&L.wq, &L.d_wq},
          {&L.bq, &L.d_bq},   {&L.wk, &L.d_wk},   {&L.bk, &L.d_bk},
          {&L.wv, &L.d_wv},   {&L.bv, &L.d_bv},   {&L.wo, &L.d_wo}};
}
template <typename LayerT>
TensorSlots DenseMlpSlots(LayerT& L) {
  return {{&L.mlp_gate, &L.d_mlp_gate}, {&L.mlp_up, &L.d_mlp_up}, {&L.mlp_down, &L.d_mlp_down}};
}

int64_t Bytes(const Tensor& t) {
  return t.numel() * static_cast<int64_t>(sizeof(float));
}
}  // namespace

// ---- config ----

bool Qwen2MoeConfig::is_sparse(int64_t layer) const {
  if (num_experts <= 0) return false;
  if (std::find(mlp_only_layers.begin(), mlp_only_layers.end(), layer) != mlp_only_layers.end())
    return false;
  return (layer + 1) % decoder_sparse_step == 0;
}

StatusOr<Qwen2MoeConfig> Qwen2MoeConfig::from_json(const JsonConfigReader& r) {
  Qwen2MoeConfig c;
  const std::string& where = r.where();
  SY_ASSIGN_OR_RETURN(std::string type, r.get_string("model_type", "qwen2_moe"));
  if (type != "qwen2_moe")
    return BadInput(where + ": model_type is \"" + type + "\", expected \"qwen2_moe\"");
  // Features of Qwen2MoeConfig this implementation does not have: refuse rather than compute
  // something else.
  if (auto it = r.json().find("rope_scaling"); it != r.json().end() && !it->is_null())
    return BadInput(where + ": rope_scaling " + it->dump() + " is not supported (plain RoPE only)");
  SY_ASSIGN_OR_RETURN(bool sliding, r.get_bool("use_sliding_window", false));
  if (sliding) return BadInput(where + ": use_sliding_window true is not supported");
  SY_ASSIGN_OR_RETURN(std::string act, r.get_string("hidden_act", "silu"));
  if (act != "silu") return BadInput(where + ": hidden_act \"" + act + "\" (only silu)");
  constexpr int64_t kBig = int64_t{1} << 24;
  SY_ASSIGN_OR_RETURN(c.vocab_size, r.get_int("vocab_size", 1, kBig));
  SY_ASSIGN_OR_RETURN(c.hidden_size, r.get_int("hidden_size", 1, 1 << 16));
  SY_ASSIGN_OR_RETURN(c.num_hidden_layers, r.get_int("num_hidden_layers", 1, 1024));
  SY_ASSIGN_OR_RETURN(c.num_attention_heads, r.get_int("num_attention_heads", 1, 1024));
  SY_ASSIGN_OR_RETURN(c.num_key_value_heads,
                      r.get_int("num_key_value_heads", 1, 1024, c.num_attention_heads));
  SY_ASSIGN_OR_RETURN(c.intermediate_size, r.get_int("intermediate_size", 1, 1 << 20));
  SY_ASSIGN_OR_RETURN(c.num_experts, r.get_int("num_experts", 0, 1 << 14, 0));
  SY_ASSIGN_OR_RETURN(c.moe_intermediate_size,
                      r.get_int("moe_intermediate_size", 1, 1 << 20, c.intermediate_size));
  SY_ASSIGN_OR_RETURN(c.shared_expert_intermediate_size,
                      r.get_int("shared_expert_intermediate_size", 0, 1 << 20, 0));
  SY_ASSIGN_OR_RETURN(c.num_experts_per_tok,
                      r.get_int("num_experts_per_tok", 1, std::max<int64_t>(1, c.num_experts), 1));
  SY_ASSIGN_OR_RETURN(c.norm_topk_prob, r.get_bool("norm_topk_prob", false));
  SY_ASSIGN_OR_RETURN(c.rms_norm_eps, r.get_float("rms_norm_eps", 0.0, 1.0, 1e-6));
  SY_ASSIGN_OR_RETURN(c.rope_theta, r.get_float("rope_theta", 1.0, 1e12, 1e6));
  SY_ASSIGN_OR_RETURN(c.max_position_embeddings,
                      r.get_int("max_position_embeddings", 1, kBig, 32768));
  SY_ASSIGN_OR_RETURN(c.decoder_sparse_step, r.get_int("decoder_sparse_step", 1, 1024, 1));
  SY_ASSIGN_OR_RETURN(c.tie_word_embeddings, r.get_bool("tie_word_embeddings", false));
  SY_ASSIGN_OR_RETURN(c.router_aux_loss_coef, r.get_float("router_aux_loss_coef", 0.0, 1e3, 0.001));
  SY_ASSIGN_OR_RETURN(c.initializer_range, r.get_float("initializer_range", 0.0, 10.0, 0.02));
  SY_ASSIGN_OR_RETURN(c.router, r.get_string("switchyard_router", kDefaultRouterName));
  {
    const std::vector<std::string> known = router_names();
    if (std::find(known.begin(), known.end(), c.router) == known.end()) {
      std::string list;
      for (const std::string& n : known) list += (list.empty() ? "" : ", ") + n;
      return BadInput(where + ": switchyard_router \"" + c.router +
                      "\" is not a router (known: " + list + ")");
    }
  }
  SY_ASSIGN_OR_RETURN(c.router_hidden, r.get_int("switchyard_router_hidden", 0, 1 << 20, 0));
  SY_ASSIGN_OR_RETURN(int64_t router_seed,
                      r.get_int("switchyard_router_seed", 0, int64_t{1} << 53, 0));
  c.router_seed = static_cast<uint64_t>(router_seed);
  SY_ASSIGN_OR_RETURN(c.router_balance_rate,
                      r.get_float("switchyard_router_balance_rate", 0.0, 1.0, 0.0));
  auto it = r.json().find("mlp_only_layers");
  if (it != r.json().end() && !it->is_null()) {
    if (!it->is_array() || it->size() > 1024)
      return BadInput(where + ": \"mlp_only_layers\" must be a list of layer indices");
    for (const json& v : *it) {
      if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() >= c.num_hidden_layers)
        return BadInput(where + ": \"mlp_only_layers\" holds " + json_brief(v) +
                        ", not a layer index below num_hidden_layers");
      c.mlp_only_layers.push_back(v.get<int64_t>());
    }
  }
  if (c.hidden_size % c.num_attention_heads != 0)
    return BadInput(where + ": hidden_size " + std::to_string(c.hidden_size) +
                    " is not a multiple of num_attention_heads " +
                    std::to_string(c.num_attention_heads));
  c.head_dim = c.hidden_size / c.num_attention_heads;
  SY_ASSIGN_OR_RETURN(c.head_dim, r.get_int("head_dim", 2, 4096, c.head_dim));
  if (c.head_dim % 2 != 0) return BadInput(where + ": head_dim must be even for RoPE");
  if (c.num_attention_heads % c.num_key_value_heads != 0)
    return BadInput(where + ": num_attention_heads " + std::to_string(c.num_attention_heads) +
                    " is not a multiple of num_key_value_heads " +
                    std::to_string(c.num_key_value_heads));
  if (c.num_experts > 0 && c.num_experts_per_tok > c.num_experts)
    return BadInput(where + ": num_experts_per_tok exceeds num_experts");
  SY_RETURN_IF_ERROR(check_model_products(where, c.vocab_size, c.hidden_size, c.num_experts,
                                          c.moe_intermediate_size, 3));
  return c;
}

StatusOr<Qwen2MoeConfig> Qwen2MoeConfig::from_checkpoint(const HfCheckpoint& ck) {
  return from_json(ck.config_reader());
}

json Qwen2MoeConfig::to_json() const {
  json j{{"architectures", {"Qwen2MoeForCausalLM"}},
         {"model_type", "qwen2_moe"},
         {"hidden_act", "silu"},
         {"vocab_size", vocab_size},
         {"hidden_size", hidden_size},
         {"num_hidden_layers", num_hidden_layers},
         {"num_attention_heads", num_attention_heads},
         {"num_key_value_heads", num_key_value_heads},
         {"intermediate_size", intermediate_size},
         {"moe_intermediate_size", moe_intermediate_size},
         {"shared_expert_intermediate_size", shared_expert_intermediate_size},
         {"num_experts", num_experts},
         {"num_experts_per_tok", num_experts_per_tok},
         {"norm_topk_prob", norm_topk_prob},
         {"rms_norm_eps", rms_norm_eps},
         {"rope_theta", rope_theta},
         {"max_position_embeddings", max_position_embeddings},
         {"decoder_sparse_step", decoder_sparse_step},
         {"mlp_only_layers", mlp_only_layers},
         {"tie_word_embeddings", tie_word_embeddings},
         {"router_aux_loss_coef", router_aux_loss_coef},
         {"initializer_range", initializer_range},
         {"torch_dtype", "float32"}};
  if (router != kDefaultRouterName) {
    j["switchyard_router"] = router;
    j["switchyard_router_hidden"] = router_hidden;
    j["switchyard_router_seed"] = router_seed;
  }
  if (router_balance_rate > 0) j["switchyard_router_balance_rate"] = router_balance_rate;
  // Written only where it is not the default, so other configs keep their bytes; without it a
  // model whose head_dim differs could not reopen what it saved (found by fuzz_config_json).
  if (head_dim != hidden_size / num_attention_heads) j["head_dim"] = head_dim;
  return j;
}

json default_qwen2_moe_config() {
  // Qwen1.5-MoE-A2.7B (hidden 2048, 24 layers, 16 heads, 60 experts of 1408, top-4, shared
  // 5632) scaled down by 16 in width and 6 in depth; its vocabulary and RoPE are kept.
  Qwen2MoeConfig c;
  c.vocab_size = 151936;
  c.hidden_size = 128;
  c.num_hidden_layers = 4;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 4;
  c.head_dim = 32;
  c.intermediate_size = 352;
  c.moe_intermediate_size = 88;
  c.shared_expert_intermediate_size = 352;
  c.num_experts = 16;
  c.num_experts_per_tok = 4;
  c.norm_topk_prob = false;
  c.max_position_embeddings = 8192;
  return c.to_json();
}

// ---- random writer ----

Status write_random_qwen2_moe_checkpoint(const std::string& dir, const json& config, uint64_t seed,
                                         SafeDtype dtype, int64_t max_shard_bytes) {
  if (!config.is_object()) return InvalidArgument("init: the config must be a JSON object");
  json merged = default_qwen2_moe_config();
  merged.update(config);
  SY_ASSIGN_OR_RETURN(Qwen2MoeConfig c,
                      Qwen2MoeConfig::from_json(JsonConfigReader(merged, "init config")));
  const float std_w = static_cast<float>(c.initializer_range);
  const int64_t D = c.hidden_size, V = c.vocab_size;
  HfCheckpointWriter w(dtype);
  auto normal = [&](const std::string& name, std::vector<int64_t> shape, float std) {
    const int64_t n = Tensor::numel_of(shape);
    w.add_lazy(name, std::move(shape), [n, std, seed, name](float* dst) {
      fill_normal(dst, n, std, seed, fnv1a64(name.c_str()));
    });
  };
  auto add = [&](const std::vector<Qwen2MoeTensor>& ts) {
    for (const Qwen2MoeTensor& t : ts) {
      if (t.norm)
        w.add(t.name, Tensor(t.shape, 1.0f));
      else
        normal(t.name, t.shape, std_w);
    }
  };
  normal(kQwen2MoeEmbedName, {V, D}, std_w);
  w.add(kQwen2MoeFinalNormName, Tensor({D}, 1.0f));
  if (!c.tie_word_embeddings) normal(kQwen2MoeLmHeadName, {V, D}, std_w);
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    add(qwen2_moe_attention_tensors(c, i));
    if (c.is_sparse(i)) {
      normal(qwen2_moe_router_prefix(i) + "weight", {c.num_experts, D}, std_w);
      for (int64_t j = 0; j < c.num_experts; ++j) add(qwen2_moe_expert_tensors(c, i, j));
      add(qwen2_moe_shared_expert_tensors(c, i));
    } else {
      add(qwen2_moe_dense_mlp_tensors(c, i));
    }
  }
  return w.write(dir, c.to_json(), max_shard_bytes);
}

// ---- load ----

StatusOr<std::unique_ptr<Qwen2MoeModel>> Qwen2MoeModel::load(const HfCheckpoint& ck,
                                                             const Qwen2MoeOptions& opt,
                                                             Communicator* comm) {
  std::unique_ptr<Qwen2MoeModel> m(new Qwen2MoeModel());
  SY_ASSIGN_OR_RETURN(m->cfg_, Qwen2MoeConfig::from_checkpoint(ck));
  if (opt.balance_rate >= 0) m->cfg_.router_balance_rate = opt.balance_rate;
  m->opt_ = opt;
  m->comm_ = comm;
  if (opt.exec) m->exec_ = opt.exec;
  const Qwen2MoeConfig& c = m->cfg_;
  const int P = comm ? comm->size() : 1;
  const int64_t D = c.hidden_size, hd = c.head_dim, V = c.vocab_size;
  if (c.num_experts > 0 && c.num_experts % P != 0)
    return InvalidArgument(ck.dir() + ": " + std::to_string(c.num_experts) +
                           " experts do not split evenly over " + std::to_string(P) + " ranks");
  SY_RETURN_IF_ERROR(opt.placement.check(c.num_experts, P));
  if (opt.expert_bits != 32 && opt.expert_bits != 8 && opt.expert_bits != 4)
    return InvalidArgument("expert bits must be 32, 8 or 4");
  if (opt.train == Qwen2MoeTrain::kAll && opt.expert_bits != 32)
    return InvalidArgument("training every weight needs fp32 experts (quantized ones are frozen)");

  // The checkpoint's router (config.json), built once here for its parameter names and shapes.
  auto ck_router = [&](int64_t i) {
    RouterConfig rc;
    rc.name = c.router;
    rc.d_model = D;
    rc.num_experts = c.num_experts;
    rc.top_k = c.num_experts_per_tok;
    rc.hidden = c.router_hidden;
    rc.norm_topk_prob = c.norm_topk_prob;
    rc.init_std = 0.0f;  // every parameter comes from the checkpoint
    rc.seed = c.router_seed + static_cast<uint64_t>(i);
    rc.vocab_size = V;
    rc.balance_rate = static_cast<float>(c.router_balance_rate);
    return rc;
  };
  std::vector<std::string> gate_params;  // its parameters' names (under mlp.gate.)
  if (c.num_experts > 0) {
    SY_ASSIGN_OR_RETURN(std::unique_ptr<Router> probe, make_router(ck_router(0)));
    for (const Param& p : probe->params()) gate_params.push_back(p.name);
  }
  if (!opt.router.empty() && opt.router != c.router) {  // validated before any tensor is read
    RouterConfig rc = ck_router(0);
    rc.name = opt.router;
    rc.hidden = opt.router_hidden;
    SY_RETURN_IF_ERROR(validate_router_config(rc));
  }

  // Schema first, before any tensor is read: every tensor the model needs, and nothing else.
  std::vector<std::string> need = {kQwen2MoeEmbedName, kQwen2MoeFinalNormName};
  if (!c.tie_word_embeddings || ck.has(kQwen2MoeLmHeadName)) need.push_back(kQwen2MoeLmHeadName);
  auto add_need = [&need](const std::vector<Qwen2MoeTensor>& ts) {
    for (const Qwen2MoeTensor& t : ts) need.push_back(t.name);
  };
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    add_need(qwen2_moe_attention_tensors(c, i));
    if (c.is_sparse(i)) {
      for (const std::string& name : gate_params) {
        // A balance bias the checkpoint lacks starts at zero; one it has while the routers take
        // none (balance_rate 0) is left unread.
        if (name == kBalanceBiasName && !ck.has(qwen2_moe_router_prefix(i) + name)) continue;
        need.push_back(qwen2_moe_router_prefix(i) + name);
      }
      const std::string bias = qwen2_moe_router_prefix(i) + kBalanceBiasName;
      if (c.router_balance_rate <= 0 && ck.has(bias)) need.push_back(bias);
      for (int64_t j = 0; j < c.num_experts; ++j) add_need(qwen2_moe_expert_tensors(c, i, j));
      add_need(qwen2_moe_shared_expert_tensors(c, i));
    } else {
      add_need(qwen2_moe_dense_mlp_tensors(c, i));
    }
  }
  SY_RETURN_IF_ERROR(ck.check_names(need, /*allow_extra=*/false));

  SY_ASSIGN_OR_RETURN(m->embed_, ck.read(kQwen2MoeEmbedName, {V, D}));
  SY_ASSIGN_OR_RETURN(m->final_norm_, ck.read(kQwen2MoeFinalNormName, {D}));
  if (ck.has(kQwen2MoeLmHeadName)) {
    SY_ASSIGN_OR_RETURN(m->lm_head_, ck.read(kQwen2MoeLmHeadName, {V, D}));
  }
  // Reads the tensors `ts` into the values of `slots`, in order.
  auto read_slots = [&ck](const std::vector<Qwen2MoeTensor>& ts,
                          const TensorSlots& slots) -> Status {
    SY_CHECK_EQ(ts.size(), slots.size());
    for (size_t k = 0; k < ts.size(); ++k) {
      SY_ASSIGN_OR_RETURN(*slots[k].first, ck.read(ts[k].name, ts[k].shape));
    }
    return Status::Ok();
  };
  m->layers_.resize(static_cast<size_t>(c.num_hidden_layers));
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    Layer& L = m->layers_[static_cast<size_t>(i)];
    SY_RETURN_IF_ERROR(read_slots(qwen2_moe_attention_tensors(c, i), AttentionSlots(L)));
    if (!c.is_sparse(i)) {
      SY_RETURN_IF_ERROR(read_slots(qwen2_moe_dense_mlp_tensors(c, i), DenseMlpSlots(L)));
      continue;
    }
    MoeLayerConfig lc;
    lc.d_model = D;
    lc.ffn_hidden = c.moe_intermediate_size;
    lc.num_experts = c.num_experts;
    lc.top_k = c.num_experts_per_tok;
    lc.capacity_factor = opt.capacity_factor;
    lc.shared_expert_hidden = c.shared_expert_intermediate_size;
    lc.train_experts = opt.train == Qwen2MoeTrain::kAll;
    lc.expert_bits = opt.expert_bits;  // with init_std 0: quantized zeros until loaded
    lc.quant_group = opt.quant_group;
    lc.init_std = 0.0f;  // every weight comes from the checkpoint
    lc.router = ck_router(i);
    lc.seed = opt.seed;
    lc.layer_index = static_cast<int>(i);
    lc.exec = m->exec_;
    lc.placement = opt.placement.map;
    SY_ASSIGN_OR_RETURN(L.moe, MoeLayer::create(lc, comm));
    MoeLayer& moe = *L.moe;
    for (Param& p : moe.router().params()) {
      const std::string name = qwen2_moe_router_prefix(i) + p.name;
      if (p.name == kBalanceBiasName && !ck.has(name)) continue;  // zero
      SY_RETURN_IF_ERROR(ck.read_into(name, &p.value));
    }
    // This rank's experts only (local expert e is global local_expert_ids()[e]), one at a time:
    // quantized experts go straight from the file to int8/int4, so no rank ever holds even its own
    // experts in fp32.
    const int64_t F = c.moe_intermediate_size;
    std::vector<float> w[3];  // gate_proj, up_proj, down_proj of one expert
    for (std::vector<float>& v : w) v.resize(static_cast<size_t>(F * D));
    for (int64_t e = 0; e < moe.num_local_experts(); ++e) {
      const std::vector<Qwen2MoeTensor> ts =
          qwen2_moe_expert_tensors(c, i, moe.local_expert_ids()[e]);
      for (size_t k = 0; k < ts.size(); ++k)
        SY_RETURN_IF_ERROR(ck.read_into(ts[k].name, ts[k].shape, w[k].data()));
      moe.experts().set_expert_weights(e, w[0].data(), w[1].data(), w[2].data());
    }
    if (SharedExpert* s = moe.shared_expert()) {
      for (Param& p : s->params())
        SY_RETURN_IF_ERROR(ck.read_into(qwen2_moe_layer_name(i, "mlp." + p.name), &p.value));
    }
  }
  // The replicated weights were read on the host: they move to where the model runs.
  Memory* mem = m->mem();
  for (Tensor* t : {&m->embed_, &m->final_norm_, &m->lm_head_}) t->move_to(mem);
  for (Layer& L : m->layers_) {
    for (auto [value, grad] : AttentionSlots(L)) value->move_to(mem);
    if (!L.moe)
      for (auto [value, grad] : DenseMlpSlots(L)) value->move_to(mem);
  }
  if (opt.train == Qwen2MoeTrain::kAll) {  // gradients of every replicated tensor
    auto like = [mem](const Tensor& t) { return Tensor(t.shape, mem); };
    m->d_embed_ = like(m->embed_);
    m->d_final_norm_ = like(m->final_norm_);
    if (!m->lm_head_.empty()) m->d_lm_head_ = like(m->lm_head_);
    for (Layer& L : m->layers_) {
      for (auto [value, grad] : AttentionSlots(L)) *grad = like(*value);
      if (!L.moe)
        for (auto [value, grad] : DenseMlpSlots(L)) *grad = like(*value);
    }
  }
  if (!opt.router.empty() && opt.router != c.router) {
    // The checkpoint's routers are dropped: a caller that wants them as teachers calls
    // replace_routers itself (runtime/train/distill.h).
    SY_RETURN_IF_ERROR(m->replace_routers(opt.router, opt.seed, opt.router_hidden).status());
  }
  m->inv_freq_ = rope_inv_freq(hd, c.rope_theta);
  m->max_cache_ = opt.max_cache_tokens > 0 ? opt.max_cache_tokens : c.max_position_embeddings;
  m->sharded_ = std::make_unique<TokenShardedMoe>(comm);
  return m;
}

StatusOr<std::vector<std::unique_ptr<Router>>> Qwen2MoeModel::replace_routers(
    const std::string& name, uint64_t seed, int64_t hidden) {
  const Qwen2MoeConfig& c = cfg_;
  std::vector<std::unique_ptr<Router>> fresh(layers_.size());
  // Build every router first, so a bad name or size changes nothing.
  for (size_t i = 0; i < layers_.size(); ++i) {
    if (!layers_[i].moe) continue;
    RouterConfig rc;
    rc.name = name;
    rc.d_model = c.hidden_size;
    rc.num_experts = c.num_experts;
    rc.top_k = c.num_experts_per_tok;
    rc.hidden = hidden;
    rc.norm_topk_prob = c.norm_topk_prob;
    rc.seed = seed + static_cast<uint64_t>(i);
    rc.vocab_size = c.vocab_size;
    rc.balance_rate = static_cast<float>(c.router_balance_rate);
    SY_ASSIGN_OR_RETURN(fresh[i], make_router(rc));
  }
  // Each starts from the old one where it can (hybrid from the linear gate; routers/hybrid.cc).
  SY_ASSIGN_OR_RETURN(auto old, install_routers(std::move(fresh)));
  cfg_.router = name;
  cfg_.router_hidden = hidden > 0 ? hidden : RouterConfig::kDefaultHidden;  // explicit in files
  cfg_.router_seed = seed;
  return old;
}

std::vector<MoeLayer*> Qwen2MoeModel::moe_layers() {
  std::vector<MoeLayer*> out;
  for (Layer& L : layers_) out.push_back(L.moe.get());
  return out;
}

Qwen2MoeMemory Qwen2MoeModel::memory() const {
  Qwen2MoeMemory m;
  m.replicated_bytes = Bytes(embed_) + Bytes(final_norm_) + Bytes(lm_head_);
  for (const DeviceArray<float>* v : {&x_, &a_, &q_, &att_, &y_, &g_, &u_, &act_, &head_slice_})
    m.activation_bytes += static_cast<int64_t>(v->capacity() * sizeof(float));
  m.activation_bytes += Bytes(hidden_);
  if (exec_->workspace) m.activation_bytes += exec_->workspace->bytes();  // attention scratch
  for (const Layer& L : layers_) {
    for (const Tensor* t : {&L.ln1, &L.ln2, &L.wq, &L.bq, &L.wk, &L.bk, &L.wv, &L.bv, &L.wo,
                            &L.mlp_gate, &L.mlp_up, &L.mlp_down})
      m.replicated_bytes += Bytes(*t);
    m.kv_cache_bytes +=
        static_cast<int64_t>((L.k_cache.capacity() + L.v_cache.capacity()) * sizeof(float));
    if (!L.moe) continue;
    MoeLayer& moe = *L.moe;
    for (Param& p : moe.router().params()) m.replicated_bytes += Bytes(p.value) + Bytes(p.grad);
    if (SharedExpert* s = moe.shared_expert())
      for (Param& p : s->params()) m.replicated_bytes += Bytes(p.value);
    m.expert_bytes += moe.experts().weight_bytes();
    m.activation_bytes += moe.buffer_bytes();
    m.expert_bytes_fp32 += moe.experts().num_params() * static_cast<int64_t>(sizeof(float));
  }
  return m;
}

// ---- forward ----

Status Qwen2MoeModel::forward(const int32_t* ids, int64_t T, Tensor* logits, bool all_logits) {
  const Qwen2MoeConfig& c = cfg_;
  const int64_t D = c.hidden_size, hd = c.head_dim, nH = c.num_attention_heads,
                nKV = c.num_key_value_heads, V = c.vocab_size;
  const int64_t Q = nH * hd, KV = nKV * hd;
  if (T < 0) return InvalidArgument("forward: negative token count");
  if (cache_len_ + T > max_cache_)
    return InvalidArgument("forward: " + std::to_string(cache_len_ + T) +
                           " tokens exceed the KV cache limit of " + std::to_string(max_cache_) +
                           " (max_position_embeddings or --max-cache)");
  for (int64_t t = 0; t < T; ++t)
    if (ids[t] < 0 || ids[t] >= V)
      return InvalidArgument("forward: token id " + std::to_string(ids[t]) + " at position " +
                             std::to_string(cache_len_ + t) + " is outside the vocabulary [0, " +
                             std::to_string(V) + ")");
  times_ = Qwen2MoeTimes();
  const double t0 = Now();
  const int64_t pos0 = cache_len_, Tk = cache_len_ + T;
  Memory* m = mem();
  resize_in(x_, T * D, m);
  resize_in(a_, T * D, m);
  resize_in(y_, T * D, m);
  resize_in(q_, T * Q, m);
  resize_in(att_, T * Q, m);
  const ExecContext& ex = *exec_;
  resize_in(ids_dev_, T, m);
  ids_dev_.copy_from_host(ids, static_cast<size_t>(T));  // the tokens go where the ops run
  ops::embedding_rows(ex, embed_.ptr(), V, ids_dev_.data(), T, D, x_.data());
  const bool save = training();
  if (save) {
    ids_.assign(ids, ids + T);
    last_from_zero_ = pos0 == 0;
  }
  double t1 = Now();
  times_.embed_s = t1 - t0;

  const float eps = static_cast<float>(c.rms_norm_eps);
  AttentionShape as;
  as.num_heads = nH;
  as.num_kv_heads = nKV;
  as.head_dim = hd;
  as.causal = true;
  as.scale = 1.0f / std::sqrt(static_cast<float>(hd));
  for (size_t li = 0; li < layers_.size(); ++li) {
    Layer& L = layers_[li];
    Saved& S = L.saved;
    // Training keeps this layer's activations (a1, q, att, a2, ... are its own buffers then).
    auto keep = [&](DeviceArray<float>& v, int64_t n) -> float* { return resize_in(v, n, m); };
    auto keep_copy = [&](DeviceArray<float>& v, const DeviceArray<float>& src, int64_t n) {
      ops::copy(ex, keep(v, n), src.data(), n * static_cast<int64_t>(sizeof(float)));
    };
    float* a1 = save ? keep(S.a1, T * D) : a_.data();
    float* rstd1 = save ? keep(S.rstd1, T) : nullptr;
    float* qb = save ? keep(S.q, T * Q) : q_.data();
    float* att = save ? keep(S.att, T * Q) : att_.data();
    float* a2 = save ? keep(S.a2, T * D) : a_.data();
    float* rstd2 = save ? keep(S.rstd2, T) : nullptr;
    if (save) keep_copy(S.x_in, x_, T * D);
    // Grow the cache geometrically (amortized O(1) per token), never past max_cache_.
    if (static_cast<int64_t>(L.k_cache.size()) < Tk * KV || L.k_cache.memory() != m) {
      const int64_t rows = std::min<int64_t>(max_cache_, std::max<int64_t>(Tk, 2 * cache_len_));
      resize_in(L.k_cache, rows * KV, m);
      resize_in(L.v_cache, rows * KV, m);
    }
    // Attention block: every rank runs it on the same rows, so its GEMMs need no row-stable
    // kernel to agree across ranks.
    {
      const ExecContext rep = ex.replicated();
      ops::rmsnorm_forward(rep, x_.data(), L.ln1.ptr(), a1, rstd1, T, D, eps);
      float* kc = L.k_cache.data() + pos0 * KV;
      float* vc = L.v_cache.data() + pos0 * KV;
      ops::linear_forward(rep, a1, L.wq.ptr(), qb, T, D, Q);
      ops::linear_forward(rep, a1, L.wk.ptr(), kc, T, D, KV);
      ops::linear_forward(rep, a1, L.wv.ptr(), vc, T, D, KV);
      ops::add_bias_rows(rep, L.bq.ptr(), T, Q, qb);
      ops::add_bias_rows(rep, L.bk.ptr(), T, KV, kc);
      ops::add_bias_rows(rep, L.bv.ptr(), T, KV, vc);
      ops::rope_apply(rep, qb, T, nH, hd, Q, pos0, inv_freq_);
      ops::rope_apply(rep, kc, T, nKV, hd, KV, pos0, inv_freq_);
      ops::attention_forward(rep, qb, L.k_cache.data(), L.v_cache.data(), att, T, Tk, pos0, as,
                             nullptr);
      ops::linear_forward(rep, att, L.wo.ptr(), x_.data(), T, Q, D, /*beta=*/1.0f);  // residual
    }
    double t2 = Now();
    times_.attention_s += t2 - t1;
    t1 = t2;
    // FFN block.
    if (save) keep_copy(S.x_mid, x_, T * D);
    ops::rmsnorm_forward(ex, x_.data(), L.ln2.ptr(), a2, rstd2, T, D, eps);
    if (L.moe && capture_ && li < capture_->size()) {  // an explicit copy to the host
      std::vector<float>& sink = (*capture_)[li];
      sink.resize(sink.size() + static_cast<size_t>(T * D));
      m->copy_to_host(sink.data() + sink.size() - T * D, a2,
                      T * D * static_cast<int64_t>(sizeof(float)));
    }
    if (L.moe) {  // its collectives carry the step set by Model::set_step
      SY_RETURN_IF_ERROR(sharded_->forward(*L.moe, a2, ids_dev_.data(), T, D, y_.data()));
    } else {
      const int64_t F = c.intermediate_size;
      float* g = keep(save ? S.g : g_, T * F);
      float* u = keep(save ? S.u : u_, T * F);
      float* act = keep(save ? S.act : act_, T * F);
      swiglu_forward(ex, a2, L.mlp_gate.ptr(), L.mlp_up.ptr(), L.mlp_down.ptr(), T, D, F, g, u, act,
                     y_.data());
    }
    ops::add_inplace(ex, x_.data(), y_.data(), T * D);  // residual
    t2 = Now();
    (L.moe ? times_.moe_s : times_.dense_mlp_s) += t2 - t1;
    t1 = t2;
  }
  cache_len_ += T;

  hidden_.resize({T, D}, m);
  if (save) {
    resize_in(x_final_, T * D, m);
    ops::copy(ex, x_final_.data(), x_.data(), T * D * static_cast<int64_t>(sizeof(float)));
    resize_in(rstd_final_, T, m);
  }
  ops::rmsnorm_forward(ex, x_.data(), final_norm_.ptr(), hidden_.ptr(),
                       save ? rstd_final_.data() : nullptr, T, D, eps);
  const float* head = lm_head_.empty() ? embed_.ptr() : lm_head_.ptr();
  const int P = comm_ && sharded_->replicated() ? comm_->size() : 1;
  if (all_logits && P > 1) {
    // Token-sharded LM head (the largest GEMM at Qwen's vocabulary): rank r computes the rows
    // of its slice, an allgather gives every rank all T rows. Same slices as the MoE layers,
    // so in deterministic mode the rows equal those of 1 rank bitwise.
    const int64_t S = (T + P - 1) / P;
    const int64_t b = std::min<int64_t>(T, comm_->rank() * S), n = std::min<int64_t>(T, b + S) - b;
    resize_in(head_slice_, S * V, m);
    head_slice_.fill(0.0f);
    ops::linear_forward(ex, hidden_.ptr() + b * D, head, head_slice_.data(), n, D, V);
    logits->resize({P * S, V}, m);
    comm_->allgather(head_slice_.data(), logits->ptr(), S * V, {"lm_head.allgather"});
    logits->shape[0] = T;
    logits->data.resize(static_cast<size_t>(T * V));
  } else if (all_logits) {
    logits->resize({T, V}, m);
    ops::linear_forward(ex, hidden_.ptr(), head, logits->ptr(), T, D, V);
  } else if (T > 0) {
    logits->resize({1, V}, m);
    // One row, the same on every rank: no row-stable kernel needed to agree.
    ops::linear_forward(ex.replicated(), hidden_.ptr() + (T - 1) * D, head, logits->ptr(), 1, D, V);
  } else {
    logits->resize({0, V}, m);  // a rank without tokens this step (replicated_tokens false)
  }
  const double t3 = Now();
  times_.head_s = t3 - t1;
  times_.total_s = t3 - t0;
  return Status::Ok();
}

// ---- training ----

std::vector<Qwen2MoeParam> Qwen2MoeModel::parameters() {
  std::vector<Qwen2MoeParam> out;
  auto add = [&](const std::string& name, Tensor& v, Tensor& g) {
    out.push_back({name, &v, g.empty() ? nullptr : &g, false});
  };
  // The named tensors `ts` with the values and gradients of `slots`, in order.
  auto add_slots = [&](const std::vector<Qwen2MoeTensor>& ts, const TensorSlots& slots) {
    SY_CHECK_EQ(ts.size(), slots.size());
    for (size_t k = 0; k < ts.size(); ++k) add(ts[k].name, *slots[k].first, *slots[k].second);
  };
  add(kQwen2MoeEmbedName, embed_, d_embed_);
  add(kQwen2MoeFinalNormName, final_norm_, d_final_norm_);
  if (!lm_head_.empty()) add(kQwen2MoeLmHeadName, lm_head_, d_lm_head_);
  for (size_t i = 0; i < layers_.size(); ++i) {
    Layer& L = layers_[i];
    const int64_t li = static_cast<int64_t>(i);
    add_slots(qwen2_moe_attention_tensors(cfg_, li), AttentionSlots(L));
    if (!L.moe) {
      add_slots(qwen2_moe_dense_mlp_tensors(cfg_, li), DenseMlpSlots(L));
      continue;
    }
    // MoE parameters under their layer-local names: gate.<router param>, experts.<stacked>,
    // shared_expert.*, shared_expert_gate.weight.
    append_moe_params(*L.moe, qwen2_moe_layer_name(li, "mlp."), &out);
  }
  return out;
}

std::vector<ExpertTensorKind> Qwen2MoeModel::expert_tensor_kinds(int64_t layer) const {
  if (!layers_[static_cast<size_t>(layer)].moe) return {};
  const int64_t D = cfg_.hidden_size, F = cfg_.moe_intermediate_size;
  std::vector<ExpertTensorKind> out;
  for (const char* proj : kQwen2MoeExpertProjs)
    out.push_back({qwen2_moe_stacked_expert_name(layer, proj),
                   [layer, proj](int64_t j) { return qwen2_moe_expert_name(layer, j, proj); },
                   std::string(proj) == "down_proj" ? std::vector<int64_t>{D, F}
                                                    : std::vector<int64_t>{F, D}});
  return out;
}

Status Qwen2MoeModel::backward(const float* dlogits_TV, float aux_alpha) {
  if (!training()) return InvalidArgument("backward: the model was loaded without training");
  if (!last_from_zero_ || cache_len_ != static_cast<int64_t>(ids_.size()))
    return InvalidArgument("backward: the last forward must start at position 0 (reset_cache)");
  aux_loss_ = 0;
  bwd_times_ = Qwen2MoeTimes();
  const double t0 = Now();
  const Qwen2MoeConfig& c = cfg_;
  const int64_t T = static_cast<int64_t>(ids_.size()), D = c.hidden_size, hd = c.head_dim,
                nH = c.num_attention_heads, nKV = c.num_key_value_heads, V = c.vocab_size;
  const int64_t Q = nH * hd, KV = nKV * hd;
  auto grad = [](Tensor& g) -> float* { return g.empty() ? nullptr : g.ptr(); };
  const ExecContext& ex = *exec_;
  const bool tied = lm_head_.empty();
  const float* head = tied ? embed_.ptr() : lm_head_.ptr();
  Memory* m = mem();
  float* dh = resize_in(dh_, T * D, m);
  float* dx = resize_in(dx_, T * D, m);
  dx_.fill(0.0f);
  float* da = resize_in(da_, T * D, m);
  float* datt = resize_in(datt_, T * Q, m);
  float* dq = resize_in(dq_, T * Q, m);
  float* dk = resize_in(dk_, T * KV, m);
  float* dv = resize_in(dv_, T * KV, m);
  // logits = hidden head^T; hidden = RMSNorm(x_final)
  ops::linear_backward(ex, hidden_.ptr(), head, dlogits_TV,
                       tied ? grad(d_embed_) : grad(d_lm_head_), dh, T, D, V,
                       /*accumulate_dx=*/false);
  ops::rmsnorm_backward(ex, x_final_.data(), final_norm_.ptr(), rstd_final_.data(), dh, dx,
                        grad(d_final_norm_), T, D);
  double t1 = Now();
  bwd_times_.head_s = t1 - t0;
  AttentionShape as;
  as.num_heads = nH;
  as.num_kv_heads = nKV;
  as.head_dim = hd;
  as.causal = true;
  as.scale = 1.0f / std::sqrt(static_cast<float>(hd));
  for (size_t li = layers_.size(); li-- > 0;) {
    Layer& L = layers_[li];
    Saved& S = L.saved;
    // FFN block: x_out = x_mid + FFN(RMSNorm(x_mid)); dx holds d x_out.
    if (L.moe) {
      aux_loss_ += sharded_->backward_with_balance(*L.moe, dx, T, D, da, aux_alpha, &aux_dprobs_);
    } else {
      const int64_t F = c.intermediate_size;
      resize_in(g_, T * F, m);
      resize_in(u_, T * F, m);
      swiglu_backward(ex, S.a2.data(), L.mlp_gate.ptr(), L.mlp_up.ptr(), L.mlp_down.ptr(),
                      S.g.data(), S.u.data(), S.act.data(), dx, T, D, F, grad(L.d_mlp_gate),
                      grad(L.d_mlp_up), grad(L.d_mlp_down), da, false, g_.data(), u_.data());
    }
    ops::rmsnorm_backward(ex, S.x_mid.data(), L.ln2.ptr(), S.rstd2.data(), da, dx, grad(L.d_ln2), T,
                          D);  // dx += : now d x_mid
    double t2 = Now();
    (L.moe ? bwd_times_.moe_s : bwd_times_.dense_mlp_s) += t2 - t1;
    t1 = t2;
    // Attention block: x_mid = x_in + o_proj(Attn(...)).
    ops::linear_backward(ex, S.att.data(), L.wo.ptr(), dx, grad(L.d_wo), datt, T, Q, D, false);
    dk_.fill(0.0f);
    dv_.fill(0.0f);
    ops::attention_backward(ex, S.q.data(), L.k_cache.data(), L.v_cache.data(), datt, dq, dk, dv, T,
                            T, 0, as, nullptr);
    ops::rope_apply(ex, dq, T, nH, hd, Q, 0, inv_freq_, /*inverse=*/true);
    ops::rope_apply(ex, dk, T, nKV, hd, KV, 0, inv_freq_, /*inverse=*/true);
    if (!L.d_bq.empty()) ops::bias_backward_rows(ex, dq, T, Q, L.d_bq.ptr());
    if (!L.d_bk.empty()) ops::bias_backward_rows(ex, dk, T, KV, L.d_bk.ptr());
    if (!L.d_bv.empty()) ops::bias_backward_rows(ex, dv, T, KV, L.d_bv.ptr());
    ops::linear_backward(ex, S.a1.data(), L.wq.ptr(), dq, grad(L.d_wq), da, T, D, Q, false);
    ops::linear_backward(ex, S.a1.data(), L.wk.ptr(), dk, grad(L.d_wk), da, T, D, KV, true);
    ops::linear_backward(ex, S.a1.data(), L.wv.ptr(), dv, grad(L.d_wv), da, T, D, KV, true);
    ops::rmsnorm_backward(ex, S.x_in.data(), L.ln1.ptr(), S.rstd1.data(), da, dx, grad(L.d_ln1), T,
                          D);  // dx += : now d x_in
    t2 = Now();
    bwd_times_.attention_s += t2 - t1;
    t1 = t2;
  }
  if (!d_embed_.empty()) ops::scatter_add_rows(ex, dx, ids_dev_.data(), T, D, d_embed_.ptr());
  const double t3 = Now();
  bwd_times_.embed_s = t3 - t1;
  bwd_times_.total_s = t3 - t0;
  return Status::Ok();
}

// ---- the Model interface's one-line summaries ----

std::string Qwen2MoeModel::describe(int P) const {
  const Qwen2MoeConfig& c = cfg_;
  char b[512];
  std::snprintf(b, sizeof(b),
                "qwen2_moe, %lld layers, hidden %lld, %lld heads (%lld kv), %lld experts "
                "(%lld per rank) of %lld, top-%lld%s, shared %lld, vocab %lld",
                (long long)c.num_hidden_layers, (long long)c.hidden_size,
                (long long)c.num_attention_heads, (long long)c.num_key_value_heads,
                (long long)c.num_experts, (long long)(c.num_experts / P),
                (long long)c.moe_intermediate_size, (long long)c.num_experts_per_tok,
                c.norm_topk_prob ? " (renormalized)" : "",
                (long long)c.shared_expert_intermediate_size, (long long)c.vocab_size);
  return b;
}

std::string Qwen2MoeModel::last_forward_split() const {
  const Qwen2MoeTimes& t = times_;
  char b[256];
  std::snprintf(b, sizeof(b), "attention %.1f ms, moe %.1f ms, dense mlp %.1f ms, head %.1f ms",
                t.attention_s * 1e3, t.moe_s * 1e3, t.dense_mlp_s * 1e3, t.head_s * 1e3);
  return b;
}

// ---- registration (runtime/model/model.h) ----

namespace {
StatusOr<std::unique_ptr<Model>> LoadQwen2Moe(const HfCheckpoint& ck, const ModelOptions& opt,
                                              Communicator* comm) {
  Qwen2MoeOptions q;
  q.train = opt.train;
  q.expert_bits = opt.expert_bits;
  q.quant_group = opt.quant_group;
  q.capacity_factor = opt.capacity_factor;
  q.router = opt.router;
  q.seed = opt.seed;
  q.balance_rate = opt.balance_rate;
  q.placement = opt.placement;
  q.exec = opt.exec;
  SY_ASSIGN_OR_RETURN(auto m, Qwen2MoeModel::load(ck, q, comm));
  return std::unique_ptr<Model>(std::move(m));
}
}  // namespace

SY_REGISTER_MODEL(qwen2_moe, "qwen2_moe", LoadQwen2Moe);

}  // namespace sy
