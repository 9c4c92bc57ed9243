#include "launch/train_bert.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "comm/fault.h"
#include "launch/commands.h"
#include "launch/infer_run.h"
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
#include "runtime/model/model.h"
#include "runtime/report/load_report.h"
#include "runtime/train/checkpoint.h"
#include "runtime/train/distill.h"
#include "runtime/train/trainer.h"

namespace sy::launch {
namespace {
using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

// bert-base-uncased's special ids (the vocabulary of `init --arch bert_moe` models).
constexpr int32_t kMaskId = 103;
const std::vector<int32_t> kNeverChosen = {0, 101, 102};  // [PAD], [CLS], [SEP]

// The source folder and whether it is a resume (--checkpoint-dir holds checkpoints).
std::string SourceDir(const switchyard::TrainConfig& c, bool* resume, int64_t* resume_step) {
  *resume = false;
  if (!c.checkpoint_dir().empty()) {
    const auto saved = list_checkpoints(c.checkpoint_dir());
    if (!saved.empty()) {
      *resume = true;
      *resume_step = saved.back().first;
      return c.checkpoint_dir();
    }
  }
  return c.model().empty() ? default_model_dir() : c.model();
}

json RunSettings(const switchyard::TrainConfig& c, const std::string& router) {
  return resume_settings(c, router, "masked_lm");
}

class BertTrainRun {
 public:
  BertTrainRun(const switchyard::TrainConfig& c, Communicator& comm)
      : c_(c), comm_(comm), me_(comm.rank()), P_(comm.size()), L_(c.seq_len()) {}

  int run() {
    if (int code = agree_status(comm_, Prepare(), "train")) return code;
    if (int code = agree_model(comm_, *ck_, "train", is_resume_ ? resume_step_ : -1)) return code;
    if (int code = agree_tokens(comm_, ids_, "train: the training token list")) return code;
    if (int code = MakeTrainer()) return code;
    Banner();
    return Train();
  }

 private:
  Status Prepare() {
    if (!c_.trace().dir().empty())
      return InvalidArgument("train: --trace is not supported for BERT models yet");
    if (c_.calibrate_balance() > 0)
      return InvalidArgument("train: --calibrate-balance is not supported for BERT models yet");
    if (!c_.checkpoint_dir().empty())
      SY_RETURN_IF_ERROR(check_writable_dir(c_.checkpoint_dir(), "train: --checkpoint-dir"));
    bool resume = false;
    const std::string source = SourceDir(c_, &resume, &resume_step_);
    if (resume && !c_.resume())
      return InvalidArgument("train: " + c_.checkpoint_dir() +
                             " already holds checkpoints: pass --resume to continue that run, or "
                             "another --checkpoint-dir");
    is_resume_ = resume;
    SY_ASSIGN_OR_RETURN(HfCheckpoint ck, HfCheckpoint::Open(source));
    ck_ = std::make_unique<HfCheckpoint>(std::move(ck));
    SY_ASSIGN_OR_RETURN(std::string ck_router,
                        ck_->config_reader().get_string("router", kDefaultRouterName));
    router_ = c_.router().empty() ? ck_router : c_.router();
    SY_ASSIGN_OR_RETURN(std::string type, ck_->config_reader().get_string("model_type", "bert"));
    if (type == "bert" && c_.what() == "routers")
      return InvalidArgument("train: " + ck_->dir() +
                             " is a dense BERT (no routers): --what routers has nothing to train");
    replace_router_ = type == "bert_moe" && router_ != ck_router;
    if (is_resume_) {
      SY_ASSIGN_OR_RETURN(resumed_, read_train_state(ck_->dir(), &optimizer_step_));
      SY_RETURN_IF_ERROR(check_resume_settings(ck_->dir(), resumed_.run, RunSettings(c_, router_),
                                               c_.resume_override(), &overridden_));
      if (resumed_.step >= c_.steps())
        return InvalidArgument("train --resume: " + ck_->dir() + " is at step " +
                               std::to_string(resumed_.step) + ", not below --steps " +
                               std::to_string(c_.steps()));
    }
    SY_RETURN_IF_ERROR(ReadTokens());
    ModelOptions opt;
    opt.train = c_.what() == "all" ? ModelTrain::kAll : ModelTrain::kRouters;
    opt.expert_bits = c_.quantize() == "int8" ? 8 : c_.quantize() == "int4" ? 4 : 32;
    opt.capacity_factor = c_.capacity_factor();
    opt.seed = c_.seed();
    opt.balance_rate = c_.balance_rate();
    SY_ASSIGN_OR_RETURN(opt.exec,
                        backend_context(c_.backend(), c_.deterministic(), c_.precision()));
    SY_ASSIGN_OR_RETURN(model_, load_model(*ck_, opt, &comm_));
    if (replace_router_) SY_RETURN_IF_ERROR(WarmStartRouters(ck_router));
    const int64_t V = model_->vocab_size();
    for (int32_t id : ids_)
      if (id < 0 || id >= V)
        return InvalidArgument("train: token id " + std::to_string(id) +
                               " outside the model's vocabulary of " + std::to_string(V));
    if (L_ > model_->max_positions())
      return InvalidArgument("train: --seq-len " + std::to_string(L_) + " exceeds the model's " +
                             std::to_string(model_->max_positions()) + " positions");
    return Status::Ok();
  }

