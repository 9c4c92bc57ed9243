// `switchyard train`: router fine-tuning (--what routers) or full training (--what all) of a
// Qwen2-MoE checkpoint across the MPI ranks, data parallel (each rank its own sequences) and
// expert parallel (each rank its E/P experts), with AdamW (runtime/train/trainer.h).
//
//   mpirun -np 4 switchyard train --model DIR --what routers --router mlp_hadamard --steps 50
//
// Data: the corpus (--corpus, default sotu) through the checkpoint's tokenizer, or a token file;
// the last --eval-tokens tokens are held out. Step s, rank r takes global sequences
// (s * B + b) * P + r for b < B (--batch), sequences of --seq-len tokens, wrapping around the
// training tokens. Prints `eval loss <value>` before the first step and every --eval-every
// steps, and a progress line per step on rank 0.
//
// Not yet (issue 5): checkpoints and --resume, the distillation warm start of a replaced
// router, the non-finite policy, load reports per logged step.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "comm/mpi_communicator.h"
#include "launch/commands.h"
#include "launch/infer_run.h"
#include "runtime/data/corpus.h"
#include "runtime/data/token_file.h"
#include "runtime/data/tokenizer.h"
#include "runtime/io/hf_checkpoint.h"
#include "runtime/kernels/cpu_kernels.h"
#include "runtime/model/qwen2_moe.h"
#include "runtime/train/trainer.h"

