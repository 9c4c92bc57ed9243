// AdamW (decoupled weight decay, Loshchilov & Hutter) with linear warm-up and cosine decay of
// the learning rate, and global-norm gradient clipping, for the training loop of issue 5.
//
//   lr(s)  = lr * (s + 1) / warmup                          for s < warmup
//          = lr * (min_ratio + (1 - min_ratio) * (1 + cos(pi * p)) / 2),
//            p = (s - warmup) / max(1, total - warmup) clamped to [0, 1]      afterwards
//   g      = grad * min(1, clip / ||grad||)   (||.|| over every trained parameter of the job;
//            clip <= 0: no clipping)
//   m      = b1 m + (1 - b1) g,   v = b2 v + (1 - b2) g^2
//   w     -= lr(s) * ( m / (1 - b1^(s+1)) / (sqrt(v / (1 - b2^(s+1))) + eps) + wd * w )
// Weight decay applies to matrices only (ndim >= 2), not to norms and biases, as is usual.
//
// State (m, v per parameter, keyed by name; the step count) is what a checkpoint must save to
// resume bitwise: state() / set_state().
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "runtime/backend/backend.h"
#include "runtime/core/status.h"
#include "runtime/core/tensor.h"

namespace sy {

struct AdamWConfig {
  double lr = 1e-3;
  double beta1 = 0.9, beta2 = 0.95, eps = 1e-8;
  double weight_decay = 0.0;
  int64_t warmup_steps = 0;
  int64_t total_steps = 1;
  double min_lr_ratio = 0.1;  // the cosine ends at lr * min_lr_ratio
  double clip_norm = 1.0;     // <= 0: no clipping
  Status validate() const;
};

// One trained parameter: its name (the optimizer state's key), value and gradient.
struct TrainParam {
  std::string name;
  Tensor* value = nullptr;
  const Tensor* grad = nullptr;
  double lr_scale = 1.0;  // this parameter's learning rate is lr(s) * lr_scale
};

class AdamW {
 public:
  explicit AdamW(const AdamWConfig& cfg) : cfg_(cfg) {}
  const AdamWConfig& config() const { return cfg_; }

  double lr_at(int64_t step) const;
  int64_t step() const { return st_.step; }  // updates done so far

  // Sum of squared gradient entries of `params` (double), for the global norm: the caller adds
  // the parts that other ranks hold (all-reduce) before calling update().
  static double grad_sq_sum(const std::vector<TrainParam>& params,
                            const ExecContext& c = default_context());
  // One optimizer step with the job-wide gradient norm sqrt(global_grad_sq). Returns the clip
  // factor applied (1 when no clipping happened).
  double update(const std::vector<TrainParam>& params, double global_grad_sq);

  // Moments by parameter name, and the step count.
  struct State {
    int64_t step = 0;
    // Held where the parameters live (moved there on the next step when restored elsewhere).
    std::map<std::string, std::pair<DeviceArray<float>, DeviceArray<float>>> moments;
  };
  const State& state() const { return st_; }
  // Restores a saved state; a moment whose size differs from its parameter's is detected at the
  // next update() (kInvalidArgument there would be too late, so update() SY_CHECKs it).
  void set_state(State s) { st_ = std::move(s); }

  // Where the update runs: default_context() until set (the Trainer hands down the model's).
  void set_context(const ExecContext* c) { exec_ = c ? c : &default_context(); }

 private:
  const ExecContext* exec_ = &default_context();
  AdamWConfig cfg_;
  State st_;
};

}  // namespace sy
