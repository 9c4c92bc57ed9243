// Router sets for tests that cover every registered router of a kind, so a new router is
// tested without editing them.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "routers/registry.h"

namespace sy::testing {

// Every registered router that learns from x alone (differentiable, no token ids), in
// registry order: the ones gradient checks, distillation and fine-tuning apply to.
inline std::vector<std::string> learned_router_names() {
  std::vector<std::string> out;
  for (const std::string& name : router_names()) {
    RouterConfig probe;  // a tiny shape every router accepts
    probe.name = name;
    probe.d_model = 4;
    probe.num_experts = 2;
    probe.vocab_size = 2;
    auto r = make_router(probe);
    if (r.ok() && (*r)->differentiable() && !(*r)->needs_token_ids()) out.push_back(name);
  }
  return out;
}

}  // namespace sy::testing
