// expert_choice: the experts choose their tokens (Zhou et al. 2022, "Mixture-of-Experts with
// Expert Choice Routing").
//
//   scores  s = W x (`weight` [E, D], the linear gate's name and layout), p = softmax(s) over the
//           experts of each token (the paper's token-to-expert affinities S)
//   choice  each expert takes the C tokens of its capacity group with the highest p_te, ties to
//           the earlier token: C = ceil(capacity_factor * G * top_k / E) for the G unmasked
//           tokens of the group (capacity_factor 1 when the run is dropless), so every expert
//           processes exactly C tokens (perfect balance when G * top_k / E is whole) and a token
//           gets 0..E experts; top_k is the paper's k, the average experts per token.
//   weights p_te of each expert that took the token (not renormalized: norm_topk_prob does not
//           apply and is ignored)
//
// Representation (routers/router.h experts_choose()): the router offers every token to every
// expert, E slots per token in descending p, and the MoE layer's capacity plan takes the choice
// with its kProbs rule, which is exactly "each expert keeps its C highest p" (capacity.h,
// CapacityConfig::choice_k); permute, combine and their backward skip the slots not taken as
// they skip dropped ones. Nothing is "dropped": the plan counts only taken slots as routed.
//
// The batch that competes is the capacity group (moe group_tokens; 0: the whole forward on that
// rank). P ranks choose exactly what 1 rank chooses when every group is whole on one rank (the
// capacity plan's rule, capacity.h); with replicated-token inference each rank's slice is its own
// group unless group_tokens divides the slice.
//
// Not for autoregressive decoding: a token's experts depend on the tokens beside it, so
// batch_dependent() is true and generation with a KV cache is refused (Model::generate, exit 21).
#include "routers/linear_scores.h"
#include "routers/registry.h"

namespace sy {
namespace {

class ExpertChoiceRouter final : public LinearScoresRouter {
 public:
  explicit ExpertChoiceRouter(const RouterConfig& cfg) : LinearScoresRouter(cfg) {
    cfg_.norm_topk_prob = false;  // the weights are the affinities themselves
  }
  bool experts_choose() const override { return true; }
};

std::unique_ptr<Router> make_expert_choice_router(const RouterConfig& cfg) {
  return std::make_unique<ExpertChoiceRouter>(cfg);
}

}  // namespace

SY_REGISTER_ROUTER(expert_choice, 90,
                   "s = W x; each expert takes its top-C tokens of the group (Zhou 2022); no "
                   "decoding",
                   make_expert_choice_router, nullptr);

}  // namespace sy
