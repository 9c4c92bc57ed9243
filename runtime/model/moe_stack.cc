#include "runtime/model/moe_stack.h"

#include "runtime/backend/ops.h"
#include "runtime/core/rng.h"

namespace sy {

Status MoeStackConfig::validate() const {
  if (num_layers < 1)
    return InvalidArgument("num_layers must be >= 1 (got " + std::to_string(num_layers) + ")");
  if (!(rms_eps > 0.0f)) return InvalidArgument("rms_eps must be > 0");
  return layer.validate();
}

StatusOr<std::unique_ptr<MoeStack>> MoeStack::create(const MoeStackConfig& cfg,
                                                     Communicator* comm) {
  SY_RETURN_IF_ERROR(cfg.validate());
  std::unique_ptr<MoeStack> s(new MoeStack(cfg));
  for (int64_t l = 0; l < cfg.num_layers; ++l) {
    MoeLayerConfig lc = cfg.layer;
    lc.seed = hash_combine(cfg.layer.seed, static_cast<uint64_t>(l));
    lc.router.seed = hash_combine(cfg.layer.router.seed, static_cast<uint64_t>(l));
    lc.layer_index = static_cast<int>(l);
    SY_ASSIGN_OR_RETURN(auto layer, MoeLayer::create(lc, comm));
    s->layers_.push_back(std::move(layer));
    s->norm_w_.emplace_back(static_cast<size_t>(cfg.layer.d_model), 1.0f);
  }
  return s;
}

void MoeStack::embed(const int32_t* ids_T, int64_t T, float* x_TD) const {
  const int64_t D = cfg_.layer.d_model;
  for (int64_t t = 0; t < T; ++t)
    fill_normal(x_TD + t * D, D, 1.0f, cfg_.embed_seed, static_cast<uint64_t>(ids_T[t]));
}

Status MoeStack::forward(const int32_t* ids_T, int64_t T, float* h_TD) {
  const int64_t D = cfg_.layer.d_model;
  embed(ids_T, T, h_TD);
  xn_TD_.resize(static_cast<size_t>(T * D));
  y_TD_.resize(static_cast<size_t>(T * D));
  for (size_t l = 0; l < layers_.size(); ++l) {
    ops::rmsnorm_forward(layers_[l]->ctx(), h_TD, norm_w_[l].data(), xn_TD_.data(), nullptr, T, D,
                         cfg_.rms_eps);
    SY_RETURN_IF_ERROR(layers_[l]->forward(xn_TD_.data(), ids_T, T, y_TD_.data()));
    ops::add_inplace(layers_[l]->ctx(), h_TD, y_TD_.data(), T * D);  // residual
  }
  return Status::Ok();
}

}  // namespace sy
