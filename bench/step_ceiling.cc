// One training step of a Qwen2-MoE model against its GEMM ceiling: the step as `switchyard
// train` runs it (the model loaded and the Trainer made by the same functions,
// launch/train_model.h; real tokens dealt as the command deals them), split into its parts on
// the rank, beside the bare OpenBLAS GEMMs of the shapes that step made (bench/gemm_ceiling.h)
// on the model's own weights: per layer the q/k/v/o projections and the attention score and
// value products, the MoE layers (router, experts at the rows they received, shared expert),
// dense MLPs, the LM head; forward, and backward with the weight gradients of the trained
// parameters only (--what routers: routers alone). A plain MPI program.
//
//   mpirun -np P build/bench/step_ceiling --model DIR --token-file F [--seq-len 256]
//       [--batch 2] [--steps 6] [--what all|routers] [--json FILE]
//
// Each step (the first is a warm-up, not counted): a barrier, Trainer::step, then after a
// barrier the step's forward GEMMs and after another its backward GEMMs, on every rank at
// once as in the step. Figures are medians over the counted steps. The step time is the
// slowest rank's, and so is the split (its Qwen2MoeTimes of every forward and backward,
// TrainStepTimes, the MoE layers' MoePhaseTimes; each part less the bare GEMMs inside it on
// that rank); the ceiling is the rank with the most GEMM time's. share = ceiling / step.
// The parts are timed on the wall clock: SY_BENCH_CLOCK=cpu is refused.
#include <mpi.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "bench/gemm_ceiling.h"
#include "comm/mpi_communicator.h"
#include "launch/config.h"
#include "launch/infer_run.h"
#include "launch/train_model.h"
#include "runtime/data/sequence_shard.h"
#include "runtime/data/token_file.h"
#include "runtime/io/hf_checkpoint.h"
#include "runtime/model/qwen2_moe.h"
#include "runtime/model/qwen2_moe_names.h"

extern "C" int openblas_get_num_threads(void);

namespace {

using sy::bench::Gemm;
using sy::bench::median;

// The model's parameters by name; value and gradient pointers (gradient null when frozen).
class ParamTable {
 public:
  explicit ParamTable(sy::Qwen2MoeModel& m) {
    for (const sy::ModelParam& p : m.parameters()) params_[p.name] = p;
  }
  const float* value(const std::string& name) const {
    auto it = params_.find(name);
    return it == params_.end() ? nullptr : it->second.value->ptr();
  }
  float* grad(const std::string& name) const {
    auto it = params_.find(name);
    if (it == params_.end() || !it->second.grad || it->second.grad->numel() == 0) return nullptr;
    return it->second.grad->ptr();
  }

