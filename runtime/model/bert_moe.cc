#include "runtime/model/bert_moe.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>

#include "routers/registry.h"
#include "runtime/backend/ops.h"
#include "runtime/core/rng.h"
#include "runtime/core/timing.h"

namespace sy {
namespace {
using json = nlohmann::json;
using Clock = SteadyClock;

std::string LayerName(int64_t i, const std::string& rest) {
  return "bert.encoder.layer." + std::to_string(i) + "." + rest;
}
// part: "intermediate.dense" or "output.dense"; what: "weight" or "bias".
std::string ExpertName(int64_t i, int64_t j, const std::string& part, const std::string& what) {
  return LayerName(i, "moe.experts." + std::to_string(j) + "." + part + "." + what);
}

// y_TO = x_TI W^T + b.
void linear_bias(const ExecContext& ex, const float* x_TI, const Tensor& W_OI, const Tensor& b_O,
                 int64_t T, int64_t I, int64_t O, float* y_TO) {
  ops::bias_broadcast_rows(ex, b_O.ptr(), T, O, y_TO);
  ops::linear_forward(ex, x_TI, W_OI.ptr(), y_TO, T, I, O, /*beta=*/1.0f);
}

int64_t Bytes(const Tensor& t) {
  return t.numel() * static_cast<int64_t>(sizeof(float));
}

// The router of MoE layer i as the config describes it (sizes filled in by MoeLayer).
RouterConfig RouterFor(const BertMoeConfig& c, const RouterConfig& base, int64_t i) {
  RouterConfig r = base;
  r.name = c.router;
  r.hidden = c.router_hidden;
  r.num_heads = c.router_num_heads;
  r.norm_topk_prob = c.norm_topk_prob;
  r.vocab_size = c.vocab_size;
  r.seed = base.seed + static_cast<uint64_t>(i);
  r.balance_rate = static_cast<float>(c.router_balance_rate);
  return r;
}

}  // namespace

// ---- config --------------------------------------------------------------------------------

StatusOr<BertMoeConfig> BertMoeConfig::from_json(const JsonConfigReader& r) {
  BertMoeConfig c;
  const std::string& where = r.where();
  SY_ASSIGN_OR_RETURN(std::string type, r.get_string("model_type", "bert"));
  if (type != "bert" && type != "bert_moe")
    return BadInput(where + ": model_type is \"" + type + "\", expected \"bert\" or \"bert_moe\"");
  SY_ASSIGN_OR_RETURN(std::string act, r.get_string("hidden_act", "gelu"));
  if (act != "gelu")
    return BadInput(where + ": hidden_act \"" + act + "\" (only \"gelu\", the exact erf GELU)");
  SY_ASSIGN_OR_RETURN(std::string pos, r.get_string("position_embedding_type", "absolute"));
  if (pos != "absolute")
    return BadInput(where + ": position_embedding_type \"" + pos + "\" (only \"absolute\")");
  constexpr int64_t kBig = int64_t{1} << 24;
  SY_ASSIGN_OR_RETURN(c.vocab_size, r.get_int("vocab_size", 1, kBig));
  SY_ASSIGN_OR_RETURN(c.hidden_size, r.get_int("hidden_size", 1, 1 << 16));
  SY_ASSIGN_OR_RETURN(c.num_hidden_layers, r.get_int("num_hidden_layers", 1, 1024));
  SY_ASSIGN_OR_RETURN(c.num_attention_heads, r.get_int("num_attention_heads", 1, 1024));
  SY_ASSIGN_OR_RETURN(c.intermediate_size, r.get_int("intermediate_size", 1, 1 << 20));
  SY_ASSIGN_OR_RETURN(c.max_position_embeddings,
                      r.get_int("max_position_embeddings", 1, 1 << 20, 512));
  SY_ASSIGN_OR_RETURN(c.type_vocab_size, r.get_int("type_vocab_size", 1, 1 << 16, 2));
  SY_ASSIGN_OR_RETURN(c.layer_norm_eps, r.get_float("layer_norm_eps", 0.0, 1.0, 1e-12));
  SY_ASSIGN_OR_RETURN(c.initializer_range, r.get_float("initializer_range", 0.0, 10.0, 0.02));
  if (c.hidden_size % c.num_attention_heads != 0)
    return BadInput(where + ": hidden_size " + std::to_string(c.hidden_size) +
                    " is not a multiple of num_attention_heads " +
                    std::to_string(c.num_attention_heads));
  c.head_dim = c.hidden_size / c.num_attention_heads;
  c.moe_intermediate_size = c.intermediate_size;
  if (type == "bert") return c;
  SY_ASSIGN_OR_RETURN(c.num_experts, r.get_int("num_experts", 1, 1 << 14));
  SY_ASSIGN_OR_RETURN(c.moe_every, r.get_int("moe_every", 1, 1024, 1));
  SY_ASSIGN_OR_RETURN(c.num_experts_per_tok, r.get_int("num_experts_per_tok", 1, c.num_experts, 1));
  SY_ASSIGN_OR_RETURN(c.moe_intermediate_size,
                      r.get_int("moe_intermediate_size", 1, 1 << 20, c.intermediate_size));
  SY_ASSIGN_OR_RETURN(c.norm_topk_prob, r.get_bool("norm_topk_prob", false));
  SY_ASSIGN_OR_RETURN(c.router, r.get_string("router", kDefaultRouterName));
  SY_ASSIGN_OR_RETURN(c.router_hidden, r.get_int("router_hidden", 0, 1 << 16, 0));
  SY_ASSIGN_OR_RETURN(c.router_num_heads, r.get_int("router_num_heads", 1, 1024, 1));
  SY_ASSIGN_OR_RETURN(c.router_balance_rate, r.get_float("router_balance_rate", 0.0, 1.0, 0.0));
  RouterConfig rc = RouterFor(c, RouterConfig(), 0);
  rc.d_model = c.hidden_size;
  rc.num_experts = c.num_experts;
  rc.top_k = c.num_experts_per_tok;
  const Status st = validate_router_config(rc);
  if (!st.ok()) return BadInput(where + ": router \"" + c.router + "\": " + st.message());
  SY_RETURN_IF_ERROR(check_model_products(where, c.vocab_size, c.hidden_size, c.num_experts,
                                          c.moe_intermediate_size, 2));
  return c;
}

StatusOr<BertMoeConfig> BertMoeConfig::from_checkpoint(const HfCheckpoint& ck) {
  return from_json(ck.config_reader());
}

json BertMoeConfig::to_json() const {
  json j{{"architectures", {is_moe() ? "BertMoeForMaskedLM" : "BertForMaskedLM"}},
         {"model_type", is_moe() ? "bert_moe" : "bert"},
         {"hidden_act", "gelu"},
         {"position_embedding_type", "absolute"},
         {"vocab_size", vocab_size},
         {"hidden_size", hidden_size},
         {"num_hidden_layers", num_hidden_layers},
         {"num_attention_heads", num_attention_heads},
         {"intermediate_size", intermediate_size},
         {"max_position_embeddings", max_position_embeddings},
         {"type_vocab_size", type_vocab_size},
         {"layer_norm_eps", layer_norm_eps},
         {"initializer_range", initializer_range},
         {"torch_dtype", "float32"}};
  if (is_moe()) {
    j["num_experts"] = num_experts;
    j["moe_every"] = moe_every;
    j["num_experts_per_tok"] = num_experts_per_tok;
    j["moe_intermediate_size"] = moe_intermediate_size;
    j["norm_topk_prob"] = norm_topk_prob;
    j["router"] = router;
    j["router_hidden"] = router_hidden;
    j["router_num_heads"] = router_num_heads;
    if (router_balance_rate > 0) j["router_balance_rate"] = router_balance_rate;
  }
  return j;
}

json default_bert_config(bool moe) {
  BertMoeConfig c;
  c.vocab_size = 30522;
  c.hidden_size = 128;
  c.num_hidden_layers = 4;
  c.num_attention_heads = 4;
  c.head_dim = 32;
  c.intermediate_size = 512;
  c.moe_intermediate_size = 512;
  if (moe) {
    c.num_experts = 8;
    c.moe_every = 2;
    c.num_experts_per_tok = 2;
  }
  json j = c.to_json();
  j.erase("moe_intermediate_size");  // follows intermediate_size unless a config sets it
  return j;
}

// ---- random writer -------------------------------------------------------------------------

std::vector<std::pair<std::string, Tensor>> random_bert_tensors(const BertMoeConfig& c,
                                                                uint64_t seed) {
  const float s = static_cast<float>(c.initializer_range);
  const int64_t D = c.hidden_size, V = c.vocab_size, F = c.intermediate_size;
  std::vector<std::pair<std::string, Tensor>> out;
  auto normal = [&](const std::string& name, std::vector<int64_t> shape, float mean = 0.0f) {
    Tensor t(std::move(shape));
    fill_normal(t.ptr(), t.numel(), s, seed, fnv1a64(name.c_str()));
    for (float& v : t.data) v += mean;
    out.emplace_back(name, std::move(t));
  };
  auto dense = [&](const std::string& p, int64_t O, int64_t I) {
    normal(p + ".weight", {O, I});
    normal(p + ".bias", {O});
  };
  auto norm = [&](const std::string& p) {
    normal(p + ".weight", {D}, 1.0f);
    normal(p + ".bias", {D});
  };
  normal("bert.embeddings.word_embeddings.weight", {V, D});
  normal("bert.embeddings.position_embeddings.weight", {c.max_position_embeddings, D});
  normal("bert.embeddings.token_type_embeddings.weight", {c.type_vocab_size, D});
  norm("bert.embeddings.LayerNorm");
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    for (const char* qkv : {"query", "key", "value"})
      dense(LayerName(i, std::string("attention.self.") + qkv), D, D);
    dense(LayerName(i, "attention.output.dense"), D, D);
    norm(LayerName(i, "attention.output.LayerNorm"));
    if (c.is_moe_layer(i)) {
      MoeLayerConfig lc;
      lc.d_model = D;
      lc.num_experts = c.num_experts;
      lc.top_k = c.num_experts_per_tok;
      RouterConfig base;
      base.init_std = s;
      base.seed = hash_combine(seed, 0x524f55544552ull);  // "ROUTER"
      lc.router = RouterFor(c, base, i);
      auto router = make_router(lc.resolved_router());
      SY_CHECK(router.ok()) << router.status().ToString();  // the config was validated
      for (Param& p : (*router)->params())
        out.emplace_back(LayerName(i, "moe.gate." + p.name), std::move(p.value));
      const int64_t Fe = c.moe_intermediate_size;
      for (int64_t j = 0; j < c.num_experts; ++j) {
        const std::string p = LayerName(i, "moe.experts." + std::to_string(j) + ".");
        dense(p + "intermediate.dense", Fe, D);
        dense(p + "output.dense", D, Fe);
      }
    } else {
      dense(LayerName(i, "intermediate.dense"), F, D);
      dense(LayerName(i, "output.dense"), D, F);
    }
    norm(LayerName(i, "output.LayerNorm"));
  }
  dense("cls.predictions.transform.dense", D, D);
  norm("cls.predictions.transform.LayerNorm");
  normal("cls.predictions.bias", {V});
  return out;
}

