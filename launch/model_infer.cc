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

#include "launch/commands.h"
#include "launch/infer_run.h"
#include "launch/progress.h"
#include "launch/routing_collector.h"
#include "routers/metrics.h"
#include "runtime/backend/ops.h"
#include "runtime/core/rng.h"
#include "runtime/data/corpus.h"
#include "runtime/data/token_file.h"
#include "runtime/data/tokenizer.h"
#include "runtime/io/hf_checkpoint.h"
#include "runtime/io/npy.h"
#include "runtime/model/bert_moe.h"
#include "runtime/model/qwen2_moe.h"

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
void PrintMemory(Communicator& comm, const Qwen2MoeMemory& m, int64_t base_rss) {
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

// Picks the next token from logits [V]: greedy at temperature 0, else a sample from
// softmax(logits / temperature) over the top_k most likely (all when 0). Deterministic in
// (seed, step).
int32_t PickToken(const float* logits, int64_t V, double temperature, int64_t top_k, uint64_t seed,
                  int64_t step) {
  if (temperature <= 0) return static_cast<int32_t>(std::max_element(logits, logits + V) - logits);
  std::vector<int32_t> idx(static_cast<size_t>(V));
  std::iota(idx.begin(), idx.end(), 0);
  const int64_t k = top_k > 0 ? std::min(top_k, V) : V;
  std::partial_sort(idx.begin(), idx.begin() + k, idx.end(),
                    [&](int32_t a, int32_t b) { return logits[a] > logits[b]; });
  std::vector<double> p(static_cast<size_t>(k));
  const double mx = logits[idx[0]];
  double sum = 0;
  for (int64_t i = 0; i < k; ++i) sum += p[i] = std::exp((logits[idx[i]] - mx) / temperature);
  double u = Rng(seed, static_cast<uint64_t>(step)).uniform() * sum;
  for (int64_t i = 0; i < k; ++i)
    if ((u -= p[i]) <= 0) return idx[i];
  return idx[k - 1];
}

// The two architectures behind one face for this command: a decoder (Qwen2-MoE: KV cache,
// generation) or an encoder (BERT-MoE: logits of the whole sequence at once).
class LoadedModel {
 public:
  static StatusOr<LoadedModel> Load(const HfCheckpoint& ck, const std::string& type,
                                    const ModelInferArgs& a, Communicator* comm) {
    LoadedModel m;
    const int bits = a.quantize == "int8" ? 8 : a.quantize == "int4" ? 4 : 32;
    if (type == "qwen2_moe") {
      Qwen2MoeOptions opt;
      opt.expert_bits = bits;
      opt.quant_group = a.quant_group;
      opt.capacity_factor = a.capacity_factor;
      if (!a.router.empty()) opt.router = a.router;
      opt.seed = a.seed;
      opt.exec = make_context("cpu", a.deterministic);
      SY_ASSIGN_OR_RETURN(m.qwen_, Qwen2MoeModel::load(ck, opt, comm));
    } else {
      BertMoeOptions opt;
      opt.num_experts = a.upcycle_experts;
      opt.moe_every = a.moe_every;
      opt.top_k = a.experts_top_k;
      if (!a.router.empty()) opt.router.name = a.router;
      opt.router.seed = a.seed;
      opt.upcycle_noise = static_cast<float>(a.upcycle_noise);
      opt.capacity_factor = a.capacity_factor;
      opt.expert_bits = bits;
      opt.quant_group = a.quant_group;
      opt.seed = a.seed;
      opt.exec = make_context("cpu", a.deterministic);
      SY_ASSIGN_OR_RETURN(m.bert_, BertMoeModel::load(ck, opt, comm));
    }
    return m;
  }

  bool decoder() const { return qwen_ != nullptr; }
  int64_t vocab() const { return qwen_ ? qwen_->config().vocab_size : bert_->config().vocab_size; }
  int64_t max_positions() const {
    return qwen_ ? qwen_->config().max_position_embeddings
                 : bert_->config().max_position_embeddings;
  }
  std::string describe(int P) const {
    char b[512];
    if (qwen_) {
      const Qwen2MoeConfig& c = qwen_->config();
      std::snprintf(b, sizeof(b),
                    "qwen2_moe, %lld layers, hidden %lld, %lld heads (%lld kv), %lld experts "
                    "(%lld per rank) of %lld, top-%lld%s, shared %lld, vocab %lld",
                    (long long)c.num_hidden_layers, (long long)c.hidden_size,
                    (long long)c.num_attention_heads, (long long)c.num_key_value_heads,
                    (long long)c.num_experts, (long long)(c.num_experts / P),
                    (long long)c.moe_intermediate_size, (long long)c.num_experts_per_tok,
                    c.norm_topk_prob ? " (renormalized)" : "",
                    (long long)c.shared_expert_intermediate_size, (long long)c.vocab_size);
    } else {
      const BertMoeConfig& c = bert_->config();
      std::snprintf(b, sizeof(b),
                    "bert%s encoder, %lld layers, hidden %lld, %lld heads, %lld experts (%lld "
                    "per rank) every %lld layer(s), top-%lld, vocab %lld",
                    c.num_experts > 0 ? "_moe" : "", (long long)c.num_hidden_layers,
                    (long long)c.hidden_size, (long long)c.num_attention_heads,
                    (long long)c.num_experts, (long long)(c.num_experts / P),
                    (long long)c.moe_every, (long long)c.num_experts_per_tok,
                    (long long)c.vocab_size);
    }
    return b;
  }
  // The whole sequence from position 0 (a decoder's cache is reset first).
  Status forward(const std::vector<int32_t>& ids, Tensor* logits, bool all_logits) {
    const int64_t T = static_cast<int64_t>(ids.size());
    if (qwen_) {
      qwen_->reset_cache();
      return qwen_->forward(ids.data(), T, logits, all_logits);
    }
    return bert_->forward(ids.data(), nullptr, T, logits);
  }
  void set_replicated_tokens(bool r) {
    if (qwen_) qwen_->set_replicated_tokens(r);
    if (bert_) bert_->set_replicated_tokens(r);
  }
  // Decoders only: one more token through the KV cache, logits [1, V].
  Status decode(int32_t id, Tensor* logits) { return qwen_->forward(&id, 1, logits, false); }
  int64_t cache_len() const { return qwen_ ? qwen_->cache_len() : 0; }
  double last_seconds() const {
    return qwen_ ? qwen_->last_times().total_s : bert_->last_times().total_s;
  }
  std::string last_split() const {
    char b[256];
    if (qwen_) {
      const Qwen2MoeTimes& t = qwen_->last_times();
      std::snprintf(b, sizeof(b), "attention %.1f ms, moe %.1f ms, dense mlp %.1f ms, head %.1f ms",
                    t.attention_s * 1e3, t.moe_s * 1e3, t.dense_mlp_s * 1e3, t.head_s * 1e3);
    } else {
      const BertMoeTimes& t = bert_->last_times();
      std::snprintf(b, sizeof(b), "attention %.1f ms, moe %.1f ms, dense ffn %.1f ms, head %.1f ms",
                    t.attention_s * 1e3, t.moe_s * 1e3, t.dense_ffn_s * 1e3, t.head_s * 1e3);
    }
    return b;
  }
  // MoE layers in layer order (dense layers left out).
  std::vector<MoeLayer*> moe_layers() {
    std::vector<MoeLayer*> out;
    for (MoeLayer* l : qwen_ ? qwen_->moe_layers() : bert_->moe_layers())
      if (l) out.push_back(l);
    return out;
  }
  std::string config_json() const {
    return (qwen_ ? qwen_->config().to_json() : bert_->config().to_json()).dump();
  }
  Qwen2MoeMemory memory() const {
    if (qwen_) return qwen_->memory();
    const BertMoeMemory b = bert_->memory();
    Qwen2MoeMemory m;
    m.replicated_bytes = b.replicated_bytes;
    m.expert_bytes = b.expert_bytes;
    m.expert_bytes_fp32 = b.expert_bytes_fp32;
    return m;
  }

 private:
  std::unique_ptr<Qwen2MoeModel> qwen_;
  std::unique_ptr<BertMoeModel> bert_;
};

// --token-file with --seq-len: the file cut into sequences, rank r running sequences r, r+P,
// ... (read_token_shard: each rank reads only its own), every rank its own sequence per step
// (replicated_tokens off: the MoE layers exchange different tokens from every rank).
// Collective. Returns the exit code.
int RunSequences(const ModelInferArgs& a, LoadedModel& model, Communicator& comm, int64_t base_rss,
                 const std::vector<int32_t>& corpus_ids) {
  const int me = comm.rank(), P = comm.size();
  const int64_t L = a.seq_len;
  SequenceShard shard;
  int64_t S = 0;
  Status st = [&]() -> Status {
    if (L > model.max_positions())
      return InvalidArgument("--seq-len " + std::to_string(L) + " exceeds the model's " +
                             std::to_string(model.max_positions()) + " positions");
    if (!a.token_file.empty()) {
      SY_ASSIGN_OR_RETURN(shard, read_token_shard(a.token_file, L, me, P));
    } else {  // the tokenized corpus, dealt the same way: sequence g to rank g % P
      shard.total_sequences = static_cast<int64_t>(corpus_ids.size()) / L;
      for (int64_t g = me; g < shard.total_sequences; g += P) {
        shard.sequences.push_back(g);
        shard.ids_NL.insert(shard.ids_NL.end(), corpus_ids.begin() + g * L,
                            corpus_ids.begin() + (g + 1) * L);
      }
    }
    if (a.loss && !model.decoder())
      return InvalidArgument("--loss: next-token loss needs a decoder (qwen2_moe)");
    S = shard.total_sequences;
    if (a.max_tokens > 0) S = std::min<int64_t>(S, std::max<int64_t>(1, a.max_tokens / L));
    if (S == 0)
      return InvalidArgument((a.token_file.empty() ? a.corpus : a.token_file) +
                             ": fewer than --seq-len tokens");
    // Ids are checked here, before any collective: each rank holds different ones.
    for (int32_t id : shard.ids_NL)
      if (id < 0 || id >= model.vocab())
        return InvalidArgument((a.token_file.empty() ? a.corpus : a.token_file) + ": token id " +
                               std::to_string(id) + " is outside the model's vocabulary");
    return Status::Ok();
  }();
  if (int code = agree_status(comm, st, "infer --model --seq-len")) return code;
  model.set_replicated_tokens(false);
  const int64_t steps = (S + P - 1) / P, total = S * L;
  if (me == 0) {
    std::printf(
        "%lld sequences of %lld tokens (%lld tokens), %lld step%s of one sequence per "
        "rank\n",
        (long long)S, (long long)L, (long long)total, (long long)steps, steps == 1 ? "" : "s");
    std::fflush(stdout);
  }
  RoutingCollector routing(model.moe_layers(), model.config_json(), comm, a.out);
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
    st = model.forward(seq, &logits, /*all_logits=*/a.loss);
    if (int code = agree_status(comm, st, "infer --model: forward")) return code;
    if (a.loss && !seq.empty()) {
      std::vector<int32_t> targets(seq.begin() + 1, seq.end());
      targets.push_back(-1);  // the last position has no next token here
      int64_t n = 0;
      loss_sum += ops::cross_entropy_sum(default_context(), logits.ptr(), targets.data(), L,
                                         model.vocab(), &n);
      loss_count += n;
    }
    routing.add_step(step);
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
  Qwen2MoeMemory mem = model.memory();
  mem.activation_bytes += static_cast<int64_t>(logits.data.capacity() * sizeof(float));
  PrintMemory(comm, mem, base_rss);
  return 0;
}

}  // namespace

