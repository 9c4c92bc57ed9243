#include "runtime/moe/moe_layer.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <sstream>
#include <thread>

#include "routers/registry.h"
#include "runtime/backend/ops.h"
#include "runtime/core/timing.h"

namespace sy {
namespace {

using Clock = SteadyClock;

// SY_EXCHANGE_CHUNKS: a whole number in [1, 1024]; unset or "" = 0 (the default).
StatusOr<int> parse_exchange_chunks(const char* value) {
  if (value == nullptr || *value == '\0') return 0;
  bool digits = std::strlen(value) <= 4;
  for (const char* c = value; *c; ++c) digits &= *c >= '0' && *c <= '9';
  const int n = digits ? std::atoi(value) : 0;
  if (n < 1 || n > 1024) {
    return InvalidArgument(std::string("SY_EXCHANGE_CHUNKS='") + value +
                           "': expected a whole number from 1 (no overlap) to 1024");
  }
  return n;
}

// The overlap schedule of one exchange (moe_layer.h): local experts [0, e) in n chunks of
// consecutive experts, chunk c = [c*e/n, (c+1)*e/n). The compute (the shared expert, then the
// local experts) runs on a worker thread; this thread makes every MPI call (MPI_THREAD_FUNNELED)
// and keeps MPI moving while the worker computes: a non-blocking exchange advances only inside
// MPI calls, and one expert's GEMMs take tens of milliseconds. The steps are fixed by n alone, so
// every rank starts the same exchanges in the same order whatever its rows.
class ExchangePipeline {
 public:
  ExchangePipeline(Dispatcher* d, DispatchHandle* h, int n, const float* src_A, float* recv_R,
                   const float* out_R, float* back_A, const CollectiveTag& tag)
      : d_(d),
        h_(h),
        n_(n),
        e_(d->local_experts()),
        src_A_(src_A),
        recv_R_(recv_R),
        out_R_(out_R),
        back_A_(back_A),
        tag_(tag),
        dispatch_(n),
        ret_(n) {
    // Every dispatch at once, in chunk order (the link carries them in that order while the
    // shared expert computes), then each chunk's return as soon as its experts are done.
    for (int c = 0; c < n; ++c) steps_.push_back({kStartDispatch, c});
    for (int c = 0; c < n; ++c) {
      steps_.push_back({kWaitDispatch, c});
      steps_.push_back({kComputed, c});
      steps_.push_back({kStartReturn, c});
    }
  }

  // Runs `compute` on a worker thread (the experts' hook must call before_expert, and
  // experts_done after the last) while this thread runs the steps; returns when compute has
  // returned and every chunk is back.
  void run(const std::function<void()>& compute) {
    size_t pos = 0;
    while (steps_[pos].kind == kStartDispatch) run_step(steps_[pos++]);  // before the worker
    std::thread worker([&] {
      compute();
      computed_.store(e_, std::memory_order_release);
      worker_done_.store(true, std::memory_order_release);
    });
    while (pos < steps_.size()) {
      const Step st = steps_[pos];
      bool go = true;
      if (st.kind == kWaitDispatch) {
        // Block (under the deadline) only when the worker waits for this chunk or is done;
        // otherwise look and come back.
        go = waiting_for_.load(std::memory_order_acquire) >= st.chunk ||
             computed_.load(std::memory_order_acquire) == e_ ||
             d_->rows_arrived(&dispatch_[st.chunk]);
      } else if (st.kind == kComputed) {
        go = computed_.load(std::memory_order_acquire) >= first(st.chunk + 1);
      }
      if (!go) {
        d_->comm().progress();
        // Every 0.5 ms: socket buffers hold far more than a link moves in that time, and a
        // shorter period took measurably more of the compute's cores (4 threads on 2 cores).
        std::this_thread::sleep_for(std::chrono::microseconds(500));
        continue;
      }
      run_step(st);
      ++pos;
    }
    // The worker may still compute (what runs after the experts): keep the returns moving.
    while (!worker_done_.load(std::memory_order_acquire)) {
      d_->comm().progress();
      std::this_thread::sleep_for(std::chrono::microseconds(500));
    }
    worker.join();
    const Clock::time_point t0 = Clock::now();
    for (int c = 0; c < n_; ++c) d_->finish_rows(h_, /*to_experts=*/false, &ret_[c]);
    tail_s_ = seconds_since(t0);
  }