Status write_random_bert_checkpoint(const std::string& dir, const json& config, uint64_t seed,
                                    bool moe, SafeDtype dtype, int64_t max_shard_bytes) {
  if (!config.is_object()) return InvalidArgument("init: the config must be a JSON object");
  json merged = default_bert_config(moe);
  merged.update(config);
  merged["model_type"] = moe ? "bert_moe" : "bert";
  SY_ASSIGN_OR_RETURN(BertMoeConfig c,
                      BertMoeConfig::from_json(JsonConfigReader(merged, "init config")));
  HfCheckpointWriter w(dtype);
  for (auto& [name, t] : random_bert_tensors(c, seed)) w.add(name, std::move(t));
  return w.write(dir, c.to_json(), max_shard_bytes);
}

// ---- load ----------------------------------------------------------------------------------

StatusOr<std::unique_ptr<BertMoeModel>> BertMoeModel::load(const HfCheckpoint& ck,
                                                           const BertMoeOptions& opt,
                                                           Communicator* comm) {
  std::unique_ptr<BertMoeModel> m(new BertMoeModel());
  SY_ASSIGN_OR_RETURN(m->cfg_, BertMoeConfig::from_checkpoint(ck));
  m->comm_ = comm;
  if (opt.exec) m->exec_ = opt.exec;
  BertMoeConfig& c = m->cfg_;
  if (opt.balance_rate >= 0) c.router_balance_rate = opt.balance_rate;
  if (opt.num_experts < 0 || opt.moe_every < 0 || opt.top_k < 0)
    return InvalidArgument("bert_moe: num_experts, moe_every and top_k must be >= 0");
  if (opt.expert_bits != 32 && opt.expert_bits != 8 && opt.expert_bits != 4)
    return InvalidArgument("bert_moe: expert bits must be 32, 8 or 4 (got " +
                           std::to_string(opt.expert_bits) + ")");
  if (opt.train == ModelTrain::kAll && opt.expert_bits != 32)
    return InvalidArgument("bert_moe: training everything needs fp32 experts (expert bits " +
                           std::to_string(opt.expert_bits) +
                           "); quantized experts train routers only");
  m->train_ = opt.train;
  if (!(opt.upcycle_noise >= 0.0f) || !std::isfinite(opt.upcycle_noise))
    return InvalidArgument("bert_moe: upcycle_noise must be finite and >= 0");
  const bool upcycle = !c.is_moe() && opt.num_experts > 0;
  if (c.is_moe()) {
    if ((opt.num_experts != 0 && opt.num_experts != c.num_experts) ||
        (opt.moe_every != 0 && opt.moe_every != c.moe_every))
      return InvalidArgument(ck.dir() + ": the checkpoint has " + std::to_string(c.num_experts) +
                             " experts every " + std::to_string(c.moe_every) +
                             " layers; options ask for " + std::to_string(opt.num_experts) +
                             " every " + std::to_string(opt.moe_every) + " (0 = as stored)");
    if (opt.top_k > 0) c.num_experts_per_tok = opt.top_k;
  } else if (upcycle) {
    c.num_experts = opt.num_experts;
    c.moe_every = opt.moe_every > 0 ? opt.moe_every : 1;
    c.num_experts_per_tok = opt.top_k > 0 ? opt.top_k : 1;
    c.moe_intermediate_size = c.intermediate_size;
    c.norm_topk_prob = opt.router.norm_topk_prob;
    c.router = opt.router.name;
    c.router_hidden = opt.router.hidden;
    c.router_num_heads = opt.router.num_heads;
  }
  const int P = comm ? comm->size() : 1;
  if (c.is_moe() && c.num_experts % P != 0)
    return InvalidArgument(ck.dir() + ": " + std::to_string(c.num_experts) +
                           " experts do not split evenly over " + std::to_string(P) + " ranks");
  SY_RETURN_IF_ERROR(opt.placement.check(c.num_experts, P));
  if (c.is_moe() && c.num_experts_per_tok > c.num_experts)
    return InvalidArgument("bert_moe: top_k " + std::to_string(c.num_experts_per_tok) +
                           " exceeds num_experts " + std::to_string(c.num_experts));

  // Schema first: every tensor the model reads (every expert, not only this rank's: a
  // missing one is reported on every rank). Extras (pooler, NSP head, tied decoder) are fine.
  const int64_t D = c.hidden_size, V = c.vocab_size;
  std::vector<std::string> required = {
      "bert.embeddings.word_embeddings.weight", "bert.embeddings.position_embeddings.weight",
      "bert.embeddings.token_type_embeddings.weight", "cls.predictions.bias"};
  for (const char* p : {"bert.embeddings.LayerNorm", "cls.predictions.transform.dense",
                        "cls.predictions.transform.LayerNorm"})
    for (const char* w : {".weight", ".bias"}) required.push_back(std::string(p) + w);
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    std::vector<std::string> parts = {"attention.self.query",       "attention.self.key",
                                      "attention.self.value",       "attention.output.dense",
                                      "attention.output.LayerNorm", "output.LayerNorm"};
    const bool stored_moe = c.is_moe_layer(i) && !upcycle;
    if (!stored_moe) {
      parts.push_back("intermediate.dense");
      parts.push_back("output.dense");
    }
    for (const std::string& p : parts)
      for (const char* w : {".weight", ".bias"}) required.push_back(LayerName(i, p + w));
    if (stored_moe)
      for (int64_t j = 0; j < c.num_experts; ++j)
        for (const char* p : {"intermediate.dense", "output.dense"})
          for (const char* w : {"weight", "bias"}) required.push_back(ExpertName(i, j, p, w));
  }
  SY_RETURN_IF_ERROR(ck.check_names(required, /*allow_extra=*/true));

  SY_ASSIGN_OR_RETURN(m->word_, ck.read("bert.embeddings.word_embeddings.weight", {V, D}));
  SY_ASSIGN_OR_RETURN(m->pos_, ck.read("bert.embeddings.position_embeddings.weight",
                                       {c.max_position_embeddings, D}));
  SY_ASSIGN_OR_RETURN(
      m->type_, ck.read("bert.embeddings.token_type_embeddings.weight", {c.type_vocab_size, D}));
  SY_ASSIGN_OR_RETURN(m->emb_ln_w_, ck.read("bert.embeddings.LayerNorm.weight", {D}));
  SY_ASSIGN_OR_RETURN(m->emb_ln_b_, ck.read("bert.embeddings.LayerNorm.bias", {D}));
  SY_ASSIGN_OR_RETURN(m->head_w_, ck.read("cls.predictions.transform.dense.weight", {D, D}));
  SY_ASSIGN_OR_RETURN(m->head_b_, ck.read("cls.predictions.transform.dense.bias", {D}));
  SY_ASSIGN_OR_RETURN(m->head_ln_w_, ck.read("cls.predictions.transform.LayerNorm.weight", {D}));
  SY_ASSIGN_OR_RETURN(m->head_ln_b_, ck.read("cls.predictions.transform.LayerNorm.bias", {D}));
  SY_ASSIGN_OR_RETURN(m->head_bias_, ck.read("cls.predictions.bias", {V}));
  m->layers_.resize(static_cast<size_t>(c.num_hidden_layers));
  for (int64_t i = 0; i < c.num_hidden_layers; ++i)
    SY_RETURN_IF_ERROR(m->load_layer(ck, opt, upcycle, i));
  m->move_weights_to(m->mem());       // read on the host, used where the model runs
  if (opt.train == ModelTrain::kAll)  // gradients of every replicated tensor
    for (auto& [name, slot] : m->replicated_slots())
      if (!slot.first->empty()) *slot.second = Tensor(slot.first->shape, m->mem());
  m->sharded_ = std::make_unique<TokenShardedMoe>(comm);
  return m;
}

