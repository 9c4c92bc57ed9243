// The router interface. A router maps hidden states x_TD (and, for hash routing, token ids)
// to scores s_TE, probabilities p_TE = softmax(s) (fp32, max-subtraction), the top-k expert
// ids (ties to the lower id) and their weights (the chosen p, renormalized only when
// norm_topk_prob). Backward takes gradients of the weights, of the probabilities (auxiliary
// losses) and of the scores (z-loss) and accumulates gradients of the parameters and of x.
//
// Adding a router = one file that subclasses Router and registers it with one line
// (SY_REGISTER_ROUTER, routers/registry.h) + a test case; docs/routers.md.
// Routers know nothing of MPI, files or models: they sit below runtime/ and beside comm/.
//
// State: forward() caches what backward() needs, so a backward differentiates the most
// recent forward of the same router object. One router object per MoE layer.
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "runtime/backend/backend.h"
#include "runtime/core/status.h"
#include "runtime/core/tensor.h"

namespace sy {

// The router configs default to: the gate of Switch, Mixtral and Qwen-MoE (routers/linear.cc).
inline constexpr char kDefaultRouterName[] = "linear";
// The balance bias's parameter name (RouterConfig::balance_rate): mlp.gate.balance_bias.
inline constexpr char kBalanceBiasName[] = "balance_bias";

struct RouterConfig {
  std::string name = kDefaultRouterName;
  int64_t d_model = 0;      // D
  int64_t num_experts = 0;  // E
  int64_t top_k = 1;        // K
  int64_t hidden = 0;       // H for attention/mlp/hybrid/mlp_hadamard; <= 0 picks kDefaultHidden
  int64_t num_heads = 1;    // attention: H must be divisible by it
  bool norm_topk_prob = false;
  float init_std = 0.02f;
  uint64_t seed = 1234;
  int64_t vocab_size = 0;  // hash: token ids must be < vocab_size
  // gamma of the load-balancing bias (auxiliary-loss-free balancing, Wang et al. 2024): > 0
  // gives every router that can use it (Router::takes_balance_bias(); the others ignore it) a
  // state `balance_bias` b [E] that shifts the
  // CHOICE only, top-k of s + b over the scores s, and that moves toward balance after every
  // optimizer step in proportion to each expert's load error:
  //   b_e += gamma * (mean load - load_e) / mean load.
  // (Wang et al.'s sign update, gamma * sign(mean - load_e), cannot settle closer than gamma:
  // where tokens' scores differ by less than that, as in a young model whose probabilities are
  // near uniform, every token flips together and the load rotates instead of spreading.)
  // 0: no bias. sigmoid_bias always has its own bias (in affinity units, DeepSeek-V3's sign
  // update at its own gamma) and ignores this one.
  float balance_rate = 0.0f;

  static constexpr int64_t kDefaultHidden = 128;
  int64_t router_hidden() const { return hidden > 0 ? hidden : kDefaultHidden; }
  // Checks the fields every router needs; routers check their own extras in their factory.
  Status validate() const;
};

// What forward() produces for T tokens.
struct RouterOutput {
  int64_t T = 0, E = 0, K = 0;
  Tensor logits_TE;                  // scores s (hash: 0 for chosen, -inf elsewhere)
  Tensor probs_TE;                   // softmax(s)
  DeviceArray<int32_t> topk_ids_TK;  // descending by probability, ties to lower id; K is the
                                     // router's slots_per_token() (E for expert choice)
  Tensor topk_weights_TK;            // chosen p (renormalized when norm_topk_prob)
  Tensor chosen_probs_TK;            // chosen p before renormalization (ranks capacity drops)
  bool finite = true;                // false when any score was NaN/Inf (ids stay in range)
};

// Inputs to backward(); every pointer may be null. Shapes follow the last forward.
struct RouterGrads {
  const float* dweights_TK = nullptr;  // d loss / d topk_weights
  const float* dprobs_TE = nullptr;    // d loss / d probs (auxiliary balancing loss)
  const float* dlogits_TE = nullptr;   // d loss / d scores (router z-loss)
  float* dx_TD = nullptr;              // accumulated: dx_TD += d loss / d x
};

class Router {
 public:
  explicit Router(RouterConfig cfg) : cfg_(std::move(cfg)) {}
  virtual ~Router() = default;
  Router(const Router&) = delete;
  Router& operator=(const Router&) = delete;