  // On the worker, after the last expert: its chunk's return may start.
  void experts_done() { computed_.store(e_, std::memory_order_release); }
  // On the worker, before local expert j (all experts before j are done): waits for its chunk.
  void before_expert(int64_t j) {
    computed_.store(j, std::memory_order_release);
    int c = 0;
    while (c + 1 < n_ && first(c + 1) <= j) ++c;
    if (ready_.load(std::memory_order_acquire) > c) return;
    const Clock::time_point t0 = Clock::now();
    waiting_for_.store(c, std::memory_order_release);
    while (ready_.load(std::memory_order_acquire) <= c)
      std::this_thread::sleep_for(std::chrono::microseconds(20));
    stall_s_ += seconds_since(t0);
  }
  double stall_s() const { return stall_s_; }  // the worker waiting for rows
  double tail_s() const { return tail_s_; }    // waiting for the last returns

 private:
  enum Kind { kStartDispatch, kWaitDispatch, kComputed, kStartReturn };
  struct Step {
    Kind kind;
    int chunk;
  };
  int64_t first(int c) const { return c * e_ / n_; }
  void run_step(const Step& st) {
    const int64_t j0 = first(st.chunk), j1 = first(st.chunk + 1);
    switch (st.kind) {
      case kStartDispatch:
        d_->start_rows(h_, true, src_A_, recv_R_, j0, j1, tag_, &dispatch_[st.chunk]);
        break;
      case kWaitDispatch:
        d_->finish_rows(h_, true, &dispatch_[st.chunk]);
        ready_.store(st.chunk + 1, std::memory_order_release);
        break;
      case kComputed:
        break;
      case kStartReturn:
        d_->start_rows(h_, false, out_R_, back_A_, j0, j1, tag_, &ret_[st.chunk]);
        break;
    }
  }