namespace sy::launch {
namespace {

struct TrainArgs {
  std::string model;
  std::string what = "routers";
  std::string router;  // empty: keep the checkpoint's (linear) gate
  int64_t steps = 20;
  int64_t seq_len = 128;
  int64_t batch = 2;  // sequences per rank per step
  double lr = 1e-3;
  int64_t warmup = 0;
  int64_t eval_every = 10;
  int64_t eval_tokens = 8192;
  std::string corpus = "sotu";
  std::string token_file;
  std::string data_dir;
  uint64_t seed = 1234;
  bool deterministic = false;
};

int RunTrain(const TrainArgs& a) {
  MpiRuntime mpi(nullptr, nullptr);
  MpiCommunicator comm;
  const int me = comm.rank(), P = comm.size();
  set_deterministic_gemm(a.deterministic);
  std::vector<int32_t> ids;
  std::unique_ptr<Qwen2MoeModel> model;
  Status st = [&]() -> Status {
    if (a.model.empty())
      return InvalidArgument(
          "train: --model DIR is required (the embedded default model is "
          "not built yet)");
    if (a.what != "routers" && a.what != "all")
      return InvalidArgument("train: --what must be routers or all");
    if (a.steps < 1 || a.seq_len < 2 || a.batch < 1 || a.eval_every < 0 || a.eval_tokens < 2)
      return InvalidArgument("train: --steps, --batch >= 1, --seq-len >= 2, --eval-tokens >= 2");
    SY_ASSIGN_OR_RETURN(HfCheckpoint ck, HfCheckpoint::Open(a.model));
    if (!a.token_file.empty()) {
      SY_ASSIGN_OR_RETURN(ids, read_token_file(a.token_file));
    } else {
      SY_ASSIGN_OR_RETURN(auto tok, load_tokenizer(a.model));
      const std::string data_dir = a.data_dir.empty() ? default_data_dir() : a.data_dir;
      SY_ASSIGN_OR_RETURN(std::string text, load_corpus(a.corpus, data_dir));
      ids = tok->encode(text);
    }
    if (static_cast<int64_t>(ids.size()) < a.eval_tokens + a.seq_len)
      return InvalidArgument("train: " + std::to_string(ids.size()) +
                             " tokens are fewer than --eval-tokens + --seq-len");
    Qwen2MoeOptions opt;
    opt.train = a.what == "all" ? Qwen2MoeTrain::kAll : Qwen2MoeTrain::kRouters;
    if (!a.router.empty()) opt.router = a.router;
    opt.seed = a.seed;
    SY_ASSIGN_OR_RETURN(model, Qwen2MoeModel::load(ck, opt, &comm));
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
  auto sequence = [&](int64_t g) {  // global training sequence g (wrapping)
    const int64_t b = (g % train_seqs) * L;
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

  AdamWConfig ac;
  ac.lr = a.lr;
  ac.warmup_steps = a.warmup;
  ac.total_steps = a.steps;
  st = ac.validate();
  if (int code = agree_status(comm, st, "train: optimizer")) return code;
  Trainer trainer(*model, &comm, ac);
  if (me == 0) {
    const Qwen2MoeConfig& c = model->config();
    std::printf(
        "switchyard train: %s, %d rank%s, what=%s, router %s; %lld layers, %lld experts "
        "(%lld per rank), top-%lld; %lld training tokens (%lld sequences of %lld), %lld "
        "held out; batch %lld x %d ranks x %lld tokens per step\n",
        a.model.c_str(), P, P == 1 ? "" : "s", a.what.c_str(),
        a.router.empty() ? "linear (the checkpoint's)" : a.router.c_str(),
        (long long)c.num_hidden_layers, (long long)c.num_experts, (long long)(c.num_experts / P),
        (long long)c.num_experts_per_tok, (long long)n_train, (long long)train_seqs, (long long)L,
        (long long)n_eval, (long long)a.batch, P, (long long)L);
    std::fflush(stdout);
  }
  auto eval = [&](int64_t step) -> int {
    auto loss = trainer.eval(eval_seqs);
    if (int code = agree_status(comm, loss.status(), "train: eval")) return code;
    if (me == 0) {
      std::printf("eval loss %.4f (perplexity %.1f) at step %lld\n", *loss, std::exp(*loss),
                  (long long)step);
      std::fflush(stdout);
    }
    return 0;
  };
  if (int code = eval(0)) return code;
  const int64_t tokens_per_step = a.batch * P * (L - 1);
  const auto t0 = std::chrono::steady_clock::now();
  for (int64_t s = 0; s < a.steps; ++s) {
    std::vector<std::vector<int32_t>> mine;
    for (int64_t b = 0; b < a.batch; ++b) mine.push_back(sequence((s * a.batch + b) * P + me));
    auto r = trainer.step(mine);
    if (int code = agree_status(comm, r.status(), "train: step")) return code;
    if (me == 0) {
      const double el =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      const double tps = static_cast<double>((s + 1) * tokens_per_step) / el;
      std::printf("step %lld/%lld loss %.4f lr %.2e grad-norm %.3f%s %.0f tok/s ETA %.0fs\n",
                  (long long)(s + 1), (long long)a.steps, r->loss, r->lr, r->grad_norm,
                  r->clip < 1 ? " (clipped)" : "", tps,
                  el / static_cast<double>(s + 1) * static_cast<double>(a.steps - s - 1));
      std::fflush(stdout);
    }
    if (a.eval_every > 0 && (s + 1) % a.eval_every == 0 && s + 1 < a.steps)
      if (int code = eval(s + 1)) return code;
  }
  if (int code = eval(a.steps)) return code;
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (me == 0)
    std::printf("trained %lld steps in %.1f s: %.0f tok/s over %d rank%s\n", (long long)a.steps,
                secs, static_cast<double>(a.steps * tokens_per_step) / secs, P, P == 1 ? "" : "s");
  return 0;
}

}  // namespace

void add_train_command(CLI::App& app) {
  auto a = std::make_shared<TrainArgs>();
  CLI::App* cmd = app.add_subcommand(
      "train",
      "Fine-tune the routers (or train everything) of a Qwen2-MoE checkpoint across the "
      "MPI ranks: data + expert parallel, AdamW");
  cmd->add_option("--model", a->model, "Hugging Face checkpoint folder (qwen2_moe)");
  cmd->add_option("--what", a->what, "routers (everything else frozen) | all")
      ->check(CLI::IsMember({"routers", "all"}));
  cmd->add_option("--router", a->router,
                  "replace every MoE layer's gate with a fresh router of this kind");
  cmd->add_option("--steps", a->steps, "optimizer steps");
  cmd->add_option("--seq-len", a->seq_len, "tokens per sequence");
  cmd->add_option("--batch", a->batch, "sequences per rank per step");
  cmd->add_option("--lr", a->lr, "peak learning rate (AdamW, cosine decay to 0.1x)");
  cmd->add_option("--warmup", a->warmup, "linear warm-up steps");
  cmd->add_option("--eval-every", a->eval_every, "held-out loss every M steps (0: start and end)");
  cmd->add_option("--eval-tokens", a->eval_tokens, "tokens held out at the end of the data");
  cmd->add_option("--corpus", a->corpus, "moby_dick | sotu | excerpt | a text file");
  cmd->add_option("--token-file", a->token_file, "a binary token file instead of --corpus");
  cmd->add_option("--data-dir", a->data_dir, "data folder (default: $SY_DATA_DIR or data/)");
  cmd->add_option("--seed", a->seed, "seed of a replaced router");
  cmd->add_flag("--deterministic", a->deterministic, "row-stable GEMMs");
  cmd->callback([a] { set_exit_code(RunTrain(*a)); });
}

}  // namespace sy::launch
