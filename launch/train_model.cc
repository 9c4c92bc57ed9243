#include "launch/train_model.h"

#include "launch/commands.h"

namespace sy::launch {

StatusOr<Qwen2MoeOptions> qwen2_moe_train_options(const switchyard::TrainConfig& c) {
  Qwen2MoeOptions opt;
  opt.train = c.what() == "all" ? Qwen2MoeTrain::kAll : Qwen2MoeTrain::kRouters;
  opt.router = "";  // the checkpoint's: the teacher of a replaced router (WarmStartRouter)
  opt.seed = c.seed();
  opt.balance_rate = c.balance_rate();
  opt.expert_bits = c.quantize() == "int8" ? 8 : c.quantize() == "int4" ? 4 : 32;
  opt.capacity_factor = c.capacity_factor();
  SY_ASSIGN_OR_RETURN(opt.exec, backend_context(c.backend(), c.deterministic(), c.precision()));
  return opt;
}

AdamWConfig train_adamw_config(const switchyard::TrainConfig& c) {
  AdamWConfig ac;
  ac.lr = c.lr();
  ac.warmup_steps = c.warmup();
  ac.total_steps = c.steps();
  ac.weight_decay = c.weight_decay();
  ac.clip_norm = c.clip();
  return ac;
}

Status configure_trainer(const switchyard::TrainConfig& c, double checkpoint_aux_loss,
                         Trainer* trainer) {
  SY_ASSIGN_OR_RETURN(NonFinitePolicy policy, parse_nonfinite_policy(c.on_nonfinite()));
  trainer->set_nonfinite_policy(policy, c.max_skips());
  trainer->set_router_lr_scale(c.router_lr_scale());
  trainer->set_router_aux_loss(c.aux_loss() >= 0 ? c.aux_loss() : checkpoint_aux_loss);
  return Status::Ok();
}

}  // namespace sy::launch
