// `switchyard study`: the router comparison of "Optimizing MoE Routers" in one command. For
// every router of --routers, on the same model, data and ranks:
//
//   1. load the model (routed experts quantized as --quantize) with its own gate;
//   2. replace every MoE gate by the router and warm-start it by distillation from the gate
//      (runtime/train/distill.h; the gate itself and routers without a gradient are kept as
//      they come);
//   3. fine-tune the routers only, experts frozen, --steps AdamW steps (the trainer of
//      `switchyard train --what routers`, same data order), the loss curve kept;
//   4. held-out loss with the gate (once per study), after the warm start and after
//      fine-tuning;
//   5. one measured inference pass over the held-out sequences: per-rank load reports
//      (routers/<name>/report) and a routing trace (routers/<name>/trace), whole-model tokens/s;
//   6. router latency on the pass's real router inputs against the bare GEMM of the same shapes;
//   7. the figures (launch/study_render.h): load, entropy, utilization, drops at capacity
//      factors 1.0 and 1.25 (the trace replayed through the runtime's capacity plan,
//      runtime/project/projection.h), traffic between ranks, ranks per token, exchange share.
//
// Each router's result is written atomically to routers/<name>/result.json when it finishes;
// a rerun skips routers whose result carries the same settings hash. The folder belongs to one
// model: settings.json names it, and a study of another model in it is refused (exit 21).
// study.json (proto/study.proto), study.md and study.html are rewritten at the end.
//
// Any model of the Model interface (runtime/model/model.h): Qwen2-MoE decoders (next-token
// loss), BERT-MoE encoders and dense BERTs upcycled on load (--upcycle-experts; their gate is
// then a fresh linear router), whose losses are the masked-LM loss (launch/train_bert.h) and
// whose corpus sequences are framed [CLS] ... [SEP] (token files are taken as given).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include <google/protobuf/util/json_util.h>

#include "comm/fault.h"
#include "comm/mpi_communicator.h"
#include "launch/commands.h"
#include "launch/config.h"
#include "launch/config_cli.h"
#include "launch/infer_run.h"
#include "launch/study_render.h"
#include "launch/trace_run.h"
#include "launch/train_bert.h"
#include "launch/train_progress.h"
#include "proto/study.pb.h"
#include "routers/metrics.h"
#include "routers/registry.h"
#include "runtime/backend/ops.h"
#include "runtime/core/file_input.h"
#include "runtime/core/rng.h"
#include "runtime/core/version.h"
#include "runtime/data/corpus.h"
#include "runtime/data/sequence_shard.h"
#include "runtime/data/token_file.h"
#include "runtime/data/tokenizer.h"
#include "runtime/io/hf_checkpoint.h"
#include "runtime/model/bert_moe.h"
#include "runtime/model/model.h"
#include "runtime/model/qwen2_moe.h"
#include "runtime/project/projection.h"
#include "runtime/report/cluster_report.h"
#include "runtime/report/compare.h"
#include "runtime/report/load_report.h"
#include "runtime/report/report_io.h"
#include "runtime/trace/trace_format.h"
#include "runtime/train/distill.h"
#include "runtime/train/trainer.h"

namespace sy::launch {
namespace {
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// The six routers of the paper, in its order.
const std::vector<std::string> kPaperRouters = {"linear", "attention",    "mlp",
                                                "hybrid", "mlp_hadamard", "hash"};

StatusOr<std::vector<std::string>> ResolveRouters(const std::string& list) {
  if (list == "paper") return kPaperRouters;
  const std::vector<std::string> known = router_names();
  if (list == "all") return known;
  std::vector<std::string> out;
  std::stringstream ss(list);
  std::string name;
  while (std::getline(ss, name, ',')) {
    if (name.empty()) continue;
    if (std::find(known.begin(), known.end(), name) == known.end()) {
      std::string names;
      for (const auto& k : known) names += (names.empty() ? "" : ", ") + k;
      return InvalidArgument("study: unknown router '" + name + "' in --routers (known: " + names +
                             "; or paper, all)");
    }
    if (std::find(out.begin(), out.end(), name) != out.end())
      return InvalidArgument("study: router '" + name + "' is listed twice in --routers");
    out.push_back(name);
  }
  if (out.empty()) return InvalidArgument("study: --routers names no router");
  return out;
}

std::string Hex(uint64_t h) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h));
  return buf;
}

// study.json and the progress file: a few hundred KiB for hundreds of routers.
constexpr int64_t kMaxStudyFileBytes = int64_t{256} << 20;

template <typename Msg>
Status ReadJsonMessage(const std::string& path, Msg* msg) {
  SY_ASSIGN_OR_RETURN(std::string text, read_file_bounded(path, kMaxStudyFileBytes, "study"));
  google::protobuf::util::JsonParseOptions opt;
  opt.ignore_unknown_fields = true;
  const auto st = google::protobuf::util::JsonStringToMessage(text, msg, opt);
  if (!st.ok()) return BadInput(path + ": not a study file (" + std::string(st.message()) + ")");
  return Status::Ok();
}

Status WriteJsonMessage(const std::string& path, const google::protobuf::Message& msg) {
  SY_ASSIGN_OR_RETURN(std::string text, report_message_to_json(msg));
  return write_file_atomic(path, text);
}

// The model as the study loads it (after upcycling), read from its config.json.
struct StudyShape {
  bool encoder = false;  // BERT: masked LM, [CLS] ... [SEP]
  bool upcycled = false;
  int64_t num_experts = 0, top_k = 0, hidden = 0, expert_hidden = 0, vocab = 0, layers = 0;
  int64_t moe_layers = 0;
  double aux_loss_coef = 0;  // the checkpoint's balancing coefficient
};