Status BertMoeModel::load_layer(const HfCheckpoint& ck, const BertMoeOptions& opt, bool upcycle,
                                int64_t i) {
  const BertMoeConfig& c = cfg_;
  const int64_t D = c.hidden_size, F = c.intermediate_size;
  Layer& L = layers_[static_cast<size_t>(i)];
  auto read = [&](const std::string& rest, std::vector<int64_t> shape) {
    return ck.read(LayerName(i, rest), shape);
  };
  SY_ASSIGN_OR_RETURN(L.wq, read("attention.self.query.weight", {D, D}));
  SY_ASSIGN_OR_RETURN(L.bq, read("attention.self.query.bias", {D}));
  SY_ASSIGN_OR_RETURN(L.wk, read("attention.self.key.weight", {D, D}));
  SY_ASSIGN_OR_RETURN(L.bk, read("attention.self.key.bias", {D}));
  SY_ASSIGN_OR_RETURN(L.wv, read("attention.self.value.weight", {D, D}));
  SY_ASSIGN_OR_RETURN(L.bv, read("attention.self.value.bias", {D}));
  SY_ASSIGN_OR_RETURN(L.wo, read("attention.output.dense.weight", {D, D}));
  SY_ASSIGN_OR_RETURN(L.bo, read("attention.output.dense.bias", {D}));
  SY_ASSIGN_OR_RETURN(L.ln1_w, read("attention.output.LayerNorm.weight", {D}));
  SY_ASSIGN_OR_RETURN(L.ln1_b, read("attention.output.LayerNorm.bias", {D}));
  SY_ASSIGN_OR_RETURN(L.ln2_w, read("output.LayerNorm.weight", {D}));
  SY_ASSIGN_OR_RETURN(L.ln2_b, read("output.LayerNorm.bias", {D}));
  if (!c.is_moe_layer(i) || upcycle) {
    SY_ASSIGN_OR_RETURN(L.w1, read("intermediate.dense.weight", {F, D}));
    SY_ASSIGN_OR_RETURN(L.b1, read("intermediate.dense.bias", {F}));
    SY_ASSIGN_OR_RETURN(L.w2, read("output.dense.weight", {D, F}));
    SY_ASSIGN_OR_RETURN(L.b2, read("output.dense.bias", {D}));
  }
  if (!c.is_moe_layer(i)) return Status::Ok();

  MoeLayerConfig lc;
  lc.d_model = D;
  lc.ffn_hidden = c.moe_intermediate_size;
  lc.num_experts = c.num_experts;
  lc.top_k = c.num_experts_per_tok;
  lc.capacity_factor = opt.capacity_factor;
  lc.expert_kind = ExpertKind::kGelu;
  lc.train_experts = train_ == ModelTrain::kAll;
  lc.expert_bits = 32;  // quantized below, after the fp32 weights are in
  lc.quant_group = opt.quant_group;
  lc.init_std = 0.0f;  // every expert weight comes from the checkpoint
  lc.router = RouterFor(c, opt.router, i);
  lc.seed = opt.seed;
  lc.layer_index = static_cast<int>(i);
  lc.exec = exec_;
  lc.placement = opt.placement.map;
  SY_ASSIGN_OR_RETURN(L.moe, MoeLayer::create(lc, comm_));
  MoeLayer& moe = *L.moe;
  const int64_t Fe = c.moe_intermediate_size;
  const std::vector<int32_t>& global = moe.local_expert_ids();  // local e -> global id
  const int64_t e_local = moe.num_local_experts();
  Param* fc1 = moe.find_param("experts.fc1");
  Param* fc1_b = moe.find_param("experts.fc1_bias");
  Param* fc2 = moe.find_param("experts.fc2");
  Param* fc2_b = moe.find_param("experts.fc2_bias");
  SY_CHECK(fc1 && fc1_b && fc2 && fc2_b) << "GELU experts without their parameters";
  if (upcycle) {
    // Expert j = the dense FFN, weights times (1 + noise * n_j): only this rank's experts.
    const std::string n1 = LayerName(i, "intermediate.dense.weight");
    const std::string n2 = LayerName(i, "output.dense.weight");
    // Made on the host (the dense weights were read there), copied to where the experts live.
    Memory* em = fc1->value.memory();
    std::vector<float> noise, w;
    auto copy = [&](const Tensor& dense, const std::string& name, int64_t j, float* dst) {
      w.assign(dense.data.begin(), dense.data.end());
      if (opt.upcycle_noise != 0.0f) {
        noise.resize(w.size());
        fill_normal(noise.data(), dense.numel(), opt.upcycle_noise, opt.seed,
                    hash_combine(fnv1a64(name.c_str()), static_cast<uint64_t>(j)));
        for (size_t k = 0; k < w.size(); ++k) w[k] *= 1.0f + noise[k];
      }
      em->copy_from_host(dst, w.data(), dense.numel() * static_cast<int64_t>(sizeof(float)));
    };
    for (int64_t e = 0; e < e_local; ++e) {
      copy(L.w1, n1, global[e], fc1->value.ptr() + e * Fe * D);
      copy(L.w2, n2, global[e], fc2->value.ptr() + e * D * Fe);
      em->copy_from_host(fc1_b->value.ptr() + e * Fe, L.b1.ptr(), Fe * 4);
      em->copy_from_host(fc2_b->value.ptr() + e * D, L.b2.ptr(), D * 4);
    }
    L.w1 = L.b1 = L.w2 = L.b2 = Tensor();  // the dense FFN lives on as the experts
  } else {
    for (Param& p : moe.router().params()) {
      const std::string name = LayerName(i, "moe.gate." + p.name);
      if (p.name == kBalanceBiasName && !ck.has(name)) continue;  // zero (a new balance bias)
      SY_RETURN_IF_ERROR(ck.read_into(name, &p.value));
    }
    Memory* em = fc1->value.memory();
    for (int64_t e = 0; e < e_local; ++e) {
      const int64_t j = global[e];
      SY_RETURN_IF_ERROR(ck.read_into(ExpertName(i, j, "intermediate.dense", "weight"), {Fe, D}, em,
                                      fc1->value.ptr() + e * Fe * D));
      SY_RETURN_IF_ERROR(ck.read_into(ExpertName(i, j, "intermediate.dense", "bias"), {Fe}, em,
                                      fc1_b->value.ptr() + e * Fe));
      SY_RETURN_IF_ERROR(ck.read_into(ExpertName(i, j, "output.dense", "weight"), {D, Fe}, em,
                                      fc2->value.ptr() + e * D * Fe));
      SY_RETURN_IF_ERROR(ck.read_into(ExpertName(i, j, "output.dense", "bias"), {D}, em,
                                      fc2_b->value.ptr() + e * D));
    }
  }
  if (opt.expert_bits != 32) moe.experts().quantize_weights(opt.expert_bits, opt.quant_group);
  return Status::Ok();
}