 private:
  std::map<std::string, sy::ModelParam> params_;
};

// The GEMMs of one sequence of T tokens through the model, right after its forward (the MoE
// layers' row counts are that forward's): forward or backward, in the model's order.
std::vector<Gemm> sequence_gemms(sy::Qwen2MoeModel& m, const ParamTable& pt, int64_t T,
                                 bool forward) {
  const sy::Qwen2MoeConfig& c = m.config();
  const int64_t D = c.hidden_size, V = c.vocab_size;
  auto attention = [&](std::vector<Gemm>* g, int64_t li) {
    auto n = [&](const char* proj) {
      return sy::qwen2_moe_layer_name(li, std::string("self_attn.") + proj + ".weight");
    };
    sy::bench::AttentionWeights w;
    w.wq = pt.value(n("q_proj"));
    w.wk = pt.value(n("k_proj"));
    w.wv = pt.value(n("v_proj"));
    w.wo = pt.value(n("o_proj"));
    w.dwq = pt.grad(n("q_proj"));
    w.dwk = pt.grad(n("k_proj"));
    w.dwv = pt.grad(n("v_proj"));
    w.dwo = pt.grad(n("o_proj"));
    sy::bench::add_attention(g, T, D, c.num_attention_heads, c.num_key_value_heads, c.head_dim, w,
                             forward, !forward);
  };
  auto ffn = [&](std::vector<Gemm>* g, int64_t li) {
    if (sy::MoeLayer* L = m.moe_layer(li)) {
      std::vector<Gemm> moe = sy::bench::moe_layer_gemms(*L, forward, !forward);
      // moe_layer_gemms counts the shared expert's weight gradients always; they are computed
      // only when the layer trains its experts.
      if (!L->config().train_experts) sy::bench::erase_weight_grads(&moe, "shared");
      g->insert(g->end(), moe.begin(), moe.end());
      return;
    }
    const int64_t F = c.intermediate_size;
    for (const char* proj : {"gate_proj", "up_proj", "down_proj"}) {
      const std::string name = sy::qwen2_moe_layer_name(li, std::string("mlp.") + proj + ".weight");
      const bool down = std::string(proj) == "down_proj";
      sy::bench::add_param_linear(g, "dense", T, down ? F : D, down ? D : F, pt.value(name),
                                  pt.grad(name), forward, !forward);
    }
  };
  const char* head = c.tie_word_embeddings ? sy::kQwen2MoeEmbedName : sy::kQwen2MoeLmHeadName;
  std::vector<Gemm> g;
  const int64_t layers = m.num_layers();
  if (forward) {
    for (int64_t li = 0; li < layers; ++li) {
      attention(&g, li);
      ffn(&g, li);
    }
  }
  sy::bench::add_param_linear(&g, "head", T, D, V, pt.value(head), pt.grad(head), forward,
                              !forward);
  if (!forward) {
    for (int64_t li = layers; li-- > 0;) {
      ffn(&g, li);
      attention(&g, li);
    }
  }
  return g;
}

void add_times(sy::Qwen2MoeTimes* sum, const sy::Qwen2MoeTimes& t) {
  sum->embed_s += t.embed_s;
  sum->attention_s += t.attention_s;
  sum->moe_s += t.moe_s;
  sum->dense_mlp_s += t.dense_mlp_s;
  sum->head_s += t.head_s;
  sum->total_s += t.total_s;
}

// What one step did on this rank, summed over its sequences: the model's parts, the MoE
// layers' phases, the GEMMs of its shapes.
struct StepTotals {
  sy::Qwen2MoeTimes fwd, bwd;
  sy::MoePhaseTimes moe_fwd, moe_bwd;
  std::vector<Gemm> gemm_fwd, gemm_bwd;
  int seqs = 0;
};

// Gathers a step's StepTotals in the trainer's after-forward callback. Trainer::step runs
// forward k, the callback, the loss, backward k, then forward k + 1: at callback k > 0 the
// model's last backward is sequence k - 1's; the step's last one is read by finish(), after
// step() returns.
class StepRecord {
 public:
  StepRecord(sy::Qwen2MoeModel& m, const ParamTable& pt) : m_(m), pt_(pt) {}
  void start() { t_ = StepTotals(); }
  void after_forward(int64_t T) {
    if (t_.seqs > 0) after_backward();
    add_times(&t_.fwd, m_.last_times());
    for (sy::MoeLayer* l : m_.sparse_layers())
      sy::bench::add_phase_times(&t_.moe_fwd, l->last_stats().forward);
    for (bool forward : {true, false}) {
      std::vector<Gemm> g = sequence_gemms(m_, pt_, T, forward);
      std::vector<Gemm>& to = forward ? t_.gemm_fwd : t_.gemm_bwd;
      to.insert(to.end(), g.begin(), g.end());
    }
    ++t_.seqs;
  }
  const StepTotals& finish() {
    if (t_.seqs > 0) after_backward();
    return t_;
  }