  const RouterConfig& config() const { return cfg_; }
  // Where its operations run: default_context() until set (MoeLayer hands down its own).
  // Its parameters move into the context's memory.
  void set_context(const ExecContext* c);
  const ExecContext& ctx() const { return *exec_; }
  Memory* mem() const { return exec_->backend; }  // where its tensors live
  const std::string& name() const { return cfg_.name; }

  // x_TD: [T, D] row-major; token_ids_T: [T] (required when needs_token_ids()).
  void forward(const float* x_TD, const int32_t* token_ids_T, int64_t T, RouterOutput* out);
  // Accumulates parameter gradients (Param::grad) and, when g.dx_TD is set, dx.
  void backward(const RouterGrads& g);

  virtual bool needs_token_ids() const { return false; }
  virtual bool differentiable() const { return true; }
  // Multiply-adds x2 per token for computing the scores (softmax and top-k not included).
  virtual int64_t flops_per_token() const = 0;
  // Learned parameters (biases included). Hash routers report their table separately.
  int64_t num_params() const;

  // Hooks through which model and trainer code treat every router alike, never by name.
  // The gate W [E, D] when this router's scores are exactly s = W x (linear_forward), else
  // null: what another router can start from.
  virtual const Param* linear_gate() const { return nullptr; }
  // Copies what it can from `other` (same D and E) so that it routes like it; true when it
  // now routes bitwise the same. Default: copies nothing, false.
  virtual bool init_from(const Router& other) { return false; }
  // True when this router, as it stands, routes bitwise like `other`. Default: false.
  virtual bool routes_like(const Router& other) const { return false; }
  // Routers that route by a table fitted to token statistics say so here and fit it with
  // fit_token_table(freq_V), freq_V [vocab_size] token counts >= 0. Default: no table,
  // InvalidArgument.
  virtual bool fits_token_table() const { return false; }
  virtual Status fit_token_table(const std::vector<int64_t>& freq_V);

  // Training or inference (default). The trainer sets it on every MoE layer's router for its
  // steps (true) and its held-out loss (false); routers that behave differently while training
  // (noise, balancing by iterations) read training().
  void set_training(bool t) { training_ = t; }
  bool training() const { return training_; }
  // Where this router sits: its MoE layer and the step of the forward (-1 outside training
  // steps). MoeLayer sets both; counter-based noise is drawn from them.
  void set_position(int layer, int64_t step) {
    layer_ = layer;
    step_ = step;
  }
  // True when one token's experts depend on other tokens of its forward (a batch-level
  // choice): such a router cannot decode one token at a time with a KV cache. Default: false.
  virtual bool batch_dependent() const { return experts_choose(); }
  // Expert choice (Zhou et al. 2022): true when the EXPERTS choose their tokens. forward() then
  // offers every token to every expert: E slots per token (RouterOutput::K == E), all experts
  // by descending probability, weights = probabilities; the MoE layer's capacity plan makes the
  // choice (each expert keeps the C offers of highest probability of its capacity group, the
  // rest are not assignments: CapacityConfig::choice_k, runtime/kernels/capacity.h), so a token
  // gets 0..E experts. Default: false (the router chooses top_k experts per token).
  virtual bool experts_choose() const { return false; }
  // Slots per token of forward()'s output: E when experts_choose(), else top_k.
  int64_t slots_per_token() const { return experts_choose() ? cfg_.num_experts : cfg_.top_k; }
  // Routers with state that moves after each optimizer step from the step's load (not by
  // gradient) say so here; the trainer then calls after_step() after every optimizer update
  // (not after a skipped step) with load_E [E]: the assignments routed to each expert over the
  // whole step and every rank (summed over the ranks, so the same on every rank).
  virtual bool updates_after_step() const { return balance_b_ != nullptr; }
  virtual void after_step(const int64_t* load_E);
  // True when this router's choice is top-k of its scores, so a balance bias can shift it
  // (RouterConfig::balance_rate; the others ignore the rate). Default: every learned router
  // whose router chooses (not hash, not expert choice).
  virtual bool takes_balance_bias() const { return differentiable() && !experts_choose(); }
  // Adds the balance bias `name` [E] (zero) moved by `rate`, by the sign of each expert's load
  // error or in proportion to it (RouterConfig::balance_rate); make_router() calls it when
  // balance_rate > 0 and takes_balance_bias() (proportional), sigmoid_bias for its own (sign).
  void add_balance_bias(const std::string& name, float rate, bool by_sign);
  const Param* balance_bias() const { return balance_b_; }
  // Copies other's balance bias into this router's when both have one in the same units (the
  // same parameter name): a warm-started router then chooses like the one it replaces.
  void copy_balance_bias(const Router& other);

