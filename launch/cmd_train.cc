// `switchyard train`: router fine-tuning (--what routers) or full training (--what all) of a
// Qwen2-MoE checkpoint (a BERT / BERT-MoE one: launch/train_bert.h, masked LM) across the MPI
// ranks, data parallel (each rank its own sequences) and expert parallel (each rank its E/P
// experts), with AdamW (runtime/train/trainer.h), saved and resumed without losing a step
// (runtime/train/checkpoint.h).
//
//   mpirun -np 4 switchyard train --what routers --router mlp_hadamard --model DIR
//       --steps 50 --checkpoint-dir C --save-every 10 [--resume]
//
// Without --model it starts from the embedded default model (default_model_dir()).
// Data: the corpus (--corpus, default sotu) through the model's tokenizer, or a token file; the
// last --eval-tokens tokens are held out. The training tokens are cut into sequences of
// --seq-len; every epoch visits them in an order drawn from (--data-seed, epoch) by a
// counter-based RNG, so the data position (global sequences consumed) is all a resume needs.
// Step s takes the next B * P sequences of that order: rank r the ones at b * P + r, b < B.
// Prints `eval loss <value>` before the first step and every --eval-every steps, a progress
// line per logged step on rank 0, and writes per-rank load reports (--out) for every logged
// step.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "comm/fault.h"
#include "comm/mpi_communicator.h"
#include "launch/commands.h"
#include "launch/config.h"
#include "launch/config_cli.h"
#include "launch/infer_run.h"
#include "launch/trace_run.h"
#include "launch/train_bert.h"
#include "launch/train_model.h"
#include "launch/train_progress.h"
#include "launch/train_resume.h"
#include "runtime/core/file_output.h"
#include "runtime/data/corpus.h"
#include "runtime/data/sequence_shard.h"
#include "runtime/data/token_file.h"
#include "runtime/data/tokenizer.h"
#include "runtime/io/checkpoint_dir.h"
#include "runtime/io/hf_checkpoint.h"
#include "runtime/model/qwen2_moe.h"
#include "runtime/report/load_report.h"
#include "runtime/train/checkpoint.h"
#include "runtime/train/distill.h"
#include "runtime/train/trainer.h"

