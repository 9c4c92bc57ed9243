// linear: s = W x, W in R^{E x D}. The gate of Switch, Mixtral and Qwen-MoE; the parameter
// `weight` has the layout of Hugging Face's `mlp.gate.weight` ([E, D]) and loads as is.
#include "routers/linear_scores.h"
#include "routers/registry.h"

namespace sy {
namespace {

class LinearRouter final : public LinearScoresRouter {
 public:
  explicit LinearRouter(const RouterConfig& cfg) : LinearScoresRouter(cfg) {}
  const Param* linear_gate() const override { return W_; }
};

std::unique_ptr<Router> make_linear_router(const RouterConfig& cfg) {
  return std::make_unique<LinearRouter>(cfg);
}

}  // namespace

SY_REGISTER_ROUTER(linear, 10, "s = W x (Switch / Mixtral / Qwen-MoE gate)", make_linear_router,
                   nullptr);

}  // namespace sy