void BertMoeModel::move_weights_to(Memory* m) {
  for (Tensor* t : {&word_, &pos_, &type_, &emb_ln_w_, &emb_ln_b_, &head_w_, &head_b_, &head_ln_w_,
                    &head_ln_b_, &head_bias_})
    t->move_to(m);
  for (Layer& L : layers_)
    for (Tensor* t : {&L.wq, &L.bq, &L.wk, &L.bk, &L.wv, &L.bv, &L.wo, &L.bo, &L.ln1_w, &L.ln1_b,
                      &L.w1, &L.b1, &L.w2, &L.b2, &L.ln2_w, &L.ln2_b})
      t->move_to(m);
}

// ---- forward -------------------------------------------------------------------------------

Status BertMoeModel::check_inputs(const int32_t* ids, const int32_t* type_ids, int64_t T) const {
  const BertMoeConfig& c = cfg_;
  if (T < 0 || T > c.max_position_embeddings)
    return InvalidArgument("bert: " + std::to_string(T) + " tokens, max_position_embeddings is " +
                           std::to_string(c.max_position_embeddings));
  if (T > 0 && ids == nullptr) return InvalidArgument("bert: token ids are null");
  for (int64_t t = 0; t < T; ++t) {
    if (ids[t] < 0 || ids[t] >= c.vocab_size)
      return InvalidArgument("bert: token id " + std::to_string(ids[t]) + " at position " +
                             std::to_string(t) + " is outside [0, " + std::to_string(c.vocab_size) +
                             ")");
    if (type_ids && (type_ids[t] < 0 || type_ids[t] >= c.type_vocab_size))
      return InvalidArgument("bert: token type id " + std::to_string(type_ids[t]) +
                             " at position " + std::to_string(t) + " is outside [0, " +
                             std::to_string(c.type_vocab_size) + ")");
  }
  return Status::Ok();
}

