// The Model interface's shared parts (generation, the MoE-layer helpers) and the registry of
// models by model_type. Concrete models live in their own files and register there.
#include "runtime/model/model.h"

#include "runtime/core/size_check.h"

#include <cstdio>

#include "runtime/core/named_registry.h"

namespace sy {

Status ModelPlacement::check(int64_t E, int P) const {
  if (!map) return Status::Ok();
  const std::string where = "moe.placement " + file + ": ";
  if (map->num_experts != E || map->ranks != P)
    return InvalidArgument(where + "places " + std::to_string(map->num_experts) + " experts on " +
                           std::to_string(map->ranks) + " ranks; this run has " +
                           std::to_string(E) + " experts per MoE layer on " + std::to_string(P) +
                           " rank" + (P == 1 ? "" : "s"));
  const Status st = map->validate(/*allow_replicas=*/false);
  return st.ok() ? st : InvalidArgument(where + st.message());
}

Status Model::backward(const float* dlogits_TV, float aux_alpha) {
  (void)dlogits_TV;
  (void)aux_alpha;
  return InvalidArgument(model_type() + ": training is not supported");
}

StatusOr<std::vector<std::unique_ptr<Router>>> Model::replace_routers(const std::string& name,
                                                                      uint64_t seed,
                                                                      int64_t hidden) {
  (void)seed;
  (void)hidden;
  return InvalidArgument(model_type() + ": replacing the routers by " + name +
                         " is not supported after load");
}

StatusOr<std::vector<std::unique_ptr<Router>>> Model::install_routers(
    std::vector<std::unique_ptr<Router>> fresh) {
  std::vector<std::unique_ptr<Router>> old(fresh.size());
  for (size_t i = 0; i < fresh.size(); ++i) {
    MoeLayer* l = moe_layer(static_cast<int64_t>(i));
    if (!l || !fresh[i]) continue;
    fresh[i]->init_from(l->router());
    fresh[i]->copy_balance_bias(l->router());  // chooses as the gate did (same units)
    SY_ASSIGN_OR_RETURN(old[i], l->replace_router(std::move(fresh[i])));
  }
  return old;
}

void Model::append_moe_params(MoeLayer& moe, const std::string& prefix,
                              std::vector<ModelParam>* out) {
  for (auto& [name, p] : moe.named_params()) {
    const bool expert = name.rfind("experts.", 0) == 0;
    out->push_back({prefix + name, &p->value, p->grad.empty() ? nullptr : &p->grad, expert, !expert,
                    name.rfind("gate.", 0) == 0});
  }
}

void Model::zero_grad() {
  for (ModelParam& p : parameters())
    if (p.grad) p.grad->zero();
}

void Model::set_defer_moe_grad_allreduce(bool defer) {
  for (MoeLayer* l : sparse_layers()) l->set_defer_grad_allreduce(defer);
}

void Model::allreduce_moe_grads() {
  for (MoeLayer* l : sparse_layers()) l->allreduce_replicated_grads();
}

std::vector<MoeLayer*> Model::sparse_layers() {
  std::vector<MoeLayer*> out;
  for (int64_t i = 0; i < num_layers(); ++i)
    if (MoeLayer* l = moe_layer(i)) out.push_back(l);
  return out;
}

void Model::set_step(int64_t step) {
  for (int64_t i = 0; i < num_layers(); ++i)
    if (MoeLayer* l = moe_layer(i)) l->set_step(step);
}

StatusOr<std::vector<int32_t>> Model::generate(const float* last_logits_V, int64_t max_new_tokens,
                                               const SamplingConfig& sampling, Communicator& comm,
                                               const std::function<void(int32_t)>& on_token) {
  if (!is_decoder()) return InvalidArgument(model_type() + ": generation needs a decoder");
  SY_RETURN_IF_ERROR(check_decodable());
  std::vector<int32_t> out;
  Tensor logits, staging;
  const float* last = last_logits_V;  // host memory (the caller's; then host_readable copies)
  for (int64_t s = 0; s < max_new_tokens; ++s) {
    int32_t next = comm.rank() == 0 ? sample_token(last, vocab_size(), sampling, s) : -1;
    comm.allreduce(&next, 1, ReduceOp::kMax, {"infer.next_token", -1, s});  // rank 0 decides
    out.push_back(next);
    if (on_token) on_token(next);
    if (s + 1 == max_new_tokens || cache_len() >= max_positions()) break;
    set_step(s);
    Status st = forward(&next, 1, &logits, /*all_logits=*/false);
    // Every rank leaves together: the next step's collectives must not meet a rank that quit.
    int32_t code = st.ok() ? 0 : st.exit_code();
    comm.allreduce(&code, 1, ReduceOp::kMax, {"infer.decode", -1, s});
    if (!st.ok()) return st;
    if (code != 0)
      return Status(StatusCode::kInternal,
                    "decode failed on another rank at step " + std::to_string(s));
    last = host_readable(logits, &staging).ptr();
  }
  return out;
}

Status Model::check_decodable() {
  for (int64_t i = 0; i < num_layers(); ++i)
    if (MoeLayer* l = moe_layer(i); l && l->router().batch_dependent())
      return InvalidArgument("router '" + l->router().name() + "' (layer " + std::to_string(i) +
                             ") chooses tokens per batch (each expert takes its top tokens of "
                             "the group): it cannot decode one token at a time with a KV cache; "
                             "use a token-choice router for generation");
  return Status::Ok();
}

// ---- the registry ----

namespace {
NamedRegistry<ModelLoader>& model_registry() {
  static auto* r = new NamedRegistry<ModelLoader>("model_type");
  return *r;
}
}  // namespace

bool register_model(const char* model_type, ModelLoader load) {
  return model_registry().add(model_type, load);
}

std::vector<std::string> model_types() {
  return model_registry().names();
}

StatusOr<std::unique_ptr<Model>> load_model(const HfCheckpoint& ck, const ModelOptions& opt,
                                            Communicator* comm) {
  SY_ASSIGN_OR_RETURN(std::string type, ck.config_string("model_type", ""));
  ModelLoader load = model_registry().find(type);
  if (!load)
    return BadInput(ck.dir() + "/config.json: model_type \"" + type + "\" is not supported (" +
                    model_registry().known() + ")");
  return load(ck, opt, comm);
}

Status check_model_products(const std::string& where, int64_t vocab_size, int64_t hidden_size,
                            int64_t num_experts, int64_t moe_intermediate_size, int64_t matrices) {
  constexpr int64_t kMaxValues = int64_t{1} << 36;
  StatusOr<int64_t> embed = checked_product(
      {{"vocab_size", vocab_size}, {"hidden_size", hidden_size}}, kMaxValues, "embedding values");
  if (!embed.ok()) return BadInput(where + ": " + embed.status().message());
  StatusOr<int64_t> experts = checked_product({{"matrices", matrices},
                                               {"num_experts", num_experts},
                                               {"moe_intermediate_size", moe_intermediate_size},
                                               {"hidden_size", hidden_size}},
                                              kMaxValues, "values in one layer's routed experts");
  if (!experts.ok()) return BadInput(where + ": " + experts.status().message());
  return Status::Ok();
}

}  // namespace sy