// ModelOptions shared by the folder check and every router's load.
ModelOptions StudyModelOptions(const switchyard::StudyConfig& s) {
  ModelOptions opt;
  opt.train = ModelTrain::kRouters;
  opt.expert_bits = s.quantize() == "int8" ? 8 : s.quantize() == "int4" ? 4 : 32;
  opt.capacity_factor = s.capacity_factor();
  opt.seed = s.seed();
  opt.upcycle_experts = s.upcycle_experts();
  opt.moe_every = s.moe_every();
  opt.experts_top_k = s.experts_top_k();
  opt.upcycle_noise = s.upcycle_noise();
  opt.balance_rate = s.balance_rate();
  return opt;
}

StatusOr<StudyShape> ReadShape(const switchyard::StudyConfig& s, const HfCheckpoint& ck) {
  const std::string type = ck.config().value("model_type", std::string("?"));
  StudyShape sh;
  // The sizes both configs name alike (Qwen2MoeConfig, BertMoeConfig) and the MoE layer count.
  auto fill = [&sh](const auto& c, const auto& is_moe_layer) {
    sh.num_experts = c.num_experts;
    sh.top_k = c.num_experts_per_tok;
    sh.hidden = c.hidden_size;
    sh.expert_hidden = c.moe_intermediate_size;
    sh.vocab = c.vocab_size;
    sh.layers = c.num_hidden_layers;
    for (int64_t l = 0; l < c.num_hidden_layers; ++l) sh.moe_layers += is_moe_layer(l);
  };
  const bool upcycle_opts = s.upcycle_experts() != 0 || s.moe_every() != 0 ||
                            s.experts_top_k() != 0 || s.upcycle_noise() != 0;
  if (type == "qwen2_moe") {
    if (upcycle_opts)
      return InvalidArgument(
          "study: --upcycle-experts, --moe-every, --experts-top-k and "
          "--upcycle-noise apply to BERT checkpoints, not " +
          ck.dir() + " (qwen2_moe)");
    SY_ASSIGN_OR_RETURN(Qwen2MoeConfig c, Qwen2MoeConfig::from_checkpoint(ck));
    fill(c, [&c](int64_t l) { return c.is_sparse(l); });
    sh.aux_loss_coef = c.router_aux_loss_coef;
    return sh;
  }
  if (type != "bert" && type != "bert_moe")
    return InvalidArgument("study: " + ck.dir() + " is a " + type +
                           " checkpoint; study runs on qwen2_moe, bert_moe and (upcycled) bert");
  SY_ASSIGN_OR_RETURN(BertMoeConfig c, BertMoeConfig::from_checkpoint(ck));
  sh.encoder = true;
  if (type == "bert") {
    if (s.upcycle_experts() <= 0)
      return InvalidArgument("study: " + ck.dir() +
                             " is a dense BERT (no routers): pass --upcycle-experts E to upcycle "
                             "it on load (and --moe-every, --experts-top-k)");
    sh.upcycled = true;
    c.num_experts = s.upcycle_experts();
    c.moe_every = s.moe_every() > 0 ? s.moe_every() : 1;
    c.num_experts_per_tok = s.experts_top_k() > 0 ? s.experts_top_k() : 1;
    c.moe_intermediate_size = c.intermediate_size;
  } else {
    if (s.upcycle_experts() != 0 || s.moe_every() != 0 || s.upcycle_noise() != 0)
      return InvalidArgument("study: " + ck.dir() +
                             " is a bert_moe checkpoint: --upcycle-experts, --moe-every and "
                             "--upcycle-noise apply to a dense bert only");
    if (s.experts_top_k() > 0) c.num_experts_per_tok = s.experts_top_k();
  }
  fill(c, [&c](int64_t l) { return c.is_moe_layer(l); });
  sh.aux_loss_coef = 0.01;  // BERT configs carry none: Switch Transformer's, as train does
  return sh;
}

// What the study runs on, the same on every rank.
struct StudyData {
  std::unique_ptr<HfCheckpoint> ck;
  StudyShape shape;
  std::vector<int32_t> ids;
  int64_t n_train = 0;
  // Held-out sequences of seq_len: global sequence g goes to rank g % P; the count is a
  // multiple of P so every rank runs the same number of forwards.
  std::vector<std::vector<int32_t>> eval_mine;
  std::vector<int64_t> eval_first_index;  // global token index of each of eval_mine
};

Status PrepareData(const switchyard::StudyConfig& s, int me, int P, StudyData* d) {
  const std::string source = s.model().empty() ? default_model_dir() : s.model();
  if (!fs::exists(source))
    return NotFound("study: no model at " + source +
                    (s.model().empty() ? " (the embedded default model; build it with `bash "
                                         "launch/train_default.sh --quick`, or pass --model DIR)"
                                       : ""));
  SY_ASSIGN_OR_RETURN(HfCheckpoint opened, HfCheckpoint::Open(source));
  d->ck = std::make_unique<HfCheckpoint>(std::move(opened));
  SY_ASSIGN_OR_RETURN(d->shape, ReadShape(s, *d->ck));
  if (d->shape.num_experts % P != 0)
    return InvalidArgument("study: the model's " + std::to_string(d->shape.num_experts) +
                           " experts do not split over " + std::to_string(P) + " ranks");
  const int64_t L = s.seq_len();
  if (!s.token_file().empty()) {
    SY_ASSIGN_OR_RETURN(d->ids, read_token_file(s.token_file()));
  } else {
    SY_ASSIGN_OR_RETURN(auto tok, load_tokenizer(d->ck->dir()));
    const std::string data_dir = s.data_dir().empty() ? default_data_dir() : s.data_dir();
    SY_ASSIGN_OR_RETURN(std::string text, load_corpus(s.corpus(), data_dir));
    d->ids = tok->encode(text);
    // An encoder reads [CLS] ... [SEP] sequences, as infer frames them: every sequence of L
    // (training and held out) starts at a multiple of L of the framed stream.
    const int32_t cls = tok->token_id("[CLS]"), sep = tok->token_id("[SEP]");
    if (d->shape.encoder && cls >= 0 && sep >= 0 && L >= 3)
      d->ids = frame_sequences(d->ids, L, cls, sep);
  }
  const int64_t n_eval_seqs = (s.eval_tokens() / L) / P * P;
  if (n_eval_seqs < P)
    return InvalidArgument("study: --eval-tokens " + std::to_string(s.eval_tokens()) +
                           " holds fewer than one sequence of --seq-len per rank");
  d->n_train = static_cast<int64_t>(d->ids.size()) - n_eval_seqs * L;
  if (d->n_train < L * s.batch() * P)
    return InvalidArgument("study: " + std::to_string(d->ids.size()) +
                           " tokens leave too few for training after --eval-tokens");
  for (int32_t id : d->ids)
    if (id < 0 || id >= d->shape.vocab)
      return InvalidArgument("study: token id " + std::to_string(id) +
                             " outside the model's vocabulary");
  for (int64_t g = me; g < n_eval_seqs; g += P) {
    const int64_t b = d->n_train + g * L;
    d->eval_mine.emplace_back(d->ids.begin() + b, d->ids.begin() + b + L);
    d->eval_first_index.push_back(b);
  }
  return Status::Ok();
}