Status BertMoeModel::encode(const int32_t* ids, const int32_t* type_ids, int64_t T,
                            const uint8_t* attention_mask) {
  SY_RETURN_IF_ERROR(check_inputs(ids, type_ids, T));
  const ExecContext& ex = *exec_;
  const BertMoeConfig& c = cfg_;
  const int64_t D = c.hidden_size, F = c.intermediate_size;
  const float eps = static_cast<float>(c.layer_norm_eps);
  times_ = BertMoeTimes();
  const bool save = trainable();  // keep what backward() needs
  last_T_ = T;
  last_masked_ = attention_mask != nullptr;
  last_has_head_ = false;
  const Clock::time_point start = Clock::now();
  Clock::time_point clk = start;

  // The inputs go where the ops run (ids were checked on the host above).
  Memory* m = mem();
  resize_in(ids_dev_, T, m);
  ids_dev_.copy_from_host(ids, static_cast<size_t>(T));
  resize_in(type_ids_dev_, T, m);
  if (type_ids)
    type_ids_dev_.copy_from_host(type_ids, static_cast<size_t>(T));
  else
    type_ids_dev_.fill(0);
  const uint8_t* mask = nullptr;
  if (attention_mask) {
    resize_in(mask_dev_, T, m);
    mask_dev_.copy_from_host(attention_mask, static_cast<size_t>(T));
    mask = mask_dev_.data();
  }
  hidden_.resize({T, D}, m);
  float* x = hidden_.ptr();
  // HF's order: (word + type) + pos, one add at a time.
  float* ty = scratch_grow(y_, T * D, ex.backend);
  ops::embedding_rows(ex, word_.ptr(), cfg_.vocab_size, ids_dev_.data(), T, D, x);
  ops::embedding_rows(ex, type_.ptr(), cfg_.type_vocab_size, type_ids_dev_.data(), T, D, ty);
  ops::add_inplace(ex, x, ty, T * D);
  ops::add_inplace(ex, x, pos_.ptr(), T * D);  // positions 0..T-1: the first T rows
  const int64_t bytes = T * D * static_cast<int64_t>(sizeof(float));
  if (save) ops::copy(ex, resize_in(s0_, T * D, m), x, bytes);
  ops::layernorm_forward(ex, x, emb_ln_w_.ptr(), emb_ln_b_.ptr(), x, T, D, eps);
  times_.embed_s = seconds_since(&clk);

  float* q = scratch_grow(q_, T * D, ex.backend);
  float* k = scratch_grow(k_, T * D, ex.backend);
  float* v = scratch_grow(v_, T * D, ex.backend);
  float* ctx = scratch_grow(ctx_, T * D, ex.backend);
  float* y = scratch_grow(y_, T * D, ex.backend);
  AttentionShape as;
  as.num_heads = as.num_kv_heads = c.num_attention_heads;
  as.head_dim = c.head_dim;
  as.causal = false;
  as.scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
  // x = LayerNorm(y + x); training keeps the sum in `sum` (the same bits: one fp32 add).
  auto add_norm = [&](DeviceArray<float>& sum, const Tensor& w, const Tensor& b) {
    if (!save) return ops::add_layernorm_forward(ex, y, x, w.ptr(), b.ptr(), x, T, D, eps);
    float* s = resize_in(sum, T * D, m);
    ops::copy(ex, s, y, bytes);
    ops::add_inplace(ex, s, x, T * D);
    ops::layernorm_forward(ex, s, w.ptr(), b.ptr(), x, T, D, eps);
  };
  for (size_t i = 0; i < layers_.size(); ++i) {
    Layer& L = layers_[i];
    float* lq = save ? resize_in(L.q, T * D, m) : q;
    float* lk = save ? resize_in(L.k, T * D, m) : k;
    float* lv = save ? resize_in(L.v, T * D, m) : v;
    float* lctx = save ? resize_in(L.ctx, T * D, m) : ctx;
    if (save) ops::copy(ex, resize_in(L.x_in, T * D, m), x, bytes);
    linear_bias(ex, x, L.wq, L.bq, T, D, D, lq);
    linear_bias(ex, x, L.wk, L.bk, T, D, D, lk);
    linear_bias(ex, x, L.wv, L.bv, T, D, D, lv);
    ops::attention_forward(ex, lq, lk, lv, lctx, T, T, 0, as, mask);
    linear_bias(ex, lctx, L.wo, L.bo, T, D, D, y);
    add_norm(L.s1, L.ln1_w, L.ln1_b);
    if (save) ops::copy(ex, resize_in(L.x_mid, T * D, m), x, bytes);
    times_.attention_s += seconds_since(&clk);
    if (L.moe && capture_ && i < capture_->size()) {  // an explicit copy to the host
      std::vector<float>& sink = (*capture_)[i];
      sink.resize(sink.size() + static_cast<size_t>(T * D));
      m->copy_to_host(sink.data() + sink.size() - T * D, x, bytes);
    }
    if (L.moe) {
      // Training: the kept copy, since the router's backward reads its input again and x is
      // overwritten below.
      SY_RETURN_IF_ERROR(
          sharded_->forward(*L.moe, save ? L.x_mid.data() : x, ids_dev_.data(), T, D, y));
      times_.moe_s += seconds_since(&clk);
    } else {
      gelu_ffn_forward(ex, x, L.w1.ptr(), L.b1.ptr(), L.w2.ptr(), L.b2.ptr(), T, D, F,
                       save ? resize_in(L.pre, T * F, m) : scratch_grow(pre_, T * F, ex.backend),
                       save ? resize_in(L.act, T * F, m) : scratch_grow(act_, T * F, ex.backend),
                       y);
      times_.dense_ffn_s += seconds_since(&clk);
    }
    add_norm(L.s2, L.ln2_w, L.ln2_b);
  }
  times_.total_s = seconds_since(start);
  return Status::Ok();
}

