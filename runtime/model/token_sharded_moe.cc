#include "runtime/model/token_sharded_moe.h"

#include <algorithm>
#include <cstring>

#include "runtime/backend/ops.h"

namespace sy {

Status TokenShardedMoe::forward(MoeLayer& layer, const float* x_TD, const int32_t* ids_T, int64_t T,
                                int64_t D, float* y_TD) {
  const int P = comm_ ? comm_->size() : 1;
  const int r = comm_ ? comm_->rank() : 0;
  if (P == 1 || !replicated_) {
    begin_ = 0;
    count_ = T;
    return layer.forward(x_TD, ids_T, T, y_TD);
  }
  const int64_t S = (T + P - 1) / P;
  begin_ = std::min<int64_t>(T, r * S);
  count_ = std::min<int64_t>(T, begin_ + S) - begin_;
  Memory* m = layer.ctx().backend;  // the slices live where the layer runs
  resize_in(y_slice_, S * D, m);
  y_slice_.fill(0.0f);
  SY_RETURN_IF_ERROR(
      layer.forward(x_TD + begin_ * D, ids_T ? ids_T + begin_ : nullptr, count_, y_slice_.data()));
  resize_in(y_all_, P * S * D, m);
  comm_->allgather(y_slice_.data(), y_all_.data(), S * D,
                   {"moe.allgather", layer.config().layer_index, -1});
  // Slices are contiguous and in rank order, so the first T rows of the gathered buffer are
  // the T outputs (padding rows of the last ranks come after them).
  ops::copy(layer.ctx(), y_TD, y_all_.data(), T * D * static_cast<int64_t>(sizeof(float)));
  return Status::Ok();
}

void TokenShardedMoe::backward(MoeLayer& layer, const float* dy_TD, int64_t T, int64_t D,
                               float* dx_TD, const MoeAuxGrads* aux) {
  const int P = comm_ ? comm_->size() : 1;
  if (P == 1 || !replicated_) {
    layer.backward(dy_TD, dx_TD, aux);
    return;
  }
  const int64_t S = (T + P - 1) / P;
  Memory* m = layer.ctx().backend;
  resize_in(y_slice_, S * D, m);  // this rank's dx rows (padded to S)
  y_slice_.fill(0.0f);
  layer.backward(dy_TD + begin_ * D, y_slice_.data(), aux);
  resize_in(y_all_, P * S * D, m);
  comm_->allgather(y_slice_.data(), y_all_.data(), S * D,
                   {"moe.backward.allgather", layer.config().layer_index, -1});
  ops::copy(layer.ctx(), dx_TD, y_all_.data(), T * D * static_cast<int64_t>(sizeof(float)));
}

double TokenShardedMoe::backward_with_balance(MoeLayer& layer, const float* dy_TD, int64_t T,
                                              int64_t D, float* dx_TD, float aux_alpha,
                                              DeviceArray<float>* dprobs) {
  MoeAuxGrads aux;
  double loss = 0;
  const RouterOutput& ro = layer.router_output();
  if (aux_alpha > 0 && ro.T > 0 && layer.router().differentiable()) {
    resize_in(*dprobs, ro.T * ro.E, layer.ctx().backend);
    loss = ops::switch_aux_loss(layer.ctx(), ro.probs_TE.ptr(), ro.topk_ids_TK.data(), ro.T, ro.E,
                                ro.K, aux_alpha, dprobs->data(), /*accumulate=*/false);
    aux.dprobs_TE = dprobs->data();
  }
  backward(layer, dy_TD, T, D, dx_TD, aux.dprobs_TE ? &aux : nullptr);
  return loss;
}

}  // namespace sy