namespace sy::launch {
namespace {
using json = nlohmann::json;

// The settings as the run reads them, filled from a validated TrainConfig (FromConfig): the
// defaults live in proto/commands.proto alone.
struct TrainArgs {
  std::string model;
  std::string what;
  std::string router;  // empty: keep the checkpoint's gate
  int64_t steps = 0;
  int64_t seq_len = 0;
  int64_t batch = 0;  // sequences per rank per step
  int64_t calibrate_balance = 0;
  int64_t eval_every = 0;
  int64_t eval_tokens = 0;
  std::string corpus;
  std::string token_file;
  std::string data_dir;
  uint64_t seed = 0;
  uint64_t data_seed = 0;
  std::string quantize;
  std::string checkpoint_dir;
  int64_t save_every = 0;
  bool resume = false;
  int keep_last = 0;
  std::string out;
  int64_t log_every = 0;
  bool distill = false;
  DistillConfig distill_cfg;
  switchyard::TraceConfig trace;
  switchyard::TrainConfig
      config;  // every setting as given (the model's and optimizer's: train_model.h)
};

TrainArgs FromConfig(const switchyard::TrainConfig& c) {
  TrainArgs a;
  a.model = c.model();
  a.what = c.what();
  a.router = c.router();
  a.steps = c.steps();
  a.seq_len = c.seq_len();
  a.batch = c.batch();
  a.calibrate_balance = c.calibrate_balance();
  a.eval_every = c.eval_every();
  a.eval_tokens = c.eval_tokens();
  a.corpus = c.corpus();
  a.token_file = c.token_file();
  a.data_dir = c.data_dir();
  a.seed = c.seed();
  a.data_seed = c.data_seed();
  a.quantize = c.quantize();
  a.checkpoint_dir = c.checkpoint_dir();
  a.save_every = c.save_every();
  a.resume = c.resume();
  a.keep_last = c.keep_last();
  a.out = c.out();
  a.log_every = c.log_every();
  a.distill = c.distill().enabled();
  a.distill_cfg.iterations = c.distill().iterations();
  a.distill_cfg.lr = c.distill().lr();
  a.distill_cfg.max_tokens = c.distill().max_tokens();
  a.trace = c.trace();
  a.config = c;
  return a;
}

json RunSettings(const TrainArgs& a, const std::string& router) {
  return resume_settings(a.config, router, "next_token");
}

// What RunTrain prepares before the first step: the weights' source, the tokens, the model.
struct TrainSetup {
  std::vector<int32_t> ids;
  std::unique_ptr<Qwen2MoeModel> model;
  std::unique_ptr<HfCheckpoint> ck;
  TrainState resumed;
  int64_t optimizer_step = 0;
  bool is_resume = false;
  int64_t resume_step = -1;  // the latest checkpoint this rank found (when is_resume)
  std::string router;        // the router being trained
  std::string overridden;    // --resume-override: the settings that changed ("lr 0.001 -> 0.002")
};

// Where the weights come from: the latest checkpoint (resume) or the model; opens it.
Status OpenSource(const TrainArgs& a, TrainSetup* t) {
  std::string source = a.model.empty() ? default_model_dir() : a.model;
  if (!a.checkpoint_dir.empty()) {
    // Found now, not at the first save after the steps were spent.
    SY_RETURN_IF_ERROR(check_writable_dir(a.checkpoint_dir, "train: --checkpoint-dir"));
    const auto saved = list_checkpoints(a.checkpoint_dir);
    if (!saved.empty() && !a.resume)
      return InvalidArgument("train: " + a.checkpoint_dir + " already holds checkpoints (up to " +
                             "step " + std::to_string(saved.back().first) +
                             "): pass --resume to continue that run, or another " +
                             "--checkpoint-dir");
    if (!saved.empty()) {
      source = a.checkpoint_dir;
      t->is_resume = true;
      t->resume_step = saved.back().first;
    }
  }
  std::error_code ec;
  const bool exists = std::filesystem::exists(source, ec);
  if (ec) return BadInput("train: " + source + ": " + ec.message());
  if (!exists)
    return NotFound("train: no model at " + source +
                    (a.model.empty() ? " (the embedded default model; build it with "
                                       "`bash launch/train_default.sh`, or pass --model DIR)"
                                     : ""));
  SY_ASSIGN_OR_RETURN(HfCheckpoint opened, HfCheckpoint::Open(source));
  t->ck = std::make_unique<HfCheckpoint>(std::move(opened));
  return Status::Ok();
}

// A resumed run must continue the run that saved: same settings, experts that split over P,
// steps left to take.
Status CheckResume(const TrainArgs& a, const Qwen2MoeConfig& cfg, int P, TrainSetup* t) {
  const std::string& dir = t->ck->dir();
  SY_ASSIGN_OR_RETURN(t->resumed, read_train_state(dir, &t->optimizer_step));
  SY_RETURN_IF_ERROR(check_resume_settings(dir, t->resumed.run, RunSettings(a, t->router),
                                           a.config.resume_override(), &t->overridden));
  if (cfg.num_experts % P != 0)
    return InvalidArgument("train --resume: " + dir + " was saved with " +
                           std::to_string(t->resumed.world_size) + " ranks; its " +
                           std::to_string(cfg.num_experts) + " experts do not split over " +
                           std::to_string(P) + " ranks (use a P that divides " +
                           std::to_string(cfg.num_experts) + ")");
  if (t->resumed.step >= a.steps)
    return InvalidArgument("train --resume: " + dir + " is at step " +
                           std::to_string(t->resumed.step) + ", not below --steps " +
                           std::to_string(a.steps));
  return Status::Ok();
}

// The training and held-out tokens: a token file, or the corpus through the model's tokenizer.
Status ReadTrainTokens(const TrainArgs& a, TrainSetup* t) {
  if (!a.token_file.empty()) {
    SY_ASSIGN_OR_RETURN(t->ids, read_token_file(a.token_file));
  } else {
    SY_ASSIGN_OR_RETURN(auto tok, load_tokenizer(t->ck->dir()));
    const std::string data_dir = a.data_dir.empty() ? default_data_dir() : a.data_dir;
    SY_ASSIGN_OR_RETURN(std::string text, load_corpus(a.corpus, data_dir));
    t->ids = tok->encode(text);
  }
  if (static_cast<int64_t>(t->ids.size()) < a.eval_tokens + a.seq_len)
    return InvalidArgument("train: " + std::to_string(t->ids.size()) +
                           " tokens are fewer than --eval-tokens + --seq-len");
  return Status::Ok();
}

// After OpenSource (agreed by every rank): the settings against the checkpoint's, the tokens,
// the model.
Status PrepareTrain(const TrainArgs& a, Communicator& comm, TrainSetup* t) {
  SY_ASSIGN_OR_RETURN(Qwen2MoeConfig cfg, Qwen2MoeConfig::from_checkpoint(*t->ck));
  t->router = a.router.empty() ? cfg.router : a.router;
  if (t->is_resume) SY_RETURN_IF_ERROR(CheckResume(a, cfg, comm.size(), t));
  SY_RETURN_IF_ERROR(ReadTrainTokens(a, t));
  SY_ASSIGN_OR_RETURN(const Qwen2MoeOptions opt, qwen2_moe_train_options(a.config));
  SY_ASSIGN_OR_RETURN(t->model, Qwen2MoeModel::load(*t->ck, opt, &comm));
  for (int32_t id : t->ids)
    if (id < 0 || id >= t->model->vocab_size())
      return InvalidArgument("train: token id " + std::to_string(id) +
                             " outside the model's vocabulary");
  return Status::Ok();
}

// One training run after PrepareTrain: the data order, the trainer, eval, saves, the steps.
class TrainRun {
 public:
  TrainRun(const TrainArgs& a, Communicator& comm, TrainSetup& t)
      : a_(a),
        comm_(comm),
        t_(t),
        me_(comm.rank()),
        P_(comm.size()),
        L_(a.seq_len),
        n_train_(static_cast<int64_t>(t.ids.size()) - a.eval_tokens),
        order_(n_train_ / L_, t.is_resume ? t.resumed.data_seed : a.data_seed) {}