  // A replaced router starts from the checkpoint's gate as in Qwen2-MoE's train: distilled on
  // this rank's share of the first training sequences (corpus order; runtime/train/distill.h),
  // or, with --no-distill, at random.
  Status WarmStartRouters(const std::string& gate) {
    if (!c_.distill().enabled()) {
      SY_RETURN_IF_ERROR(model_->replace_routers(router_, c_.seed(), 0).status());
      if (me_ == 0)
        std::printf("replaced the %s gates by fresh %s routers (no warm start)\n", gate.c_str(),
                    router_.c_str());
      return Status::Ok();
    }
    DistillConfig cfg;
    cfg.iterations = c_.distill().iterations();
    cfg.lr = c_.distill().lr();
    cfg.max_tokens = c_.distill().max_tokens();
    const int64_t n_train = static_cast<int64_t>(ids_.size()) - c_.eval_tokens();
    // The same number of sequences on every rank.
    const int64_t n = std::min<int64_t>(std::max<int64_t>(1, (cfg.max_tokens + L_ - 1) / L_),
                                        n_train / (L_ * P_));
    if (n < 1) return InvalidArgument("train: too few training tokens to warm-start the routers");
    std::vector<std::vector<int32_t>> seqs;
    for (int64_t b = 0; b < n; ++b) {
      const auto first = ids_.begin() + (b * P_ + me_) * L_;
      seqs.emplace_back(first, first + L_);
    }
    if (me_ == 0) {
      std::printf("router warm start: %s -> %s, distilling each MoE layer (%lld Adam iterations)\n",
                  gate.c_str(), router_.c_str(), (long long)cfg.iterations);
      std::fflush(stdout);
    }
    SY_ASSIGN_OR_RETURN(DistillReport rep,
                        warm_start_routers(*model_, &comm_, router_, c_.seed(), 0, seqs, cfg,
                                           distill_progress_printer(me_)));
    print_distill_report(rep, &comm_);
    return Status::Ok();
  }

  Status ReadTokens() {
    if (!c_.token_file().empty()) {
      SY_ASSIGN_OR_RETURN(ids_, read_token_file(c_.token_file()));
    } else {
      auto tok = load_tokenizer(ck_->dir());
      if (!tok.ok())
        return InvalidArgument(
            "train: BERT training reads --token-file (ids in the model's "
            "vocabulary) or a corpus through the checkpoint's own tokenizer, "
            "and " +
            ck_->dir() + " has none usable (" + tok.status().message() + ")");
      const std::string data_dir = c_.data_dir().empty() ? default_data_dir() : c_.data_dir();
      SY_ASSIGN_OR_RETURN(std::string text, load_corpus(c_.corpus(), data_dir));
      ids_ = (*tok)->encode(text);
    }
    if (static_cast<int64_t>(ids_.size()) < c_.eval_tokens() + L_)
      return InvalidArgument("train: " + std::to_string(ids_.size()) +
                             " tokens are fewer than --eval-tokens + --seq-len");
    n_train_ = static_cast<int64_t>(ids_.size()) - c_.eval_tokens();
    return Status::Ok();
  }