switchyard::StudySettings MakeSettings(const switchyard::StudyConfig& s, const StudyData& d,
                                       int P) {
  switchyard::StudySettings st;
  st.set_model(d.ck->dir());
  std::string config = d.ck->config().dump();
  if (d.shape.upcycled) {  // the upcycled model is another model than its dense source
    config += "|upcycled " + std::to_string(s.upcycle_experts()) + " " +
              std::to_string(s.moe_every()) + " " + std::to_string(s.experts_top_k()) + " " +
              std::to_string(s.upcycle_noise());
    st.set_upcycle_experts(d.shape.num_experts);
    st.set_moe_every(s.moe_every() > 0 ? s.moe_every() : 1);
    st.set_experts_top_k(d.shape.top_k);
    st.set_upcycle_noise(s.upcycle_noise());
  } else if (d.shape.encoder && s.experts_top_k() > 0) {  // top-k changes the model too
    config += "|top-k " + std::to_string(s.experts_top_k());
    st.set_experts_top_k(s.experts_top_k());
  }
  st.set_model_config_hash(Hex(fnv1a64(config.c_str())));
  if (d.shape.encoder) st.set_objective("masked LM");
  st.set_quantize(s.quantize());
  st.set_steps(s.steps());
  st.set_seq_len(s.seq_len());
  st.set_batch(s.batch());
  st.set_lr(s.lr());
  st.set_aux_loss(s.aux_loss());
  st.set_balance_rate(s.balance_rate());
  st.set_calibrate_balance(s.calibrate_balance());
  st.set_validate_every(s.validate_every());
  st.set_validate_sequences(s.validate_sequences());
  st.set_capacity_factor(s.capacity_factor());
  st.set_data(s.token_file().empty() ? "corpus " + s.corpus() : "token file " + s.token_file());
  st.set_eval_tokens(s.eval_tokens());
  st.set_seed(s.seed());
  st.set_ranks(P);
  st.set_distill_iterations(s.distill().enabled() ? s.distill().iterations() : -1);
  return st;
}

// The folder belongs to one model; finished routers whose settings hash matches are kept.
// Rank 0 only (the others learn the outcome through agree_status and SkipMask).
Status CheckFolder(const std::string& dir, const switchyard::StudySettings& want) {
  const std::string path = dir + "/settings.json";
  if (!fs::exists(path)) return Status::Ok();
  switchyard::StudySettings have;
  SY_RETURN_IF_ERROR(ReadJsonMessage(path, &have));
  if (have.model_config_hash() != want.model_config_hash())
    return InvalidArgument("study: " + dir + " holds a study of another model (" + have.model() +
                           ", config hash " + have.model_config_hash() +
                           "; this run: " + want.model() + ", " + want.model_config_hash() +
                           "): pass another --out");
  return Status::Ok();
}

// FNV-1a over every byte of the settings' serialization (which holds zero bytes) and the router.
std::string RouterHash(const switchyard::StudySettings& st, const std::string& router) {
  std::string bytes;
  st.SerializeToString(&bytes);
  return Hex(fnv1a64(bytes + "|" + router));
}