  int run() {
    DealEvalSequences();
    if (int code = WarmStartRouter()) return code;
    if (int code = MakeTrainer()) return code;
    PrintBanner();
    return Train();
  }

 private:
  // The training sequence at a data position.
  std::vector<int32_t> sequence(int64_t position) {
    const int64_t b = order_.at(position) * L_;
    return std::vector<int32_t>(t_.ids.begin() + b, t_.ids.begin() + b + L_);
  }

  // Held-out: the last eval_tokens tokens in sequences of L, dealt round-robin to the ranks
  // (empty padding where a rank has one fewer).
  void DealEvalSequences() {
    eval_seqs_ =
        deal_held_out(t_.ids, n_train_, L_, std::max<int64_t>(1, a_.eval_tokens / L_), me_, P_);
  }

  // A replaced router starts from the checkpoint's gate: distilled on this rank's first
  // training sequences (real activations), or hybrid set equal to a linear gate; --no-distill
  // starts it at random.
  int WarmStartRouter() {
    Qwen2MoeModel& model = *t_.model;
    if (t_.is_resume || t_.router == model.config().router) return 0;
    const std::string teacher = model.config().router;
    if (a_.distill) {
      std::vector<std::vector<int32_t>> seqs;
      const int64_t n = std::max<int64_t>(1, (a_.distill_cfg.max_tokens + L_ - 1) / L_);
      for (int64_t b = 0; b < n; ++b) seqs.push_back(sequence(b * P_ + me_));
      if (me_ == 0) {
        std::printf(
            "router warm start: %s -> %s, distilling each MoE layer (%lld Adam iterations)\n",
            teacher.c_str(), t_.router.c_str(), (long long)a_.distill_cfg.iterations);
        std::fflush(stdout);
      }
      auto rep = warm_start_routers(model, &comm_, t_.router, a_.seed, 0, seqs, a_.distill_cfg,
                                    distill_progress_printer(me_));
      if (int code = agree_status(comm_, rep.status(), "train: router warm start")) return code;
      print_distill_report(*rep, &comm_);
    } else {
      auto old = model.replace_routers(t_.router, a_.seed, 0);
      if (int code = agree_status(comm_, old.status(), "train: --router")) return code;
      if (me_ == 0)
        std::printf("replaced the %s gates by fresh %s routers (no warm start)\n", teacher.c_str(),
                    t_.router.c_str());
    }
    return 0;
  }

