#include "launch/model_infer.h"

#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <numeric>
#include <sstream>
#include <string>
#include <vector>

#include "comm/fault.h"
#include "comm/placement.h"
#include "launch/commands.h"
#include "launch/infer_run.h"
#include "launch/progress.h"
#include "launch/trace_run.h"
#include "launch/train_progress.h"
#include "routers/metrics.h"
#include "runtime/backend/ops.h"
#include "runtime/data/corpus.h"
#include "runtime/data/sequence_shard.h"
#include "runtime/data/token_file.h"
#include "runtime/data/tokenizer.h"
#include "runtime/io/checkpoint_dir.h"
#include "runtime/io/hf_checkpoint.h"
#include "runtime/io/npy.h"
#include "runtime/model/model.h"
#include "runtime/model/qwen2_moe.h"
#include "runtime/report/load_report.h"

namespace sy::launch {
namespace {

StatusOr<std::vector<int32_t>> ParseIds(const std::string& s) {
  std::vector<int32_t> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    if (item.empty()) return InvalidArgument("--token-ids: empty entry in '" + s + "'");
    size_t used = 0;
    long long v = 0;
    try {
      v = std::stoll(item, &used);
    } catch (...) {
      used = 0;
    }
    if (used != item.size() || v < 0 || v > INT32_MAX)
      return InvalidArgument("--token-ids: '" + item + "' is not a token id");
    out.push_back(static_cast<int32_t>(v));
  }
  if (out.empty()) return InvalidArgument("--token-ids: no ids");
  return out;
}

int64_t PeakRssBytes() {
  struct rusage ru {};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<int64_t>(ru.ru_maxrss) * 1024;  // Linux: KiB
}

// Resident bytes now (/proc/self/statm), 0 when unknown.
int64_t RssBytes() {
  long long pages = 0, resident = 0;
  if (FILE* f = std::fopen("/proc/self/statm", "r")) {
    if (std::fscanf(f, "%lld %lld", &pages, &resident) != 2) resident = 0;
    std::fclose(f);
  }
  return resident * static_cast<int64_t>(sysconf(_SC_PAGESIZE));
}

double MiB(int64_t b) {
  return static_cast<double>(b) / (1024.0 * 1024.0);
}

// Rank 0 prints one line per rank: what it holds and its peak resident memory.
// base_rss: resident bytes before the model was loaded (MPI, OpenBLAS, the tokenizer).
void PrintMemory(Communicator& comm, const ModelMemory& m, int64_t base_rss) {
  const int P = comm.size();
  constexpr int kN = 7;
  const int64_t mine[kN] = {
      m.replicated_bytes, m.expert_bytes, m.expert_bytes_fp32, m.kv_cache_bytes, m.activation_bytes,
      PeakRssBytes(),     base_rss};
  std::vector<int64_t> all(static_cast<size_t>(kN * P));
  comm.allgather(mine, all.data(), kN, {"infer.memory"});
  if (comm.rank() != 0) return;
  std::printf(
      "memory per rank (MiB): replicated + experts (as fp32, ratio) + KV cache + activations "
      "(logits incl.) = held; peak RSS = before load + growth\n");
  for (int r = 0; r < P; ++r) {
    const int64_t* v = &all[static_cast<size_t>(kN * r)];
    std::printf(
        "  rank %d: %.1f + %.2f (%.2f, %.3fx) + %.2f + %.1f = %.1f; peak RSS %.1f = %.1f + %.1f\n",
        r, MiB(v[0]), MiB(v[1]), MiB(v[2]),
        v[2] > 0 ? static_cast<double>(v[1]) / static_cast<double>(v[2]) : 1.0, MiB(v[3]),
        MiB(v[4]), MiB(v[0] + v[1] + v[3] + v[4]), MiB(v[5]), MiB(v[6]), MiB(v[5] - v[6]));
  }
}

// --trace: the recorder of this run (null without). A replaced router starts from random weights
// (ModelInferArgs::fresh_routers).
std::unique_ptr<TraceRecorder> MakeTrace(const ModelInferArgs& a, Model& model,
                                         const Communicator& comm) {
  return make_model_trace(a.trace, model, "infer", a.model, /*synthetic_routing=*/a.fresh_routers,
                          comm);
}

// The defaulted corpus sequence length (--model with --corpus and no --seq-len), cut to the
// model's positions.
constexpr int64_t kDefaultCorpusSeqLen = 256;

// What every rank reads before the model: the checkpoint, the tokenizer, the tokens.
struct Inputs {
  std::unique_ptr<HfCheckpoint> ck;
  std::unique_ptr<Tokenizer> tok;
  std::vector<int32_t> ids;  // the tokens, or the whole tokenized corpus (--corpus)
};

bool RunsCorpus(const ModelInferArgs& a) {
  return a.token_file.empty() && !a.corpus.empty();
}

// Every rank reads the same; the verdict is agreed by the caller. The settings were checked
// at the boundary (validate_model_infer_config).
Status ReadInputs(const ModelInferArgs& a, Inputs* in) {
  SY_ASSIGN_OR_RETURN(HfCheckpoint c, HfCheckpoint::Open(a.model));
  in->ck = std::make_unique<HfCheckpoint>(std::move(c));
  const bool corpus = RunsCorpus(a);
  if (!a.prompt.empty() || a.max_new_tokens > 0 || !a.tokenizer.empty() || corpus) {
    // Default: the model folder (a checkpoint root's latest step, as the checkpoint itself).
    std::string tpath = in->ck->dir();
    if (!a.tokenizer.empty()) {
      SY_ASSIGN_OR_RETURN(tpath, resolve_model_dir_unverified(a.tokenizer));
    }
    auto t = load_tokenizer(tpath);
    if (!t.ok() && (!a.prompt.empty() || !a.tokenizer.empty() || corpus)) return t.status();
    if (t.ok()) in->tok = std::move(t).value();
  }
  if (corpus) {  // every rank tokenizes the text (cheap next to the model) and keeps its part
    const std::string data_dir = a.data_dir.empty() ? default_data_dir() : a.data_dir;
    SY_ASSIGN_OR_RETURN(std::string text, load_corpus(a.corpus, data_dir));
    in->ids = in->tok->encode(text);
  } else if (!a.token_ids.empty()) {
    SY_ASSIGN_OR_RETURN(in->ids, ParseIds(a.token_ids));
  } else if (!a.prompt.empty()) {
    in->ids = in->tok->encode(a.prompt);
    if (in->ids.empty()) return InvalidArgument("--prompt: the text gives no tokens");
  } else if (a.seq_len == 0) {  // with --seq-len each rank reads its own part (RunSequences)
    SY_ASSIGN_OR_RETURN(in->ids, read_token_file(a.token_file));
    if (in->ids.empty()) return BadInput(a.token_file + ": the token file holds no tokens");
  }
  if (corpus && in->ids.empty())
    return BadInput("--corpus " + a.corpus + ": the text gives no tokens");
  if (a.max_tokens > 0 && static_cast<int64_t>(in->ids.size()) > a.max_tokens)
    in->ids.resize(static_cast<size_t>(a.max_tokens));
  return Status::Ok();
}

ModelOptions ToModelOptions(const ModelInferArgs& a) {
  ModelOptions opt;
  opt.expert_bits = a.quantize == "int8" ? 8 : a.quantize == "int4" ? 4 : 32;
  opt.quant_group = a.quant_group;
  opt.capacity_factor = a.capacity_factor;
  // A router distilled from the gate starts from the gate: the checkpoint's router is loaded.
  opt.router = a.distill ? "" : a.router;
  opt.seed = a.seed;
  opt.upcycle_experts = a.upcycle_experts;
  opt.moe_every = a.moe_every;
  opt.experts_top_k = a.experts_top_k;
  opt.upcycle_noise = a.upcycle_noise;
  StatusOr<const ExecContext*> exec = backend_context(a.backend, a.deterministic, a.precision);
  SY_CHECK(exec.ok()) << "backend '" << a.backend << "' was validated";
  opt.exec = *exec;
  return opt;
}

Status LoadModel(const ModelInferArgs& a, const Inputs& in, Communicator& comm,
                 std::unique_ptr<Model>* model) {
  ModelOptions opt = ToModelOptions(a);
  if (!a.placement.empty()) {  // checked against the model's E and P by its loader
    SY_ASSIGN_OR_RETURN(ExpertPlacement p, read_placement_file(a.placement));
    opt.placement = {std::make_shared<const ExpertPlacement>(std::move(p)), a.placement};
  }
  SY_ASSIGN_OR_RETURN(*model, load_model(*in.ck, opt, &comm));
  const Model& m = **model;
  if (in.tok && in.tok->vocab_size() > m.vocab_size())
    return InvalidArgument("tokenizer has " + std::to_string(in.tok->vocab_size()) +
                           " tokens, the model's vocabulary only " +
                           std::to_string(m.vocab_size()));
  if (a.max_new_tokens > 0 && !m.is_decoder())
    return InvalidArgument("--max-new-tokens needs a decoder (qwen2_moe), not an encoder");
  return Status::Ok();
}

// An encoder (BERT) reads [CLS] ... [SEP] sequences, as it was trained on them: the corpus is
// framed per --seq-len sequence, a prompt as one sequence. Token files and --token-ids are
// taken as given; a tokenizer without those tokens leaves the ids alone. Returns whether it
// framed.
bool FrameForEncoder(const ModelInferArgs& a, const Model& model, Inputs* in) {
  if (model.is_decoder() || !in->tok) return false;
  const int32_t cls = in->tok->token_id("[CLS]"), sep = in->tok->token_id("[SEP]");
  if (cls < 0 || sep < 0) return false;
  if (RunsCorpus(a) && a.seq_len >= 3) {
    in->ids = frame_sequences(in->ids, a.seq_len, cls, sep);
  } else if (!a.prompt.empty()) {
    in->ids.insert(in->ids.begin(), cls);
    in->ids.push_back(sep);
  } else {
    return false;
  }
  return true;
}

// This rank's sequences of a.seq_len tokens: from the token file (read_token_shard: each rank
// reads only its own) or the tokenized corpus, dealt the same way; *S: sequences to run.
Status ShardSequences(const ModelInferArgs& a, const Model& model, const Communicator& comm,
                      const std::vector<int32_t>& corpus_ids, SequenceShard* shard, int64_t* S) {
  const int64_t L = a.seq_len;
  const std::string& source = a.token_file.empty() ? a.corpus : a.token_file;
  if (L > model.max_positions())
    return InvalidArgument("--seq-len " + std::to_string(L) + " exceeds the model's " +
                           std::to_string(model.max_positions()) + " positions");
  if (!a.token_file.empty()) {
    SY_ASSIGN_OR_RETURN(*shard, read_token_shard(a.token_file, L, comm.rank(), comm.size()));
  } else {
    *shard = deal_sequences(corpus_ids, L, comm.rank(), comm.size());
  }
  if (a.loss && !model.is_decoder())
    return InvalidArgument("--loss: next-token loss needs a decoder (qwen2_moe)");
  *S = shard->total_sequences;
  if (a.max_tokens > 0) *S = std::min<int64_t>(*S, std::max<int64_t>(1, a.max_tokens / L));
  if (*S == 0) return InvalidArgument(source + ": fewer than --seq-len tokens");
  // Ids are checked here, before any collective: each rank holds different ones.
  for (int32_t id : shard->ids_NL)
    if (id < 0 || id >= model.vocab_size())
      return InvalidArgument(source + ": token id " + std::to_string(id) +
                             " is outside the model's vocabulary");
  return Status::Ok();
}

// --seq-len: rank r runs sequences r, r+P, ..., every rank its own sequence per step
// (replicated_tokens off: the MoE layers exchange different tokens from every rank); step k's
// collectives are tagged k. Collective. Returns the exit code.
int RunSequences(const ModelInferArgs& a, Model& model, Communicator& comm, int64_t base_rss,
                 const std::vector<int32_t>& corpus_ids) {
  const int me = comm.rank(), P = comm.size();
  const int64_t L = a.seq_len;
  SequenceShard shard;
  int64_t S = 0;
  Status st = ShardSequences(a, model, comm, corpus_ids, &shard, &S);
  if (int code = agree_status(comm, st, "infer --model --seq-len")) return code;
  // Each rank read only its part of the token file: the sequences they count must agree (a
  // different file on some host would give another step count, and collectives that never
  // pair). Files of one length that differ in content are not caught here.
  if (int code = agree_settings(comm,
                                {{"sequences", std::to_string(shard.total_sequences) + " of " +
                                                   std::to_string(L) + " tokens"}},
                                "infer --model --seq-len: the token file"))
    return code;
  model.set_replicated_tokens(false);
  const int64_t steps = (S + P - 1) / P, total = S * L;
  if (me == 0) {
    std::printf(
        "%lld sequences of %lld tokens (%lld tokens), %lld step%s of one sequence per "
        "rank\n",
        (long long)S, (long long)L, (long long)total, (long long)steps, steps == 1 ? "" : "s");
    std::fflush(stdout);
  }
  RoutingCollector routing(model.sparse_layers(), model.config_json().dump(), comm, a.out);
  const std::unique_ptr<TraceRecorder> trace = MakeTrace(a, model, comm);
  Progress progress("forward x" + std::to_string(P) + " ranks", total);
  const auto t0 = std::chrono::steady_clock::now();
  Tensor logits;
  std::vector<int32_t> seq;
  double loss_sum = 0;
  int64_t loss_count = 0;
  for (int64_t step = 0; step < steps; ++step) {
    // This rank's step-th sequence is global sequence step * P + rank (read_token_shard order).
    const size_t k = static_cast<size_t>(step);
    const bool have = k < shard.sequences.size() && shard.sequences[k] < S;
    seq.assign(
        have ? shard.ids_NL.begin() + static_cast<std::ptrdiff_t>(k * L) : shard.ids_NL.end(),
        have ? shard.ids_NL.begin() + static_cast<std::ptrdiff_t>((k + 1) * L)
             : shard.ids_NL.end());
    model.set_step(step);
    model.reset_cache();
    const StepTimer timer(comm);
    inject_process_faults(comm.rank(), step);  // SY_FAULT=kill|hang|exit|oom|...@rank=r,step=s
    st = model.forward(seq.data(), static_cast<int64_t>(seq.size()), &logits,
                       /*all_logits=*/a.loss);
    if (int code = agree_status(comm, st, "infer --model: forward")) return code;
    if (a.loss && !seq.empty()) {
      std::vector<int32_t> targets(seq.begin() + 1, seq.end());
      targets.push_back(-1);  // the last position has no next token here
      const DeviceArray<int32_t> targets_dev(model.ctx().backend, targets);  // where the op runs
      int64_t n = 0;
      loss_sum += ops::cross_entropy_sum(model.ctx(), logits.ptr(), targets_dev.data(), L,
                                         model.vocab_size(), &n);
      loss_count += n;
    }
    routing.add_step(step);
    routing.add_step_time(timer.stop(step));
    // Global sequence g's tokens are g * L .. g * L + L - 1 of the token stream.
    if (trace)
      trace->add_range(step, model.sparse_layers(), have ? shard.sequences[k] * L : 0, seq.data(),
                       static_cast<int64_t>(seq.size()));
    if (me == 0) progress.update(std::min(total, (step + 1) * P * L), step + 1 == steps);
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (me == 0)
    std::printf("%lld tokens in %.2f s: %.0f tok/s over %d rank%s\n", (long long)total, secs,
                static_cast<double>(total) / secs, P, P == 1 ? "" : "s");
  if (a.loss) {
    comm.allreduce(&loss_sum, 1, ReduceOp::kSum, {"infer.loss"});
    comm.allreduce(&loss_count, 1, ReduceOp::kSum, {"infer.loss_tokens"});
    if (me == 0 && loss_count > 0)
      std::printf("next-token loss over %lld targets: %.4f (perplexity %.2f)\n",
                  (long long)loss_count, loss_sum / static_cast<double>(loss_count),
                  std::exp(loss_sum / static_cast<double>(loss_count)));
  }
  routing.finish(total, secs, "routing over the corpus, per MoE layer:");
  if (int code = finish_trace(trace.get(), a.trace, comm)) return code;
  ModelMemory mem = model.memory();
  mem.activation_bytes += static_cast<int64_t>(logits.data.capacity() * sizeof(float));
  PrintMemory(comm, mem, base_rss);
  return 0;
}

// Rank 0: the forward's time, the --dump file, the top-5 tokens after the last position.
// Returns the --dump write's status (rank 0's; OK elsewhere).
Status PrintForward(const ModelInferArgs& a, const Model& model, const Tokenizer* tok,
                    const Tensor& device_logits, int64_t T, double best) {
  Tensor staging;
  const Tensor& logits = host_readable(device_logits, &staging);  // read on the host below
  std::printf(
      "forward of %lld tokens: %.1f ms (%.0f tok/s, best of %lld; slowest rank); "
      "rank 0: %s\n",
      (long long)T, best * 1e3, static_cast<double>(T) / best, (long long)a.repeat,
      model.last_forward_split().c_str());
  Status st;
  if (!a.dump.empty()) {
    st = npy_write_f32(a.dump, logits.ptr(), logits.shape);
    if (!st.ok()) {
      std::fprintf(stderr, "[switchyard] rank 0: --dump: %s\n", st.ToString().c_str());
    } else {
      std::printf("wrote %s [%lld, %lld] float32 logits\n", a.dump.c_str(),
                  (long long)logits.shape[0], (long long)logits.shape[1]);
    }
  }
  const int64_t V = model.vocab_size();
  const float* last = logits.row(logits.shape[0] - 1);
  std::vector<int32_t> top(static_cast<size_t>(V));
  std::iota(top.begin(), top.end(), 0);
  const int64_t k = std::min<int64_t>(5, V);
  std::partial_sort(top.begin(), top.begin() + k, top.end(),
                    [&](int32_t x, int32_t y) { return last[x] > last[y]; });
  std::printf("%s position %lld:", model.is_decoder() ? "next token after" : "top tokens at",
              (long long)(T - 1));
  for (int64_t i = 0; i < k; ++i) {
    std::printf(" %d (%.3f)", top[i], last[top[i]]);
    if (tok) std::printf(" %s", ("\"" + tok->decode({top[i]}) + "\"").c_str());
  }
  std::printf("\n");
  std::fflush(stdout);
  return st;
}

// The forward of the given tokens (all logits unless only generating), a.repeat times, the
// best slowest-rank time kept; repeat r is tagged step r. Collective. Returns the exit code.
int RunForward(const ModelInferArgs& a, Model& model, Communicator& comm, const Inputs& in,
               Tensor* logits) {
  const int64_t T = static_cast<int64_t>(in.ids.size());
  double best = 1e30;
  switchyard::StepTime last;  // the last repeat's, whose routing the report holds (as step 0)
  for (int64_t r = 0; r < a.repeat; ++r) {
    comm.barrier({"infer.forward"});
    model.set_step(r);
    model.reset_cache();
    const StepTimer timer(comm);
    inject_process_faults(comm.rank(), r);  // SY_FAULT=...@rank=r,step=<repeat>
    Status st = model.forward(in.ids.data(), T, logits,
                              /*all_logits=*/a.max_new_tokens == 0 || !a.dump.empty());
    if (int code = agree_status(comm, st, "infer --model: forward")) return code;
    last = timer.stop(0);
    double slowest = model.last_forward_seconds();
    comm.allreduce(&slowest, 1, ReduceOp::kMax, {"infer.time"});
    best = std::min(best, slowest);
  }
  if (!ops::all_finite(model.ctx(), logits->ptr(), logits->numel()) && comm.rank() == 0)
    std::fprintf(stderr, "[switchyard] warning: non-finite logits\n");
  Status st;
  if (comm.rank() == 0) st = PrintForward(a, model, in.tok.get(), *logits, T, best);
  if (int code = agree_status(comm, st, "infer --model: output")) return code;

  // The routing of the forward: metrics table (rank 0) and per-rank load reports.
  RoutingCollector routing(model.sparse_layers(), model.config_json().dump(), comm, a.out);
  routing.add_step(0);
  routing.add_step_time(last);
  routing.finish(T, best, "routing of the forward, per MoE layer:");
  // Replicated tokens: this rank's MoE layers routed its slice [me * S, ...) of S = ceil(T / P)
  // tokens (runtime/model/token_sharded_moe.h).
  const std::unique_ptr<TraceRecorder> trace = MakeTrace(a, model, comm);
  if (trace) {
    const int64_t S = (T + comm.size() - 1) / comm.size(), begin = std::min(T, comm.rank() * S);
    const int64_t n = std::min(S, T - begin);
    for (MoeLayer* l : model.sparse_layers()) SY_CHECK_EQ(l->last_stats().T, n);
    trace->add_range(0, model.sparse_layers(), begin, in.ids.data() + begin, n);
  }
  return finish_trace(trace.get(), a.trace, comm);
}

// Generation with the KV cache after RunForward (the prefill): printed as it goes when there is
// a tokenizer. Collective. Returns the exit code.
int RunGenerate(const ModelInferArgs& a, Model& model, Communicator& comm, const Inputs& in,
                const Tensor& logits) {
  const int me = comm.rank();
  const Tokenizer* tok = in.tok.get();
  Progress progress("generate", a.max_new_tokens);
  const auto t0 = std::chrono::steady_clock::now();
  if (me == 0 && tok) std::printf("%s", tok->decode(in.ids).c_str());
  int64_t done = 0;
  SamplingConfig sampling;
  sampling.temperature = a.temperature;
  sampling.top_k = a.top_k;
  sampling.seed = a.seed;
  Tensor staging;
  const Tensor& host_logits = host_readable(logits, &staging);
  auto out = model.generate(host_logits.row(host_logits.shape[0] - 1), a.max_new_tokens, sampling,
                            comm, [&](int32_t next) {
                              if (me != 0) return;
                              if (tok) {
                                std::printf("%s", tok->decode({next}).c_str());
                                std::fflush(stdout);
                              } else if (done > 0) {
                                progress.update(done);
                              }
                              ++done;
                            });
  if (int code = agree_status(comm, out.status(), "infer --model: decode")) return code;
  const double gen_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (me == 0) {
    if (tok) std::printf("\n");
    std::printf("generated %zu tokens in %.2f s (%.1f tok/s, %s):", out->size(), gen_s,
                static_cast<double>(out->size()) / gen_s, a.temperature > 0 ? "sampled" : "greedy");
    for (int32_t id : *out) std::printf(" %d", id);
    std::printf("\n");
  }
  return 0;
}

}  // namespace

ModelInferArgs ModelInferArgs::FromConfig(const switchyard::ModelInferConfig& c) {
  ModelInferArgs a;
  a.model = c.model();
  a.token_ids = c.token_ids();
  a.prompt = c.prompt();
  a.token_file = c.token_file();
  a.max_tokens = c.max_tokens();
  a.seq_len = c.seq_len();
  a.corpus = c.corpus();
  a.data_dir = c.data_dir();
  a.loss = c.loss();
  a.tokenizer = c.tokenizer();
  a.dump = c.dump();
  a.out = c.out();
  a.quantize = c.quantize();
  a.quant_group = c.quant_group();
  a.router = c.router();
  a.capacity_factor = c.capacity_factor();
  a.max_new_tokens = c.max_new_tokens();
  a.temperature = c.temperature();
  a.top_k = c.top_k();
  a.seed = c.seed();
  a.repeat = c.repeat();
  a.upcycle_experts = c.upcycle_experts();
  a.moe_every = c.moe_every();
  a.experts_top_k = c.experts_top_k();
  a.upcycle_noise = c.upcycle_noise();
  a.deterministic = c.deterministic();
  a.backend = c.backend();
  a.comm = c.comm();
  a.precision = c.precision();
  a.trace = c.trace();
  a.distill = c.distill().enabled();
  a.distill_cfg.iterations = c.distill().iterations();
  a.distill_cfg.lr = c.distill().lr();
  a.distill_cfg.max_tokens = c.distill().max_tokens();
  return a;
}

// The kind of the model's gates (the first MoE layer's router), "" for a dense model.
std::string TeacherName(Model& model) {
  const std::vector<MoeLayer*> moe = model.sparse_layers();
  return moe.empty() ? std::string() : moe.front()->router().name();
}

// --router R (not the checkpoint's kind) with distillation: every gate replaced by R, each
// fitted to its gate on this rank's share of the input (sequences of seq_len, or of 256
// tokens, dealt round-robin; the whole input on every rank when it is shorter than one per
// rank), as `train` warm-starts a replaced router. Collective. Returns the exit code.
int WarmStartRouters(const ModelInferArgs& a, const Inputs& in, Model& model, Communicator& comm) {
  Status st;
  const int me = comm.rank(), P = comm.size();
  const int64_t L = a.seq_len > 0 ? a.seq_len : std::min<int64_t>(256, model.max_positions());
  std::vector<int32_t> ids = in.ids;
  if (ids.empty()) {  // --token-file with --seq-len: this rank's own sequences
    auto shard = read_token_shard(a.token_file, L, me, P);
    st = shard.status();
    if (st.ok()) ids = shard->ids_NL;
  }
  if (int code = agree_status(comm, st, "infer --model --router: distillation input")) return code;
  std::vector<std::vector<int32_t>> seqs;
  const int64_t n = static_cast<int64_t>(ids.size());
  const bool shared = a.token_file.empty() || a.seq_len == 0;  // every rank holds all of ids
  for (int64_t s = shared ? me : 0; s * L < n; s += shared ? P : 1)
    seqs.emplace_back(ids.begin() + s * L, ids.begin() + std::min(n, (s + 1) * L));
  if (seqs.empty()) seqs.emplace_back(ids.begin(), ids.begin() + std::min(n, L));
  if (me == 0) {
    std::printf(
        "router warm start: %s -> %s, distilling each MoE layer on the input (%lld Adam "
        "iterations; --no-distill: fresh routers)\n",
        TeacherName(model).c_str(), a.router.c_str(), (long long)a.distill_cfg.iterations);
    std::fflush(stdout);
  }
  auto rep = warm_start_routers(model, &comm, a.router, a.seed, 0, seqs, a.distill_cfg,
                                distill_progress_printer(me));
  if (int code = agree_status(comm, rep.status(), "infer --model: router warm start")) return code;
  print_distill_report(*rep, &comm);
  return 0;
}

int run_model_infer(const ModelInferArgs& args, Communicator& world) {
  const int P = world.size();
  ModelInferArgs a = args;

  Inputs in;
  Status st = ReadInputs(a, &in);
  if (int code = agree_status(world, st, "infer --model")) return code;
  if (int code = agree_model(world, *in.ck, "infer --model")) return code;
  if (int code = agree_tokens(world, in.ids, "infer --model: the input tokens")) return code;
  // Where the model runs, then what moves its tensors (--comm): every rank has its backend
  // context (and so its device) before the collective NCCL bootstrap. From here on everything
  // goes through that communicator (NCCL stages host buffers: the counts, losses, reports).
  st = backend_context(a.backend, a.deterministic, a.precision).status();
  if (int code = agree_status(world, st, "infer --model: backend")) return code;
  std::unique_ptr<Communicator> owned_comm;  // destroyed before `world`, on every rank
  StatusOr<Communicator*> opened = open_model_communicator(world, a.comm, a.backend, &owned_comm);
  if (int code = agree_status(world, opened.status(), "infer --model: --comm")) return code;
  Communicator& comm = **opened;

  const int64_t base_rss = RssBytes();
  const auto t_load = std::chrono::steady_clock::now();
  // --router of another kind than the checkpoint's gate (not an upcycled dense BERT, whose
  // routers are new by construction): distilled from the gate, or fresh with --no-distill.
  {
    StatusOr<std::string> saved = JsonConfigReader(in.ck->config(), in.ck->dir())
                                      .get_string("switchyard_router", kDefaultRouterName);
    const bool replaces = !a.router.empty() && a.upcycle_experts == 0 &&
                          in.ck->config().value("model_type", std::string()) != "bert" &&
                          (!saved.ok() || a.router != saved.value());
    a.distill = a.distill && replaces;
  }
  std::unique_ptr<Model> model;
  st = LoadModel(a, in, comm, &model);
  if (int code = agree_status(comm, st, "infer --model: load")) return code;
  if (a.distill)
    if (int code = WarmStartRouters(a, in, *model, comm)) return code;
  const double load_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t_load).count();
  {
    // The checkpoint's router kind, as its loader read it (the load succeeded, so it parses).
    StatusOr<std::string> saved = JsonConfigReader(in.ck->config(), in.ck->dir())
                                      .get_string("switchyard_router", kDefaultRouterName);
    const std::vector<MoeLayer*> moe = model->sparse_layers();
    a.fresh_routers = !a.distill && !a.router.empty() && saved.ok() && a.router != saved.value() &&
                      !moe.empty() && moe.front()->router().num_params() > 0;
  }
  if (comm.rank() == 0) {
    const std::string where = a.backend == "cpu"
                                  ? std::string()
                                  : "; backend " + a.backend + ", comm " + comm.backend() +
                                        (a.precision == "fp32" ? "" : ", GEMMs " + a.precision);
    std::printf("switchyard infer: %s, %d rank%s; %s; experts %s%s%s%s; loaded in %.2f s\n",
                in.ck->dir().c_str(), P, P == 1 ? "" : "s", model->describe(P).c_str(),
                a.quantize == "none" ? "fp32" : a.quantize.c_str(),
                a.placement.empty() ? "" : (", placed by " + a.placement).c_str(),
                a.deterministic ? ", deterministic" : "", where.c_str(), load_s);
    // --router on a checkpoint: fresh routers, not the behaviour of a trained one. Said once
    // here, so a COLLAPSED table below is not read as a property of the router kind.
    if (a.fresh_routers)
      std::printf(
          "note: --router %s replaced every MoE gate by a freshly initialised %s router "
          "(random weights, neither distilled nor trained: --no-distill): its routing is "
          "synthetic; `switchyard train --what routers --router %s` fits one to the gate\n",
          a.router.c_str(), a.router.c_str(), a.router.c_str());
    std::fflush(stdout);
  }

  if (RunsCorpus(a) && a.seq_len == 0)
    a.seq_len = std::min(kDefaultCorpusSeqLen, model->max_positions());
  if (FrameForEncoder(a, *model, &in) && comm.rank() == 0)
    std::printf("encoder input: [CLS] + %s + [SEP] per sequence\n",
                RunsCorpus(a) ? (std::to_string(a.seq_len - 2) + " tokens").c_str() : "the prompt");
  if (a.seq_len > 0) return RunSequences(a, *model, comm, base_rss, in.ids);

  Tensor logits;
  // Refused before the prefill, not after it.
  if (a.max_new_tokens > 0)
    if (int code = agree_status(comm, model->check_decodable(), "infer --model --generate"))
      return code;
  if (int code = RunForward(a, *model, comm, in, &logits)) return code;
  if (a.max_new_tokens > 0)
    if (int code = RunGenerate(a, *model, comm, in, logits)) return code;
  ModelMemory mem = model->memory();
  mem.activation_bytes += static_cast<int64_t>(logits.data.capacity() * sizeof(float));
  PrintMemory(comm, mem, base_rss);
  return 0;
}

}  // namespace sy::launch
