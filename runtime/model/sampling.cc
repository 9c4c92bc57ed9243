#include "runtime/model/sampling.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "runtime/core/rng.h"

namespace sy {

int32_t sample_token(const float* logits, int64_t V, const SamplingConfig& s, int64_t step) {
  if (s.temperature <= 0)
    return static_cast<int32_t>(std::max_element(logits, logits + V) - logits);
  std::vector<int32_t> idx(static_cast<size_t>(V));
  std::iota(idx.begin(), idx.end(), 0);
  const int64_t k = s.top_k > 0 ? std::min(s.top_k, V) : V;
  std::partial_sort(idx.begin(), idx.begin() + k, idx.end(),
                    [&](int32_t a, int32_t b) { return logits[a] > logits[b]; });
  std::vector<double> p(static_cast<size_t>(k));
  const double mx = logits[idx[0]];
  double sum = 0;
  for (int64_t i = 0; i < k; ++i) sum += p[i] = std::exp((logits[idx[i]] - mx) / s.temperature);
  double u = Rng(s.seed, static_cast<uint64_t>(step)).uniform() * sum;
  for (int64_t i = 0; i < k; ++i)
    if ((u -= p[i]) <= 0) return idx[i];
  return idx[k - 1];
}

}  // namespace sy