  std::deque<Param>& params() { return params_; }
  const std::deque<Param>& params() const { return params_; }
  Param* find_param(const std::string& name);
  // Copies `value` into the parameter `name`; shape must match exactly.
  Status set_param(const std::string& name, const Tensor& value);
  void zero_grad();

 protected:
  // Subclasses create their parameters here (stable addresses: std::deque).
  Param* add_param(const std::string& name, std::vector<int64_t> shape);
  // A parameter without a gradient (grad empty): saved and loaded with the others, never
  // updated by an optimizer (a bias moved by after_step()).
  Param* add_state(const std::string& name, std::vector<int64_t> shape);
  // Draws N(0, std^2) into p from (cfg.seed, name): the same on every rank.
  void init_normal(Param* p, float std);

  // Scores for T tokens; cache what backward_scores needs.
  virtual void compute_scores(const float* x_TD, const int32_t* token_ids_T, int64_t T,
                              float* s_TE) = 0;
  // ds_TE -> parameter grads (+=) and dx_TD (+=, when non-null).
  virtual void backward_scores(const float* ds_TE, float* dx_TD) = 0;
  // Routers that do not choose by softmax + top-k (hash, expert choice) override this. It must
  // write every entry of out's tensors and ids, and out->finite: forward() hands it the caller's
  // buffers, sized but not cleared.
  virtual void route(const float* x_TD, const int32_t* token_ids_T, int64_t T, RouterOutput* out);
  // The choice by rank_TE instead of the probabilities (biased or balanced scores): ids = top-k
  // of each row of rank_TE (ties to the lower id), weights = the chosen probs_TE (out's),
  // renormalized when normalize.
  void choose_by(const float* rank_TE, int64_t T, bool normalize, RouterOutput* out);
  // Host copies for element-wise work the backend has no op for (routers' memory may be a
  // device's): n floats from / to this router's memory.
  std::vector<float> to_host(const float* p, int64_t n) const;
  void from_host(float* dst, const std::vector<float>& v) const;

  RouterConfig cfg_;
  const ExecContext* exec_ = &default_context();
  std::deque<Param> params_;
  Param* balance_b_ = nullptr;  // the balance bias b [E] (state), or null
  float balance_rate_ = 0.0f;   // its gamma
  bool balance_by_sign_ = false;
  bool training_ = false;
  int layer_ = 0;
  int64_t step_ = -1;
  // Cached from the last forward for backward.
  int64_t last_T_ = 0;
  Tensor probs_TE_;
  DeviceArray<int32_t> ids_TK_;
  Tensor vals_TK_;        // chosen probabilities before renormalization
  Tensor dp_TE_, ds_TE_;  // backward scratch
  Tensor rank_vals_TK_;   // choose_by scratch
  Tensor biased_TE_;      // the scores shifted by the balance bias (the choice)
};

}  // namespace sy