Status BertMoeModel::forward(const int32_t* ids, const int32_t* type_ids, int64_t T, Tensor* logits,
                             const uint8_t* attention_mask) {
  SY_RETURN_IF_ERROR(encode(ids, type_ids, T, attention_mask));
  const ExecContext& ex = *exec_;
  const int64_t D = cfg_.hidden_size, V = cfg_.vocab_size;
  Clock::time_point clk = Clock::now();
  float* t = scratch_grow(y_, T * D, ex.backend);
  linear_bias(ex, hidden_.ptr(), head_w_, head_b_, T, D, D, t);
  const bool save = trainable();
  const int64_t bytes = T * D * static_cast<int64_t>(sizeof(float));
  if (save) ops::copy(ex, resize_in(head_pre_, T * D, mem()), t, bytes);
  ops::gelu_inplace(ex, t, T * D);
  if (save) ops::copy(ex, resize_in(head_act_, T * D, mem()), t, bytes);
  ops::layernorm_forward(ex, t, head_ln_w_.ptr(), head_ln_b_.ptr(), t, T, D,
                         static_cast<float>(cfg_.layer_norm_eps));
  if (save) ops::copy(ex, resize_in(head_out_, T * D, mem()), t, bytes);
  last_has_head_ = true;
  logits->resize({T, V}, mem());
  linear_bias(ex, t, word_, head_bias_, T, D, V, logits->ptr());
  times_.head_s = seconds_since(&clk);
  times_.total_s += times_.head_s;
  return Status::Ok();
}

// ---- training ------------------------------------------------------------------------------

std::vector<std::pair<std::string, std::pair<Tensor*, Tensor*>>> BertMoeModel::replicated_slots() {
  std::vector<std::pair<std::string, std::pair<Tensor*, Tensor*>>> out;
  auto add = [&](const std::string& name, Tensor& v, Tensor& g) {
    out.push_back({name, {&v, &g}});
  };
  add("bert.embeddings.word_embeddings.weight", word_, d_word_);
  add("bert.embeddings.position_embeddings.weight", pos_, d_pos_);
  add("bert.embeddings.token_type_embeddings.weight", type_, d_type_);
  add("bert.embeddings.LayerNorm.weight", emb_ln_w_, d_emb_ln_w_);
  add("bert.embeddings.LayerNorm.bias", emb_ln_b_, d_emb_ln_b_);
  for (size_t i = 0; i < layers_.size(); ++i) {
    Layer& L = layers_[i];
    auto layer = [&](const std::string& rest, Tensor& v, Tensor& g) {
      add(LayerName(static_cast<int64_t>(i), rest), v, g);
    };
    layer("attention.self.query.weight", L.wq, L.d_wq);
    layer("attention.self.query.bias", L.bq, L.d_bq);
    layer("attention.self.key.weight", L.wk, L.d_wk);
    layer("attention.self.key.bias", L.bk, L.d_bk);
    layer("attention.self.value.weight", L.wv, L.d_wv);
    layer("attention.self.value.bias", L.bv, L.d_bv);
    layer("attention.output.dense.weight", L.wo, L.d_wo);
    layer("attention.output.dense.bias", L.bo, L.d_bo);
    layer("attention.output.LayerNorm.weight", L.ln1_w, L.d_ln1_w);
    layer("attention.output.LayerNorm.bias", L.ln1_b, L.d_ln1_b);
    if (!L.moe) {
      layer("intermediate.dense.weight", L.w1, L.d_w1);
      layer("intermediate.dense.bias", L.b1, L.d_b1);
      layer("output.dense.weight", L.w2, L.d_w2);
      layer("output.dense.bias", L.b2, L.d_b2);
    }
    layer("output.LayerNorm.weight", L.ln2_w, L.d_ln2_w);
    layer("output.LayerNorm.bias", L.ln2_b, L.d_ln2_b);
  }
  add("cls.predictions.transform.dense.weight", head_w_, d_head_w_);
  add("cls.predictions.transform.dense.bias", head_b_, d_head_b_);
  add("cls.predictions.transform.LayerNorm.weight", head_ln_w_, d_head_ln_w_);
  add("cls.predictions.transform.LayerNorm.bias", head_ln_b_, d_head_ln_b_);
  add("cls.predictions.bias", head_bias_, d_head_bias_);
  return out;
}

