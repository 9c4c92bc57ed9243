#include "routers/registry.h"

#include <algorithm>
#include <cstring>

namespace sy {
namespace {

// Function-local, so registrations from any file's static initializers find it constructed.
std::vector<RouterInfo>& mutable_registry() {
  static std::vector<RouterInfo> routers;
  return routers;
}

const RouterInfo* find_router(const std::string& name) {
  for (const RouterInfo& r : router_registry())
    if (name == r.name) return &r;
  return nullptr;
}

}  // namespace

Status register_router(const RouterInfo& info) {
  const std::string file = info.file ? info.file : "?";
  if (!info.name || !*info.name)
    return InvalidArgument("router registered without a name in " + file);
  if (!info.make)
    return InvalidArgument("router '" + std::string(info.name) +
                           "' registered without a factory in " + file);
  if (const RouterInfo* had = find_router(info.name))
    return InvalidArgument("router '" + std::string(info.name) + "' registered twice: in " +
                           (had->file ? had->file : "?") + " and in " + file);
  std::vector<RouterInfo>& routers = mutable_registry();
  const auto before = [](const RouterInfo& a, const RouterInfo& b) {
    return a.order != b.order ? a.order < b.order : std::strcmp(a.name, b.name) < 0;
  };
  routers.insert(std::upper_bound(routers.begin(), routers.end(), info, before), info);
  return Status::Ok();
}

bool register_router_or_die(const RouterInfo& info) {
  SY_CHECK_OK(register_router(info));
  return true;
}

const std::vector<RouterInfo>& router_registry() {
  return mutable_registry();
}

std::vector<std::string> router_names() {
  std::vector<std::string> names;
  for (const RouterInfo& r : router_registry()) names.push_back(r.name);
  return names;
}

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
  std::unique_ptr<Router> r = find_router(cfg.name)->make(cfg);
  // Routers that take no balance bias ignore the rate (a model's or a study's rate applies to
  // every router that can use it).
  if (cfg.balance_rate > 0.0f && r->balance_bias() == nullptr && r->takes_balance_bias())
    r->add_balance_bias(kBalanceBiasName, cfg.balance_rate, /*by_sign=*/false);
  return r;
}

}  // namespace sy
