// Balancing and regularization losses for learned routers (docs/routers.md): the Switch
// auxiliary loss, its sequence-level form, and the router z-loss. Each returns the loss and
// writes its gradient with respect to the router's probabilities (aux losses) or scores
// (z-loss), ready for RouterGrads::dprobs_TE / RouterGrads::dlogits_TE.
//
// Raw pointers in and out, no MPI, no router state: a multi-rank caller that wants a global
// f_e sums the counts itself and calls these on its own tokens.
//
// Numerics: every sum is accumulated in double and the loss is returned as double, so a
// finite-difference check against these functions is limited by the step, not by rounding.
// Gradients are fp32.
//
// Legend: T tokens, E experts, K top-k, S tokens per sequence, B = T / S sequences.
#pragma once

#include <cstdint>

namespace sy {

// Switch auxiliary loss (Fedus et al. 2021; Megatron-core `switch_load_balancing_loss_func`):
//   L = alpha * E * sum_e f_e * P_e
//   f_e = count_e / (T * K), count_e = #{(t, k) : topk_ids_TK[t, k] == e}
//   P_e = (1 / T) * sum_t probs_TE[t, e]
// f_e counts the router's assignments before any capacity drop, as Switch and Megatron do.
// At perfect balance with a uniform router (f_e = P_e = 1 / E), L = alpha exactly; any
// router whose P is uniform also gives alpha, whatever f is.
//
// Gradient: f is a count of an argmax (piecewise constant, zero derivative almost everywhere),
// so it is treated as a constant, as in Switch and Megatron:
//   dL / dprobs_TE[t, e] = alpha * E * f_e / T   (the same for every token t)
// The gradient lowers P_e most where f_e is largest: through the softmax it moves probability
// away from overloaded experts.
//
// probs_TE: [T, E] (the full softmax, not only the chosen entries); topk_ids_TK: [T, K], ids
// in [0, E) (checked: an out-of-range id is a bug). dprobs_TE: [T, E], may be null (loss
// only); written, or added to when accumulate. T == 0 gives 0 and leaves dprobs_TE untouched.
double switch_aux_loss(const float* probs_TE, const int32_t* topk_ids_TK, int64_t T, int64_t E,
                       int64_t K, float alpha, float* dprobs_TE, bool accumulate);

// Sequence-level form (DeepSeek-V2/V3 "sequence-wise balance loss"): the T tokens are B
// consecutive sequences of S tokens; L_b is the Switch loss of sequence b alone (f and P over
// its S tokens) and
//   L = (1 / B) * sum_b L_b,   dL / dprobs_TE[t, e] = alpha * E * f_{b(t), e} / (S * B)
// It penalizes imbalance inside each sequence, which a batch-level loss averages away.
// With S == T it equals switch_aux_loss. Requires S >= 1 and T % S == 0 (checked).
double switch_aux_loss_seq(const float* probs_TE, const int32_t* topk_ids_TK, int64_t T, int64_t S,
                           int64_t E, int64_t K, float alpha, float* dprobs_TE, bool accumulate);

// Router z-loss (ST-MoE, Zoph et al. 2022): keeps the scores small so the softmax stays in a
// well-conditioned range.
//   L = coef * (1 / T) * sum_t lse_t^2,   lse_t = log sum_e exp(logits_TE[t, e])
//   dL / dlogits_TE[t, e] = coef * 2 * lse_t * softmax(logits_t)[e] / T
// lse is computed with max-subtraction in double, so logits of +-1e4 give a finite loss
// (~1e8 * coef) and gradient. -inf entries get zero gradient. A row that is entirely -inf (a
// fully masked token) has no finite score to regularize: it contributes 0 to the loss and gets
// zero gradient, but still counts in T. NaN or +inf logits propagate NaN/Inf: callers check
// finiteness first (before routing, as MoeLayer does).
// logits_TE: [T, E]; dlogits_TE: [T, E], may be null; written, or added to when accumulate.
double router_z_loss(const float* logits_TE, int64_t T, int64_t E, float coef, float* dlogits_TE,
                     bool accumulate);

}  // namespace sy
