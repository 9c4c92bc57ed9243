// Helpers shared by the MoE layer tests.
#pragma once

#include <cctype>
#include <memory>
#include <string>
#include <vector>

#include "runtime/core/rng.h"
#include "runtime/moe/moe_layer.h"

namespace sy::testing_util {

// A layer from a config that must be valid (a bad one is a bug in the test).
inline std::unique_ptr<MoeLayer> Make(const MoeLayerConfig& c) {
  auto l = MoeLayer::create(c);
  SY_CHECK(l.ok()) << l.status().ToString();
  return std::move(l).value();
}

// n values of N(0, std^2), drawn from (seed, stream 7).
inline std::vector<float> Normal(int64_t n, uint64_t seed, float std = 1.0f) {
  std::vector<float> v(static_cast<size_t>(n));
  fill_normal(v.data(), n, std, seed, 7);
  return v;
}

// The kind of a parameter: its name with every layer and expert index replaced by '#'
// ("model.layers.#.mlp.gate.weight"), for tests that check each kind at least once.
inline std::string ParamKind(const std::string& name) {
  std::string k;
  for (size_t i = 0; i < name.size(); ++i) {
    if (std::isdigit(static_cast<unsigned char>(name[i]))) {
      k += '#';
      while (i + 1 < name.size() && std::isdigit(static_cast<unsigned char>(name[i + 1]))) ++i;
    } else {
      k += name[i];
    }
  }
  return k;
}

}  // namespace sy::testing_util
