// The single-rank MoE layer: router -> capacity plan -> gather kept rows grouped by expert ->
// routed experts (SwiGLU, or BERT's GELU FFN with expert_kind kGelu) -> weighted combine
// (+ sigmoid-gated shared expert), and its backward.
//
//   y_t = sum_{k kept} w_tk * Expert_{id_tk}(x_t)  [+ sigmoid(w_s . x_t) * Shared(x_t)]
//
// A dropped assignment contributes zero (not w * x; the residual outside the layer carries the
// token). Capacity is computed over the T tokens of one forward call (the
// whole batch is one group, see routers/capacity.h). The capacity plan ranks drops by the
// router's chosen probabilities p (before any norm_topk_prob renormalization).
//
// The multi-rank dispatcher reuses the same plan (plan()) and replaces the local gather/scatter
// with all-to-alls; everything else here stays the same.
//
// State: forward() caches what backward() needs and reads x_TD again in backward() (router
// and shared expert): the caller keeps x_TD alive and unchanged until backward() - a model
// keeps the layer input for its own backward anyway, so the layer does not copy it. Each
// backward() differentiates the last forward; parameter gradients accumulate until zero_grad().
//
// Expert choice (Router::experts_choose()): the router offers each token to all E experts (E
// slots per token) and the capacity plan's choice_k rule keeps each expert's top-C tokens of
// the group; the slots not taken are skipped like dropped ones, but count as neither routed
// nor dropped.
//
// Non-finite router scores do not stop the forward (ids stay in range); the
// caller reads last_finite() and applies the skip/abort policy across ranks.
//
// Overlap (exchange_chunks > 1): the compute runs on a worker thread while this thread makes
// the MPI calls, with one fixed order of starts on every rank (they number the collectives);
// Dc / Rc are the dispatch / return of chunk c:
//   this thread: start D0 .. D(n-1) | for each c: wait Dc, (chunk c computed), start Rc |
//                wait R0 .. R(n-1)
//   worker:      shared expert's hidden layer | experts of chunk 0 (once D0 is in), chunk 1, ...
//                | shared expert's output
// then the weighted combine and the shared expert's add, as without overlap. The backward
// runs the same schedule on the gradients, with the shared expert's weight gradients around
// the routed experts; its dx terms are added after the routed experts', where they were.
//
// Legend: T tokens, D hidden, F expert hidden, E experts, K top-k, R kept rows.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "comm/communicator.h"
#include "comm/dispatcher.h"
#include "routers/router.h"
#include "runtime/core/status.h"
#include "runtime/kernels/capacity.h"
#include "runtime/moe/experts.h"