  int MakeTrainer() {
    const AdamWConfig ac = train_adamw_config(a_.config);
    if (int code = agree_status(comm_, ac.validate(), "train: optimizer")) return code;
    trainer_ = std::make_unique<Trainer>(*t_.model, &comm_, ac);
    const Status st =
        configure_trainer(a_.config, t_.model->config().router_aux_loss_coef, trainer_.get());
    if (int code = agree_status(comm_, st, "train: --on-nonfinite")) return code;
    state_.run = RunSettings(a_, t_.router);
    state_.data_seed = a_.data_seed;
    state_.world_size = P_;
    if (t_.is_resume) {
      Status st =
          load_optimizer_state(t_.ck->dir(), *t_.model, t_.optimizer_step, &trainer_->optimizer());
      if (int code = agree_status(comm_, st, "train --resume: optimizer state")) return code;
      state_.step = t_.resumed.step;
      state_.data_position = t_.resumed.data_position;
      state_.data_seed = t_.resumed.data_seed;
    }
    last_saved_ = t_.is_resume ? state_.step : -1;
    return 0;
  }

  void PrintBanner() const {
    if (me_ != 0) return;
    const Qwen2MoeConfig& c = t_.model->config();
    std::printf(
        "switchyard train: %s, %d rank%s, what=%s, router %s; %lld layers, %lld experts "
        "(%lld per rank, %s), top-%lld; %lld training tokens (%lld sequences of %lld), %lld "
        "held out; batch %lld x %d ranks x %lld tokens per step\n",
        t_.ck->dir().c_str(), P_, P_ == 1 ? "" : "s", a_.what.c_str(), t_.router.c_str(),
        (long long)c.num_hidden_layers, (long long)c.num_experts, (long long)(c.num_experts / P_),
        a_.quantize == "none" ? "fp32" : a_.quantize.c_str(), (long long)c.num_experts_per_tok,
        (long long)n_train_, (long long)(n_train_ / L_), (long long)L_, (long long)a_.eval_tokens,
        (long long)a_.batch, P_, (long long)L_);
    if (t_.is_resume)
      std::printf(
          "resuming at step %lld (data position %lld, optimizer step %lld) from %s, saved by %d "
          "rank%s%s\n",
          (long long)state_.step, (long long)state_.data_position, (long long)t_.optimizer_step,
          t_.ck->dir().c_str(), t_.resumed.world_size, t_.resumed.world_size == 1 ? "" : "s",
          t_.resumed.world_size == P_ ? "" : " (experts regrouped by global id)");
    print_resume_override(t_.overridden);
    std::fflush(stdout);
  }

  // --calibrate-balance N: N forward-only passes over training sequences (the data order's,
  // after the last step's) with the weights fixed, each moving the balance biases; then the
  // final held-out loss and save see the calibrated routing.
  int CalibrateBalance() {
    const int64_t n = a_.calibrate_balance;
    if (n <= 0 || state_.step < a_.steps) return 0;
    if (!has_balance_bias(*t_.model)) {
      if (me_ == 0)
        std::printf("balance calibration skipped: no router has a balance bias (--balance-rate)\n");
      return 0;
    }
    const auto t0 = std::chrono::steady_clock::now();
    double first = 0, last = 0;
    auto batch = [&](int64_t i) {
      std::vector<std::vector<int32_t>> seqs;
      for (int64_t b = 0; b < a_.batch; ++b)
        seqs.push_back(sequence(state_.data_position + (i * a_.batch + b) * P_ + me_));
      return seqs;
    };
    auto progress = [&](int64_t i, double worst) {
      if (me_ != 0 || ((i + 1) % 10 != 0 && i + 1 != n)) return;
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      std::printf("balance calibration %lld/%lld: worst layer max/mean %.2f, ETA %.0fs\n",
                  (long long)(i + 1), (long long)n, worst,
                  s / static_cast<double>(i + 1) * static_cast<double>(n - i - 1));
      std::fflush(stdout);
    };
    if (int code =
            balance_calibration(*trainer_, *t_.model, comm_, n, batch, &first, &last, progress))
      return code;
    if (me_ == 0)
      std::printf(
          "balance calibration: %lld forward passes of %lld x %lld tokens per rank, weights "
          "fixed: the worst MoE layer's max/mean expert load %.2f -> %.2f\n",
          (long long)n, (long long)a_.batch, (long long)L_, first, last);
    return 0;
  }

