// The fixed hash of the hash router (routers/hash.h), per token: K distinct experts of E from
// (seed, slot, token id). Per-element code shared by the host (the router's balanced table
// falls back to it for unseen tokens) and every backend's hash_route op (SY_HD: also a CUDA
// device function).
#pragma once

#include <cstdint>

#include "runtime/core/rng.h"
#include "runtime/kernels/math.h"

namespace sy {

// ids_K[k] = hash(seed, k, token) mod E, re-probed until distinct from ids_K[0..k); sorted
// ascending when `sorted`.
SY_HD inline void hash_route_experts(uint64_t seed, int64_t E, int64_t K, int32_t token,
                                     bool sorted, int32_t* ids_K) {
  const int64_t max_probes = 64 * E;
  for (int64_t k = 0; k < K; ++k) {
    const uint64_t h = hash_combine(hash_combine(seed, static_cast<uint64_t>(k)),
                                    static_cast<uint64_t>(static_cast<uint32_t>(token)));
    const auto held = [&](int32_t e) {
      for (int64_t j = 0; j < k; ++j)
        if (ids_K[j] == e) return true;
      return false;
    };
    int32_t e = -1;
    for (int64_t probe = 0; probe < max_probes; ++probe) {
      const uint64_t hp = probe == 0 ? h : hash_combine(h, static_cast<uint64_t>(probe));
      const auto cand = static_cast<int32_t>(hp % static_cast<uint64_t>(E));
      if (!held(cand)) {
        e = cand;
        break;
      }
    }
    for (int32_t c = 0; e < 0; ++c)  // unreachable in practice; keeps termination certain
      if (!held(c)) e = c;
    ids_K[k] = e;
  }
  if (!sorted) return;
  for (int64_t i = 1; i < K; ++i)  // insertion sort: K is small
    for (int64_t j = i; j > 0 && ids_K[j - 1] > ids_K[j]; --j) {
      const int32_t t = ids_K[j];
      ids_K[j] = ids_K[j - 1];
      ids_K[j - 1] = t;
    }
}

}  // namespace sy