namespace sy {

// The default overlap across hosts (bench/overlap_bench.cc: 4 chunks hid the most of a
// 1 Gbit/s exchange between two namespace hosts; README "Benchmarks").
constexpr int kExchangeChunksAcrossHosts = 4;
// On one host the exchange is a copy through shared memory, and the overlap pays for itself only
// where each expert's GEMMs are long against the worker thread's hand-offs and the polling: the
// default overlaps (kExchangeChunksAcrossHosts chunks) from this many weights per expert matrix,
// D x F, up. Measured at two shapes (bench/ceiling_bench.cc, 2 ranks on 2 cores): the
// Qwen1.5-MoE shape (D x F = 2.9 M) gained from it, the small shape (0.13 M) lost; the default
// model (0.07 M) and the tests' small models stay blocking.
constexpr int64_t kOneHostOverlapMinExpertWeights = int64_t{1} << 20;

// The exchange_chunks a layer takes when neither MoeLayerConfig nor SY_EXCHANGE_CHUNKS sets it.
// Every argument is the same on every rank, so every rank takes the same schedule.
int default_exchange_chunks(bool spans_hosts, int64_t d_model, int64_t ffn_hidden);

struct MoeLayerConfig {
  int64_t d_model = 0;            // D
  int64_t ffn_hidden = 0;         // F (per routed expert)
  int64_t num_experts = 0;        // E
  int64_t top_k = 1;              // K
  double capacity_factor = 1.25;  // <= 0: dropless
  DropPolicy drop_policy = DropPolicy::kProbs;
  int64_t shared_expert_hidden = 0;  // Fs; 0 = no shared expert
  // kGelu: BERT FFN experts (params experts.fc1, fc1_bias, fc2, fc2_bias; experts.h).
  ExpertKind expert_kind = ExpertKind::kSwiGLU;
  // false: frozen routed and shared experts (no grad buffers, no weight grads; dx and the
  // router's gradients still flow).
  bool train_experts = true;
  // Routed expert weights: 32 = fp32, 8 / 4 = group-wise quantized (runtime/kernels/quant.h)
  // for inference; quantized experts are frozen (train_experts must be false). quant_group:
  // input columns per scale.
  int expert_bits = 32;
  int64_t quant_group = 128;
  float init_std = 0.02f;  // experts and shared expert
  // The router (name, hidden, norm_topk_prob, seed, ...). Its d_model / num_experts / top_k
  // are ignored: the layer's values are written over them (resolved_router()).
  RouterConfig router;
  uint64_t seed = 1234;  // experts; the router keeps router.seed
  // Which rank holds which experts (comm/placement.h; `moe.placement`): null = contiguous.
  // Must be for this job's ranks and num_experts, one copy per expert (validate(false)).
  std::shared_ptr<const ExpertPlacement> placement;
  // Capacity group (routers/capacity.h): tokens [g*G, (g+1)*G) of one forward compete for
  // capacity; 0 = the whole forward is one group.
  int64_t group_tokens = 0;
  int layer_index = 0;  // names the layer in collective tags and messages
  // Overlap of the token exchange with compute (expert parallel, MPI, a host backend): the
  // local experts are split into this many chunks of consecutive experts (at most e); every
  // chunk's rows go out at once, each chunk's experts run as soon as its rows are in and its
  // results go back while the next chunk runs; the shared expert runs around the routed
  // experts (half before, half after) while rows travel. The same
  // arithmetic in the same order: the output and gradients are bitwise those of 1 (no
  // overlap). 0 = SY_EXCHANGE_CHUNKS; when that is unset or "": default_exchange_chunks()
  // (kExchangeChunksAcrossHosts when the ranks span hosts, Communicator::spans_hosts, or the
  // experts are large; else 1).
  int exchange_chunks = 0;
  // Where the layer, its router and its experts run (backend, stream, deterministic flag);
  // null = default_context(). Must outlive the layer.
  const ExecContext* exec = nullptr;

