// `switchyard train`: router fine-tuning (--what routers) or full training (--what all) of a
// Qwen2-MoE checkpoint across the MPI ranks, data parallel (each rank its own sequences) and
// expert parallel (each rank its E/P experts), with AdamW (runtime/train/trainer.h), saved and
// resumed without losing a step (runtime/train/checkpoint.h).
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
#include "launch/infer_run.h"
#include "launch/routing_collector.h"
#include "runtime/core/rng.h"
#include "runtime/data/corpus.h"
#include "runtime/data/token_file.h"
#include "runtime/data/tokenizer.h"
#include "runtime/io/checkpoint_dir.h"
#include "runtime/io/hf_checkpoint.h"
#include "runtime/model/qwen2_moe.h"
#include "runtime/train/checkpoint.h"
#include "runtime/train/distill.h"
#include "runtime/train/trainer.h"

namespace sy::launch {
namespace {
using json = nlohmann::json;

struct TrainArgs {
  std::string model;
  std::string what = "routers";
  std::string router;  // empty: keep the checkpoint's gate
  int64_t steps = 20;
  int64_t seq_len = 128;
  int64_t batch = 2;  // sequences per rank per step
  double lr = 1e-3;
  int64_t warmup = 0;
  double weight_decay = 0.0;
  double clip = 1.0;
  double aux_loss = -1;  // < 0: the checkpoint's router_aux_loss_coef
  int64_t eval_every = 10;
  int64_t eval_tokens = 8192;
  std::string corpus = "sotu";
  std::string token_file;
  std::string data_dir;
  uint64_t seed = 1234;
  uint64_t data_seed = 1;
  std::string quantize = "none";
  double capacity_factor = 0.0;
  bool deterministic = false;
  std::string checkpoint_dir;
  int64_t save_every = 0;
  bool resume = false;
  int keep_last = 3;
  std::string out;
  int64_t log_every = 1;
  bool distill = true;
  DistillConfig distill_cfg;
  std::string on_nonfinite = "skip";
  int64_t max_skips = 0;
};

// The settings a resumed run must share with the run that saved (the data and what is trained).
json RunSettings(const TrainArgs& a, const std::string& router) {
  return {{"what", a.what},
          {"router", router},
          {"seq_len", a.seq_len},
          {"eval_tokens", a.eval_tokens},
          {"corpus", a.token_file.empty() ? a.corpus : ""},
          {"token_file", a.token_file},
          {"quantize", a.quantize}};
}

// Epoch e visits the n training sequences in a permutation drawn from (seed, e).
class DataOrder {
 public:
  DataOrder(int64_t n, uint64_t seed) : n_(n), seed_(seed) {}
  int64_t at(int64_t position) {
    const int64_t epoch = position / n_;
    if (epoch != epoch_) {
      perm_.resize(static_cast<size_t>(n_));
      for (int64_t i = 0; i < n_; ++i) perm_[static_cast<size_t>(i)] = i;
      for (int64_t i = n_ - 1; i > 0; --i) {  // Fisher-Yates
        const auto j = static_cast<int64_t>(
            uniform_at(seed_, static_cast<uint64_t>(epoch), static_cast<uint64_t>(i)) *
            static_cast<double>(i + 1));
        std::swap(perm_[static_cast<size_t>(i)], perm_[static_cast<size_t>(std::min(j, i))]);
      }
      epoch_ = epoch;
    }
    return perm_[static_cast<size_t>(position % n_)];
  }