std::vector<ModelParam> BertMoeModel::parameters() {
  std::vector<ModelParam> out;
  for (auto& [name, slot] : replicated_slots())
    out.push_back({name, slot.first, slot.second->empty() ? nullptr : slot.second, false, false});
  for (size_t i = 0; i < layers_.size(); ++i)
    if (layers_[i].moe)
      append_moe_params(*layers_[i].moe, LayerName(static_cast<int64_t>(i), "moe."), &out);
  return out;
}

std::vector<ExpertTensorKind> BertMoeModel::expert_tensor_kinds(int64_t layer) const {
  if (!layers_[static_cast<size_t>(layer)].moe) return {};
  const int64_t D = cfg_.hidden_size, Fe = cfg_.moe_intermediate_size;
  const struct {
    const char *param, *part, *what;
    std::vector<int64_t> shape;
  } kinds[] = {{"fc1", "intermediate.dense", "weight", {Fe, D}},
               {"fc1_bias", "intermediate.dense", "bias", {Fe}},
               {"fc2", "output.dense", "weight", {D, Fe}},
               {"fc2_bias", "output.dense", "bias", {D}}};
  std::vector<ExpertTensorKind> out;
  for (const auto& k : kinds) {
    const std::string part = k.part, what = k.what;
    out.push_back({LayerName(layer, std::string("moe.experts.") + k.param),
                   [layer, part, what](int64_t j) { return ExpertName(layer, j, part, what); },
                   k.shape});
  }
  return out;
}

Status BertMoeModel::backward(const float* dlogits_TV, float aux_alpha) {
  if (!trainable()) return InvalidArgument("bert backward: the model was loaded without training");
  if (!last_has_head_) return InvalidArgument("bert backward: the last forward had no MLM head");
  aux_loss_ = 0;
  const ExecContext& ex = *exec_;
  const BertMoeConfig& c = cfg_;
  const int64_t T = last_T_, D = c.hidden_size, V = c.vocab_size, F = c.intermediate_size;
  const float eps = static_cast<float>(c.layer_norm_eps);
  auto grad = [](Tensor& g) -> float* { return g.empty() ? nullptr : g.ptr(); };
  auto bias_grad = [&](const float* dy, int64_t N, Tensor& g) {
    if (!g.empty()) ops::bias_backward_rows(ex, dy, T, N, g.ptr());
  };
  Memory* m = mem();
  float* dx = resize_in(dx_, T * D, m);  // d of the hidden state at the current point
  float* ds = resize_in(ds_, T * D, m);  // d of a LayerNorm's input (the residual sum)
  float* dm = resize_in(dm_, T * D, m);
  float* dq = resize_in(dq_, T * D, m);
  float* dk = resize_in(dk_, T * D, m);
  float* dv = resize_in(dv_, T * D, m);
  float* dctx = resize_in(dctx_, T * D, m);
  // d of LayerNorm(in; w, b) into ds (written) from dy.
  auto norm_back = [&](const float* in, const Tensor& w, const float* dy, Tensor& dw, Tensor& db) {
    ds_.fill(0.0f);
    ops::layernorm_backward(ex, in, w.ptr(), dy, ds, grad(dw), grad(db), T, D, eps);
  };

  // MLM head: logits = LayerNorm(GELU(hidden Wt^T + bt)) word^T + bias (decoder tied to word).
  bias_grad(dlogits_TV, V, d_head_bias_);
  ops::linear_backward(ex, head_out_.data(), word_.ptr(), dlogits_TV, grad(d_word_), dm, T, D, V,
                       /*accumulate_dx=*/false);
  norm_back(head_act_.data(), head_ln_w_, dm, d_head_ln_w_, d_head_ln_b_);
  ops::gelu_backward(ex, head_pre_.data(), ds, dm, T * D);
  bias_grad(dm, D, d_head_b_);
  ops::linear_backward(ex, hidden_.ptr(), head_w_.ptr(), dm, grad(d_head_w_), dx, T, D, D, false);

  AttentionShape as;
  as.num_heads = as.num_kv_heads = c.num_attention_heads;
  as.head_dim = c.head_dim;
  as.causal = false;
  as.scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
  const uint8_t* mask = last_masked_ ? mask_dev_.data() : nullptr;
  for (size_t li = layers_.size(); li-- > 0;) {
    Layer& L = layers_[li];
    // x_out = LayerNorm(s2), s2 = x_mid + FFN(x_mid); dx holds d x_out.
    norm_back(L.s2.data(), L.ln2_w, dx, L.d_ln2_w, L.d_ln2_b);
    if (L.moe) {
      aux_loss_ += sharded_->backward_with_balance(*L.moe, ds, T, D, dm, aux_alpha, &aux_dprobs_);
    } else {
      gelu_ffn_backward(ex, L.x_mid.data(), L.w1.ptr(), L.w2.ptr(), L.pre.data(), L.act.data(), ds,
                        T, D, F, grad(L.d_w1), grad(L.d_b1), grad(L.d_w2), grad(L.d_b2), dm, false,
                        resize_in(dpre_, T * F, m));
    }
    ops::add_inplace(ex, dm, ds, T * D);  // the residual: dm = d x_mid
    // x_mid = LayerNorm(s1), s1 = x_in + Wo Attn(q, k, v) + bo.
    norm_back(L.s1.data(), L.ln1_w, dm, L.d_ln1_w, L.d_ln1_b);
    bias_grad(ds, D, L.d_bo);
    ops::linear_backward(ex, L.ctx.data(), L.wo.ptr(), ds, grad(L.d_wo), dctx, T, D, D, false);
    dk_.fill(0.0f);
    dv_.fill(0.0f);
    ops::attention_backward(ex, L.q.data(), L.k.data(), L.v.data(), dctx, dq, dk, dv, T, T, 0, as,
                            mask);
    bias_grad(dq, D, L.d_bq);
    bias_grad(dk, D, L.d_bk);
    bias_grad(dv, D, L.d_bv);
    ops::linear_backward(ex, L.x_in.data(), L.wq.ptr(), dq, grad(L.d_wq), dx, T, D, D, false);
    ops::linear_backward(ex, L.x_in.data(), L.wk.ptr(), dk, grad(L.d_wk), dx, T, D, D, true);
    ops::linear_backward(ex, L.x_in.data(), L.wv.ptr(), dv, grad(L.d_wv), dx, T, D, D, true);
    ops::add_inplace(ex, dx, ds, T * D);  // the residual: dx = d x_in
  }
  // Embeddings: x0 = LayerNorm(word[ids] + type[type_ids] + pos[0..T-1]).
  norm_back(s0_.data(), emb_ln_w_, dx, d_emb_ln_w_, d_emb_ln_b_);
  if (!d_word_.empty()) ops::scatter_add_rows(ex, ds, ids_dev_.data(), T, D, d_word_.ptr());
  if (!d_type_.empty()) ops::scatter_add_rows(ex, ds, type_ids_dev_.data(), T, D, d_type_.ptr());
  if (!d_pos_.empty()) ops::add_inplace(ex, d_pos_.ptr(), ds, T * D);
  return Status::Ok();
}

