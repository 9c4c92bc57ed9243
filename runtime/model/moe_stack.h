// A stack of MoE layers over token embeddings, the main job's model until the real model
// families land:
//
//   h_0 = Embed(ids)                       (a fixed N(0,1) row per token id, drawn from
//                                            (seed, id), so no V x D table is stored)
//   h_l = h_{l-1} + MoE_l(RMSNorm_l(h_{l-1}))  for l = 1..L
//
// Every layer has its own router and experts (seeded per layer). Forward only for now.
// Legend: T tokens, D hidden, L layers.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "runtime/core/status.h"
#include "runtime/moe/moe_layer.h"

namespace sy {

struct MoeStackConfig {
  int64_t num_layers = 2;
  MoeLayerConfig layer;  // shared shape; the seeds are offset per layer
  float rms_eps = 1e-6f;
  uint64_t embed_seed = 7;

  Status validate() const;
};

class MoeStack {
 public:
  // comm: the expert-parallel group (null: one rank); forward is then collective over it.
  static StatusOr<std::unique_ptr<MoeStack>> create(const MoeStackConfig& cfg,
                                                    Communicator* comm = nullptr);

  const MoeStackConfig& config() const { return cfg_; }
  int64_t num_layers() const { return static_cast<int64_t>(layers_.size()); }
  MoeLayer& layer(int64_t l) { return *layers_[static_cast<size_t>(l)]; }
  void set_step(int64_t step) {
    for (auto& l : layers_) l->set_step(step);
  }

  // Writes the embedding rows of ids_T into x_TD.
  void embed(const int32_t* ids_T, int64_t T, float* x_TD) const;
  // ids_T [T] -> h_TD [T, D], the final hidden states.
  Status forward(const int32_t* ids_T, int64_t T, float* h_TD);

 private:
  explicit MoeStack(const MoeStackConfig& cfg) : cfg_(cfg) {}

  MoeStackConfig cfg_;
  std::vector<std::unique_ptr<MoeLayer>> layers_;
  std::vector<std::vector<float>> norm_w_;  // [L][D], ones
  std::vector<float> xn_TD_, y_TD_;         // scratch
};

}  // namespace sy
