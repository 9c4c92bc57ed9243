// Picking the next token from a row of logits: greedy, or sampled from the softmax at a
// temperature over the top-k most likely, deterministic in (seed, step) through the
// counter-based RNG (runtime/core/rng.h), so a rerun generates the same text.
#pragma once

#include <cstdint>

namespace sy {

struct SamplingConfig {
  double temperature = 0.0;  // 0: greedy (argmax)
  int64_t top_k = 0;         // sample among the k most likely (0 = all)
  uint64_t seed = 1234;
};

// The token picked from logits [V] at generation step `step`.
int32_t sample_token(const float* logits_V, int64_t V, const SamplingConfig& s, int64_t step);

}  // namespace sy