  int Eval(int64_t step) {
    auto loss = trainer_->eval(eval_seqs_);
    if (int code = agree_status(comm_, loss.status(), "train: eval")) return code;
    if (me_ == 0) {
      std::printf("eval loss %.4f (perplexity %.2f) at step %lld\n", *loss, std::exp(*loss),
                  (long long)step);
      std::fflush(stdout);
    }
    return 0;
  }

  int Save() {
    SaveRequest req;
    req.root = a_.checkpoint_dir;
    req.model = t_.model.get();
    req.optimizer = &trainer_->optimizer();
    req.state = state_;
    req.source = t_.ck.get();
    req.keep_last = a_.keep_last;
    const auto t = std::chrono::steady_clock::now();
    Status st = save_checkpoint(req, &comm_);
    if (int code = agree_status(comm_, st, "train: checkpoint")) return code;
    last_saved_ = state_.step;
    if (me_ == 0) {
      std::printf("saved %s/%s in %.2f s\n", a_.checkpoint_dir.c_str(),
                  checkpoint_folder_name(state_.step).c_str(),
                  std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count());
      std::fflush(stdout);
    }
    return 0;
  }

  // Rank 0's progress line of a logged step (after the routing all-reduce every rank makes).
  void LogStep(int64_t s, const TrainStepResult& r, int64_t first_step, double elapsed_s) {
    const StepRouting routing = GlobalRouting(t_.model->sparse_layers(), comm_, s);
    if (me_ != 0) return;
    const double done = static_cast<double>(s + 1 - first_step);
    std::printf(
        "step %lld/%lld loss %.4f aux %.4f lr %.2e grad-norm %.3f%s drops %.2f%% imbalance "
        "%.2f %.0f tok/s ETA %.0fs\n",
        (long long)(s + 1), (long long)a_.steps, r.loss, r.aux_loss, r.lr, r.grad_norm,
        r.clip < 1 ? " (clipped)" : "", 100.0 * routing.drop_fraction, routing.imbalance,
        done * static_cast<double>(tokens_per_step()) / elapsed_s,
        elapsed_s / done * static_cast<double>(a_.steps - s - 1));
    // Collapsed routing (a few experts take most tokens) is said when the set of such layers
    // changes, not on every line: it is the failure router fine-tuning most often hits.
    if (routing.collapsed != collapsed_) {
      std::string list;
      for (int l : routing.collapsed) list += (list.empty() ? "" : ", ") + std::to_string(l);
      if (routing.collapsed.empty())
        std::printf("routing no longer collapsed in any MoE layer at step %lld\n",
                    (long long)(s + 1));
      else
        std::printf(
            "warning: routing collapsed in MoE layer%s %s at step %lld (max/mean expert "
            "load above %.2f): a few experts take most tokens; a larger --aux-loss "
            "(now %g) spreads them\n",
            routing.collapsed.size() == 1 ? "" : "s", list.c_str(), (long long)(s + 1),
            routing.collapse_threshold, trainer_->router_aux_loss());
      collapsed_ = routing.collapsed;
    }
    std::fflush(stdout);
  }

  int64_t tokens_per_step() const { return a_.batch * P_ * (L_ - 1); }

