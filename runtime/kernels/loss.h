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

// The row loops of both, vectorized (vector_rows.cc); sums in double over kLossLanes lanes in a
// fixed order (vector_rows.cc says which).
constexpr int kLossLanes = 16;
// max_j x_j (-inf for n = 0); NaN entries are skipped (they reach the sums instead).
float loss_row_max(const float* x, int64_t n);
// sum_j e^(x_j - m) in double, e^ by exp_neg_poly (math.h); m >= every x_j.
double loss_row_sum_exp(const float* x, int64_t n, float m);
// p_j = e^(x_j - m) by exp_poly (fp32); returns sum_j p_j in double.
double loss_row_exp(const float* x, int64_t n, float m, float* p);
// p_j = p_j * a * b.
void loss_row_scale(float* p, int64_t n, float a, float b);

}  // namespace sy
