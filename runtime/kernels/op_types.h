// Plain structs and host tables that the operations of every backend take
// (runtime/backend/backend.h): the shape of an attention call, the scalars of an AdamW step,
// RoPE frequencies.
#pragma once

#include <cstdint>
#include <vector>

namespace sy {

struct AttentionShape {
  int64_t num_heads = 1;     // nH
  int64_t num_kv_heads = 1;  // nKV (divides nH)
  int64_t head_dim = 1;      // hd
  bool causal = true;
  float scale = 1.0f;  // usually 1 / sqrt(hd)
};

// The scalars of one AdamW step (runtime/train/adamw.h computes them; Backend::adamw_update).
struct AdamWStep {
  double lr = 0, eps = 1e-8, weight_decay = 0, clip = 1, bc1 = 1, bc2 = 1;
  float beta1 = 0.9f, beta2 = 0.999f;
};

// RoPE frequencies, a host table every backend takes: inv_freq[i] = theta^(-2i/hd) for
// i < hd/2 (computed in double, then rounded).
std::vector<float> rope_inv_freq(int64_t head_dim, double theta);

}  // namespace sy