  Status validate() const;
  // The router config as the layer builds it (the layer's sizes written in).
  RouterConfig resolved_router() const;
};

// Seconds per phase of one forward or one backward on this process (steady_clock). Each name
// means one thing; "combine" is only the weighted sum of a token's expert rows.
//   phase               forward                            backward
//   route_s             router forward                     router backward + the all-reduce
//                                                          of replicated gradients
//   plan_s              chosen probabilities + capacity    0
//                       plan
//   permute_s           gather x rows into plan order      scatter dy rows (weighted) into plan
//                       (grouped by expert)                order + sum each token's dx rows
//   count_exchange_s    alltoall of the counts + check     0
//   dispatch_exchange_s rows out to the expert owners      gradients of expert outputs out
//   experts_s           local expert FFNs                  their backward
//   return_exchange_s   expert outputs back to the         gradients of expert inputs back
//                       senders
//   weighted_combine_s  y_t = sum_k w_tk * row_tk          d weights (dy_t . row_tk)
//   shared_expert_s     gated shared expert                its backward
// With overlap (MoeLayerConfig::exchange_chunks > 1) the *_exchange_s are the time spent
// inside the exchange's calls (starting chunks, waiting for them): the part not hidden behind
// compute; experts_s and shared_expert_s are compute only.
// The three *_exchange_s are 0 with one rank; they are comm/dispatcher.h's own clock
// (DispatchStats count_exchange_s, dispatch_s, return_s), not timed again here.
// experts_elementwise_s: the part of experts_s outside the expert GEMMs (forward only; not
// added into total_s()).
struct MoePhaseTimes {
  double route_s = 0, plan_s = 0, permute_s = 0;
  double count_exchange_s = 0, dispatch_exchange_s = 0;
  double experts_s = 0;
  double return_exchange_s = 0;
  double weighted_combine_s = 0, shared_expert_s = 0;
  double experts_elementwise_s = 0;
  double total_s() const {
    return route_s + plan_s + permute_s + count_exchange_s + dispatch_exchange_s + experts_s +
           return_exchange_s + weighted_combine_s + shared_expert_s;
  }
};

// The one record of a layer's last forward (and backward times of its last backward): what the
// load reports, routing metrics, progress lines and counters read, so each number is computed
// once, here. Counts are (token, slot) assignments of this rank's unmasked tokens, straight
// from the capacity plan; per expert over the GLOBAL experts [E].
struct MoeStepStats {
  int64_t T = 0;       // tokens passed to forward()
  int64_t tokens = 0;  // of those, unmasked (routed = tokens * K, except for expert choice)
  int64_t routed = 0, kept = 0, dropped = 0;         // kept + dropped = routed
  std::vector<int64_t> routed_E, kept_E, dropped_E;  // [E]
  // What crossed the wire (comm/dispatcher.h): rows and bytes per peer, rows received per local
  // expert. One rank (no dispatcher) reports its own kept rows as sent to and received from
  // itself, with zero bytes; its local experts are all E.
  ExchangeLoad exchange;
  // (bytes sent + received, other ranks) * 2 / (dispatch + return exchange seconds) / 1e9: both
  // exchanges move the same bytes. 0 with one rank.
  double bandwidth_gbps = 0;
  MoePhaseTimes forward;   // the last forward
  MoePhaseTimes backward;  // the last backward (all 0 before the first)
};

// Cumulative since create() or reset_counters(): the sum of every forward's MoeStepStats (a
// training step's totals over its sequences, when reset at each step).
struct MoeLayerCounters {
  int64_t forwards = 0;
  int64_t tokens = 0;  // unmasked tokens
  int64_t routed = 0, kept = 0, dropped = 0;
  std::vector<int64_t> routed_E, kept_E, dropped_E;
  void add(const MoeStepStats& s);
};

// Extra gradients for the router from auxiliary losses (runtime/kernels/balance.h): null = none.
struct MoeAuxGrads {
  const float* dprobs_TE = nullptr;   // d loss / d probs (Switch aux loss)
  const float* dlogits_TE = nullptr;  // d loss / d scores (router z-loss)
};

class MoeLayer {
 public:
  // comm: the expert-parallel group (null or size 1: every expert is local). With P ranks each
  // holds experts [r*E/P, (r+1)*E/P) (E % P != 0 is InvalidArgument) and forward/backward are
  // COLLECTIVE over comm: every rank calls them the same number of times, also with T = 0.
  // Routers and the shared expert are replicated (same seed on every rank); their gradients are
  // all-reduced (summed) in backward. comm must outlive the layer.
  static StatusOr<std::unique_ptr<MoeLayer>> create(const MoeLayerConfig& cfg,
                                                    Communicator* comm = nullptr);
  MoeLayer(const MoeLayer&) = delete;
  MoeLayer& operator=(const MoeLayer&) = delete;

  const MoeLayerConfig& config() const { return cfg_; }
  const ExecContext& ctx() const { return *exec_; }

  // x_TD [T, D] -> y_TD [T, D] (written). token_ids_T [T] (needed by hash routers, else may be
  // null). mask_T [T] (null = all real): masked tokens take no capacity, get y = 0 and no
  // gradient. Errors: InvalidArgument for missing token ids or sizes over MPI's int counts.
  Status forward(const float* x_TD, const int32_t* token_ids_T, int64_t T, float* y_TD,
                 const uint8_t* mask_T = nullptr);
  // dy_TD [T, D] -> dx_TD [T, D] (written; may be null). Accumulates router parameter
  // gradients, and expert / shared-expert weight gradients when train_experts. `aux` adds
  // auxiliary-loss gradients to the router's.
  void backward(const float* dy_TD, float* dx_TD, const MoeAuxGrads* aux = nullptr);