StatusOr<std::vector<std::unique_ptr<Router>>> BertMoeModel::replace_routers(
    const std::string& name, uint64_t seed, int64_t hidden) {
  BertMoeConfig next = cfg_;
  next.router = name;
  next.router_hidden = hidden > 0 ? hidden : RouterConfig::kDefaultHidden;  // explicit in files
  std::vector<std::unique_ptr<Router>> fresh(layers_.size());
  for (size_t i = 0; i < layers_.size(); ++i) {
    if (!layers_[i].moe) continue;
    RouterConfig base;
    base.seed = seed;
    RouterConfig rc = RouterFor(next, base, static_cast<int64_t>(i));
    rc.d_model = cfg_.hidden_size;
    rc.num_experts = cfg_.num_experts;
    rc.top_k = cfg_.num_experts_per_tok;
    SY_ASSIGN_OR_RETURN(fresh[i], make_router(rc));
  }
  SY_ASSIGN_OR_RETURN(auto old, install_routers(std::move(fresh)));
  cfg_ = next;
  return old;
}

// ---- introspection -------------------------------------------------------------------------

std::vector<MoeLayer*> BertMoeModel::moe_layers() {
  std::vector<MoeLayer*> out;
  for (Layer& L : layers_)
    if (L.moe) out.push_back(L.moe.get());
  return out;
}

BertMoeMemory BertMoeModel::memory() const {
  BertMoeMemory mem;
  for (const Tensor* t : {&word_, &pos_, &type_, &emb_ln_w_, &emb_ln_b_, &head_w_, &head_b_,
                          &head_ln_w_, &head_ln_b_, &head_bias_})
    mem.replicated_bytes += Bytes(*t);
  for (const Layer& L : layers_) {
    for (const Tensor* t : {&L.wq, &L.bq, &L.wk, &L.bk, &L.wv, &L.bv, &L.wo, &L.bo, &L.ln1_w,
                            &L.ln1_b, &L.w1, &L.b1, &L.w2, &L.b2, &L.ln2_w, &L.ln2_b})
      mem.replicated_bytes += Bytes(*t);
    if (!L.moe) continue;
    const RoutedExperts& ex = L.moe->experts();
    mem.expert_bytes += ex.weight_bytes();
    mem.expert_bytes_fp32 += 4 * ex.num_params();
    for (const Param& p : L.moe->router().params()) mem.replicated_bytes += Bytes(p.value);
  }
  return mem;
}

// ---- the Model interface's one-line summaries ----

std::string BertMoeModel::describe(int P) const {
  const BertMoeConfig& c = cfg_;
  char b[512];
  std::snprintf(b, sizeof(b),
                "bert%s encoder, %lld layers, hidden %lld, %lld heads, %lld experts (%lld "
                "per rank) every %lld layer(s), top-%lld, vocab %lld",
                c.num_experts > 0 ? "_moe" : "", (long long)c.num_hidden_layers,
                (long long)c.hidden_size, (long long)c.num_attention_heads,
                (long long)c.num_experts, (long long)(c.num_experts / P), (long long)c.moe_every,
                (long long)c.num_experts_per_tok, (long long)c.vocab_size);
  return b;
}

std::string BertMoeModel::last_forward_split() const {
  const BertMoeTimes& t = times_;
  char b[256];
  std::snprintf(b, sizeof(b), "attention %.1f ms, moe %.1f ms, dense ffn %.1f ms, head %.1f ms",
                t.attention_s * 1e3, t.moe_s * 1e3, t.dense_ffn_s * 1e3, t.head_s * 1e3);
  return b;
}

// ---- registration (runtime/model/model.h): dense BERT and BERT-MoE checkpoints ----

namespace {
StatusOr<std::unique_ptr<Model>> LoadBert(const HfCheckpoint& ck, const ModelOptions& opt,
                                          Communicator* comm) {
  BertMoeOptions b;
  b.train = opt.train;
  b.num_experts = opt.upcycle_experts;
  b.moe_every = opt.moe_every;
  b.top_k = opt.experts_top_k;
  if (!opt.router.empty()) b.router.name = opt.router;
  b.router.seed = opt.seed;
  b.upcycle_noise = static_cast<float>(opt.upcycle_noise);
  b.capacity_factor = opt.capacity_factor;
  b.expert_bits = opt.expert_bits;
  b.quant_group = opt.quant_group;
  b.seed = opt.seed;
  b.balance_rate = opt.balance_rate;
  b.placement = opt.placement;
  b.exec = opt.exec;
  SY_ASSIGN_OR_RETURN(auto m, BertMoeModel::load(ck, b, comm));
  return std::unique_ptr<Model>(std::move(m));
}
}  // namespace

SY_REGISTER_MODEL(bert, "bert", LoadBert);
SY_REGISTER_MODEL(bert_moe, "bert_moe", LoadBert);

}  // namespace sy
