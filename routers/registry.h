// Routers by name. Each router file registers itself with one line (SY_REGISTER_ROUTER below);
// nothing else names it. make_router() validates the config and returns a clear error for an
// unknown name or invalid sizes; it never crashes on bad input.
//
// The registrations run at static-initialization time, from objects nothing else references:
// routers/CMakeLists.txt links sy_routers whole so the linker keeps them. A router registered
// in a test's own source file (tests/routers/toy_router_test.cc) needs nothing more.
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
  // Listing position: ascending order, then name (static-initialization order across files is
  // unspecified). The built-ins use 10..95; later routers take 100 and up.
  int order;
  const char* file;  // where it was registered, for the duplicate-name error
};

// In listing order.
const std::vector<RouterInfo>& router_registry();
std::vector<std::string> router_names();
// Every check make_router() does, without building the router (config validation).
Status validate_router_config(const RouterConfig& cfg);
StatusOr<std::unique_ptr<Router>> make_router(const RouterConfig& cfg);

// Adds a router; InvalidArgument for an empty name, a null factory or a name already taken
// (naming both files). SY_REGISTER_ROUTER calls it and aborts start-up on an error.
Status register_router(const RouterInfo& info);
bool register_router_or_die(const RouterInfo& info);

}  // namespace sy

// Registers the router `name` (an identifier: its registered name) from its own file, at
// namespace scope:
//   SY_REGISTER_ROUTER(linear, 10, "s = W x", make_linear_router, nullptr);
// order: listing position (RouterInfo::order); summary: one line; factory: RouterFactory;
// validate: extra config checks or nullptr.
#define SY_REGISTER_ROUTER(name, order, summary, factory, validate) \
  [[maybe_unused]] static const bool sy_router_registered_##name =  \
      ::sy::register_router_or_die({#name, summary, factory, validate, order, __FILE__})