// Median of a timed callable's repeats, in microseconds.
template <typename F>
double MedianMicros(int repeats, F&& f) {
  std::vector<double> t;
  for (int r = 0; r < repeats; ++r) {
    const auto t0 = Clock::now();
    f();
    t.push_back(seconds_since(t0) * 1e6);
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

// One router's study on every rank.
class RouterRun {
 public:
  RouterRun(const switchyard::StudyConfig& s, const StudyData& d, Communicator& comm,
            const std::string& router, const std::string& dir, double* loss_gate)
      : s_(s),
        d_(d),
        comm_(comm),
        router_(router),
        dir_(dir),
        loss_gate_(loss_gate),
        me_(comm.rank()),
        P_(comm.size()),
        L_(s.seq_len()),
        order_(d.n_train / s.seq_len(), s.data_seed()) {}

  // Returns the exit code (0: result filled, on rank 0).
  int run(switchyard::RouterStudy* out, const std::string& progress_prefix) {
    prefix_ = progress_prefix;
    const auto t0 = Clock::now();
    out->set_router(router_);
    if (int code = Load()) return code;
    if (std::isnan(*loss_gate_)) {
      Phase("held-out loss with the model's gate");
      if (int code = Eval(loss_gate_)) return code;
    }
    out->set_loss_gate(*loss_gate_);
    if (int code = WarmStart(out)) return code;
    double loss = 0;
    Phase("held-out loss after the warm start");
    if (int code = Eval(&loss)) return code;
    out->set_loss_warm(loss);
    if (int code = FineTune(out)) return code;
    if (out->fine_tune_steps() > 0) {
      Phase("held-out loss after fine-tuning");
      if (int code = Eval(&loss)) return code;
    }
    out->set_loss_tuned(loss);
    if (int code = MeasuredPass(out)) return code;
    if (int code = Latency(out)) return code;
    Status st = me_ == 0 ? Figures(out) : Status::Ok();
    if (int code = agree_status(comm_, st, "study: figures")) return code;
    out->set_seconds(seconds_since(t0));
    return 0;
  }

 private:
  void Phase(const char* what) {
    if (me_ != 0) return;
    std::printf("%s: %s\n", prefix_.c_str(), what);
    std::fflush(stdout);
  }

  int Load() {
    ModelOptions opt = StudyModelOptions(s_);
    auto ctx = backend_context(s_.backend(), s_.deterministic(), s_.precision());
    Status st = ctx.status();
    if (st.ok()) {
      opt.exec = *ctx;
      auto m = load_model(*d_.ck, opt, &comm_);
      st = m.status();
      if (st.ok()) model_ = std::move(*m);
    }
    if (int code = agree_status(comm_, st, "study: model")) return code;
    AdamWConfig ac;
    ac.lr = s_.lr();
    ac.total_steps = std::max<int64_t>(1, s_.steps());
    ac.clip_norm = 1.0;
    trainer_ = std::make_unique<Trainer>(*model_, &comm_, ac);
    trainer_->set_router_aux_loss(s_.aux_loss() >= 0 ? s_.aux_loss() : d_.shape.aux_loss_coef);
    if (d_.shape.encoder)  // the same masks for every router: drawn from the data seed
      if (int code = agree_status(comm_, trainer_->set_masked_lm(bert_masked_lm(s_.data_seed())),
                                  "study: masked LM"))
        return code;
    return 0;
  }

  // The loss over seqs (the held-out ones by default), every rank's sequences together.
  int Eval(double* loss, const std::vector<std::vector<int32_t>>* seqs = nullptr,
           const char* what = "study: eval") {
    auto l = trainer_->eval(seqs ? *seqs : d_.eval_mine);
    if (int code = agree_status(comm_, l.status(), what)) return code;
    *loss = *l;
    return 0;
  }

  std::vector<int32_t> Sequence(int64_t position) {
    const int64_t b = order_.at(position) * L_;
    return std::vector<int32_t>(d_.ids.begin() + b, d_.ids.begin() + b + L_);
  }

  int WarmStart(switchyard::RouterStudy* out) {
    const std::vector<MoeLayer*> moe = model_->sparse_layers();
    const std::string teacher = moe.empty() ? std::string() : moe.front()->router().name();
    if (router_ == teacher) {
      out->set_warm_start(d_.shape.upcycled
                              ? "none (the upcycled model's fresh " + teacher + " router)"
                              : "none (the model's own " + teacher + " gate)");
      return 0;
    }
    if (!s_.distill().enabled()) {
      auto old = model_->replace_routers(router_, s_.seed(), 0);
      if (int code = agree_status(comm_, old.status(), "study: router")) return code;
      out->set_warm_start("fresh (no distillation)");
      return 0;
    }
    DistillConfig dc;
    dc.iterations = s_.distill().iterations();
    dc.lr = s_.distill().lr();
    dc.max_tokens = s_.distill().max_tokens();
    std::vector<std::vector<int32_t>> seqs;
    const int64_t n = std::max<int64_t>(1, (dc.max_tokens + L_ - 1) / L_);
    for (int64_t b = 0; b < n; ++b) seqs.push_back(Sequence(b * P_ + me_));
    Phase("warm start, distilling every MoE layer from the gate");
    auto rep = warm_start_routers(*model_, &comm_, router_, s_.seed(), 0, seqs, dc,
                                  distill_progress_printer(me_, prefix_ + ":   "));
    if (int code = agree_status(comm_, rep.status(), "study: warm start")) return code;
    double kl = 0, top1 = 0;
    for (const auto& l : rep->layers) {
      kl += l.after.kl;
      top1 += l.after.top1;
    }
    const double n_layers = std::max<double>(1, static_cast<double>(rep->layers.size()));
    out->set_distill_kl(kl / n_layers);
    out->set_distill_top1(top1 / n_layers);
    const bool skipped = !rep->layers.empty() && !rep->layers[0].skipped.empty();
    out->set_warm_start(skipped ? "replaced (" + rep->layers[0].skipped + ")" : "distilled");
    return 0;
  }

  bool Trainable() const {
    for (MoeLayer* l : model_->sparse_layers())
      if (l->router().differentiable() && l->router().num_params() > 0) return true;
    return false;
  }

  // The routers' parameters and state (balance biases) of every MoE layer, as host copies.
  std::vector<std::vector<float>> RouterValues() const {
    std::vector<std::vector<float>> v;
    for (MoeLayer* l : model_->sparse_layers())
      for (const Param& p : l->router().params()) v.push_back(p.value.data.to_host());
    return v;
  }
  void SetRouterValues(const std::vector<std::vector<float>>& v) {
    size_t i = 0;
    for (MoeLayer* l : model_->sparse_layers())
      for (Param& p : l->router().params())
        p.value.data = DeviceArray<float>(p.value.memory(), v.at(i++));
  }

  // Early stopping's validation sequences: the last validate_sequences * P positions of the
  // data order's first epoch, after every position fine-tuning and calibration read.
  Status ValidationSet() {
    const int64_t V = s_.validate_sequences(), n = d_.n_train / L_;
    const int64_t calibration = has_balance_bias(*model_) ? s_.calibrate_balance() : 0;
    const int64_t used = (s_.steps() + calibration) * s_.batch() * P_;
    if (used + V * P_ > n)
      return InvalidArgument("study: --validate-every needs " + std::to_string(V * P_) +
                             " validation sequences beside the " + std::to_string(used) +
                             " that fine-tuning and calibration read, but the training data has " +
                             std::to_string(n) + " sequences of " + std::to_string(L_) +
                             " (lower --validate-sequences, or --validate-every 0)");
    valid_mine_.clear();
    for (int64_t v = 0; v < V; ++v) valid_mine_.push_back(Sequence(n - V * P_ + v * P_ + me_));
    return Status::Ok();
  }

  int Validate(double* loss) { return Eval(loss, &valid_mine_, "study: validation"); }

  int FineTune(switchyard::RouterStudy* out) {
    out->set_kept_step(-1);
    if (s_.steps() == 0 || !Trainable()) {
      out->set_fine_tune_steps(0);
      return 0;
    }
    out->set_fine_tune_steps(s_.steps());
    const int64_t every = s_.validate_every();
    double best = 0;
    std::vector<std::vector<float>> kept;
    if (every > 0) {
      if (int code = agree_status(comm_, ValidationSet(), "study: validation")) return code;
      if (int code = Validate(&best)) return code;
      out->set_kept_step(0);
      out->set_validation_warm(best);
      out->set_validation_kept(best);
      kept = RouterValues();
    }
    const auto t0 = Clock::now();
    for (int64_t s = 0; s < s_.steps(); ++s) {
      std::vector<std::vector<int32_t>> mine;
      for (int64_t b = 0; b < s_.batch(); ++b)
        mine.push_back(Sequence(s * s_.batch() * P_ + b * P_ + me_));
      for (MoeLayer* l : model_->sparse_layers()) l->reset_counters();
      inject_process_faults(me_, s);  // SY_FAULT=kill|exit|...@rank=r,step=s (tests)
      trainer_->set_step_index(s);
      auto r = trainer_->step(mine);
      if (int code = agree_status(comm_, r.status(), "study: fine-tuning step")) return code;
      const StepRouting routing = GlobalRouting(model_->sparse_layers(), comm_, s);
      switchyard::StudyLossPoint* p = out->add_curve();
      p->set_step(s + 1);
      p->set_loss(r->loss);
      p->set_aux_loss(r->aux_loss);
      p->set_max_over_mean(routing.imbalance);
      if (me_ == 0) {
        const double secs = seconds_since(t0);
        std::printf("%s: fine-tune step %lld/%lld loss %.4f aux %.4f max/mean %.2f%s, ETA %.0f s\n",
                    prefix_.c_str(), (long long)(s + 1), (long long)s_.steps(), r->loss,
                    r->aux_loss, routing.imbalance, routing.collapsed.empty() ? "" : " (collapsed)",
                    secs / static_cast<double>(s + 1) * static_cast<double>(s_.steps() - s - 1));
        std::fflush(stdout);
      }
      if (every > 0 && ((s + 1) % every == 0 || s + 1 == s_.steps())) {
        double v = 0;
        if (int code = Validate(&v)) return code;
        const bool better = v < best;
        if (better) {
          best = v;
          out->set_kept_step(s + 1);
          out->set_validation_kept(v);
          kept = RouterValues();
        }
        if (me_ == 0) {
          std::printf("%s: validation loss at step %lld: %.4f%s\n", prefix_.c_str(),
                      (long long)(s + 1), v, better ? " (best so far)" : "");
          std::fflush(stdout);
        }
      }
    }
    if (every > 0) {
      SetRouterValues(kept);
      if (me_ == 0) {
        std::printf("%s: kept the routers of %s (validation loss %.4f; %.4f at the warm start)\n",
                    prefix_.c_str(),
                    out->kept_step() == 0 ? "the warm start"
                                          : ("step " + std::to_string(out->kept_step())).c_str(),
                    out->validation_kept(), out->validation_warm());
        std::fflush(stdout);
      }
    }
    return CalibrateBalance(out);
  }

  // --calibrate-balance N: N forward-only passes over the training sequences after the
  // fine-tuning ones, each moving the balance biases (Trainer::balance_pass), weights fixed.
  int CalibrateBalance(switchyard::RouterStudy* out) {
    const int64_t n = s_.calibrate_balance();
    if (n <= 0 || !has_balance_bias(*model_)) return 0;
    Phase(("balance calibration, " + std::to_string(n) + " forward passes, weights fixed").c_str());
    auto batch = [&](int64_t i) {
      std::vector<std::vector<int32_t>> mine;
      for (int64_t b = 0; b < s_.batch(); ++b)
        mine.push_back(Sequence((s_.steps() + i) * s_.batch() * P_ + b * P_ + me_));
      return mine;
    };
    double first = 0, last = 0;
    if (int code = balance_calibration(*trainer_, *model_, comm_, n, batch, &first, &last))
      return code;
    out->set_calibration_passes(n);
    out->set_calibration_first(first);
    out->set_calibration_last(last);
    if (me_ == 0)
      std::printf("%s: balance calibration: worst layer max/mean %.2f -> %.2f\n", prefix_.c_str(),
                  first, last);
    return 0;
  }

  // The held-out sequences once more, as inference: load reports and a trace.
  int MeasuredPass(switchyard::RouterStudy* out) {
    Phase("measured pass over the held-out sequences");
    report_dir_ = dir_ + "/report";
    trace_dir_ = dir_ + "/trace";
    if (me_ == 0) {
      std::error_code ec;
      fs::remove_all(report_dir_, ec);
      fs::remove_all(trace_dir_, ec);
    }
    comm_.barrier({"study.clean"});
    const std::vector<MoeLayer*> layers = model_->sparse_layers();
    RoutingCollector reports(layers, model_->config_json().dump(), comm_, report_dir_);
    switchyard::TraceConfig tc;
    tc.set_dir(trace_dir_);
    const std::unique_ptr<TraceRecorder> trace =
        make_model_trace(tc, *model_, "infer", d_.ck->dir(), false, comm_);
    model_->set_replicated_tokens(false);
    Tensor logits;
    Status st;
    const auto t0 = Clock::now();
    for (size_t k = 0; k < d_.eval_mine.size() && st.ok(); ++k) {
      const std::vector<int32_t>& seq = d_.eval_mine[k];
      for (MoeLayer* l : layers) l->reset_counters();
      model_->set_step(static_cast<int64_t>(k));
      model_->reset_cache();
      const StepTimer timer(comm_);
      st = model_->forward(seq.data(), L_, &logits, /*all_logits=*/false);
      if (!st.ok()) break;
      reports.add_step(static_cast<int64_t>(k));
      reports.add_step_time(timer.stop(static_cast<int64_t>(k)));
      trace->add_range(static_cast<int64_t>(k), layers, d_.eval_first_index[k], seq.data(), L_);
    }
    const double secs = seconds_since(t0);
    if (int code = agree_status(comm_, st, "study: measured pass")) return code;
    const int64_t tokens = static_cast<int64_t>(d_.eval_mine.size()) * P_ * L_;
    reports.finish(tokens, secs, nullptr);
    double slowest = secs;
    comm_.allreduce(&slowest, 1, ReduceOp::kMax, {"study.pass"});
    out->set_tokens_per_s(static_cast<double>(tokens) / slowest);
    out->set_measured_tokens(tokens);
    out->set_report_dir("routers/" + router_ + "/report");
    out->set_trace_dir("routers/" + router_ + "/trace");
    return finish_trace(trace.get(), tc, comm_);
  }

  // Router forward on the first latency_tokens router inputs of the held-out data, against the
  // bare GEMM [T, D] x [D, E]. Each rank times its own replica; rank 0's figures are kept.
  int Latency(switchyard::RouterStudy* out) {
    std::vector<std::vector<float>> x_L(static_cast<size_t>(model_->num_layers()));
    std::vector<int32_t> ids;
    model_->set_moe_input_capture(&x_L);
    Tensor logits;
    Status st;
    for (size_t k = 0; k < d_.eval_mine.size() && st.ok(); ++k) {
      if (static_cast<int64_t>(ids.size()) >= s_.latency_tokens()) break;
      model_->reset_cache();
      st = model_->forward(d_.eval_mine[k].data(), L_, &logits, false);
      ids.insert(ids.end(), d_.eval_mine[k].begin(), d_.eval_mine[k].end());
    }
    model_->set_moe_input_capture(nullptr);
    model_->reset_cache();
    if (int code = agree_status(comm_, st, "study: router inputs")) return code;
    const int64_t T = std::min<int64_t>(s_.latency_tokens(), static_cast<int64_t>(ids.size()));
    const int64_t D = d_.shape.hidden, E = d_.shape.num_experts;
    const double per_1k = 1000.0 / static_cast<double>(T);
    // In the model's memory (a device backend's: uploaded once); each timed call ends with the
    // backend's synchronize, so a device's asynchronous launches are timed whole.
    const ExecContext& ctx = model_->ctx();
    Memory* mem = ctx.backend;
    const DeviceArray<float> w(mem, std::vector<float>(static_cast<size_t>(E * D), 0.01f));
    DeviceArray<float> c(mem, static_cast<size_t>(T * E)), x(mem);
    const DeviceArray<int32_t> ids_T(mem, std::vector<int32_t>(ids.begin(), ids.begin() + T));
    RouterOutput ro;
    for (int64_t layer = 0; layer < model_->num_layers(); ++layer) {
      MoeLayer* l = model_->moe_layer(layer);
      if (!l) continue;
      x.copy_from_host(x_L[static_cast<size_t>(layer)].data(), static_cast<size_t>(T * D));
      Router& r = l->router();
      const auto route = [&] {
        r.forward(x.data(), ids_T.data(), T, &ro);
        ops::synchronize(ctx);
      };
      route();  // warm
      switchyard::StudyLayer* sl = out->add_layers();
      sl->set_layer(static_cast<int32_t>(layer));
      sl->set_params(r.num_params());
      sl->set_flops_per_token(r.flops_per_token());
      sl->set_router_us_per_1k(MedianMicros(s_.latency_repeats(), route) * per_1k);
      sl->set_gemm_us_per_1k(MedianMicros(s_.latency_repeats(),
                                          [&] {
                                            ops::gemm(ctx, false, true, T, E, D, 1.0f, x.data(), D,
                                                      w.data(), D, 0.0f, c.data(), E);
                                            ops::synchronize(ctx);
                                          }) *
                             per_1k);
    }
    comm_.barrier({"study.latency"});
    return 0;
  }

  // Rank 0: the per-layer figures from the merged load reports and the trace.
  Status Figures(switchyard::RouterStudy* out) {
    SY_ASSIGN_OR_RETURN(switchyard::ClusterReport cr, load_run_report(report_dir_));
    SY_ASSIGN_OR_RETURN(Trace trace, read_trace(trace_dir_));
    // The trace replayed at this P through the runtime's capacity plan at 1.0 and 1.25.
    std::vector<RouterProjection> replays;
    for (double c : {1.0, 1.25}) {
      ProjectOptions po;
      po.ranks = {P_};
      po.capacity_factor = c;
      po.interleaved = true;
      po.hidden = d_.shape.hidden;
      po.ffn_hidden = d_.shape.expert_hidden;
      SY_ASSIGN_OR_RETURN(po.cluster, cluster_preset("dgx-h100"));
      SY_ASSIGN_OR_RETURN(RouterProjection rp, project_trace(trace, po));
      replays.push_back(std::move(rp));
    }
    const RoutingMetricsConfig mc;
    return study_figures(cr, kept_ranks_per_token(trace, P_), replays[0], replays[1],
                         mc.collapse_threshold(d_.shape.num_experts, d_.shape.top_k), out);
  }

  const switchyard::StudyConfig& s_;
  const StudyData& d_;
  Communicator& comm_;
  const std::string router_, dir_;
  double* loss_gate_;
  const int me_, P_;
  const int64_t L_;
  DataOrder order_;
  std::vector<std::vector<int32_t>> valid_mine_;  // early stopping's validation sequences
  std::string prefix_, report_dir_, trace_dir_;
  std::unique_ptr<Model> model_;
  std::unique_ptr<Trainer> trainer_;
};

// Rank 0 decides which routers are finished (a result with the same settings hash); every
// rank learns it through one all-reduce.
std::vector<int64_t> FinishedMask(Communicator& comm, const std::string& out,
                                  const std::vector<std::string>& routers,
                                  const switchyard::StudySettings& st,
                                  std::vector<switchyard::RouterStudy>* results) {
  std::vector<int64_t> done(routers.size(), 0);
  if (comm.rank() == 0)
    for (size_t i = 0; i < routers.size(); ++i) {
      switchyard::RouterStudy r;
      const std::string path = out + "/routers/" + routers[i] + "/result.json";
      if (fs::exists(path) && ReadJsonMessage(path, &r).ok() &&
          r.settings_hash() == RouterHash(st, routers[i])) {
        done[i] = 1;
        (*results)[i] = r;
      }
    }
  comm.allreduce(done.data(), static_cast<int64_t>(done.size()), ReduceOp::kMax,
                 {"study.finished"});
  return done;
}

int RunStudy(const CommandConfig& cc) {
  MpiRuntime mpi(nullptr, nullptr);
  const std::unique_ptr<Communicator> world_comm = open_world_communicator();
  Communicator& world = *world_comm;
  switchyard::StudyConfig s;
  Status st = cc.resolve(&s);
  if (st.ok()) st = validate_study_config(s);
  std::vector<std::string> routers;
  if (st.ok()) {
    auto r = ResolveRouters(s.routers());
    st = r.status();
    if (st.ok()) routers = *r;
  }
  if (st.ok()) st = check_faults_supported("study", study_fault_kinds());
  if (int code = agree_status(world, st, "study: config")) return code;
  if (int code = agree_config(world, config_text(s))) return code;
  if (cc.print_config()) {
    if (world.rank() == 0) std::printf("%s", config_text(s).c_str());
    return 0;
  }
  // Where the models run and what moves their tensors (as `train`: launch/cmd_train.cc).
  st = backend_context(s.backend(), s.deterministic(), s.precision()).status();
  if (int code = agree_status(world, st, "study: backend")) return code;
  std::unique_ptr<Communicator> owned_comm;  // destroyed before `world`, on every rank
  StatusOr<Communicator*> opened =
      open_model_communicator(world, s.comm(), s.backend(), &owned_comm);
  if (int code = agree_status(world, opened.status(), "study: --comm")) return code;
  Communicator& comm = **opened;
  const int me = comm.rank(), P = comm.size();
  StudyData data;
  st = PrepareData(s, me, P, &data);
  if (int code = agree_status(comm, st, "study")) return code;
  if (int code = agree_model(comm, *data.ck, "study")) return code;
  if (int code = agree_tokens(comm, data.ids, "study: the token list")) return code;
  const switchyard::StudySettings settings = MakeSettings(s, data, P);
  st = Status::Ok();
  if (me == 0) {
    st = CheckFolder(s.out(), settings);
    if (st.ok()) {
      std::error_code ec;
      fs::create_directories(s.out() + "/routers", ec);
      if (ec) st = BadInput("study: cannot create " + s.out() + ": " + ec.message());
    }
    if (st.ok()) st = WriteJsonMessage(s.out() + "/settings.json", settings);
  }
  if (int code = agree_status(comm, st, "study: folder")) return code;

  std::vector<switchyard::RouterStudy> results(routers.size());
  const std::vector<int64_t> done = FinishedMask(comm, s.out(), routers, settings, &results);
  int64_t todo = 0;
  for (int64_t d : done) todo += d == 0;
  if (me == 0) {
    std::printf(
        "switchyard study: %s, %d rank%s, %zu router%s (%lld to run, %lld finished before), "
        "experts %s, %lld fine-tuning steps of %lld x %d x %lld tokens, %zu held-out sequences "
        "of %lld%s\n",
        data.ck->dir().c_str(), P, P == 1 ? "" : "s", routers.size(),
        routers.size() == 1 ? "" : "s", (long long)todo,
        (long long)(static_cast<int64_t>(routers.size()) - todo), s.quantize().c_str(),
        (long long)s.steps(), (long long)s.batch(), P, (long long)s.seq_len(),
        data.eval_mine.size() * static_cast<size_t>(P), (long long)s.seq_len(),
        !data.shape.encoder   ? ""
        : data.shape.upcycled ? "; masked LM, upcycled on load (the gate: fresh linear routers)"
                              : "; masked LM");
    std::fflush(stdout);
  }
  double loss_gate = std::nan("");
  for (size_t i = 0; i < routers.size(); ++i)
    if (done[i]) loss_gate = results[i].loss_gate();
  comm.allreduce(&loss_gate, 1, ReduceOp::kMax, {"study.gate"});  // NaN everywhere or a value
  const auto t0 = Clock::now();
  int64_t ran = 0;
  for (size_t i = 0; i < routers.size(); ++i) {
    if (done[i]) continue;
    char prefix[160];
    const double eta =
        ran > 0 ? seconds_since(t0) / static_cast<double>(ran) * static_cast<double>(todo - ran)
                : -1;
    std::snprintf(prefix, sizeof prefix, "[study %lld/%lld %s]", (long long)(ran + 1),
                  (long long)todo, routers[i].c_str());
    if (me == 0) {
      if (eta >= 0)
        std::printf("%s: starting; study ETA %.0f s\n", prefix, eta);
      else
        std::printf("%s: starting\n", prefix);
      std::fflush(stdout);
    }
    const std::string dir = s.out() + "/routers/" + routers[i];
    RouterRun run(s, data, comm, routers[i], dir, &loss_gate);
    switchyard::RouterStudy r;
    if (int code = run.run(&r, prefix)) return code;
    r.set_settings_hash(RouterHash(settings, routers[i]));
    st = me == 0 ? WriteJsonMessage(dir + "/result.json", r) : Status::Ok();
    if (int code = agree_status(comm, st, "study: result")) return code;
    if (me == 0) {
      std::printf(
          "%s: done in %.0f s: held-out loss %.4f (gate %.4f, warm start %.4f), "
          "max/mean load %.2f, %.0f tok/s\n",
          prefix, r.seconds(), r.loss_tuned(), r.loss_gate(), r.loss_warm(),
          r.overall().expert_load_max_over_mean(), r.tokens_per_s());
      std::fflush(stdout);
    }
    results[i] = r;
    ++ran;
  }
  st = Status::Ok();
  if (me == 0) {
    switchyard::Study study;
    study.set_switchyard_version(kVersion);
    *study.mutable_settings() = settings;
    for (const auto& r : results) *study.add_routers() = r;
    study.set_num_experts(static_cast<int32_t>(data.shape.num_experts));
    study.set_top_k(static_cast<int32_t>(data.shape.top_k));
    study.set_d_model(static_cast<int32_t>(data.shape.hidden));
    study.set_moe_layers(static_cast<int32_t>(data.shape.moe_layers));
    RoutingMetricsConfig mc;
    study.set_collapse_threshold(mc.collapse_threshold(data.shape.num_experts, data.shape.top_k));
    st = write_study(s.out(), study);
    if (st.ok()) {
      std::printf("%s", study_text(study).c_str());
      std::printf("wrote %s/study.json, study.md, study.html\n", s.out().c_str());
    }
  }
  return agree_status(comm, st, "study: output");
}

}  // namespace

void add_study_command(CLI::App& app) {
  CLI::App* cmd = app.add_subcommand(
      "study",
      "The router comparison of \"Optimizing MoE Routers\" in one command: every router "
      "warm-started from the model's gate, fine-tuned (routers only), evaluated and measured on "
      "the same model, data and ranks; study.json, study.md, study.html");
  auto c = std::make_shared<CommandConfig>(cmd, switchyard::StudyConfig::default_instance());
  c->add_config_options();
  c->option("--model", "model",
            "Hugging Face checkpoint folder (qwen2_moe, bert_moe, or bert with "
            "--upcycle-experts); default: the embedded default model");
  c->option("--routers", "routers", "comma-separated router names, paper (the six), or all");
  c->option("--quantize", "quantize", "routed experts: none | int8 | int4")
      ->check(CLI::IsMember({"none", "int8", "int4"}));
  c->option("--steps", "steps", "router-only fine-tuning steps per router (0: none)");
  c->option("--seq-len", "seq_len", "tokens per sequence");
  c->option("--batch", "batch", "sequences per rank per step");
  c->option("--lr", "lr", "peak learning rate of the fine-tuning");
  c->option("--aux-loss", "aux_loss",
            "Switch load-balancing loss coefficient (< 0: the checkpoint's)");
  c->option("--balance-rate", "balance_rate",
            "gamma of the routers' balance bias, which shifts the choice toward balance after "
            "each step (0: none; < 0: the checkpoint's)");
  c->option("--calibrate-balance", "calibrate_balance",
            "after each router's fine-tuning, N forward-only passes that settle its balance "
            "biases with the weights fixed (0: none)");
  c->option("--validate-every", "validate_every",
            "early stopping: validation loss at the warm start and every N fine-tuning steps on "
            "training sequences fine-tuning does not use; the best routers are kept (0: the "
            "last step's)");
  c->option("--validate-sequences", "validate_sequences", "validation sequences per rank");
  c->option("--capacity-factor", "capacity_factor", "expert capacity of the runs (<= 0: dropless)");
  c->option("--corpus", "corpus", "moby_dick | sotu | excerpt | a text file");
  c->option("--token-file", "token_file", "a binary token file instead of --corpus");
  c->option("--data-dir", "data_dir", "data folder (default: $SY_DATA_DIR or data/)");
  c->option("--eval-tokens", "eval_tokens", "tokens held out at the end of the data");
  c->option("--seed", "seed", "seed of the replaced routers");
  c->option("--data-seed", "data_seed", "seed of the data order");
  c->flag("--distill,!--no-distill", "distill.enabled",
          "warm-start each router by distillation from the gate (default on)");
  c->option("--distill-iters", "distill.iterations", "Adam steps per layer");
  c->option("--out", "out", "the study folder (resumable: finished routers are kept)");
  c->flag("--deterministic", "deterministic", "row-stable GEMMs");
  add_device_options(c.get(), "runs");
  c->option("--upcycle-experts", "upcycle_experts",
            "dense BERT: upcycle each MoE layer's FFN into this many expert copies on load (the "
            "gate is then a fresh linear router)");
  c->option("--moe-every", "moe_every", "BERT upcycling: every n-th layer is MoE (default 1)");
  c->option("--experts-top-k", "experts_top_k",
            "BERT: experts per token (default 1, or the bert_moe checkpoint's)");
  c->option("--upcycle-noise", "upcycle_noise",
            "BERT upcycling: multiplicative N(0, s^2) noise on the expert copies");
  cmd->callback([c] { set_exit_code(RunStudy(*c)); });
}

}  // namespace sy::launch
