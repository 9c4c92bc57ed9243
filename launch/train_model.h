// How `switchyard train` turns its settings into the model it trains (Qwen2-MoE:
// launch/cmd_train.cc) and the Trainer that steps it (that and BERT's, launch/train_bert.cc), in
// one place, so that bench/step_ceiling times the very model and step the command runs.
#pragma once

#include "proto/commands.pb.h"
#include "runtime/core/status.h"
#include "runtime/model/qwen2_moe.h"
#include "runtime/train/adamw.h"
#include "runtime/train/trainer.h"

namespace sy::launch {

// The options a Qwen2-MoE checkpoint is loaded with for training: what is trained (--what), the
// seed of a replaced router, the balance rate, the routed experts' precision (--quantize), the
// capacity, and where it runs (--backend, --deterministic, --precision; InvalidArgument when
// that backend cannot run here). The checkpoint's own router is loaded; --router replaces it
// afterwards (the teacher of a warm start).
StatusOr<Qwen2MoeOptions> qwen2_moe_train_options(const switchyard::TrainConfig& c);

// The AdamW settings of a run: its learning-rate schedule runs over c.steps(). Not validated.
AdamWConfig train_adamw_config(const switchyard::TrainConfig& c);

// The trainer's settings besides AdamW: the non-finite policy (InvalidArgument when
// c.on_nonfinite() is neither skip nor stop), the routers' learning-rate scale, and the
// balancing loss (c.aux_loss(), or checkpoint_aux_loss, the checkpoint's
// router_aux_loss_coef, when that is < 0).
Status configure_trainer(const switchyard::TrainConfig& c, double checkpoint_aux_loss,
                         Trainer* trainer);

}  // namespace sy::launch