  int MakeTrainer() {
    const AdamWConfig ac = train_adamw_config(c_);
    if (int code = agree_status(comm_, ac.validate(), "train: optimizer")) return code;
    trainer_ = std::make_unique<Trainer>(*model_, &comm_, ac);
    if (int code = agree_status(comm_, trainer_->set_masked_lm(bert_masked_lm(c_.data_seed())),
                                "train: masked LM"))
      return code;
    // BERT configs carry no balancing coefficient: Switch Transformer's 0.01 by default.
    if (int code = agree_status(comm_, configure_trainer(c_, 0.01, trainer_.get()),
                                "train: --on-nonfinite"))
      return code;
    state_.run = RunSettings(c_, router_);
    state_.data_seed = c_.data_seed();
    state_.world_size = P_;
    if (is_resume_) {
      Status st =
          load_optimizer_state(ck_->dir(), *model_, optimizer_step_, &trainer_->optimizer());
      if (int code = agree_status(comm_, st, "train --resume: optimizer state")) return code;
      state_.step = resumed_.step;
      state_.data_position = resumed_.data_position;
      state_.data_seed = resumed_.data_seed;
    }
    order_ = std::make_unique<DataOrder>(n_train_ / L_, state_.data_seed);
    last_saved_ = is_resume_ ? state_.step : -1;
    // Held-out: the last eval_tokens tokens in sequences of L, dealt round-robin.
    eval_seqs_ =
        deal_held_out(ids_, n_train_, L_, std::max<int64_t>(1, c_.eval_tokens() / L_), me_, P_);
    return 0;
  }

  void Banner() const {
    if (me_ != 0) return;
    std::printf(
        "switchyard train: %s, %d rank%s, what=%s, masked LM (15%% of positions, 80/10/10), "
        "router %s; %s; %lld training tokens (%lld sequences of %lld), %lld held out; batch "
        "%lld x %d ranks x %lld tokens per step\n",
        ck_->dir().c_str(), P_, P_ == 1 ? "" : "s", c_.what().c_str(), router_.c_str(),
        model_->describe(P_).c_str(), (long long)n_train_, (long long)(n_train_ / L_),
        (long long)L_, (long long)c_.eval_tokens(), (long long)c_.batch(), P_, (long long)L_);
    if (is_resume_)
      std::printf("resuming at step %lld (data position %lld, optimizer step %lld) from %s\n",
                  (long long)state_.step, (long long)state_.data_position,
                  (long long)optimizer_step_, ck_->dir().c_str());
    print_resume_override(overridden_);
    std::fflush(stdout);
  }

  std::vector<int32_t> Sequence(int64_t position) {
    const int64_t b = order_->at(position) * L_;
    return std::vector<int32_t>(ids_.begin() + b, ids_.begin() + b + L_);
  }

  int Eval(int64_t step) {
    auto loss = trainer_->eval(eval_seqs_);
    if (int code = agree_status(comm_, loss.status(), "train: eval")) return code;
    if (me_ == 0) {
      std::printf("eval loss %.4f (masked LM, perplexity %.2f) at step %lld\n", *loss,
                  std::exp(*loss), (long long)step);
      std::fflush(stdout);
    }
    return 0;
  }

  int Save() {
    SaveRequest req;
    req.root = c_.checkpoint_dir();
    req.model = model_.get();
    req.optimizer = &trainer_->optimizer();
    req.state = state_;
    req.source = ck_.get();
    req.keep_last = c_.keep_last();
    if (int code = agree_status(comm_, save_checkpoint(req, &comm_), "train: checkpoint"))
      return code;
    last_saved_ = state_.step;
    if (me_ == 0) {
      std::printf("saved %s/%s\n", c_.checkpoint_dir().c_str(),
                  checkpoint_folder_name(state_.step).c_str());
      std::fflush(stdout);
    }
    return 0;
  }