int run_model_infer(const ModelInferArgs& a, Communicator& comm) {
  const int me = comm.rank(), P = comm.size();

  // ---- checkpoint, tokenizer, tokens: every rank reads the same, verdicts agreed ----
  std::unique_ptr<HfCheckpoint> ck;
  std::unique_ptr<Tokenizer> tok;
  std::vector<int32_t> ids;
  std::string model_type;
  Status st = [&]() -> Status {
    const bool corpus = a.seq_len > 0 && a.token_file.empty() && !a.corpus.empty();
    int given = !a.token_ids.empty() + !a.prompt.empty() + !a.token_file.empty() + corpus;
    if (given != 1)
      return InvalidArgument("--model needs exactly one of --token-ids, --prompt, --token-file");
    if (a.seq_len < 0 || (a.seq_len > 0 && a.token_file.empty() && !corpus))
      return InvalidArgument("--seq-len needs --token-file (and must be > 0)");
    if (a.quantize != "none" && a.quantize != "int8" && a.quantize != "int4")
      return InvalidArgument("--quantize must be none, int8 or int4");
    if (a.max_new_tokens < 0 || a.repeat < 1 || a.temperature < 0)
      return InvalidArgument(
          "--max-new-tokens, --repeat and --temperature must be >= 0 (repeat >= 1)");
    SY_ASSIGN_OR_RETURN(HfCheckpoint c, HfCheckpoint::Open(a.model));
    ck = std::make_unique<HfCheckpoint>(std::move(c));
    SY_ASSIGN_OR_RETURN(model_type, ck->config_string("model_type", ""));
    if (model_type != "qwen2_moe" && model_type != "bert" && model_type != "bert_moe")
      return BadInput(ck->dir() + "/config.json: model_type \"" + model_type +
                      "\" is not supported by infer --model (qwen2_moe, bert, bert_moe)");
    const std::string tpath = a.tokenizer.empty() ? ck->dir() : a.tokenizer;  // the step folder
    if (!a.prompt.empty() || a.max_new_tokens > 0 || !a.tokenizer.empty() || corpus) {
      auto t = load_tokenizer(tpath);
      if (!t.ok() && (!a.prompt.empty() || !a.tokenizer.empty() || corpus)) return t.status();
      if (t.ok()) tok = std::move(t).value();
    }
    if (corpus) {  // every rank tokenizes the text (cheap next to the model) and keeps its part
      SY_ASSIGN_OR_RETURN(
          std::string text,
          load_corpus(a.corpus, a.data_dir.empty() ? default_data_dir() : a.data_dir));
      ids = tok->encode(text);
    }
    if (!a.token_ids.empty()) {
      SY_ASSIGN_OR_RETURN(ids, ParseIds(a.token_ids));
    } else if (!a.prompt.empty()) {
      ids = tok->encode(a.prompt);
      if (ids.empty()) return InvalidArgument("--prompt: the text gives no tokens");
    } else if (a.seq_len > 0) {  // read per rank later (RunSequences)
      if (!a.dump.empty() || a.max_new_tokens > 0)
        return InvalidArgument("--seq-len runs a corpus: no --dump or --max-new-tokens");
    } else {
      SY_ASSIGN_OR_RETURN(ids, read_token_file(a.token_file));
    }
    if (a.max_tokens > 0 && static_cast<int64_t>(ids.size()) > a.max_tokens)
      ids.resize(static_cast<size_t>(a.max_tokens));
    return Status::Ok();
  }();
  if (int code = agree_status(comm, st, "infer --model")) return code;

  const int64_t base_rss = RssBytes();
  const auto t_load = std::chrono::steady_clock::now();
  std::unique_ptr<LoadedModel> model;
  st = [&]() -> Status {
    SY_ASSIGN_OR_RETURN(LoadedModel m, LoadedModel::Load(*ck, model_type, a, &comm));
    model = std::make_unique<LoadedModel>(std::move(m));
    if (tok && tok->vocab_size() > model->vocab())
      return InvalidArgument("tokenizer has " + std::to_string(tok->vocab_size()) +
                             " tokens, the model's vocabulary only " +
                             std::to_string(model->vocab()));
    if (a.max_new_tokens > 0 && !model->decoder())
      return InvalidArgument("--max-new-tokens needs a decoder (qwen2_moe), not an encoder");
    return Status::Ok();
  }();
  if (int code = agree_status(comm, st, "infer --model: load")) return code;
  const double load_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t_load).count();
  const int64_t T = static_cast<int64_t>(ids.size()), V = model->vocab();
  if (me == 0) {
    std::printf("switchyard infer: %s, %d rank%s; %s; experts %s%s; loaded in %.2f s\n",
                ck->dir().c_str(), P, P == 1 ? "" : "s", model->describe(P).c_str(),
                a.quantize == "none" ? "fp32" : a.quantize.c_str(),
                a.deterministic ? ", deterministic" : "", load_s);
    std::fflush(stdout);
  }

  if (a.seq_len > 0) return RunSequences(a, *model, comm, base_rss, ids);

  // ---- forward of the given tokens (all logits) ----
  Tensor logits;
  double best = 1e30;
  for (int64_t r = 0; r < a.repeat; ++r) {
    comm.barrier({"infer.forward"});
    st = model->forward(ids, &logits, /*all_logits=*/a.max_new_tokens == 0 || !a.dump.empty());
    if (int code = agree_status(comm, st, "infer --model: forward")) return code;
    double slowest = model->last_seconds();
    comm.allreduce(&slowest, 1, ReduceOp::kMax, {"infer.time"});
    best = std::min(best, slowest);
  }
  if (!ops::all_finite(default_context(), logits.ptr(), logits.numel()) && me == 0)
    std::fprintf(stderr, "[switchyard] warning: non-finite logits\n");
  if (me == 0) {
    std::printf(
        "forward of %lld tokens: %.1f ms (%.0f tok/s, best of %lld; slowest rank); "
        "rank 0: %s\n",
        (long long)T, best * 1e3, static_cast<double>(T) / best, (long long)a.repeat,
        model->last_split().c_str());
    if (!a.dump.empty()) {
      st = npy_write_f32(a.dump, logits.ptr(), logits.shape);
      if (!st.ok()) {
        std::fprintf(stderr, "[switchyard] rank 0: --dump: %s\n", st.ToString().c_str());
      } else {
        std::printf("wrote %s [%lld, %lld] float32 logits\n", a.dump.c_str(),
                    (long long)logits.shape[0], (long long)logits.shape[1]);
      }
    }
    // Top-5 next tokens after the last position.
    const float* last = logits.row(logits.shape[0] - 1);
    std::vector<int32_t> top(static_cast<size_t>(V));
    std::iota(top.begin(), top.end(), 0);
    const int64_t k = std::min<int64_t>(5, V);
    std::partial_sort(top.begin(), top.begin() + k, top.end(),
                      [&](int32_t x, int32_t y) { return last[x] > last[y]; });
    std::printf("%s position %lld:", model->decoder() ? "next token after" : "top tokens at",
                (long long)(T - 1));
    for (int64_t i = 0; i < k; ++i) {
      std::printf(" %d (%.3f)", top[i], last[top[i]]);
      if (tok) std::printf(" %s", ("\"" + tok->decode({top[i]}) + "\"").c_str());
    }
    std::printf("\n");
    std::fflush(stdout);
  }
  int dump_code = st.ok() ? 0 : st.exit_code();
  comm.allreduce(&dump_code, 1, ReduceOp::kMax, {"infer.dump"});
  if (dump_code) return dump_code;

  // ---- routing of the forward: metrics table (rank 0) and per-rank load reports ----
  {
    RoutingCollector routing(model->moe_layers(), model->config_json(), comm, a.out);
    routing.add_step(0);
    routing.finish(T, best, "routing of the forward, per MoE layer:");
  }

  // ---- generation with the KV cache: prefill was the forward above ----
  if (a.max_new_tokens > 0) {
    std::vector<int32_t> out;
    Progress progress("generate", a.max_new_tokens);
    const auto t0 = std::chrono::steady_clock::now();
    const float* last = logits.row(logits.shape[0] - 1);
    if (me == 0 && tok) std::printf("%s", tok->decode(ids).c_str());
    for (int64_t s = 0; s < a.max_new_tokens; ++s) {
      int32_t next = me == 0 ? PickToken(last, V, a.temperature, a.top_k, a.seed, s) : -1;
      comm.allreduce(&next, 1, ReduceOp::kMax, {"infer.next_token"});  // rank 0 decides
      out.push_back(next);
      if (me == 0 && tok) {
        std::printf("%s", tok->decode({next}).c_str());
        std::fflush(stdout);
      }
      if (s + 1 == a.max_new_tokens || model->cache_len() >= model->max_positions()) break;
      st = model->decode(next, &logits);
      if (int code = agree_status(comm, st, "infer --model: decode")) return code;
      last = logits.ptr();
      if (me == 0 && !tok) progress.update(s + 1);
    }
    const double gen_s =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (me == 0) {
      if (tok) std::printf("\n");
      std::printf("generated %zu tokens in %.2f s (%.1f tok/s, %s):", out.size(), gen_s,
                  static_cast<double>(out.size()) / gen_s,
                  a.temperature > 0 ? "sampled" : "greedy");
      for (int32_t id : out) std::printf(" %d", id);
      std::printf("\n");
    }
  }
  Qwen2MoeMemory mem = model->memory();
  mem.activation_bytes += static_cast<int64_t>(logits.data.capacity() * sizeof(float));
  PrintMemory(comm, mem, base_rss);
  return 0;
}

}  // namespace sy::launch
