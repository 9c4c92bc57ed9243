// Grow-only scratch buffers for hot paths: no allocation in steady state.
#pragma once

#include <cstdint>
#include <vector>

namespace sy {

// At least n floats of scratch; the contents are NOT kept when it grows (every caller
// overwrites what it uses). A grow frees the old buffer first instead of copying it
// (vector::resize would copy, and hold old and new at once) and leaves a quarter of headroom:
// row counts drift a little from step to step, and each reallocation is a fresh mapping whose
// first touch costs page faults — measured at seconds for the few hundred MiB of a Qwen-sized
// layer's row buffers, inside the timed phases and, through the exchange, as waiting on peers.
inline float* scratch_grow(std::vector<float>& v, int64_t n) {
  if (static_cast<int64_t>(v.size()) < n) {
    std::vector<float>().swap(v);
    v.resize(static_cast<size_t>(n + n / 4));
  }
  return v.data();
}

}  // namespace sy
