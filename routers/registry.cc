#include "routers/registry.h"

namespace sy {

const std::vector<RouterInfo>& router_registry() {
  static const std::vector<RouterInfo> kRouters = {
      {"linear", "s = W x (Switch / Mixtral / Qwen-MoE gate)", make_linear_router, nullptr},
      {"attention", "s = K (W_q x) / sqrt(H/heads): learned expert keys, heads summed",
       make_attention_router, validate_attention_router},
      {"mlp", "s = W_2 GELU(W_1 x + b_1) + b_2", make_mlp_router, nullptr},
      {"hybrid", "s = W x + g * MLP(x), g learned from 0 (starts as the linear gate)",
       make_hybrid_router, nullptr},
      {"mlp_hadamard", "s = W_o (SiLU(W_g x) * W_u x): gated MLP", make_mlp_hadamard_router,
       nullptr},
      {"hash", "token id -> K distinct experts by fixed hashes or a balanced table (no params)",
       make_hash_router, validate_hash_router},
  };
  return kRouters;
}

std::vector<std::string> router_names() {
  std::vector<std::string> names;
  for (const RouterInfo& r : router_registry()) names.push_back(r.name);
  return names;
}

namespace {
const RouterInfo* find_router(const std::string& name) {
  for (const RouterInfo& r : router_registry())
    if (name == r.name) return &r;
  return nullptr;
}
}  // namespace

Status validate_router_config(const RouterConfig& cfg) {
  const RouterInfo* r = find_router(cfg.name);
  if (!r) {
    std::string known;
    for (const std::string& n : router_names()) known += (known.empty() ? "" : ", ") + n;
    return InvalidArgument("unknown router '" + cfg.name + "' (known: " + known + ")");
  }
  SY_RETURN_IF_ERROR(cfg.validate());
  if (r->validate) SY_RETURN_IF_ERROR(r->validate(cfg));
  return Status::Ok();
}

StatusOr<std::unique_ptr<Router>> make_router(const RouterConfig& cfg) {
  SY_RETURN_IF_ERROR(validate_router_config(cfg));
  return find_router(cfg.name)->make(cfg);
}

}  // namespace sy
