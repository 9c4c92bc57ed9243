#include "runtime/train/adamw.h"

#include <cmath>

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

double AdamW::grad_sq_sum(const std::vector<TrainParam>& params) {
  double s = 0;
  for (const TrainParam& p : params)
    for (float g : p.grad->data) s += static_cast<double>(g) * g;
  return s;
}

double AdamW::update(const std::vector<TrainParam>& params, double global_grad_sq) {
  const double norm = std::sqrt(global_grad_sq);
  const double clip = cfg_.clip_norm > 0 && norm > cfg_.clip_norm ? cfg_.clip_norm / norm : 1.0;
  const int64_t s = st_.step;
  const double lr = lr_at(s);
  const double bc1 = 1.0 - std::pow(cfg_.beta1, static_cast<double>(s + 1));
  const double bc2 = 1.0 - std::pow(cfg_.beta2, static_cast<double>(s + 1));
  const float b1 = static_cast<float>(cfg_.beta1), b2 = static_cast<float>(cfg_.beta2);
  for (const TrainParam& p : params) {
    SY_CHECK(p.value && p.grad && p.value->numel() == p.grad->numel())
        << "adamw: parameter " << p.name << " without a matching gradient";
    auto& [m, v] = st_.moments[p.name];
    const size_t n = p.value->data.size();
    if (m.empty()) {
      m.assign(n, 0.0f);
      v.assign(n, 0.0f);
    }
    SY_CHECK(m.size() == n && v.size() == n)
        << "adamw: saved moments of " << p.name << " have " << m.size() << " values, the "
        << "parameter " << n;
    const bool decay = cfg_.weight_decay > 0 && p.value->ndim() >= 2;
    float* w = p.value->data.data();
    const float* g = p.grad->data.data();
    for (size_t i = 0; i < n; ++i) {
      const float gi = static_cast<float>(g[i] * clip);
      m[i] = b1 * m[i] + (1.0f - b1) * gi;
      v[i] = b2 * v[i] + (1.0f - b2) * gi * gi;
      const double mhat = m[i] / bc1, vhat = v[i] / bc2;
      double upd = mhat / (std::sqrt(vhat) + cfg_.eps);
      if (decay) upd += cfg_.weight_decay * w[i];
      w[i] = static_cast<float>(w[i] - lr * upd);
    }
  }
  ++st_.step;
  return clip;
}

}  // namespace sy
