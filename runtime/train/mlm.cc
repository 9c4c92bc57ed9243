#include "runtime/train/mlm.h"

#include <algorithm>
#include <string>

#include "runtime/core/rng.h"

namespace sy {

Status MlmConfig::validate() const {
  auto prob = [](double p) { return p >= 0.0 && p <= 1.0; };
  if (!prob(mask_prob) || !prob(replace_mask) || !prob(replace_random) ||
      replace_mask + replace_random > 1.0)
    return InvalidArgument("masked LM: probabilities must lie in [0, 1] (mask " +
                           std::to_string(mask_prob) + ", [MASK] " + std::to_string(replace_mask) +
                           ", random " + std::to_string(replace_random) + ")");
  if (vocab_size < 1 || mask_id < 0 || mask_id >= vocab_size)
    return InvalidArgument("masked LM: the [MASK] id " + std::to_string(mask_id) +
                           " is outside the vocabulary [0, " + std::to_string(vocab_size) + ")");
  return Status::Ok();
}

void mlm_mask(const MlmConfig& c, int64_t step, int64_t seq, const std::vector<int32_t>& ids,
              std::vector<int32_t>* inputs, std::vector<int32_t>* targets) {
  // One stream per (step, sequence); three draws per position: chosen, how replaced, which
  // random token.
  const uint64_t stream =
      hash_combine(hash_combine(0x4d4c4dull /* "MLM" */, static_cast<uint64_t>(step)),
                   static_cast<uint64_t>(seq));
  inputs->assign(ids.begin(), ids.end());
  targets->assign(ids.size(), -1);
  for (size_t t = 0; t < ids.size(); ++t) {
    const uint64_t i = 3 * static_cast<uint64_t>(t);
    if (uniform_at(c.seed, stream, i) >= c.mask_prob) continue;
    if (std::find(c.never_chosen.begin(), c.never_chosen.end(), ids[t]) != c.never_chosen.end())
      continue;
    (*targets)[t] = ids[t];
    const double how = uniform_at(c.seed, stream, i + 1);
    if (how < c.replace_mask) {
      (*inputs)[t] = c.mask_id;
    } else if (how < c.replace_mask + c.replace_random) {
      const double u = uniform_at(c.seed, stream, i + 2);
      (*inputs)[t] = static_cast<int32_t>(
          std::min<int64_t>(c.vocab_size - 1, static_cast<int64_t>(u * c.vocab_size)));
    }
  }
}

}  // namespace sy
