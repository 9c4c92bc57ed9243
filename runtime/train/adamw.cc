#include "runtime/train/adamw.h"

#include <cmath>

#include "runtime/backend/ops.h"

namespace sy {

Status AdamWConfig::validate() const {
  if (!(lr > 0) || !std::isfinite(lr)) return InvalidArgument("adamw: lr must be > 0");
  if (!(beta1 >= 0 && beta1 < 1) || !(beta2 >= 0 && beta2 < 1))
    return InvalidArgument("adamw: betas must be in [0, 1)");
  if (!(eps > 0)) return InvalidArgument("adamw: eps must be > 0");
  if (!(weight_decay >= 0)) return InvalidArgument("adamw: weight_decay must be >= 0");
  if (warmup_steps < 0 || total_steps < 1)
    return InvalidArgument("adamw: warmup_steps >= 0 and total_steps >= 1 required");
  if (!(min_lr_ratio >= 0 && min_lr_ratio <= 1))
    return InvalidArgument("adamw: min_lr_ratio must be in [0, 1]");
  return Status::Ok();
}

double AdamW::lr_at(int64_t step) const {
  if (step < cfg_.warmup_steps)
    return cfg_.lr * static_cast<double>(step + 1) / static_cast<double>(cfg_.warmup_steps);
  const double span =
      static_cast<double>(std::max<int64_t>(1, cfg_.total_steps - cfg_.warmup_steps));
  const double p =
      std::min(1.0, std::max(0.0, static_cast<double>(step - cfg_.warmup_steps) / span));
  const double cosine = 0.5 * (1.0 + std::cos(M_PI * p));
  return cfg_.lr * (cfg_.min_lr_ratio + (1.0 - cfg_.min_lr_ratio) * cosine);
}

double AdamW::grad_sq_sum(const std::vector<TrainParam>& params, const ExecContext& c) {
  double s = 0;
  for (const TrainParam& p : params) s += ops::sum_squares(c, p.grad->ptr(), p.grad->numel());
  return s;
}

double AdamW::update(const std::vector<TrainParam>& params, double global_grad_sq) {
  const double norm = std::sqrt(global_grad_sq);
  const double clip = cfg_.clip_norm > 0 && norm > cfg_.clip_norm ? cfg_.clip_norm / norm : 1.0;
  const int64_t s = st_.step;
  const double lr = lr_at(s);
  const double bc1 = 1.0 - std::pow(cfg_.beta1, static_cast<double>(s + 1));
  const double bc2 = 1.0 - std::pow(cfg_.beta2, static_cast<double>(s + 1));
  AdamWStep st;
  st.lr = lr;
  st.eps = cfg_.eps;
  st.clip = clip;
  st.bc1 = bc1;
  st.bc2 = bc2;
  st.beta1 = static_cast<float>(cfg_.beta1);
  st.beta2 = static_cast<float>(cfg_.beta2);
  for (const TrainParam& p : params) {
    SY_CHECK(p.value && p.grad && p.value->numel() == p.grad->numel())
        << "adamw: parameter " << p.name << " without a matching gradient";
    auto& [m, v] = st_.moments[p.name];
    const size_t n = p.value->data.size();
    Memory* mem = p.value->memory();
    if (m.empty()) {
      m = DeviceArray<float>(mem, n);
      v = DeviceArray<float>(mem, n);
    }
    m.move_to(mem);
    v.move_to(mem);
    SY_CHECK(m.size() == n && v.size() == n)
        << "adamw: saved moments of " << p.name << " have " << m.size() << " values, the "
        << "parameter " << n;
    // Decay on matrices only (norm weights and biases are not decayed).
    st.weight_decay = cfg_.weight_decay > 0 && p.value->ndim() >= 2 ? cfg_.weight_decay : 0.0;
    st.lr = lr * p.lr_scale;
    ops::adamw_update(*exec_, p.value->ptr(), p.grad->ptr(), m.data(), v.data(),
                      static_cast<int64_t>(n), st);
  }
  ++st_.step;
  return clip;
}

}  // namespace sy