 private:
  int64_t n_;
  uint64_t seed_;
  int64_t epoch_ = -1;
  std::vector<int64_t> perm_;
};

// Global routing of the step over all ranks: drops and the worst layer's max/mean expert load.
struct StepRouting {
  double drop_fraction = 0;
  double imbalance = 0;
};
StepRouting GlobalRouting(Qwen2MoeModel& model, Communicator& comm, int64_t step) {
  // One all-reduce: every MoE layer's routed-per-expert counts, then its dropped count.
  std::vector<int64_t> v;
  size_t layers = 0, E = 0;
  for (MoeLayer* l : model.moe_layers()) {
    if (!l) continue;
    const MoeLayerCounters& c = l->counters();
    E = c.routed_E.size();
    v.insert(v.end(), c.routed_E.begin(), c.routed_E.end());
    v.push_back(c.dropped);
    ++layers;
  }
  comm.allreduce(v.data(), static_cast<int64_t>(v.size()), ReduceOp::kSum,
                 {"train.routing", -1, step});
  StepRouting r;
  int64_t routed = 0, dropped = 0;
  for (size_t k = 0; k < layers; ++k) {
    const int64_t* row = v.data() + k * (E + 1);
    int64_t sum = 0, mx = 0;
    for (size_t e = 0; e < E; ++e) {
      sum += row[e];
      mx = std::max(mx, row[e]);
    }
    routed += sum;
    dropped += row[E];
    if (sum > 0)
      r.imbalance = std::max(
          r.imbalance, static_cast<double>(mx) * static_cast<double>(E) / static_cast<double>(sum));
  }
  r.drop_fraction = routed > 0 ? static_cast<double>(dropped) / static_cast<double>(routed) : 0;
  return r;
}

int RunTrain(const TrainArgs& a) {
  MpiRuntime mpi(nullptr, nullptr);
  MpiCommunicator comm;
  const int me = comm.rank(), P = comm.size();
  std::vector<int32_t> ids;
  std::unique_ptr<Qwen2MoeModel> model;
  std::unique_ptr<HfCheckpoint> ck;
  TrainState resumed;
  int64_t optimizer_step = 0;
  bool is_resume = false;
  std::string router;  // the router being trained
  Status st = [&]() -> Status {
    if (a.what != "routers" && a.what != "all")
      return InvalidArgument("train: --what must be routers or all");
    if (a.steps < 1 || a.seq_len < 2 || a.batch < 1 || a.eval_every < 0 || a.eval_tokens < 2 ||
        a.save_every < 0 || a.log_every < 1 || a.keep_last < 0)
      return InvalidArgument(
          "train: --steps, --batch, --log-every >= 1, --seq-len, --eval-tokens >= 2, "
          "--save-every, --eval-every, --keep-last >= 0");
    if ((a.save_every > 0 || a.resume) && a.checkpoint_dir.empty())
      return InvalidArgument("train: --save-every and --resume need --checkpoint-dir");
    int expert_bits = 32;
    if (a.quantize == "int8") expert_bits = 8;
    if (a.quantize == "int4") expert_bits = 4;
    if (expert_bits != 32 && a.what == "all")
      return InvalidArgument(
          "train: --what all trains the experts: they must stay fp32 "
          "(--quantize none)");
    // Where the weights come from: the latest checkpoint (resume) or the model.
    std::string source = a.model.empty() ? default_model_dir() : a.model;
    if (!a.checkpoint_dir.empty()) {
      const auto saved = list_checkpoints(a.checkpoint_dir);
      if (!saved.empty() && !a.resume)
        return InvalidArgument("train: " + a.checkpoint_dir + " already holds checkpoints (up to " +
                               "step " + std::to_string(saved.back().first) +
                               "): pass --resume to continue that run, or another " +
                               "--checkpoint-dir");
      if (!saved.empty()) {
        source = a.checkpoint_dir;
        is_resume = true;
      }
    }
    if (!std::filesystem::exists(source))
      return NotFound("train: no model at " + source +
                      (a.model.empty() ? " (the embedded default model; build it with "
                                         "`bash launch/train_default.sh`, or pass --model DIR)"
                                       : ""));
    SY_ASSIGN_OR_RETURN(HfCheckpoint opened, HfCheckpoint::Open(source));
    ck = std::make_unique<HfCheckpoint>(std::move(opened));
    SY_ASSIGN_OR_RETURN(Qwen2MoeConfig cfg, Qwen2MoeConfig::from_checkpoint(*ck));
    router = a.router.empty() ? cfg.router : a.router;
    if (is_resume) {
      SY_ASSIGN_OR_RETURN(resumed, read_train_state(ck->dir(), &optimizer_step));
      const json want = RunSettings(a, router);
      for (auto& [k, v] : want.items())
        if (resumed.run.value(k, json()) != v)
          return InvalidArgument("train --resume: " + ck->dir() + " was saved by a run with " + k +
                                 " = " + resumed.run.value(k, json()).dump() + ", this run has " +
                                 v.dump());
      if (cfg.num_experts % P != 0)
        return InvalidArgument("train --resume: " + ck->dir() + " was saved with " +
                               std::to_string(resumed.world_size) + " ranks; its " +
                               std::to_string(cfg.num_experts) + " experts do not split over " +
                               std::to_string(P) + " ranks (use a P that divides " +
                               std::to_string(cfg.num_experts) + ")");
      if (resumed.step >= a.steps)
        return InvalidArgument("train --resume: " + ck->dir() + " is at step " +
                               std::to_string(resumed.step) + ", not below --steps " +
                               std::to_string(a.steps));
    }
    if (!a.token_file.empty()) {
      SY_ASSIGN_OR_RETURN(ids, read_token_file(a.token_file));
    } else {
      SY_ASSIGN_OR_RETURN(auto tok, load_tokenizer(ck->dir()));
      const std::string data_dir = a.data_dir.empty() ? default_data_dir() : a.data_dir;
      SY_ASSIGN_OR_RETURN(std::string text, load_corpus(a.corpus, data_dir));
      ids = tok->encode(text);
    }
    if (static_cast<int64_t>(ids.size()) < a.eval_tokens + a.seq_len)
      return InvalidArgument("train: " + std::to_string(ids.size()) +
                             " tokens are fewer than --eval-tokens + --seq-len");
    Qwen2MoeOptions opt;
    opt.train = a.what == "all" ? Qwen2MoeTrain::kAll : Qwen2MoeTrain::kRouters;
    opt.router = "";  // the checkpoint's: the teacher of a replaced router (below)
    opt.seed = a.seed;
    opt.expert_bits = expert_bits;
    opt.capacity_factor = a.capacity_factor;
    opt.exec = make_context("cpu", a.deterministic);
    SY_ASSIGN_OR_RETURN(model, Qwen2MoeModel::load(*ck, opt, &comm));
    for (int32_t id : ids)
      if (id < 0 || id >= model->config().vocab_size)
        return InvalidArgument("train: token id " + std::to_string(id) +
                               " outside the model's vocabulary");
    return Status::Ok();
  }();
  if (int code = agree_status(comm, st, "train")) return code;

  const int64_t L = a.seq_len, n_eval = a.eval_tokens;
  const int64_t n_train = static_cast<int64_t>(ids.size()) - n_eval;
  const int64_t train_seqs = n_train / L;
  DataOrder order(train_seqs, is_resume ? resumed.data_seed : a.data_seed);
  auto sequence = [&](int64_t position) {  // the training sequence at a data position
    const int64_t b = order.at(position) * L;
    return std::vector<int32_t>(ids.begin() + b, ids.begin() + b + L);
  };
  // Held-out: the last n_eval tokens in sequences of L, dealt round-robin to the ranks (empty
  // padding where a rank has one fewer).
  std::vector<std::vector<int32_t>> eval_seqs;
  const int64_t n_eval_seqs = std::max<int64_t>(1, n_eval / L);
  for (int64_t k = 0; k < (n_eval_seqs + P - 1) / P; ++k) {
    const int64_t g = k * P + me;
    if (g >= n_eval_seqs) {
      eval_seqs.emplace_back();
      continue;
    }
    const int64_t b = n_train + g * L;
    const int64_t e = std::min<int64_t>(static_cast<int64_t>(ids.size()), b + L);
    eval_seqs.emplace_back(ids.begin() + b, ids.begin() + e);
  }

  // A replaced router starts from the checkpoint's gate: distilled on this rank's first
  // training sequences (real activations), or hybrid set equal to a linear gate; --no-distill
  // starts it at random.
  if (!is_resume && router != model->config().router) {
    const std::string teacher = model->config().router;
    if (a.distill) {
      std::vector<std::vector<int32_t>> seqs;
      const int64_t n = std::max<int64_t>(1, (a.distill_cfg.max_tokens + L - 1) / L);
      for (int64_t b = 0; b < n; ++b) seqs.push_back(sequence(b * P + me));
      auto rep = warm_start_routers(*model, &comm, router, a.seed, 0, seqs, a.distill_cfg);
      if (int code = agree_status(comm, rep.status(), "train: router warm start")) return code;
      print_distill_report(*rep, &comm);
    } else {
      auto old = model->replace_routers(router, a.seed, 0);
      if (int code = agree_status(comm, old.status(), "train: --router")) return code;
      if (me == 0)
        std::printf("replaced the %s gates by fresh %s routers (no warm start)\n", teacher.c_str(),
                    router.c_str());
    }
  }

  AdamWConfig ac;
  ac.lr = a.lr;
  ac.warmup_steps = a.warmup;
  ac.total_steps = a.steps;
  ac.weight_decay = a.weight_decay;
  ac.clip_norm = a.clip;
  st = ac.validate();
  if (int code = agree_status(comm, st, "train: optimizer")) return code;
  Trainer trainer(*model, &comm, ac);
  {
    auto policy = parse_nonfinite_policy(a.on_nonfinite);
    if (int code = agree_status(comm, policy.status(), "train: --on-nonfinite")) return code;
    trainer.set_nonfinite_policy(*policy, a.max_skips);
  }
  const double aux_coef = a.aux_loss >= 0 ? a.aux_loss : model->config().router_aux_loss_coef;
  trainer.set_router_aux_loss(aux_coef);
  TrainState state;
  state.run = RunSettings(a, router);
  state.data_seed = a.data_seed;
  state.world_size = P;
  if (is_resume) {
    st = load_optimizer_state(ck->dir(), *model, optimizer_step, &trainer.optimizer());
    if (int code = agree_status(comm, st, "train --resume: optimizer state")) return code;
    state.step = resumed.step;
    state.data_position = resumed.data_position;
    state.data_seed = resumed.data_seed;
  }
  const Qwen2MoeConfig& c = model->config();
  if (me == 0) {
    std::printf(
        "switchyard train: %s, %d rank%s, what=%s, router %s; %lld layers, %lld experts "
        "(%lld per rank, %s), top-%lld; %lld training tokens (%lld sequences of %lld), %lld "
        "held out; batch %lld x %d ranks x %lld tokens per step\n",
        ck->dir().c_str(), P, P == 1 ? "" : "s", a.what.c_str(), router.c_str(),
        (long long)c.num_hidden_layers, (long long)c.num_experts, (long long)(c.num_experts / P),
        a.quantize == "none" ? "fp32" : a.quantize.c_str(), (long long)c.num_experts_per_tok,
        (long long)n_train, (long long)train_seqs, (long long)L, (long long)n_eval,
        (long long)a.batch, P, (long long)L);
    if (is_resume)
      std::printf(
          "resuming at step %lld (data position %lld, optimizer step %lld) from %s, saved by %d "
          "rank%s%s\n",
          (long long)state.step, (long long)state.data_position, (long long)optimizer_step,
          ck->dir().c_str(), resumed.world_size, resumed.world_size == 1 ? "" : "s",
          resumed.world_size == P ? "" : " (experts regrouped by global id)");
    std::fflush(stdout);
  }
  auto eval = [&](int64_t step) -> int {
    auto loss = trainer.eval(eval_seqs);
    if (int code = agree_status(comm, loss.status(), "train: eval")) return code;
    if (me == 0) {
      std::printf("eval loss %.4f (perplexity %.2f) at step %lld\n", *loss, std::exp(*loss),
                  (long long)step);
      std::fflush(stdout);
    }
    return 0;
  };
  int64_t last_saved = is_resume ? state.step : -1;
  auto save = [&]() -> int {
    SaveRequest req;
    req.root = a.checkpoint_dir;
    req.model = model.get();
    req.optimizer = &trainer.optimizer();
    req.state = state;
    req.source = ck.get();
    req.keep_last = a.keep_last;
    const auto t = std::chrono::steady_clock::now();
    st = save_checkpoint(req, &comm);
    if (int code = agree_status(comm, st, "train: checkpoint")) return code;
    last_saved = state.step;
    if (me == 0) {
      std::printf("saved %s/%s in %.2f s\n", a.checkpoint_dir.c_str(),
                  checkpoint_folder_name(state.step).c_str(),
                  std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count());
      std::fflush(stdout);
    }
    return 0;
  };

  std::vector<MoeLayer*> moe;
  for (MoeLayer* l : model->moe_layers())
    if (l) moe.push_back(l);
  RoutingCollector reports(moe, c.to_json().dump(), comm, a.out);
  int64_t report_step = -1;  // >= 0 while a logged step runs: its forwards go into the reports
  trainer.set_after_forward([&] {
    if (report_step >= 0) reports.add_step(report_step);
  });
  if (int code = eval(state.step)) return code;
  const int64_t tokens_per_step = a.batch * P * (L - 1);
  const int64_t first_step = state.step;
  const auto t0 = std::chrono::steady_clock::now();
  for (int64_t s = first_step; s < a.steps; ++s) {
    std::vector<std::vector<int32_t>> mine;
    for (int64_t b = 0; b < a.batch; ++b)
      mine.push_back(sequence(state.data_position + b * P + me));
    for (MoeLayer* l : moe) l->reset_counters();
    const bool logged = (s + 1) % a.log_every == 0 || s + 1 == a.steps;
    report_step = logged && !a.out.empty() ? s : -1;
    inject_process_faults(me, s);  // SY_FAULT=kill|hang|exit|...@rank=r,step=s
    trainer.set_step_index(s);
    auto r = trainer.step(mine);
    if (int code = agree_status(comm, r.status(), "train: step")) return code;
    // A skipped step (non-finite values, --on-nonfinite skip) still consumes its batch.
    state.step = s + 1;
    state.data_position += a.batch * P;
    if (r->skipped && me == 0) {
      std::printf("step %lld/%lld skipped: %s\n", (long long)(s + 1), (long long)a.steps,
                  r->nonfinite.c_str());
      std::fflush(stdout);
    }
    if (logged && !r->skipped) {
      const StepRouting routing = GlobalRouting(*model, comm, s);
      if (me == 0) {
        const double el =
            std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        const double done = static_cast<double>(s + 1 - first_step);
        std::printf(
            "step %lld/%lld loss %.4f aux %.4f lr %.2e grad-norm %.3f%s drops %.2f%% imbalance "
            "%.2f %.0f tok/s ETA %.0fs\n",
            (long long)(s + 1), (long long)a.steps, r->loss, r->aux_loss, r->lr, r->grad_norm,
            r->clip < 1 ? " (clipped)" : "", 100.0 * routing.drop_fraction, routing.imbalance,
            done * static_cast<double>(tokens_per_step) / el,
            el / done * static_cast<double>(a.steps - s - 1));
        std::fflush(stdout);
      }
    }
    if (a.eval_every > 0 && (s + 1) % a.eval_every == 0 && s + 1 < a.steps)
      if (int code = eval(s + 1)) return code;
    if (a.save_every > 0 && (s + 1) % a.save_every == 0 && s + 1 < a.steps)
      if (int code = save()) return code;
  }
  if (int code = eval(a.steps)) return code;
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (me == 0)
    std::printf("trained %lld steps (%lld skipped) in %.1f s: %.0f tok/s over %d rank%s\n",
                (long long)(a.steps - first_step), (long long)trainer.skipped_steps(), secs,
                static_cast<double>((a.steps - first_step) * tokens_per_step) / secs, P,
                P == 1 ? "" : "s");
  if (!a.checkpoint_dir.empty() && last_saved != state.step)
    if (int code = save()) return code;
  if (!a.out.empty()) reports.finish((a.steps - first_step) * tokens_per_step, secs, "");
  return 0;
}

}  // namespace

void add_train_command(CLI::App& app) {
  auto a = std::make_shared<TrainArgs>();
  CLI::App* cmd = app.add_subcommand(
      "train",
      "Fine-tune the routers (or train everything) of a Qwen2-MoE checkpoint across the "
      "MPI ranks: data + expert parallel, AdamW, checkpoints that resume bitwise");
  cmd->add_option("--model", a->model,
                  "Hugging Face checkpoint folder (qwen2_moe) or a checkpoint folder; default: "
                  "the embedded default model");
  cmd->add_option("--what", a->what, "routers (everything else frozen) | all")
      ->check(CLI::IsMember({"routers", "all"}));
  cmd->add_option("--router", a->router,
                  "replace every MoE layer's gate with a router of this kind");
  cmd->add_option("--steps", a->steps, "optimizer steps of the whole run (resume included)");
  cmd->add_option("--checkpoint-dir", a->checkpoint_dir,
                  "checkpoint folder (step-N sub-folders; itself a model folder)");
  cmd->add_option("--save-every", a->save_every, "save every K steps (and always at the end)");
  cmd->add_flag("--resume", a->resume,
                "continue from the latest complete checkpoint in --checkpoint-dir (start fresh "
                "when it holds none)");
  cmd->add_option("--keep-last", a->keep_last, "checkpoints kept (0: all)");
  cmd->add_option("--seq-len", a->seq_len, "tokens per sequence");
  cmd->add_option("--batch", a->batch, "sequences per rank per step");
  cmd->add_option("--lr", a->lr, "peak learning rate (AdamW, cosine decay to 0.1x)");
  cmd->add_option("--warmup", a->warmup, "linear warm-up steps");
  cmd->add_option("--weight-decay", a->weight_decay, "AdamW weight decay (matrices)");
  cmd->add_option("--clip", a->clip, "global gradient-norm clip (<= 0: none)");
  cmd->add_option("--aux-loss", a->aux_loss,
                  "Switch load-balancing loss coefficient (default: the checkpoint's "
                  "router_aux_loss_coef; 0: none)");
  cmd->add_option("--eval-every", a->eval_every, "held-out loss every M steps (0: start and end)");
  cmd->add_option("--eval-tokens", a->eval_tokens, "tokens held out at the end of the data");
  cmd->add_option("--corpus", a->corpus, "moby_dick | sotu | excerpt | a text file");
  cmd->add_option("--token-file", a->token_file, "a binary token file instead of --corpus");
  cmd->add_option("--data-dir", a->data_dir, "data folder (default: $SY_DATA_DIR or data/)");
  cmd->add_option("--data-seed", a->data_seed, "seed of the data order");
  cmd->add_option("--seed", a->seed, "seed of a replaced router");
  cmd->add_option("--quantize", a->quantize, "routed experts: none | int8 | int4 (--what routers)")
      ->check(CLI::IsMember({"none", "int8", "int4"}));
  cmd->add_option("--capacity-factor", a->capacity_factor, "expert capacity (<= 0: dropless)");
  cmd->add_option("--out", a->out, "per-rank load reports (switchyard report reads them)");
  cmd->add_option("--log-every", a->log_every, "progress line and load report every N steps");
  cmd->add_flag("--distill,!--no-distill", a->distill,
                "warm-start a replaced router by distillation from the checkpoint's gate "
                "(default on)");
  cmd->add_option("--distill-iters", a->distill_cfg.iterations, "Adam steps per layer");
  cmd->add_option("--distill-lr", a->distill_cfg.lr, "distillation learning rate");
  cmd->add_option("--distill-tokens", a->distill_cfg.max_tokens,
                  "router inputs per rank to distill on");
  cmd->add_option("--on-nonfinite", a->on_nonfinite,
                  "NaN/Inf in logits, loss or gradients on any rank: skip the step on every "
                  "rank, or stop the job (exit 24)")
      ->check(CLI::IsMember({"skip", "stop"}));
  cmd->add_option("--max-skips", a->max_skips,
                  "stop after this many skipped steps in a row (0: "
                  "no limit)");
  cmd->add_flag("--deterministic", a->deterministic, "row-stable GEMMs");
  cmd->callback([a] { set_exit_code(RunTrain(*a)); });
}

}  // namespace sy::launch
