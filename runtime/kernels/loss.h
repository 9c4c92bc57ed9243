// The language-model loss: mean token cross-entropy over logits, and its gradient.
//   loss = (1/N) sum_{t: target_t >= 0} [ logsumexp(logits_t) - logits_t[target_t] ]
//   dlogits_t = (softmax(logits_t) - onehot(target_t)) / N   (0 for ignored rows)
// N = number of rows with target >= 0 (target -1 = ignore, e.g. the last position). Raw
// pointers, row-major [T, V].
#pragma once

#include <cstdint>

namespace sy {

// Returns the SUM over counted rows (not the mean) in double, and the count in *count; the
// caller divides (so sums can be all-reduced over ranks first). Targets must be < V.
double cross_entropy_sum(const float* logits_TV, const int32_t* target_T, int64_t T, int64_t V,
                         int64_t* count);
// dlogits_TV = (softmax - onehot) * scale for counted rows, 0 for ignored ones (written). Pass
// scale = 1 / N for the mean loss over N counted rows (across all ranks).
void cross_entropy_backward(const float* logits_TV, const int32_t* target_T, int64_t T, int64_t V,
                            float scale, float* dlogits_TV);

}  // namespace sy
