#include "runtime/core/rng.h"

namespace sy {

void fill_normal(float* out, int64_t n, float std, uint64_t seed, uint64_t stream) {
  for (int64_t i = 0; i < n; ++i)
    out[i] = static_cast<float>(std * normal_at(seed, stream, static_cast<uint64_t>(i)));
}

void fill_uniform(float* out, int64_t n, float lo, float hi, uint64_t seed, uint64_t stream) {
  for (int64_t i = 0; i < n; ++i)
    out[i] =
        lo + (hi - lo) * static_cast<float>(uniform_at(seed, stream, static_cast<uint64_t>(i)));
}

}  // namespace sy