  // ---- last forward, for reports and metrics ----
  const RouterOutput& router_output() const { return rout_; }
  const CapacityPlan& plan() const { return plan_; }
  bool last_finite() const { return rout_.finite; }
  // Counts, exchange and phase times of the last forward; backward times of the last backward.
  const MoeStepStats& last_stats() const { return stats_; }
  // The mask of the last forward (the caller's; null = all real tokens).
  const uint8_t* last_mask() const { return mask_T_; }
  const MoeLayerCounters& counters() const { return counters_; }
  int64_t first_local_expert() const { return first_expert_; }
  // Global id of each local expert, in local order ([num_local_experts()]): [first, first + e)
  // with the contiguous placement. Checkpoints and reports name experts by these ids.
  const std::vector<int32_t>& local_expert_ids() const { return local_expert_ids_; }
  int64_t num_local_experts() const { return local_experts_; }
  // The step named in collective tags and fault injection (SY_FAULT ... step=s); the router
  // learns it with the layer index (Router::set_position).
  void set_step(int64_t step) {
    step_ = step;
    router_->set_position(cfg_.layer_index, step);
  }
  // By default backward() sums the router's and shared expert's gradients over the ranks at its
  // end, which is right for ONE backward per zero_grad(). A caller that accumulates several
  // backward() calls (several sequences per step) defers it and calls
  // allreduce_replicated_grads() once after the last (COLLECTIVE); otherwise the earlier
  // contributions would be summed again at every call.
  void set_defer_grad_allreduce(bool defer) { defer_allreduce_ = defer; }
  void allreduce_replicated_grads();
  void reset_counters();

  // ---- parameters ----
  Router& router() { return *router_; }
  // Swaps in `r` (router replacement, distillation) and returns the old router. r's d_model,
  // num_experts and top_k must be the layer's (else InvalidArgument, nothing changed). The
  // next backward() needs a forward() with the new router first. Not collective: every rank
  // must swap in an equal router (routers are replicated).
  StatusOr<std::unique_ptr<Router>> replace_router(std::unique_ptr<Router> r);
  RoutedExperts& experts() { return *experts_; }
  const RoutedExperts& experts() const { return *experts_; }
  SharedExpert* shared_expert() { return shared_.get(); }  // null when none
  // Every parameter with its layer-local name: router ones as "gate.<name>" (Hugging Face's
  // `mlp.gate.weight` for the linear router), then experts, then the shared expert.
  std::vector<std::pair<std::string, Param*>> named_params();
  Param* find_param(const std::string& name);
  int64_t num_params();
  void zero_grad();
  // Bytes of activation buffers held now (the layer's, its experts' and shared expert's), for
  // memory reports; they grow to the largest forward seen and are reused.
  int64_t buffer_bytes() const;

 private:
  explicit MoeLayer(const MoeLayerConfig& cfg) : cfg_(cfg) {}
  // The counts and exchange of stats_ from the plan and the dispatch handle (after forward).
  void fill_step_stats();
  // The exchange, the local experts and the way back of one forward (to_experts rows src_A ->
  // recv, experts -> out, out -> back_A) or backward; overlapped in chunks when chunks_ > 1.
  // Adds into tm's exchange and expert phases.
  // With overlap, before_experts / after_experts (may be empty: the shared expert's parts) run
  // on the worker before and after the routed experts, while rows travel (their time is tm's
  // shared_expert_s).
  void exchange_and_run_experts(bool forward, const float* src_A, float* recv, float* out,
                                float* back_A, const CollectiveTag& tag, MoePhaseTimes* tm,
                                const std::function<void()>& before_experts,
                                const std::function<void()>& after_experts);
  bool defer_allreduce_ = false;
  int chunks_ = 1;  // exchange chunks in use (1: blocking)

  MoeLayerConfig cfg_;
  const ExecContext* exec_ = &default_context();
  Communicator* comm_ = nullptr;
  std::unique_ptr<Dispatcher> disp_;  // null when every expert is local
  DispatchHandle handle_;
  int64_t first_expert_ = 0, local_experts_ = 0, step_ = -1;
  std::vector<int32_t> local_expert_ids_;
  DeviceArray<float> recv_RD_, out_RD_;      // expert-major rows on the expert owner
  DeviceArray<float> drecv_RD_, dxrecv_RD_;  // backward
  std::vector<int32_t> local_offsets_e1_;
  std::unique_ptr<Router> router_;
  std::unique_ptr<RoutedExperts> experts_;
  std::unique_ptr<SharedExpert> shared_;

  // Last forward.
  RouterOutput rout_;
  CapacityPlan plan_;
  int64_t T_ = 0;
  bool has_forward_ = false;
  const uint8_t* mask_T_ = nullptr;
  DeviceArray<float> xg_RD_;  // kept rows grouped by expert (experts' input, cached)
  DeviceArray<float> yg_RD_;  // expert outputs (cached for d weights)
  // Backward scratch.
  DeviceArray<float> dyg_RD_, dxg_RD_, dw_TK_;

  MoeStepStats stats_;
  MoeLayerCounters counters_;
};

}  // namespace sy