  Dispatcher* d_;
  DispatchHandle* h_;
  const int n_;
  const int64_t e_;
  const float* src_A_;
  float* recv_R_;
  const float* out_R_;
  float* back_A_;
  const CollectiveTag tag_;
  std::vector<Communicator::Pending> dispatch_, ret_;
  std::vector<Step> steps_;
  std::atomic<int> ready_{0};         // chunks [0, ready) are here (this thread writes)
  std::atomic<int> waiting_for_{-1};  // the chunk the worker waits for
  std::atomic<int64_t> computed_{0};  // local experts [0, computed) are done (the worker)
  std::atomic<bool> worker_done_{false};
  double stall_s_ = 0, tail_s_ = 0;
};

}  // namespace

// ---- config --------------------------------------------------------------------------------

int default_exchange_chunks(bool spans_hosts, int64_t d_model, int64_t ffn_hidden) {
  // In double: the function takes any sizes, and their product need not fit in int64_t.
  const bool large_experts = static_cast<double>(d_model) * static_cast<double>(ffn_hidden) >=
                             static_cast<double>(kOneHostOverlapMinExpertWeights);
  return spans_hosts || large_experts ? kExchangeChunksAcrossHosts : 1;
}

RouterConfig MoeLayerConfig::resolved_router() const {
  RouterConfig r = router;
  r.d_model = d_model;
  r.num_experts = num_experts;
  r.top_k = top_k;
  return r;
}

Status MoeLayerConfig::validate() const {
  std::ostringstream err;
  if (d_model < 1) err << "d_model must be >= 1 (got " << d_model << "); ";
  if (num_experts < 1) err << "num_experts must be >= 1 (got " << num_experts << "); ";
  if (top_k < 1) err << "top_k must be >= 1 (got " << top_k << "); ";
  if (num_experts >= 1 && top_k > num_experts)
    err << "top_k (" << top_k << ") must be <= num_experts (" << num_experts << "); ";
  if (expert_kind != ExpertKind::kIdentity && ffn_hidden < 1)
    err << "ffn_hidden must be >= 1 for " << (expert_kind == ExpertKind::kGelu ? "GELU" : "SwiGLU")
        << " experts (got " << ffn_hidden << "); ";
  if (ffn_hidden < 0) err << "ffn_hidden must be >= 0 (got " << ffn_hidden << "); ";
  if (shared_expert_hidden < 0)
    err << "shared_expert_hidden must be >= 0 (got " << shared_expert_hidden << "; 0 = none); ";
  if (std::isnan(capacity_factor) || std::isinf(capacity_factor))
    err << "capacity_factor must be finite (got " << capacity_factor << "; <= 0 = dropless); ";
  if (!(init_std >= 0.0f)) err << "init_std must be >= 0; ";
  if (expert_bits != 32 && expert_bits != 8 && expert_bits != 4)
    err << "expert_bits must be 32, 8 or 4 (got " << expert_bits << "); ";
  if (quant_group < 1) err << "quant_group must be >= 1 (got " << quant_group << "); ";
  if (expert_bits != 32 && train_experts)
    err << "quantized experts (expert_bits " << expert_bits
        << ") are inference-only: train_experts must be false; ";
  const std::string e = err.str();
  if (!e.empty()) return InvalidArgument("moe layer: " + e.substr(0, e.size() - 2));
  return resolved_router().validate();
}

// ---- construction --------------------------------------------------------------------------

StatusOr<std::unique_ptr<MoeLayer>> MoeLayer::create(const MoeLayerConfig& cfg,
                                                     Communicator* comm) {
  SY_RETURN_IF_ERROR(cfg.validate());
  if (cfg.group_tokens < 0) return InvalidArgument("moe layer: group_tokens must be >= 0");
  SY_ASSIGN_OR_RETURN(std::unique_ptr<Router> router, make_router(cfg.resolved_router()));
  std::unique_ptr<MoeLayer> layer(new MoeLayer(cfg));
  layer->router_ = std::move(router);
  if (cfg.exec) layer->exec_ = cfg.exec;
  layer->router_->set_context(layer->exec_);
  layer->router_->set_position(cfg.layer_index, layer->step_);
  layer->plan_ = CapacityPlan(layer->exec_->backend);  // its index arrays where the ops run
  layer->comm_ = comm;
  layer->local_experts_ = cfg.num_experts;
  const int P = comm ? comm->size() : 1;
  const ExpertPlacement contiguous = ExpertPlacement::contiguous(cfg.num_experts, 1);
  if (cfg.placement) {
    const ExpertPlacement& pl = *cfg.placement;
    if (pl.num_experts != cfg.num_experts || pl.ranks != P) {
      return InvalidArgument(
          "moe layer: the expert placement is for " + std::to_string(pl.num_experts) +
          " experts on " + std::to_string(pl.ranks) + " ranks; this run has " +
          std::to_string(cfg.num_experts) + " experts on " + std::to_string(P) + " ranks");
    }
    SY_RETURN_IF_ERROR(pl.validate(/*allow_replicas=*/false));
  }
  // One rank with a permuted placement also goes through the dispatcher (over itself): it lays
  // the rows out in the placement's local order.
  const bool permuted_one = P == 1 && cfg.placement && !(*cfg.placement == contiguous);
  if (comm && (P > 1 || permuted_one) && !layer->exec_->backend->host_accessible() &&
      !comm->device_buffers()) {
    return InvalidArgument(std::string("moe layer: the '") + layer->exec_->backend->name() +
                           "' backend keeps rows in device memory, which the '" + comm->backend() +
                           "' communicator cannot send across ranks");
  }
  if (comm && (P > 1 || permuted_one)) {
    if (cfg.placement) {
      SY_ASSIGN_OR_RETURN(layer->disp_, Dispatcher::create(comm, *cfg.placement, cfg.d_model));
    } else {
      SY_ASSIGN_OR_RETURN(layer->disp_, Dispatcher::create(comm, cfg.num_experts, cfg.d_model));
    }
    int chunks = cfg.exchange_chunks;
    if (chunks <= 0) {
      SY_ASSIGN_OR_RETURN(chunks, parse_exchange_chunks(std::getenv("SY_EXCHANGE_CHUNKS")));
    }
    if (chunks <= 0)
      chunks = default_exchange_chunks(comm->spans_hosts(), cfg.d_model, cfg.ffn_hidden);
    // Overlap needs the non-blocking blocked exchange, expert GEMMs that are done when they
    // return (a host backend) and experts that run one at a time (their hook paces the
    // pipeline; identity experts only copy).
    if (layer->disp_->options().mode == ExchangeMode::kBlocks &&
        layer->exec_->backend->host_accessible() && !layer->exec_->backend->groups_experts() &&
        cfg.expert_kind != ExpertKind::kIdentity) {
      layer->chunks_ = static_cast<int>(std::min<int64_t>(chunks, layer->disp_->local_experts()));
    }
    layer->local_experts_ = layer->disp_->local_experts();
    layer->first_expert_ = layer->disp_->first_local_expert();
    layer->local_expert_ids_ = layer->disp_->local_expert_ids();
  } else {
    layer->local_expert_ids_ = contiguous.experts_of_rank[0];
  }
  ExpertsConfig ec;
  ec.d_model = cfg.d_model;
  ec.ffn_hidden = cfg.ffn_hidden;
  ec.num_experts = layer->local_experts_;
  ec.first_expert = layer->first_expert_;
  ec.expert_ids = layer->local_expert_ids_;
  ec.kind = cfg.expert_kind;
  ec.allocate_grads = cfg.train_experts;
  ec.init_std = cfg.init_std;
  ec.seed = cfg.seed;
  ec.weight_bits = cfg.expert_bits;
  ec.quant_group = cfg.quant_group;
  layer->experts_ = std::make_unique<RoutedExperts>(ec);
  layer->experts_->set_context(layer->exec_);
  if (cfg.shared_expert_hidden > 0) {
    layer->shared_ = std::make_unique<SharedExpert>(cfg.d_model, cfg.shared_expert_hidden,
                                                    cfg.train_experts, cfg.init_std, cfg.seed);
    layer->shared_->set_context(layer->exec_);
  }
  layer->reset_counters();
  return layer;
}

void MoeLayer::reset_counters() {
  const size_t E = static_cast<size_t>(cfg_.num_experts);
  counters_ = MoeLayerCounters();
  counters_.routed_E.assign(E, 0);
  counters_.kept_E.assign(E, 0);
  counters_.dropped_E.assign(E, 0);
}

void MoeLayerCounters::add(const MoeStepStats& s) {
  forwards += 1;
  tokens += s.tokens;
  routed += s.routed;
  kept += s.kept;
  dropped += s.dropped;
  for (size_t e = 0; e < s.routed_E.size(); ++e) {
    routed_E[e] += s.routed_E[e];
    kept_E[e] += s.kept_E[e];
    dropped_E[e] += s.dropped_E[e];
  }
}

// ---- forward -------------------------------------------------------------------------------

Status MoeLayer::forward(const float* x_TD, const int32_t* token_ids_T, int64_t T, float* y_TD,
                         const uint8_t* mask_T) {
  // K: slots per token (E when the experts choose their tokens, routers/router.h).
  const int64_t D = cfg_.d_model, E = cfg_.num_experts, K = router_->slots_per_token();
  // Validate everything before the first allocation (int overflow of MPI counts rejected here).
  SY_RETURN_IF_ERROR(check_capacity_sizes(T, E, K, D));
  if (T > 0 && (x_TD == nullptr || y_TD == nullptr))
    return InvalidArgument("moe layer: x and y must be non-null for T > 0");
  if (T > 0 && router_->needs_token_ids() && token_ids_T == nullptr)
    return InvalidArgument("moe layer: router '" + router_->name() + "' needs token ids");
  has_forward_ = false;
  MoePhaseTimes& tm = stats_.forward;
  tm = MoePhaseTimes();
  Clock::time_point clk = Clock::now();

  router_->forward(x_TD, token_ids_T, T, &rout_);
  tm.route_s = seconds_since(&clk);

  // Rank drops by the chosen probabilities p, not the (possibly renormalized) weights.
  const ExecContext& c = *exec_;
  const float* rank_p = rout_.chosen_probs_TK.ptr();  // the router gathered them once
  CapacityConfig cc;
  cc.capacity_factor = cfg_.capacity_factor;
  cc.policy = cfg_.drop_policy;
  cc.group_tokens = cfg_.group_tokens;
  if (router_->experts_choose()) cc.choice_k = cfg_.top_k;
  SY_RETURN_IF_ERROR(
      ops::capacity_plan(c, rout_.topk_ids_TK.data(), rank_p, T, E, K, D, cc, mask_T, &plan_));
  tm.plan_s = seconds_since(&clk);

  const int64_t R = plan_.rows();
  float* xg = scratch_grow(xg_RD_, R * D, c.backend);
  float* yg = scratch_grow(yg_RD_, R * D, c.backend);
  ops::gather_rows(c, x_TD, plan_.order_A.data(), R, K, D, xg);
  tm.permute_s = seconds_since(&clk);

  const bool overlap_shared = disp_ && chunks_ > 1 && shared_;
  if (disp_) {
    // Expert parallel: rows out to the expert owners, local experts, outputs back (plan order).
    // The exchange phases take the dispatcher's clock; the layer's restarts after each.
    const CollectiveTag tag{"moe.forward", cfg_.layer_index, step_};
    disp_->exchange_counts(plan_.kept_E.data(), R, tag, &handle_);
    tm.count_exchange_s = handle_.stats().count_exchange_s;
    const int64_t Rr = handle_.recv_rows();
    float* recv = scratch_grow(recv_RD_, Rr * D, c.backend);
    float* out = scratch_grow(out_RD_, Rr * D, c.backend);
    const std::vector<int64_t>& off = handle_.local_offsets_e1();
    local_offsets_e1_.assign(off.begin(), off.end());
    // With overlap, the shared expert computes while rows are on the wire: its hidden layer
    // before the routed experts, its output after them.
    std::function<void()> before, after;
    if (overlap_shared) {
      before = [&] { shared_->compute_hidden(x_TD, T, mask_T); };
      after = [&] { shared_->compute_output(); };
    }
    exchange_and_run_experts(/*forward=*/true, xg, recv, out, yg, tag, &tm, before, after);
    clk = Clock::now();
  } else {
    experts_->forward(xg, plan_.offsets_E1.data(), yg);
    tm.experts_s = seconds_since(&clk);
    tm.experts_elementwise_s = experts_->last_elementwise_seconds();
  }

  ops::combine_rows(c, yg, plan_.row_of_TK.data(), rout_.topk_weights_TK.ptr(), T, K, D, y_TD);
  tm.weighted_combine_s = seconds_since(&clk);

  if (overlap_shared) {
    shared_->add_output(y_TD);
  } else if (shared_) {
    shared_->forward(x_TD, T, y_TD, mask_T);
  }
  tm.shared_expert_s += seconds_since(&clk);

  T_ = T;
  mask_T_ = mask_T;
  has_forward_ = true;
  fill_step_stats();
  counters_.add(stats_);
  return Status::Ok();
}

// ---- backward ------------------------------------------------------------------------------

void MoeLayer::backward(const float* dy_TD, float* dx_TD, const MoeAuxGrads* aux) {
  SY_CHECK(has_forward_) << "MoeLayer::backward without a successful forward";
  const int64_t T = T_, D = cfg_.d_model, K = rout_.K, R = plan_.rows();
  SY_CHECK(T == 0 || dy_TD != nullptr);
  MoePhaseTimes& tm = stats_.backward;
  tm = MoePhaseTimes();
  Clock::time_point clk = Clock::now();

  // Weighted combine backward: d w_tk = dy_t . expert_out_row (0 for dropped: no effect).
  const ExecContext& c = *exec_;
  float* dw = scratch_grow(dw_TK_, T * K, c.backend);
  const int32_t* row_of = plan_.row_of_TK.data();
  ops::combine_weights_backward(c, dy_TD, yg_RD_.data(), row_of, T, K, D, dw);
  tm.weighted_combine_s = seconds_since(&clk);

  // Scatter dy to the expert rows, scaled by the combine weights.
  float* dyg = scratch_grow(dyg_RD_, R * D, c.backend);
  ops::scatter_rows_weighted(c, dy_TD, plan_.order_A.data(), rout_.topk_weights_TK.ptr(), R, K, D,
                             dyg);
  tm.permute_s = seconds_since(&clk);

  const bool overlap_shared = disp_ && chunks_ > 1 && shared_;
  // With a dispatcher every rank takes part in both exchanges, so dx rows are always made.
  float* dxg = (dx_TD || disp_) ? scratch_grow(dxg_RD_, R * D, c.backend) : nullptr;
  if (disp_) {
    const CollectiveTag tag{"moe.backward", cfg_.layer_index, step_};
    const int64_t Rr = handle_.recv_rows();
    float* drecv = scratch_grow(drecv_RD_, Rr * D, c.backend);
    float* dxrecv = scratch_grow(dxrecv_RD_, Rr * D, c.backend);
    // With overlap, the shared expert's weight gradients (and its dx terms) are computed around
    // the routed experts while rows travel; its dx is added after the routed experts', below.
    std::function<void()> before, after;
    if (overlap_shared) {
      before = [&] { shared_->backward_weights(dy_TD, cfg_.train_experts, dx_TD != nullptr); };
      after = [&] { shared_->backward_weights_rest(); };
    }
    exchange_and_run_experts(/*forward=*/false, dyg, drecv, dxrecv, dxg, tag, &tm, before, after);
    clk = Clock::now();
  } else {
    experts_->backward(dyg, dxg, cfg_.train_experts);
    tm.experts_s = seconds_since(&clk);
  }

  // The permute's backward: each token sums its kept rows' dx (combine_rows unweighted, the
  // gather's transpose: timed as permute, not as the weighted combine).
  if (dx_TD) ops::combine_rows(c, dxg, row_of, nullptr, T, K, D, dx_TD);
  tm.permute_s += seconds_since(&clk);

  if (overlap_shared) {
    shared_->backward_dx(dx_TD);
  } else if (shared_) {
    shared_->backward(dy_TD, dx_TD, cfg_.train_experts);
  }
  tm.shared_expert_s += seconds_since(&clk);

  RouterGrads g;
  g.dweights_TK = dw;
  if (aux) {
    g.dprobs_TE = aux->dprobs_TE;
    g.dlogits_TE = aux->dlogits_TE;
  }
  g.dx_TD = dx_TD;
  router_->backward(g);
  if (!defer_allreduce_) allreduce_replicated_grads();
  tm.route_s = seconds_since(&clk);
}

void MoeLayer::exchange_and_run_experts(bool forward, const float* src_A, float* recv, float* out,
                                        float* back_A, const CollectiveTag& tag, MoePhaseTimes* tm,
                                        const std::function<void()>& before_experts,
                                        const std::function<void()>& after_experts) {
  const DispatchStats& ds = handle_.stats();
  auto run_experts = [&] {
    if (forward) {
      experts_->forward(recv, local_offsets_e1_.data(), out);
      tm->experts_elementwise_s = experts_->last_elementwise_seconds();
    } else {
      experts_->backward(recv, out, cfg_.train_experts);
    }
  };
  Clock::time_point clk;
  if (chunks_ <= 1) {
    disp_->dispatch_rows(&handle_, src_A, recv, tag);
    clk = Clock::now();
    run_experts();
    tm->experts_s = seconds_since(&clk);
    disp_->return_rows(&handle_, out, back_A, tag);
    tm->dispatch_exchange_s = ds.dispatch_s;
    tm->return_exchange_s = ds.return_s;
    return;
  }
  ExchangePipeline pipe(disp_.get(), &handle_, chunks_, src_A, recv, out, back_A, tag);
  double shared_s = 0, experts_s = 0;
  int64_t hooks = 0;
  pipe.run([&] {
    Clock::time_point t0 = Clock::now();
    if (before_experts) before_experts();
    shared_s = seconds_since(&t0);
    experts_->set_expert_hook([&](int64_t j) {
      ++hooks;
      pipe.before_expert(j);
    });
    run_experts();
    experts_->set_expert_hook({});
    pipe.experts_done();
    experts_s = seconds_since(&t0);
    if (after_experts) after_experts();
    shared_s += seconds_since(&t0);
  });
  // An expert path without the hook would have read rows before they arrived.
  SY_CHECK(hooks == 0 ? handle_.recv_rows() == 0 : hooks == num_local_experts())
      << "moe layer: the overlapped exchange needs the experts' hook once per local expert (got "
      << hooks << " calls for " << num_local_experts() << " experts, " << handle_.recv_rows()
      << " rows)";
  tm->shared_expert_s = shared_s;
  tm->experts_s = experts_s - pipe.stall_s();
  // The exposed exchange: the worker waiting for rows, and the wait for the last returns.
  tm->dispatch_exchange_s = pipe.stall_s();
  tm->return_exchange_s = pipe.tail_s();
}

void MoeLayer::allreduce_replicated_grads() {
  if (!disp_) return;
  // The router and the shared expert are replicated: sum their gradients over the ranks (each
  // rank's share covers its own tokens). Routed experts are not: each rank owns its slice.
  const CollectiveTag tag{"moe.replicated_grads", cfg_.layer_index, step_};
  for (Param& p : router_->params())
    if (p.grad.numel() > 0) comm_->allreduce(p.grad.ptr(), p.grad.numel(), ReduceOp::kSum, tag);
  if (shared_ && cfg_.train_experts)
    for (Param& p : shared_->params())
      if (p.grad.numel() > 0) comm_->allreduce(p.grad.ptr(), p.grad.numel(), ReduceOp::kSum, tag);
}

void MoeLayer::fill_step_stats() {
  MoeStepStats& st = stats_;
  const int64_t E = cfg_.num_experts;
  st.T = T_;
  st.tokens = plan_.tokens;
  st.routed = plan_.total_routed;
  st.kept = plan_.total_kept;
  st.dropped = plan_.total_dropped;
  st.routed_E.assign(plan_.routed_E.begin(), plan_.routed_E.begin() + E);
  st.kept_E.assign(plan_.kept_E.begin(), plan_.kept_E.begin() + E);
  st.dropped_E.assign(plan_.dropped_E.begin(), plan_.dropped_E.begin() + E);
  const MoePhaseTimes& tm = st.forward;
  if (disp_) {
    st.exchange = handle_.stats().load;
    const double secs = tm.dispatch_exchange_s + tm.return_exchange_s;
    // The return exchange moves the dispatch's bytes back: 2x the remote bytes in all.
    st.bandwidth_gbps =
        secs > 0 ? 2.0 * static_cast<double>(st.exchange.remote_bytes()) / secs / 1e9 : 0.0;
    return;
  }
  ExchangeLoad& x = st.exchange;
  x.rows_sent_P.assign(1, plan_.total_kept);
  x.rows_recv_P.assign(1, plan_.total_kept);
  x.bytes_sent_P.assign(1, 0);
  x.bytes_recv_P.assign(1, 0);
  x.rows_recv_e = st.kept_E;
  st.bandwidth_gbps = 0.0;
}

// ---- parameters ----------------------------------------------------------------------------

std::vector<std::pair<std::string, Param*>> MoeLayer::named_params() {
  std::vector<std::pair<std::string, Param*>> out;
  for (Param& p : router_->params()) out.emplace_back("gate." + p.name, &p);
  for (Param& p : experts_->params()) out.emplace_back(p.name, &p);
  if (shared_)
    for (Param& p : shared_->params()) out.emplace_back(p.name, &p);
  return out;
}

StatusOr<std::unique_ptr<Router>> MoeLayer::replace_router(std::unique_ptr<Router> r) {
  if (!r) return InvalidArgument("moe layer: replace_router got no router");
  const RouterConfig& rc = r->config();
  if (rc.d_model != cfg_.d_model || rc.num_experts != cfg_.num_experts || rc.top_k != cfg_.top_k)
    return InvalidArgument(
        "moe layer " + std::to_string(cfg_.layer_index) + ": router '" + rc.name +
        "' has D=" + std::to_string(rc.d_model) + " E=" + std::to_string(rc.num_experts) +
        " K=" + std::to_string(rc.top_k) + ", the layer D=" + std::to_string(cfg_.d_model) +
        " E=" + std::to_string(cfg_.num_experts) + " K=" + std::to_string(cfg_.top_k));
  cfg_.router = rc;
  r->set_context(exec_);
  r->set_training(router_->training());
  r->set_position(cfg_.layer_index, step_);
  has_forward_ = false;  // backward() differentiates a forward of the router in place
  std::swap(router_, r);
  return r;
}

Param* MoeLayer::find_param(const std::string& name) {
  for (auto& [n, p] : named_params())
    if (n == name) return p;
  return nullptr;
}

int64_t MoeLayer::num_params() {
  // The routed experts count their logical weights (their Params are released when quantized).
  int64_t n = experts_->num_params();
  for (Param& p : router_->params()) n += p.value.numel();
  if (shared_)
    for (Param& p : shared_->params()) n += p.value.numel();
  return n;
}

void MoeLayer::zero_grad() {
  for (auto& [name, p] : named_params()) p->zero_grad();
}

int64_t MoeLayer::buffer_bytes() const {
  int64_t n = experts_->buffer_bytes() + (shared_ ? shared_->buffer_bytes() : 0);
  for (const DeviceArray<float>* v : {&recv_RD_, &out_RD_, &drecv_RD_, &dxrecv_RD_, &xg_RD_,
                                      &yg_RD_, &dyg_RD_, &dxg_RD_, &dw_TK_})
    n += static_cast<int64_t>(v->capacity() * sizeof(float));
  return n;
}

}  // namespace sy
