// The masked-language-model objective of BERT (Devlin et al. 2019): of a sequence's positions,
// each is chosen with probability mask_prob (15%); a chosen position's input becomes [MASK]
// with probability 80%, a uniformly random token with 10%, and stays itself with 10%. The loss
// is the cross-entropy of the ORIGINAL token at the chosen positions only (targets -1 elsewhere).
//
// Every draw is counter-based (runtime/core/rng.h) on (seed, step, sequence, position): the
// global index of the sequence in its step, not the rank that holds it, so a step masks the
// same positions with 1 rank or P, and a resumed run masks as the uninterrupted one did.
#pragma once

#include <cstdint>
#include <vector>

#include "runtime/core/status.h"

namespace sy {

struct MlmConfig {
  uint64_t seed = 1234;
  double mask_prob = 0.15;            // chance that a position is chosen
  double replace_mask = 0.8;          // of the chosen: [MASK]
  double replace_random = 0.1;        // of the chosen: a random token in [0, vocab_size); else kept
  int32_t mask_id = 103;              // [MASK] in bert-base-uncased's vocabulary
  int64_t vocab_size = 0;             // V
  std::vector<int32_t> never_chosen;  // ids never chosen (such as [CLS], [SEP], [PAD])

  // kInvalidArgument unless the probabilities are in [0, 1] (replace_mask + replace_random
  // <= 1), V >= 1 and mask_id in [0, V).
  Status validate() const;
};

// Masks one sequence: inputs (resized to ids) for the forward, targets (resized) the original
// id at chosen positions and -1 elsewhere. step: the training step (eval: -1); seq: the
// sequence's global index within that step.
void mlm_mask(const MlmConfig& c, int64_t step, int64_t seq, const std::vector<int32_t>& ids,
              std::vector<int32_t>* inputs, std::vector<int32_t>* targets);

}  // namespace sy
