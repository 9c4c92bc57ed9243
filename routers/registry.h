// Routers by name. make_router() validates the config and returns a clear error for an
// unknown name or invalid sizes; it never crashes on bad input.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "routers/router.h"

namespace sy {

using RouterFactory = std::unique_ptr<Router> (*)(const RouterConfig&);

struct RouterInfo {
  const char* name;
  const char* summary;  // one line, for `switchyard routers`
  RouterFactory make;
  // Extra validation beyond RouterConfig::validate() (may be null).
  Status (*validate)(const RouterConfig&);
};

const std::vector<RouterInfo>& router_registry();
std::vector<std::string> router_names();
// Every check make_router() does, without building the router (config validation).
Status validate_router_config(const RouterConfig& cfg);
StatusOr<std::unique_ptr<Router>> make_router(const RouterConfig& cfg);

// One factory per router file.
std::unique_ptr<Router> make_linear_router(const RouterConfig& cfg);
std::unique_ptr<Router> make_attention_router(const RouterConfig& cfg);
Status validate_attention_router(const RouterConfig& cfg);  // H % num_heads == 0
std::unique_ptr<Router> make_mlp_router(const RouterConfig& cfg);
std::unique_ptr<Router> make_hybrid_router(const RouterConfig& cfg);
std::unique_ptr<Router> make_mlp_hadamard_router(const RouterConfig& cfg);
std::unique_ptr<Router> make_hash_router(const RouterConfig& cfg);  // class in routers/hash.h
Status validate_hash_router(const RouterConfig& cfg);               // vocab_size >= 1

}  // namespace sy
