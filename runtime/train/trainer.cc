#include "runtime/train/trainer.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>

#include "runtime/backend/ops.h"
#include "runtime/core/timing.h"

namespace sy {

namespace {

void say_fault(int rank, int64_t step, const char* kind, int layer, const std::string& what) {
  std::fprintf(stderr, "[switchyard] rank %d on %s: injected fault %s at step %lld layer %d: %s\n",
               rank, host_name().c_str(), kind, static_cast<long long>(step), layer, what.c_str());
  std::fflush(stderr);
}

constexpr int64_t kItemBits = 24;  // rank and item each < 2^24; stage above them

// The model layer a parameter name belongs to ("model.layers.{i}." of Qwen2-MoE,
// "bert.encoder.layer.{i}." of BERT), -1 for the rest (embeddings, final norm, heads).
int64_t LayerOf(const std::string& name) {
  for (const std::string key : {".layers.", ".layer."})
    if (const size_t p = name.find(key); p != std::string::npos)
      return std::strtoll(name.c_str() + p + key.size(), nullptr, 10);
  return -1;
}

}  // namespace

const char* nonfinite_policy_name(NonFinitePolicy p) {
  return p == NonFinitePolicy::kStop ? "stop" : "skip";
}

StatusOr<NonFinitePolicy> parse_nonfinite_policy(const std::string& text) {
  if (text == "skip") return NonFinitePolicy::kSkip;
  if (text == "stop") return NonFinitePolicy::kStop;
  return InvalidArgument("non-finite policy must be skip or stop (got '" + text + "')");
}

Trainer::Trainer(Model& model, Communicator* comm, const AdamWConfig& cfg)
    : model_(model), comm_(comm), opt_(cfg) {
  model_.set_replicated_tokens(false);
  model_.set_defer_moe_grad_allreduce(true);  // several backward() calls per step
  opt_.set_context(&model_.ctx());
}

int64_t Trainer::nonfinite_code(Stage stage, int rank, int64_t item) {
  constexpr int64_t kMax = (int64_t{1} << kItemBits) - 1;
  SY_CHECK(rank >= 0 && rank <= kMax && item >= 0 && item <= kMax)
      << "non-finite record: rank " << rank << " item " << item;
  return (static_cast<int64_t>(stage) << (2 * kItemBits)) |
         (static_cast<int64_t>(rank) << kItemBits) | item;
}

std::string Trainer::describe_nonfinite(int64_t code, const std::vector<ModelParam>& params) const {
  constexpr int64_t kMask = (int64_t{1} << kItemBits) - 1;
  const auto stage = static_cast<Stage>(code >> (2 * kItemBits));
  const int64_t rank = (code >> kItemBits) & kMask, item = code & kMask;
  const char* what = "gradient";
  int64_t layer = -1;
  std::string detail;
  switch (stage) {
    case kRouter:
      what = "router scores";
      layer = item;
      break;
    case kLogits:
      what = "logits";
      break;
    case kLoss:
      what = "loss";
      break;
    case kTotals:
      what = "loss or gradient norm";
      detail = " (after the all-reduce)";
      break;
    case kGradLocal:
    case kGradSummed: {
      // Parameter indices agree across ranks: every rank lists the same names in the same order.
      const std::string name =
          item < static_cast<int64_t>(params.size()) ? params[static_cast<size_t>(item)].name : "?";
      layer = LayerOf(name);
      detail = " (" + name + (stage == kGradSummed ? ", after the all-reduce)" : ")");
      break;
    }
  }
  return std::string("non-finite ") + what + " on rank " + std::to_string(rank) + ", layer " +
         std::to_string(layer) + ", step " + std::to_string(step_index_) + detail;
}

const FaultSpec* Trainer::fault(FaultKind kind) const {
  for (const FaultSpec& f : faults_set_ ? faults_ : active_faults())
    if (f.kind == kind && f.rank == rank() && (f.step < 0 || f.step == step_index_)) return &f;
  return nullptr;
}

void Trainer::inject_inf_grad(const FaultSpec& f, std::vector<ModelParam>& params) {
  int64_t layer = f.layer;
  if (layer < 0)
    for (int64_t i = 0; i < model_.num_layers() && layer < 0; ++i)
      if (model_.moe_layer(i)) layer = i;
  for (ModelParam& p : params) {  // the layer's router: its ".gate." parameters
    if (!p.grad || p.grad->numel() == 0 || LayerOf(p.name) != layer ||
        p.name.find(".gate.") == std::string::npos)
      continue;
    const float inf = std::numeric_limits<float>::infinity();
    p.grad->memory()->copy_from_host(p.grad->ptr(), &inf, sizeof(float));
    say_fault(rank(), step_index_, "inf_grad", static_cast<int>(layer), p.name + "[0] = +inf");
    return;
  }
  say_fault(rank(), step_index_, "inf_grad", static_cast<int>(layer),
            "no trained router gradient in that layer: nothing injected");
}

namespace {
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
}  // namespace

Status Trainer::set_masked_lm(const MlmConfig& c) {
  MlmConfig v = c;
  v.vocab_size = model_.vocab_size();
  SY_RETURN_IF_ERROR(v.validate());
  mlm_ = std::move(v);
  mlm_set_ = true;
  return Status::Ok();
}

void Trainer::make_targets(const std::vector<int32_t>& ids, int64_t step, int64_t seq,
                           std::vector<int32_t>* inputs, std::vector<int32_t>* targets) const {
  if (mlm_set_) return mlm_mask(mlm_, step, seq, ids, inputs, targets);
  *inputs = ids;
  const int64_t T = static_cast<int64_t>(ids.size());
  targets->assign(ids.begin() + (T > 0 ? 1 : 0), ids.end());
  if (T > 0) targets->push_back(-1);
}

Status Trainer::run(const std::vector<int32_t>& ids, const std::vector<int32_t>& targets,
                    float grad_scale, double* loss_sum, int64_t* count, bool check,
                    TrainStepTimes* times) {
  TrainStepTimes untimed;
  TrainStepTimes& tt = times ? *times : untimed;
  SteadyClock::time_point clk = SteadyClock::now();
  const int64_t T = static_cast<int64_t>(ids.size()), V = model_.vocab_size();
  Memory* mem = model_.ctx().backend;
  resize_in(targets_dev_, T, mem);
  targets_dev_.copy_from_host(targets.data(), targets.size());
  model_.reset_cache();

  const FaultSpec* nan = check ? fault(FaultKind::kNanLogits) : nullptr;
  float* poisoned = nullptr;  // a router weight of this rank's replica, NaN for this forward
  float saved = 0.0f;
  if (nan && nan->layer >= 0) {
    MoeLayer* L = nan->layer < model_.num_layers() ? model_.moe_layer(nan->layer) : nullptr;
    for (auto& [name, p] : L ? L->named_params() : std::vector<std::pair<std::string, Param*>>{})
      if (name.rfind("gate.", 0) == 0 && p->value.numel() > 0) {
        poisoned = p->value.ptr();
        break;
      }
    say_fault(rank(), step_index_, "nan_logits", nan->layer,
              poisoned ? "router scores NaN" : "layer has no router weight: nothing injected");
    if (poisoned) {  // one value, through copies: the weights may live on a device
      mem->copy_to_host(&saved, poisoned, sizeof(float));
      mem->copy_from_host(poisoned, &kNaN, sizeof(float));
    }
  }
  tt.setup_s += seconds_since(&clk);
  const Status fwd = model_.forward(ids.data(), T, &logits_, /*all_logits=*/true);
  if (poisoned) mem->copy_from_host(poisoned, &saved, sizeof(float));  // bitwise: restored
  tt.forward_s += seconds_since(&clk);
  SY_RETURN_IF_ERROR(fwd);
  if (nan && nan->layer < 0 && T > 0) {
    logits_.memory()->copy_from_host(logits_.ptr(), &kNaN, sizeof(float));
    say_fault(rank(), step_index_, "nan_logits", -1, "logits[0, 0] = NaN");
  }

  if (check && after_forward_) after_forward_();
  tt.after_forward_s += seconds_since(&clk);
  if (check) {
    for (int64_t i = 0; i < model_.num_layers(); ++i)
      if (MoeLayer* l = model_.moe_layer(i); l && !l->last_finite()) note_nonfinite(kRouter, i);
    if (T > 0 && !ops::all_finite(model_.ctx(), logits_.ptr(), T * V)) note_nonfinite(kLogits, 0);
  }
  tt.checks_s += seconds_since(&clk);
  int64_t n = 0;
  if (T > 0) {
    const double loss =
        ops::cross_entropy_sum(model_.ctx(), logits_.ptr(), targets_dev_.data(), T, V, &n);
    if (check && !std::isfinite(loss)) note_nonfinite(kLoss, 0);
    *loss_sum += loss;
  }
  *count += n;
  tt.loss_s += seconds_since(&clk);
  if (grad_scale <= 0) return Status::Ok();
  // The backward runs on every rank even after a finding: it is collective (the MoE layers'
  // exchanges), and its gradients are thrown away by the decision below.
  resize_in(dlogits_, static_cast<int64_t>(logits_.data.size()), mem);
  if (T > 0)
    ops::cross_entropy_backward(model_.ctx(), logits_.ptr(), targets_dev_.data(), T, V, grad_scale,
                                dlogits_.data());
  tt.loss_backward_s += seconds_since(&clk);
  // The balancing loss of this sequence, weighted like its tokens' share of the step's loss.
  const float aux_alpha = static_cast<float>(aux_coef_ * static_cast<double>(T) * grad_scale);
  SY_RETURN_IF_ERROR(model_.backward(dlogits_.data(), aux_alpha));
  aux_sum_ += model_.last_aux_loss();
  tt.backward_s += seconds_since(&clk);
  return Status::Ok();
}

StatusOr<TrainStepResult> Trainer::step(const std::vector<std::vector<int32_t>>& seqs,
                                        const std::vector<int64_t>& seq_ids) {
  const SteadyClock::time_point start = SteadyClock::now();
  SteadyClock::time_point clk = start;
  TrainStepTimes tt;
  if (!seq_ids.empty() && seq_ids.size() != seqs.size())
    return InvalidArgument("train step: " + std::to_string(seq_ids.size()) + " sequence ids for " +
                           std::to_string(seqs.size()) + " sequences");
  // The loss is a mean over the job's target tokens: count them first.
  const int P = comm_ ? comm_->size() : 1;
  inputs_.resize(seqs.size());
  targets_.resize(seqs.size());
  int64_t mine = 0;
  for (size_t k = 0; k < seqs.size(); ++k) {
    const int64_t g = seq_ids.empty() ? static_cast<int64_t>(k) * P + rank() : seq_ids[k];
    make_targets(seqs[k], step_index_, g, &inputs_[k], &targets_[k]);
    mine += std::count_if(targets_[k].begin(), targets_[k].end(), [](int32_t t) { return t >= 0; });
  }
  int64_t total = mine;
  tt.setup_s += seconds_since(&clk);
  if (comm_) comm_->allreduce(&total, 1, ReduceOp::kSum, {"train.tokens", -1, step_index_});
  tt.allreduce_s += seconds_since(&clk);
  if (total == 0) return InvalidArgument("train step: no target tokens on any rank");
  const float scale = 1.0f / static_cast<float>(total);

  model_.set_step(step_index_);
  set_routers_training(true);
  struct InferenceAfter {  // whichever way step() returns
    Trainer* t;
    ~InferenceAfter() { t->set_routers_training(false); }
  } inference_after{this};
  // The step's load per expert, for routers that move after each step (after_step()): the
  // layers' counters before the step's forwards, subtracted after them.
  const std::vector<std::vector<int64_t>> load_before = router_loads_before();
  model_.zero_grad();
  aux_sum_ = 0;
  nonfinite_ = kNoFinding;
  double loss_sum = 0;
  int64_t count = 0;
  tt.setup_s += seconds_since(&clk);
  for (size_t k = 0; k < seqs.size(); ++k)
    SY_RETURN_IF_ERROR(run(inputs_[k], targets_[k], scale, &loss_sum, &count, true, &tt));
  clk = SteadyClock::now();

  // Local gradients, before any cross-rank sum: a NaN spreads to every rank there, and the rank
  // that made it is the one to name. Expert gradients are never summed: this is their check.
  std::vector<ModelParam> all = model_.parameters();
  if (const FaultSpec* f = fault(FaultKind::kInfGrad)) inject_inf_grad(*f, all);
  if (nonfinite_ == kNoFinding)
    for (size_t i = 0; i < all.size(); ++i)
      if (all[i].grad && !ops::all_finite(model_.ctx(), all[i].grad->ptr(), all[i].grad->numel())) {
        note_nonfinite(kGradLocal, static_cast<int64_t>(i));
        break;
      }
  tt.checks_s += seconds_since(&clk);

  model_.allreduce_moe_grads();  // routers and shared experts: summed over the ranks once
  if (comm_) comm_->allreduce(&loss_sum, 1, ReduceOp::kSum, {"train.loss", -1, step_index_});
  double aux = aux_sum_;
  if (comm_ && aux_coef_ > 0)
    comm_->allreduce(&aux, 1, ReduceOp::kSum, {"train.aux", -1, step_index_});
  tt.allreduce_s += seconds_since(&clk);

  // Gradients: sum the replicated ones over the ranks, then the job-wide norm. A sum of finite
  // gradients can still overflow: checked here when nothing was found before.
  std::vector<TrainParam> params;
  double sq_replicated = 0, sq_expert = 0;
  for (size_t i = 0; i < all.size(); ++i) {
    ModelParam& p = all[i];
    if (!p.grad) continue;
    if (comm_ && !p.expert && !p.moe_summed)
      comm_->allreduce(p.grad->ptr(), p.grad->numel(), ReduceOp::kSum,
                       {"train.grad", static_cast<int>(LayerOf(p.name)), step_index_});
    tt.allreduce_s += seconds_since(&clk);
    const double sq = AdamW::grad_sq_sum({{p.name, p.value, p.grad}}, model_.ctx());
    if (!std::isfinite(sq)) note_nonfinite(kGradSummed, static_cast<int64_t>(i));
    (p.expert ? sq_expert : sq_replicated) += sq;
    params.push_back({p.name, p.value, p.grad, p.router ? router_lr_scale_ : 1.0});
    tt.optimizer_s += seconds_since(&clk);
  }
  if (comm_) comm_->allreduce(&sq_expert, 1, ReduceOp::kSum, {"train.grad_norm", -1, step_index_});

  // Agreement: every rank learns the same first offender, whatever it found itself.
  int64_t code = nonfinite_;
  if (comm_) comm_->allreduce(&code, 1, ReduceOp::kMin, {"train.nonfinite", -1, step_index_});
  tt.allreduce_s += seconds_since(&clk);
  TrainStepResult r;
  r.step = step_index_;
  r.loss = loss_sum / static_cast<double>(total);
  r.aux_loss = aux;
  r.tokens = total;
  r.grad_norm = std::sqrt(sq_replicated + sq_expert);
  r.lr = opt_.lr_at(opt_.step());
  // The loss and the norm are all-reduce results, the same on every rank: a fallback only
  // (the local checks above see every non-finite value first).
  if (code == kNoFinding && !(std::isfinite(r.loss) && std::isfinite(r.grad_norm)))
    code = nonfinite_code(kTotals, 0, 0);
  if (code != kNoFinding) {
    const std::string what = describe_nonfinite(code, all);
    if (policy_ == NonFinitePolicy::kStop) return Status(StatusCode::kNonFinite, what);
    ++skipped_in_row_;
    if (max_consecutive_skips_ > 0 && skipped_in_row_ >= max_consecutive_skips_)
      return Status(StatusCode::kNonFinite, what + ": " + std::to_string(skipped_in_row_) +
                                                " consecutive steps skipped (limit " +
                                                std::to_string(max_consecutive_skips_) + ")");
    model_.zero_grad();
    ++skipped_total_;
    ++step_index_;
    r.skipped = true;
    r.nonfinite = what;
    r.clip = 1;
    tt.optimizer_s += seconds_since(&clk);
    tt.total_s = seconds_since(start);
    r.times = tt;
    return r;
  }
  skipped_in_row_ = 0;
  r.clip = opt_.update(params, sq_replicated + sq_expert);
  routers_after_step(load_before);
  ++step_index_;
  tt.optimizer_s += seconds_since(&clk);
  tt.total_s = seconds_since(start);
  r.times = tt;
  return r;
}

void Trainer::set_routers_training(bool training) {
  for (int64_t i = 0; i < model_.num_layers(); ++i)
    if (MoeLayer* l = model_.moe_layer(i)) l->router().set_training(training);
}

std::vector<std::vector<int64_t>> Trainer::router_loads_before() {
  std::vector<std::vector<int64_t>> before(static_cast<size_t>(model_.num_layers()));
  for (int64_t i = 0; i < model_.num_layers(); ++i)
    if (MoeLayer* l = model_.moe_layer(i); l && l->router().updates_after_step())
      before[static_cast<size_t>(i)] = l->counters().routed_E;
  return before;
}

StatusOr<double> Trainer::balance_pass(const std::vector<std::vector<int32_t>>& seqs) {
  const std::vector<std::vector<int64_t>> load_before = router_loads_before();
  SY_RETURN_IF_ERROR(eval(seqs).status());
  return routers_after_step(load_before);
}

double Trainer::routers_after_step(const std::vector<std::vector<int64_t>>& load_before) {
  double worst = 0;
  for (int64_t i = 0; i < model_.num_layers(); ++i) {
    const std::vector<int64_t>& before = load_before[static_cast<size_t>(i)];
    MoeLayer* l = model_.moe_layer(i);
    if (!l || before.empty()) continue;  // the same layers on every rank (replicated routers)
    std::vector<int64_t> load = l->counters().routed_E;
    for (size_t e = 0; e < load.size(); ++e) load[e] -= before[e];
    if (comm_)
      comm_->allreduce(load.data(), static_cast<int64_t>(load.size()), ReduceOp::kSum,
                       {"train.router_load", static_cast<int>(i), step_index_});
    l->router().after_step(load.data());
    int64_t sum = 0, max = 0;
    for (int64_t v : load) {
      sum += v;
      max = std::max(max, v);
    }
    if (sum > 0)
      worst = std::max(worst, static_cast<double>(max) * static_cast<double>(load.size()) /
                                  static_cast<double>(sum));
  }
  return worst;
}

StatusOr<double> Trainer::eval(const std::vector<std::vector<int32_t>>& seqs) {
  double loss_sum = 0;
  int64_t count = 0;
  model_.set_step(-1);
  set_routers_training(false);
  const int P = comm_ ? comm_->size() : 1;
  std::vector<int32_t> inputs, targets;
  for (size_t k = 0; k < seqs.size(); ++k) {
    make_targets(seqs[k], -1, static_cast<int64_t>(k) * P + rank(), &inputs, &targets);
    SY_RETURN_IF_ERROR(run(inputs, targets, 0.0f, &loss_sum, &count));
  }
  if (comm_) {
    comm_->allreduce(&loss_sum, 1, ReduceOp::kSum, {"eval.loss"});
    comm_->allreduce(&count, 1, ReduceOp::kSum, {"eval.tokens"});
  }
  if (count == 0) return InvalidArgument("eval: no target tokens");
  return loss_sum / static_cast<double>(count);
}

}  // namespace sy