 private:
  void after_backward() {
    add_times(&t_.bwd, m_.last_backward_times());
    for (sy::MoeLayer* l : m_.sparse_layers())
      sy::bench::add_phase_times(&t_.moe_bwd, l->last_stats().backward);
  }
  sy::Qwen2MoeModel& m_;
  const ParamTable& pt_;
  StepTotals t_;
};

// One step's figures on one rank, by name, in the same order on every rank (seconds; "gflop."
// entries GFLOP).
using Row = std::vector<std::pair<std::string, double>>;

// The model's parts: label, Qwen2MoeTimes field, the GEMM parts inside it.
struct ModelPart {
  const char* key;
  const char* label;
  double sy::Qwen2MoeTimes::*time;
  std::vector<std::string> gemms;
};
const ModelPart kModelParts[] = {
    {"embedding", "embedding", &sy::Qwen2MoeTimes::embed_s, {}},
    {"attention",
     "attention (norm, q/k/v/o, RoPE, S, PV)",
     &sy::Qwen2MoeTimes::attention_s,
     {"attention", "attention core"}},
    {"moe",
     "MoE layers (norm, layer, residual)",
     &sy::Qwen2MoeTimes::moe_s,
     {"router", "experts", "shared"}},
    {"dense", "dense MLP (norm, MLP, residual)", &sy::Qwen2MoeTimes::dense_mlp_s, {"dense"}},
    {"head", "final norm + LM head", &sy::Qwen2MoeTimes::head_s, {"head"}},
};
// The trainer's parts outside the model (TrainStepTimes), one time per step.
struct TrainerPart {
  const char* key;
  const char* label;
  double sy::TrainStepTimes::*time;
};
const TrainerPart kTrainerParts[] = {
    {"checks", "non-finite checks (logits, grads)", &sy::TrainStepTimes::checks_s},
    {"allreduce", "all-reduces (grads, scalars; waits)", &sy::TrainStepTimes::allreduce_s},
    {"optimizer", "optimizer (norm, AdamW, after_step)", &sy::TrainStepTimes::optimizer_s},
    {"setup", "step setup (targets, zero_grad)", &sy::TrainStepTimes::setup_s},
    {"hook", "after-forward hook (this benchmark's)", &sy::TrainStepTimes::after_forward_s},
};
const char* const kGemmParts[] = {"attention", "attention core", "router", "experts",
                                  "shared",    "dense",          "head"};

Row step_row(double wall_s, const sy::TrainStepTimes& tt, const StepTotals& rec,
             std::map<std::string, double> gf, std::map<std::string, double> gb) {
  Row row = {{"step", wall_s}};
  double parts = 0;
  for (const ModelPart& p : kModelParts) {
    double g_f = 0, g_b = 0;
    for (const std::string& k : p.gemms) g_f += gf[k], g_b += gb[k];
    const double f = rec.fwd.*p.time, b = rec.bwd.*p.time;
    row.push_back({std::string(p.key) + ".fwd", f});
    row.push_back({std::string(p.key) + ".bwd", b});
    row.push_back({std::string(p.key) + ".gemm", g_f + g_b});
    parts += f + b;
  }
  row.push_back({"cross_entropy.fwd", tt.loss_s});
  row.push_back({"cross_entropy.bwd", tt.loss_backward_s});
  parts += tt.loss_s + tt.loss_backward_s;
  for (const TrainerPart& p : kTrainerParts) {
    row.push_back({p.key, tt.*p.time});
    parts += tt.*p.time;
  }
  row.push_back({"unaccounted", wall_s - parts});
  for (const char* k : kGemmParts) {
    row.push_back({std::string("gemm.fwd.") + k, gf[k]});
    row.push_back({std::string("gemm.bwd.") + k, gb[k]});
  }
  row.push_back({"gemm.fwd.total", gf["total"]});
  row.push_back({"gemm.bwd.total", gb["total"]});
  const std::vector<double> rf = sy::bench::moe_rest_of(rec.moe_fwd, rec.fwd.moe_s, gf);
  const std::vector<double> rb = sy::bench::moe_rest_of(rec.moe_bwd, rec.bwd.moe_s, gb);
  for (size_t k = 0; k < rf.size(); ++k) {
    row.push_back({"moe_rest.fwd." + std::to_string(k), rf[k]});
    row.push_back({"moe_rest.bwd." + std::to_string(k), rb[k]});
  }
  for (const char* k : kGemmParts) {
    double f = 0;
    for (const std::vector<Gemm>* list : {&rec.gemm_fwd, &rec.gemm_bwd})
      for (const Gemm& x : *list)
        if (x.part == k) f += x.flops();
    row.push_back({std::string("gflop.") + k, f * 1e-9});
  }
  return row;
}

struct Args {
  std::string model, token_file, what = "all", json;
  int64_t seq_len = 256, batch = 2, steps = 6;
};

bool parse(int argc, char** argv, Args* a) {
  for (int i = 1; i < argc; ++i) {
    const std::string s = argv[i];
    if (i + 1 >= argc) return false;
    const char* v = argv[++i];
    if (s == "--model") {
      a->model = v;
    } else if (s == "--token-file") {
      a->token_file = v;
    } else if (s == "--what") {
      a->what = v;
    } else if (s == "--json") {
      a->json = v;
    } else if (s == "--seq-len") {
      a->seq_len = std::atoll(v);
    } else if (s == "--batch") {
      a->batch = std::atoll(v);
    } else if (s == "--steps") {
      a->steps = std::atoll(v);
    } else {
      return false;
    }
  }
  return !a->model.empty() && !a->token_file.empty() && a->steps >= 2;
}

// The run's settings as `switchyard train` would resolve them from these flags.
switchyard::TrainConfig train_config(const Args& a) {
  switchyard::TrainConfig c;
  c.set_model(a.model);
  c.set_token_file(a.token_file);
  c.set_what(a.what);
  c.set_seq_len(a.seq_len);
  c.set_batch(a.batch);
  c.set_steps(a.steps);
  return c;
}

sy::Status open_model(const switchyard::TrainConfig& c, sy::Communicator* comm,
                      std::unique_ptr<sy::Qwen2MoeModel>* model, std::vector<int32_t>* ids) {
  SY_RETURN_IF_ERROR(sy::launch::validate_train_config(c));
  SY_ASSIGN_OR_RETURN(sy::HfCheckpoint ck, sy::HfCheckpoint::Open(c.model()));
  SY_ASSIGN_OR_RETURN(const sy::Qwen2MoeOptions opt, sy::launch::qwen2_moe_train_options(c));
  SY_ASSIGN_OR_RETURN(*model, sy::Qwen2MoeModel::load(ck, opt, comm));
  SY_ASSIGN_OR_RETURN(*ids, sy::read_token_file(c.token_file()));
  for (int32_t id : *ids)
    if (id < 0 || id >= (*model)->vocab_size())
      return sy::InvalidArgument("step_ceiling: token id " + std::to_string(id) +
                                 " outside the model's vocabulary");
  // As the train command: the last eval_tokens are held out; every step needs B * P sequences.
  const int64_t seqs = (static_cast<int64_t>(ids->size()) - c.eval_tokens()) / c.seq_len();
  if (seqs < 1)
    return sy::InvalidArgument("step_ceiling: " + std::to_string(ids->size()) +
                               " tokens are fewer than eval_tokens + --seq-len");
  return sy::Status::Ok();
}

void print_report(const Args& a, const sy::Qwen2MoeModel& m, int P,
                  std::map<std::string, double> md, double ceiling_s, double ceiling_gflop,
                  double tokens) {
  const double step = md["step"];
  auto ms = [](double s) { return 1e3 * s; };
  const sy::Qwen2MoeConfig& c = m.config();
  std::printf(
      "\nstep_ceiling: %s, what=%s, P %d, batch %lld x %lld tokens per rank; %lld layers, D "
      "%lld, %lld experts (%lld per rank) top-%lld, V %lld; OpenBLAS threads %d; median of %lld "
      "steps after 1 warm-up\n",
      a.model.c_str(), a.what.c_str(), P, static_cast<long long>(a.batch),
      static_cast<long long>(a.seq_len), static_cast<long long>(c.num_hidden_layers),
      static_cast<long long>(c.hidden_size), static_cast<long long>(c.num_experts),
      static_cast<long long>(c.num_experts / P), static_cast<long long>(c.num_experts_per_tok),
      static_cast<long long>(c.vocab_size), openblas_get_num_threads(),
      static_cast<long long>(a.steps - 1));
  std::printf("  %-40s %10.2f   (%.0f tokens/s)\n", "step (ms, slowest rank)", ms(step),
              tokens / step);
  std::printf("  %-40s %10.2f   (slowest rank's: fwd %.2f, bwd %.2f; %.1f GFLOP at %.1f GFLOP/s)\n",
              "GEMM ceiling (ms, most GEMM time)", ms(ceiling_s), ms(md["gemm.fwd.total"]),
              ms(md["gemm.bwd.total"]), ceiling_gflop, ceiling_gflop / ceiling_s);
  std::printf("  %-40s %10.3f   (the step at %.1f GFLOP/s)\n", "share of the GEMM ceiling",
              ceiling_s / step, ceiling_gflop / step);
  std::printf("\n  split of the step (ms, slowest rank)     %9s %9s %9s %9s %9s\n", "forward",
              "backward", "total", "GEMMs", "beyond");
  double sum = 0, gsum = 0;
  for (const ModelPart& p : kModelParts) {
    const std::string k = p.key;
    const double f = md[k + ".fwd"], b = md[k + ".bwd"], g = md[k + ".gemm"];
    std::printf("  %-40s %9.2f %9.2f %9.2f %9.2f %9.2f\n", p.label, ms(f), ms(b), ms(f + b), ms(g),
                ms(f + b - g));
    sum += f + b;
    gsum += g;
  }
  const double lf = md["cross_entropy.fwd"], lb = md["cross_entropy.bwd"];
  char label[64];
  std::snprintf(label, sizeof(label), "cross-entropy (V %lld)",
                static_cast<long long>(c.vocab_size));
  std::printf("  %-40s %9.2f %9.2f %9.2f %9s %9.2f\n", label, ms(lf), ms(lb), ms(lf + lb), "",
              ms(lf + lb));
  sum += lf + lb;
  for (const TrainerPart& p : kTrainerParts) {
    const double t = md[p.key];
    std::printf("  %-40s %9s %9s %9.2f %9s %9.2f\n", p.label, "", "", ms(t), "", ms(t));
    sum += t;
  }
  const double u = md["unaccounted"];
  std::printf("  %-40s %9s %9s %9.2f %9s %9.2f\n", "unaccounted (step less the parts)", "", "",
              ms(u), "", ms(u));
  std::printf("  %-40s %9s %9s %9.2f %9.2f %9.2f\n", "step (sum of the medians above)", "", "",
              ms(sum + u), ms(gsum), ms(sum + u - gsum));

  std::printf("\n  GEMM ceiling by part (ms, same rank)     %9s %9s %9s %9s\n", "forward",
              "backward", "GFLOP", "GFLOP/s");
  for (const char* k : kGemmParts) {
    const std::string n = k;
    const double f = md["gemm.fwd." + n], b = md["gemm.bwd." + n], gf = md["gflop." + n];
    if (gf == 0) continue;
    std::printf("  %-40s %9.2f %9.2f %9.2f %9.1f\n", k, ms(f), ms(b), gf, gf / (f + b));
  }
  if (c.num_experts > 0) {
    std::printf("\n  MoE layers beyond their GEMMs (ms)       %9s %9s\n", "forward", "backward");
    const std::vector<std::string>& names = sy::bench::moe_rest_names();
    for (size_t k = 0; k < names.size(); ++k) {
      const std::string& n =
          k + 1 == names.size() ? "outside the phases (norm, residual)" : names[k];
      std::printf("  %-40s %9.2f %9.2f\n", n.c_str(), ms(md["moe_rest.fwd." + std::to_string(k)]),
                  ms(md["moe_rest.bwd." + std::to_string(k)]));
    }
  }
  std::fflush(stdout);
}

void write_json(std::FILE* f, const Args& a, int P, const std::map<std::string, double>& md,
                double ceiling_s, double ceiling_gflop, double tokens) {
  const double step = md.at("step");
  std::fprintf(f,
               "{\"model\": \"%s\", \"what\": \"%s\", \"P\": %d, \"batch\": %lld, \"seq_len\": "
               "%lld, \"steps\": %lld, \"threads\": %d, \"step_ms\": %.3f, \"tokens_per_s\": "
               "%.1f, \"ceiling_ms\": %.3f, \"ceiling_gflop\": %.3f, \"share\": %.4f",
               a.model.c_str(), a.what.c_str(), P, static_cast<long long>(a.batch),
               static_cast<long long>(a.seq_len), static_cast<long long>(a.steps - 1),
               openblas_get_num_threads(), 1e3 * step, tokens / step, 1e3 * ceiling_s,
               ceiling_gflop, ceiling_s / step);
  for (const auto& [k, v] : md) {
    if (k.rfind("gflop.", 0) == 0)
      std::fprintf(f, ", \"%s\": %.4f", k.c_str(), v);
    else
      std::fprintf(f, ", \"%s_ms\": %.3f", k.c_str(), 1e3 * v);
  }
  std::fprintf(f, "}\n");
}

int run(const Args& a, sy::MpiCommunicator& comm) {
  const int P = comm.size(), r = comm.rank();
  const switchyard::TrainConfig c = train_config(a);
  std::unique_ptr<sy::Qwen2MoeModel> model;
  std::vector<int32_t> ids;
  if (int code = sy::launch::agree_status(comm, open_model(c, &comm, &model, &ids), "step_ceiling"))
    return code;
  sy::Trainer trainer(*model, &comm, sy::launch::train_adamw_config(c));
  const sy::Status st =
      sy::launch::configure_trainer(c, model->config().router_aux_loss_coef, &trainer);
  if (int code = sy::launch::agree_status(comm, st, "step_ceiling")) return code;

  const int64_t L = a.seq_len, B = a.batch;
  sy::DataOrder order((static_cast<int64_t>(ids.size()) - c.eval_tokens()) / L, c.data_seed());
  ParamTable pt(*model);
  StepRecord rec(*model, pt);
  trainer.set_after_forward([&] { rec.after_forward(L); });
  sy::bench::GemmRunner runner;
  std::vector<Row> rows;
  std::vector<double> ceiling_s;
  double ceiling_gflop = 0, tokens = 0;
  for (int64_t s = 0; s < a.steps; ++s) {
    std::vector<std::vector<int32_t>> mine;
    for (int64_t b = 0; b < B; ++b) {  // as the train command deals them
      const int64_t at = order.at((s * B + b) * P + r) * L;
      mine.emplace_back(ids.begin() + at, ids.begin() + at + L);
    }
    for (sy::MoeLayer* l : model->sparse_layers()) l->reset_counters();
    rec.start();
    trainer.set_step_index(s);
    MPI_Barrier(MPI_COMM_WORLD);
    const double t0 = sy::now_seconds();
    auto res = trainer.step(mine);
    const double wall = sy::now_seconds() - t0;
    if (int code = sy::launch::agree_status(comm, res.status(), "step_ceiling: step")) return code;
    const StepTotals& tot = rec.finish();
    // The bare GEMMs write only scratch and the gradients, which the next step zeroes first.
    MPI_Barrier(MPI_COMM_WORLD);
    const std::map<std::string, double> gf = runner.run(tot.gemm_fwd);
    MPI_Barrier(MPI_COMM_WORLD);
    const std::map<std::string, double> gb = runner.run(tot.gemm_bwd);
    if (s == 0) continue;  // warm-up: buffers grow, pages are touched
    Row row = step_row(wall, res->times, tot, gf, gb);
    // The slowest rank's split; the ceiling of the rank with the most GEMM time.
    struct {
      double v;
      int rank;
    } slow{wall, r};
    MPI_Allreduce(MPI_IN_PLACE, &slow, 1, MPI_DOUBLE_INT, MPI_MAXLOC, MPI_COMM_WORLD);
    std::vector<double> v(row.size());
    for (size_t i = 0; i < row.size(); ++i) v[i] = row[i].second;
    MPI_Bcast(v.data(), static_cast<int>(v.size()), MPI_DOUBLE, slow.rank, MPI_COMM_WORLD);
    for (size_t i = 0; i < row.size(); ++i) row[i].second = v[i];
    rows.push_back(std::move(row));
    double most[2] = {
        gf.at("total") + gb.at("total"),
        1e-9 * (sy::bench::total_flops(tot.gemm_fwd) + sy::bench::total_flops(tot.gemm_bwd))};
    MPI_Allreduce(MPI_IN_PLACE, most, 2, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    ceiling_s.push_back(most[0]);
    ceiling_gflop = most[1];
    tokens = static_cast<double>(res->tokens);
  }
  if (r != 0) return 0;
  std::map<std::string, double> md;
  for (size_t i = 0; i < rows[0].size(); ++i) {
    std::vector<double> xs;
    for (const Row& row : rows) xs.push_back(row[i].second);
    md[rows[0][i].first] = median(xs);
  }
  const double ceiling = median(ceiling_s);
  print_report(a, *model, P, md, ceiling, ceiling_gflop, tokens);
  if (!a.json.empty()) {
    std::FILE* f = std::fopen(a.json.c_str(), "w");
    if (!f) {
      std::fprintf(stderr, "step_ceiling: cannot write %s\n", a.json.c_str());
      return sy::kExitUsage;
    }
    write_json(f, a, P, md, ceiling, ceiling_gflop, tokens);
    std::fclose(f);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  sy::MpiRuntime mpi(&argc, &argv);
  Args a;
  if (!parse(argc, argv, &a) || (a.what != "all" && a.what != "routers")) {
    if (mpi.world_rank() == 0)
      std::fprintf(stderr,
                   "usage: %s --model DIR --token-file F [--seq-len 256] [--batch 2] "
                   "[--steps N >= 2] [--what all|routers] [--json FILE]\n",
                   argv[0]);
    return sy::kExitUsage;
  }
  if (sy::bench_use_cpu_clock()) {
    if (mpi.world_rank() == 0)
      std::fprintf(stderr,
                   "step_ceiling: the step's parts are wall-clock times: unset "
                   "SY_BENCH_CLOCK=cpu\n");
    return sy::kExitUsage;
  }
  sy::MpiCommunicator comm;
  return run(a, comm);
}