  // Step s: this rank's batch through the trainer, the data position advanced. Every
  // collective of the step is tagged s (Trainer::step, Model::set_step).
  int Step(int64_t s, int64_t first_step, std::chrono::steady_clock::time_point t0) {
    std::vector<std::vector<int32_t>> mine;
    for (int64_t b = 0; b < a_.batch; ++b)
      mine.push_back(sequence(state_.data_position + b * P_ + me_));
    trace_step_ = s;
    trace_seq_ = 0;
    for (MoeLayer* l : t_.model->sparse_layers()) l->reset_counters();
    const bool logged = (s + 1) % a_.log_every == 0 || s + 1 == a_.steps;
    report_step_ = logged && !a_.out.empty() ? s : -1;
    const StepTimer timer(comm_);
    inject_process_faults(me_, s);  // SY_FAULT=kill|hang|exit|...@rank=r,step=s
    trainer_->set_step_index(s);
    auto r = trainer_->step(mine);
    if (int code = agree_status(comm_, r.status(), "train: step")) return code;
    if (report_step_ >= 0 && reports_) reports_->add_step_time(timer.stop(s));
    if (report_step_ >= 0 && !r->skipped && reports_) reports_->add_loss(s, r->loss);
    // A skipped step (non-finite values, --on-nonfinite skip) still consumes its batch.
    state_.step = s + 1;
    state_.data_position += a_.batch * P_;
    if (r->skipped && me_ == 0) {
      std::printf("step %lld/%lld skipped: %s\n", (long long)(s + 1), (long long)a_.steps,
                  r->nonfinite.c_str());
      std::fflush(stdout);
    }
    if (logged && !r->skipped)
      LogStep(s, *r, first_step,
              std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    return 0;
  }

  int Train() {
    RoutingCollector reports(t_.model->sparse_layers(), t_.model->config_json().dump(), comm_,
                             a_.out);
    reports_ = &reports;
    // While a logged step runs (report_step_ >= 0) its forwards go into the reports.
    // --trace: the step's b-th forward is data position data_position + b * P + rank, whose
    // tokens are order[position] * L .. + L - 1 of the training token stream.
    const std::unique_ptr<TraceRecorder> trace =
        make_model_trace(a_.trace, *t_.model, "train", t_.ck->dir(), false, comm_);
    trainer_->set_after_forward([&] {
      if (report_step_ >= 0) reports.add_step(report_step_);
      if (!trace) return;
      const int64_t position = state_.data_position + trace_seq_++ * P_ + me_;
      const std::vector<int32_t> seq = sequence(position);
      trace->add_range(trace_step_, t_.model->sparse_layers(), order_.at(position) * L_, seq.data(),
                       L_);
    });
    if (int code = Eval(state_.step)) return code;
    const int64_t first_step = state_.step;
    const auto t0 = std::chrono::steady_clock::now();
    for (int64_t s = first_step; s < a_.steps; ++s) {
      if (int code = Step(s, first_step, t0)) return code;
      if (a_.eval_every > 0 && (s + 1) % a_.eval_every == 0 && s + 1 < a_.steps)
        if (int code = Eval(s + 1)) return code;
      if (a_.save_every > 0 && (s + 1) % a_.save_every == 0 && s + 1 < a_.steps)
        if (int code = Save()) return code;
    }
    if (int code = CalibrateBalance()) return code;
    if (int code = Eval(a_.steps)) return code;
    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (me_ == 0)
      std::printf("trained %lld steps (%lld skipped) in %.1f s: %.0f tok/s over %d rank%s\n",
                  (long long)(a_.steps - first_step), (long long)trainer_->skipped_steps(), secs,
                  static_cast<double>((a_.steps - first_step) * tokens_per_step()) / secs, P_,
                  P_ == 1 ? "" : "s");
    if (!a_.checkpoint_dir.empty() && last_saved_ != state_.step)
      if (int code = Save()) return code;
    reports.set_skipped_steps(trainer_->skipped_steps());
    if (!a_.out.empty()) reports.finish((a_.steps - first_step) * tokens_per_step(), secs, "");
    return finish_trace(trace.get(), a_.trace, comm_);
  }

  const TrainArgs& a_;
  Communicator& comm_;
  TrainSetup& t_;
  const int me_, P_;
  const int64_t L_, n_train_;
  DataOrder order_;
  std::vector<std::vector<int32_t>> eval_seqs_;
  std::unique_ptr<Trainer> trainer_;
  TrainState state_;
  int64_t last_saved_ = -1;
  std::vector<int> collapsed_;  // the MoE layers the last logged step found collapsed
  int64_t report_step_ = -1;
  RoutingCollector* reports_ = nullptr;     // Train()'s, for the logged steps' losses
  int64_t trace_step_ = 0, trace_seq_ = 0;  // the step running, its forwards so far (--trace)
};

// The settings (checked once here, agreed by every rank), then the run.
int RunTrain(const CommandConfig& cc) {
  MpiRuntime mpi(nullptr, nullptr);
  const std::unique_ptr<Communicator> world_comm = open_world_communicator();
  Communicator& world = *world_comm;
  switchyard::TrainConfig cfg;
  Status st = cc.resolve(&cfg);
  // A placement file is inference-only: the trainer's checkpoints and optimizer state shard the
  // experts contiguously (runtime/train/checkpoint.h), and TrainConfig has no moe section.
  for (const std::string& s : cc.sets())
    if (s.rfind("moe.placement", 0) == 0)
      st = InvalidArgument(
          "--set moe.placement (an expert placement file) is for infer only; train runs "
          "the contiguous placement (expert e on rank e / (E/P))");
  if (st.ok()) st = validate_train_config(cfg);
  if (st.ok()) st = validate_trace_config(cfg.trace(), "train");
  if (st.ok()) st = check_faults_supported("train", train_fault_kinds());
  if (int code = agree_status(world, st, "train: config")) return code;
  if (int code = agree_config(world, config_text(cfg))) return code;
  if (cc.print_config()) {
    if (world.rank() == 0) std::printf("%s", config_text(cfg).c_str());
    return 0;
  }
  // Where the model trains, then what moves its tensors (--comm; NCCL's bootstrap is collective,
  // so every rank has its backend context, and so its device, first). Everything below goes
  // through that communicator; it is destroyed after the model, before `world`, on every rank.
  st = backend_context(cfg.backend(), cfg.deterministic(), cfg.precision()).status();
  if (int code = agree_status(world, st, "train: backend")) return code;
  std::unique_ptr<Communicator> owned_comm;
  StatusOr<Communicator*> opened =
      open_model_communicator(world, cfg.comm(), cfg.backend(), &owned_comm);
  if (int code = agree_status(world, opened.status(), "train: --comm")) return code;
  Communicator& comm = **opened;
  if (train_source_is_bert(cfg)) return run_train_bert(cfg, comm);  // masked LM: train_bert.h
  const TrainArgs a = FromConfig(cfg);
  TrainSetup setup;
  // Every rank opens the same model or checkpoint step before anything else is read.
  st = OpenSource(a, &setup);
  if (int code = agree_status(comm, st, "train")) return code;
  if (int code = agree_model(comm, *setup.ck, "train", setup.resume_step)) return code;
  st = PrepareTrain(a, comm, &setup);
  if (int code = agree_status(comm, st, "train")) return code;
  if (int code = agree_tokens(comm, setup.ids, "train: the training token list")) return code;
  TrainRun run(a, comm, setup);
  return run.run();
}

}  // namespace

void add_train_command(CLI::App& app) {
  CLI::App* cmd = app.add_subcommand(
      "train",
      "Fine-tune the routers (or train everything) of a Qwen2-MoE or BERT-MoE (masked LM) "
      "checkpoint across the "
      "MPI ranks: data + expert parallel, AdamW, checkpoints that resume bitwise");
  auto c = std::make_shared<CommandConfig>(cmd, switchyard::TrainConfig::default_instance());
  c->add_config_options();
  c->option("--model", "model",
            "Hugging Face checkpoint folder (qwen2_moe) or a checkpoint folder; default: "
            "the embedded default model");
  c->option("--what", "what", "routers (everything else frozen) | all")
      ->check(CLI::IsMember({"routers", "all"}));
  c->option("--router", "router", "replace every MoE layer's gate with a router of this kind");
  c->option("--steps", "steps", "optimizer steps of the whole run (resume included)");
  c->option("--checkpoint-dir", "checkpoint_dir",
            "checkpoint folder (step-N sub-folders; itself a model folder)");
  c->option("--save-every", "save_every", "save every K steps (and always at the end)");
  c->flag("--resume", "resume",
          "continue from the latest complete checkpoint in --checkpoint-dir (start fresh "
          "when it holds none)");
  c->flag("--resume-override", "resume_override",
          "with --resume: accept changed optimizer or schedule settings (lr, batch, warmup, "
          "...), named in a warning, instead of refusing them");
  c->option("--keep-last", "keep_last", "checkpoints kept (0: all)");
  c->option("--seq-len", "seq_len", "tokens per sequence");
  c->option("--batch", "batch", "sequences per rank per step");
  c->option("--lr", "lr", "peak learning rate (AdamW, cosine decay to 0.1x)");
  c->option("--warmup", "warmup", "linear warm-up steps");
  c->option("--weight-decay", "weight_decay", "AdamW weight decay (matrices)");
  c->option("--clip", "clip", "global gradient-norm clip (<= 0: none)");
  c->option("--aux-loss", "aux_loss",
            "Switch load-balancing loss coefficient (< 0: the checkpoint's "
            "router_aux_loss_coef; 0: none)");
  c->option("--router-lr-scale", "router_lr_scale",
            "the routers' learning rate as a multiple of --lr (> 0)");
  c->option("--balance-rate", "balance_rate",
            "gamma of the routers' balance bias, which shifts the choice toward balance after "
            "each step (0: none; < 0: the checkpoint's)");
  c->option("--calibrate-balance", "calibrate_balance",
            "after the last step, N forward-only passes of --batch training sequences per rank "
            "that move the balance biases with the weights fixed (0: none)");
  c->option("--eval-every", "eval_every", "held-out loss every M steps (0: start and end)");
  c->option("--eval-tokens", "eval_tokens", "tokens held out at the end of the data");
  c->option("--corpus", "corpus", "moby_dick | sotu | excerpt | a text file");
  c->option("--token-file", "token_file", "a binary token file instead of --corpus");
  c->option("--data-dir", "data_dir", "data folder (default: $SY_DATA_DIR or data/)");
  c->option("--data-seed", "data_seed", "seed of the data order");
  c->option("--seed", "seed", "seed of a replaced router");
  c->option("--quantize", "quantize", "routed experts: none | int8 | int4 (--what routers)")
      ->check(CLI::IsMember({"none", "int8", "int4"}));
  c->option("--capacity-factor", "capacity_factor", "expert capacity (<= 0: dropless)");
  c->option("--out", "out", "per-rank load reports (switchyard report reads them)");
  c->option("--trace", "trace.dir",
            "write each rank's routing trace DIR/rank-<r>.safetensors of every training "
            "forward (switchyard trace stats DIR reads it)");
  c->flag("--trace-probs", "trace.probs", "with --trace: also the full router probabilities");
  c->option("--log-every", "log_every", "progress line and load report every N steps");
  c->flag("--distill,!--no-distill", "distill.enabled",
          "warm-start a replaced router by distillation from the checkpoint's gate "
          "(default on)");
  c->option("--distill-iters", "distill.iterations", "Adam steps per layer");
  c->option("--distill-lr", "distill.lr", "distillation learning rate");
  c->option("--distill-tokens", "distill.max_tokens", "router inputs per rank to distill on");
  c->option("--on-nonfinite", "on_nonfinite",
            "NaN/Inf in logits, loss or gradients on any rank: skip the step on every "
            "rank, or stop the job (exit 24)")
      ->check(CLI::IsMember({"skip", "stop"}));
  c->option("--max-skips", "max_skips",
            "stop after this many skipped steps in a row (0: "
            "no limit)");
  c->flag("--deterministic", "deterministic", "row-stable GEMMs");
  add_device_options(c.get(), "trains");
  cmd->callback([c] { set_exit_code(RunTrain(*c)); });
}

}  // namespace sy::launch
