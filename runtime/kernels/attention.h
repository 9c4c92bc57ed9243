// Multi-head scaled dot-product attention and rotary position embeddings (RoPE), forward.
// Raw pointers, row-major; rows are tokens. Shared by the Qwen2-MoE decoder (causal, grouped-
// query, KV cache) and the BERT encoder (bidirectional).
//
//   for query head h (kv head g = h / (nH / nKV)) and query row t at position pos0 + t:
//     s_tj = (q_t,h . k_j,g) * scale           for key rows j < Tk
//     s_tj = -inf  where causal and j > pos0 + t, or where key_mask[j] == 0
//     o_t,h = sum_j softmax_j(s_t) v_j,g
//
// Legend: T query rows, Tk key rows (the KV cache holds keys of positions 0..Tk-1), nH query
// heads, nKV key/value heads, hd head dim.
#pragma once

#include <cstdint>
#include <vector>

#include "runtime/kernels/math.h"
#include "runtime/kernels/op_types.h"

namespace sy {

// RoPE in the "rotate half" convention of Hugging Face Llama / Qwen2: within each head the
// pair (x_i, x_{i+hd/2}) at position p turns by p * theta^(-2i/hd):
//   x_i'        = x_i cos - x_{i+hd/2} sin
//   x_{i+hd/2}' = x_{i+hd/2} cos + x_i sin
// The cosine and sine of one pair's angle at position `pos`, taken in fp32 as Hugging Face
// does (pos * inv_freq); inverse: the negative angle.
SY_HD inline void rope_cos_sin(float pos, float inv_freq, bool inverse, float* c, float* s) {
  const float ang = pos * inv_freq;
  *c = cosf(ang);
  *s = inverse ? -sinf(ang) : sinf(ang);
}
// One pair (x_i at lo, x_{i+hd/2} at hi) turned by the angle of (c, s).
SY_HD inline void rope_rotate_pair(float* lo, float* hi, float c, float s) {
  const float a = *lo, b = *hi;
  *lo = a * c - b * s;
  *hi = b * c + a * s;
}
SY_HD inline void rope_rotate_head(float* x, const float* cos_h, const float* sin_h, int64_t hd) {
  const int64_t half = hd / 2;
  for (int64_t i = 0; i < half; ++i) rope_rotate_pair(x + i, x + i + half, cos_h[i], sin_h[i]);
}
// Rotates every head of T rows x_T[heads * hd] (row stride `ld` floats) in place; row t is at
// position pos0 + t. inverse: rotate by the negative angle (the rotation is orthogonal, so this
// is also the backward: dx = R^T dy).
void rope_apply(float* x, int64_t T, int64_t heads, int64_t hd, int64_t ld, int64_t pos0,
                const std::vector<float>& inv_freq, bool inverse = false);

// q [T, nH*hd], k/v [Tk, nKV*hd] -> out [T, nH*hd] (written). pos0: position of query row 0
// (causal only; keys are at positions 0..Tk-1). key_mask [Tk] may be null (all keys real).
// scratch: T * Tk floats. A query row with no visible key gets zeros.
void attention_forward(const float* q, const float* k, const float* v, float* out, int64_t T,
                       int64_t Tk, int64_t pos0, const AttentionShape& s, const uint8_t* key_mask,
                       float* scratch);

// Backward of attention_forward with the same arguments (the probabilities are recomputed
// from q and k, nothing is cached): given dout [T, nH*hd], writes dq [T, nH*hd] and ADDS into
// dk, dv [Tk, nKV*hd] (grouped-query heads sum into their kv head). scratch: 2 * T * Tk
// floats.
void attention_backward(const float* q, const float* k, const float* v, const float* dout,
                        float* dq, float* dk, float* dv, int64_t T, int64_t Tk, int64_t pos0,
                        const AttentionShape& s, const uint8_t* key_mask, float* scratch);

}  // namespace sy