  int Step(int64_t s) {
    std::vector<std::vector<int32_t>> mine;
    std::vector<int64_t> global;  // each sequence's index in the step's global batch
    for (int64_t b = 0; b < c_.batch(); ++b) {
      mine.push_back(Sequence(state_.data_position + b * P_ + me_));
      global.push_back(b * P_ + me_);
    }
    const bool logged = (s + 1) % c_.log_every() == 0 || s + 1 == c_.steps();
    report_step_ = logged && !c_.out().empty() ? s : -1;
    for (MoeLayer* l : model_->sparse_layers()) l->reset_counters();
    const StepTimer timer(comm_);
    inject_process_faults(me_, s);
    trainer_->set_step_index(s);
    auto r = trainer_->step(mine, global);
    if (int code = agree_status(comm_, r.status(), "train: step")) return code;
    if (report_step_ >= 0 && reports_) reports_->add_step_time(timer.stop(s));
    state_.step = s + 1;
    state_.data_position += c_.batch() * P_;
    if (me_ == 0 && (r->skipped || logged)) {
      if (r->skipped)
        std::printf("step %lld/%lld skipped: %s\n", (long long)(s + 1), (long long)c_.steps(),
                    r->nonfinite.c_str());
      else
        std::printf(
            "step %lld/%lld loss %.4f aux %.4f lr %.2e grad-norm %.3f%s (%lld masked "
            "tokens)\n",
            (long long)(s + 1), (long long)c_.steps(), r->loss, r->aux_loss, r->lr, r->grad_norm,
            r->clip < 1 ? " (clipped)" : "", (long long)r->tokens);
      std::fflush(stdout);
    }
    return 0;
  }

  int Train() {
    RoutingCollector reports(model_->sparse_layers(), model_->config_json().dump(), comm_,
                             c_.out());
    reports_ = &reports;
    trainer_->set_after_forward([&] {  // a logged step's forwards go into the reports
      if (report_step_ >= 0) reports.add_step(report_step_);
    });
    if (int code = Eval(state_.step)) return code;
    const int64_t first = state_.step;
    const auto t0 = Clock::now();
    for (int64_t s = first; s < c_.steps(); ++s) {
      if (int code = Step(s)) return code;
      if (c_.eval_every() > 0 && (s + 1) % c_.eval_every() == 0 && s + 1 < c_.steps())
        if (int code = Eval(s + 1)) return code;
      if (c_.save_every() > 0 && (s + 1) % c_.save_every() == 0 && s + 1 < c_.steps())
        if (int code = Save()) return code;
    }
    if (int code = Eval(c_.steps())) return code;
    const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
    const int64_t tokens = (c_.steps() - first) * c_.batch() * P_ * L_;
    if (me_ == 0)
      std::printf("trained %lld steps (%lld skipped) in %.1f s: %.0f tok/s over %d rank%s\n",
                  (long long)(c_.steps() - first), (long long)trainer_->skipped_steps(), secs,
                  static_cast<double>(tokens) / secs, P_, P_ == 1 ? "" : "s");
    if (!c_.checkpoint_dir().empty() && last_saved_ != state_.step)
      if (int code = Save()) return code;
    reports.set_skipped_steps(trainer_->skipped_steps());
    if (!c_.out().empty()) reports.finish(tokens, secs, "");
    return 0;
  }

  const switchyard::TrainConfig& c_;
  Communicator& comm_;
  const int me_, P_;
  const int64_t L_;
  std::unique_ptr<HfCheckpoint> ck_;
  std::unique_ptr<Model> model_;
  std::string router_;
  bool is_resume_ = false, replace_router_ = false;
  std::string overridden_;    // --resume-override: the settings that changed
  int64_t resume_step_ = -1;  // the latest checkpoint this rank found (when resuming)
  TrainState resumed_, state_;
  int64_t optimizer_step_ = 0, last_saved_ = -1, n_train_ = 0, report_step_ = -1;
  RoutingCollector* reports_ = nullptr;  // Train()'s, for the logged steps' times
  std::vector<int32_t> ids_;
  std::unique_ptr<DataOrder> order_;
  std::vector<std::vector<int32_t>> eval_seqs_;
  std::unique_ptr<Trainer> trainer_;
};

}  // namespace

MlmConfig bert_masked_lm(uint64_t seed) {
  MlmConfig mlm;
  mlm.seed = seed;
  mlm.mask_id = kMaskId;
  mlm.never_chosen = kNeverChosen;
  return mlm;
}

bool train_source_is_bert(const switchyard::TrainConfig& cfg) {
  bool resume = false;
  int64_t step = -1;
  auto ck = HfCheckpoint::Open(SourceDir(cfg, &resume, &step));
  if (!ck.ok()) return false;
  auto type = ck->config_reader().get_string("model_type", "");
  return type.ok() && (*type == "bert" || *type == "bert_moe");
}

int run_train_bert(const switchyard::TrainConfig& cfg, Communicator& comm) {
  BertTrainRun run(cfg, comm);
  return run.run();
}

}  // namespace sy::launch
