#include "launch/study_render.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "runtime/report/cluster_report.h"
#include "runtime/report/compare.h"
#include "runtime/report/report_io.h"

namespace sy::launch {
namespace {

double MeanOf(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x;
  return v.empty() ? 0 : s / static_cast<double>(v.size());
}

// max/mean and coefficient of variation (std/mean) of a load vector; 0 and 0 without load.
std::pair<double, double> Spread(const std::vector<double>& v) {
  const double mean = MeanOf(v);
  if (mean <= 0) return {0, 0};
  double mx = 0, var = 0;
  for (double x : v) {
    mx = std::max(mx, x);
    var += (x - mean) * (x - mean);
  }
  return {mx / mean, std::sqrt(var / static_cast<double>(v.size())) / mean};
}

double Fraction(int64_t part, int64_t whole) {
  return whole > 0 ? static_cast<double>(part) / static_cast<double>(whole) : 0;
}

}  // namespace

std::vector<double> kept_ranks_per_token(const Trace& trace, int P) {
  const TraceMeta& m = trace.meta();
  const int64_t per_rank = std::max<int64_t>(1, m.experts / P);
  std::vector<double> out(static_cast<size_t>(m.layers()), 0);
  const int64_t tokens = trace.tokens();
  for (size_t l = 0; l < out.size(); ++l) {
    int64_t sum = 0;
    for (const TraceShard& sh : trace.shards) {
      const TraceLayer& tl = sh.layers[l];
      const int64_t N = static_cast<int64_t>(sh.token_id_N.size());
      const int64_t K = N > 0 ? static_cast<int64_t>(tl.topk_ids_NK.size()) / N : 0;
      std::vector<int64_t> seen(static_cast<size_t>(P), -1);
      for (int64_t n = 0; n < N; ++n)
        for (int64_t k = 0; k < K; ++k) {
          const size_t i = static_cast<size_t>(n * K + k);
          if (!tl.kept_NK[i]) continue;
          const int64_t r = std::min<int64_t>(P - 1, tl.topk_ids_NK[i] / per_rank);
          if (seen[static_cast<size_t>(r)] != n) {
            seen[static_cast<size_t>(r)] = n;
            ++sum;
          }
        }
    }
    out[l] = Fraction(sum, tokens);
  }
  return out;
}

Status study_figures(const switchyard::ClusterReport& cr,
                     const std::vector<double>& ranks_per_token, const RouterProjection& c100,
                     const RouterProjection& c125, double collapse_threshold,
                     switchyard::RouterStudy* out) {
  const int P = cr.world_size();
  const size_t L = static_cast<size_t>(cr.layers_size());
  for (const RouterProjection* rp : {&c100, &c125})
    if (rp->points.size() != 1 || rp->points[0].layers.size() != L)
      return BadInput("study: the trace's MoE layers do not match the load reports'");
  if (ranks_per_token.size() != L)
    return BadInput("study: the trace's MoE layers do not match the load reports'");
  while (static_cast<size_t>(out->layers_size()) < L) out->add_layers();
  switchyard::StudyLayer* all = out->mutable_overall();
  all->Clear();
  all->set_layer(-1);
  std::vector<std::vector<double>> per_layer_means(10);
  bool collapsed = false;
  for (size_t i = 0; i < L; ++i) {
    const auto& lr = cr.layers(static_cast<int>(i));
    switchyard::StudyLayer* sl = out->mutable_layers(static_cast<int>(i));
    const auto& m = lr.metrics();
    sl->set_routing_entropy(m.entropy());
    sl->set_routing_entropy_norm(m.entropy_norm());
    sl->set_load_entropy_norm(m.load_entropy_norm());
    sl->set_utilization(m.utilization());
    std::vector<double> load(lr.routed_per_expert().begin(), lr.routed_per_expert().end());
    sl->clear_load_per_expert();
    for (int64_t x : lr.routed_per_expert()) sl->add_load_per_expert(x);
    const auto [emax, ecv] = Spread(load);
    sl->set_expert_load_max_over_mean(emax);
    sl->set_expert_load_cv(ecv);
    collapsed = collapsed || emax > collapse_threshold;
    std::vector<double> recv(static_cast<size_t>(P), 0);
    int64_t rows = 0, local = 0, bytes_out = 0;
    for (int a = 0; a < P; ++a)
      for (int b = 0; b < P; ++b) {
        const int64_t r = lr.traffic_rows(a * P + b);
        recv[static_cast<size_t>(b)] += static_cast<double>(r);
        rows += r;
        if (a == b)
          local += r;
        else
          bytes_out += lr.traffic_bytes(a * P + b);
      }
    const auto [rmax, rcv] = Spread(recv);
    sl->set_rank_load_max_over_mean(rmax);
    sl->set_rank_load_cv(rcv);
    sl->set_local_fraction(Fraction(local, rows));
    sl->set_bytes_between_ranks_per_token(Fraction(bytes_out, m.tokens()));
    const LayerProjection& a = c100.points[0].layers[i];
    const LayerProjection& b = c125.points[0].layers[i];
    sl->set_ranks_per_token(ranks_per_token[i]);
    sl->set_drop_fraction_c1(Fraction(a.dropped, a.routed));
    sl->set_drop_fraction_c125(Fraction(b.dropped, b.routed));
    const auto& t = lr.mean_times();
    sl->set_exchange_s(t.count_exchange_s() + t.dispatch_exchange_s() + t.combine_s());
    sl->set_layer_s(t.route_s() + t.plan_s() + t.count_exchange_s() + t.dispatch_s() +
                    t.experts_s() + t.combine_s() + t.unpermute_s());
    // Sums over layers: cost, traffic per token (a token crosses every MoE layer), time.
    all->set_params(all->params() + sl->params());
    all->set_flops_per_token(all->flops_per_token() + sl->flops_per_token());
    all->set_router_us_per_1k(all->router_us_per_1k() + sl->router_us_per_1k());
    all->set_gemm_us_per_1k(all->gemm_us_per_1k() + sl->gemm_us_per_1k());
    all->set_bytes_between_ranks_per_token(all->bytes_between_ranks_per_token() +
                                           sl->bytes_between_ranks_per_token());
    all->set_exchange_s(all->exchange_s() + sl->exchange_s());
    all->set_layer_s(all->layer_s() + sl->layer_s());
    const double v[10] = {sl->routing_entropy(),   sl->routing_entropy_norm(),
                          sl->load_entropy_norm(), sl->utilization(),
                          sl->expert_load_cv(),    sl->rank_load_cv(),
                          sl->drop_fraction_c1(),  sl->drop_fraction_c125(),
                          sl->local_fraction(),    sl->ranks_per_token()};
    for (int k = 0; k < 10; ++k) per_layer_means[static_cast<size_t>(k)].push_back(v[k]);
    // The worst layer's max/mean: what collapse is about.
    all->set_expert_load_max_over_mean(std::max(all->expert_load_max_over_mean(), emax));
    all->set_rank_load_max_over_mean(std::max(all->rank_load_max_over_mean(), rmax));
  }
  all->set_routing_entropy(MeanOf(per_layer_means[0]));
  all->set_routing_entropy_norm(MeanOf(per_layer_means[1]));
  all->set_load_entropy_norm(MeanOf(per_layer_means[2]));
  all->set_utilization(MeanOf(per_layer_means[3]));
  all->set_expert_load_cv(MeanOf(per_layer_means[4]));
  all->set_rank_load_cv(MeanOf(per_layer_means[5]));
  all->set_drop_fraction_c1(MeanOf(per_layer_means[6]));
  all->set_drop_fraction_c125(MeanOf(per_layer_means[7]));
  all->set_local_fraction(MeanOf(per_layer_means[8]));
  all->set_ranks_per_token(MeanOf(per_layer_means[9]));
  out->set_collapsed(collapsed);
  return Status::Ok();
}

std::string study_text(const switchyard::Study& s) {
  std::string out;
  char line[512];
  std::snprintf(line, sizeof line, "\n%-14s %9s %9s %9s %5s %10s %8s %8s %8s %8s %9s %9s\n",
                "router", "loss gate", "warm", "tuned", "kept", "params", "us/1k", "max/mean",
                "drop@1.0", "local", "ranks/tok", "tok/s");
  out += line;
  for (const auto& r : s.routers()) {
    const auto& o = r.overall();
    // The fine-tuning step early stopping kept (0: the warm start), "-" without validation.
    const std::string kept = r.kept_step() >= 0 ? std::to_string(r.kept_step()) : "-";
    std::snprintf(line, sizeof line,
                  "%-14s %9.4f %9.4f %9.4f %5s %10lld %8.1f %8.2f %7.1f%% %7.1f%% %9.2f %9.0f%s\n",
                  r.router().c_str(), r.loss_gate(), r.loss_warm(), r.loss_tuned(), kept.c_str(),
                  (long long)o.params(), o.router_us_per_1k(), o.expert_load_max_over_mean(),
                  100 * o.drop_fraction_c1(), 100 * o.local_fraction(), o.ranks_per_token(),
                  r.tokens_per_s(), r.collapsed() ? "  COLLAPSED" : "");
    out += line;
  }
  return out;
}

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// The rows the study adds to compare_reports'.
std::vector<MetricRow> StudyRows(const switchyard::Study& s) {
  struct Def {
    const char* key;
    const char* title;
    const char* unit;
    int decimals;
    bool lower;
    const char* group;
    double (*get)(const switchyard::RouterStudy&);
  };
  using R = const switchyard::RouterStudy&;
  static const Def defs[] = {
      {"loss_gate", "held-out loss, the model's gate", "nats", 4, true, "quality",
       [](R r) { return r.loss_gate(); }},
      {"loss_warm", "held-out loss after the warm start", "nats", 4, true, "quality",
       [](R r) { return r.loss_warm(); }},
      {"loss_tuned", "held-out loss after fine-tuning", "nats", 4, true, "quality",
       [](R r) { return r.loss_tuned(); }},
      {"ppl_tuned", "held-out perplexity after fine-tuning", "", 2, true, "quality",
       [](R r) { return std::exp(r.loss_tuned()); }},
      {"kept_step", "fine-tuning step kept by validation (0: the warm start)", "", 0, false,
       "quality",
       [](R r) { return r.kept_step() >= 0 ? static_cast<double>(r.kept_step()) : kNaN; }},
      {"distill_top1", "top-1 agreement with the gate after distillation", "", 3, false, "quality",
       [](R r) { return r.warm_start() == "distilled" ? r.distill_top1() : kNaN; }},
      {"params", "router parameters (all MoE layers)", "", 0, true, "cost",
       [](R r) { return static_cast<double>(r.overall().params()); }},
      {"flops", "router FLOPs per token (all MoE layers)", "", 0, true, "cost",
       [](R r) { return static_cast<double>(r.overall().flops_per_token()); }},
      {"router_us", "router latency per 1k tokens (all MoE layers)", "us", 1, true, "cost",
       [](R r) { return r.overall().router_us_per_1k(); }},
      {"router_vs_gemm", "router latency / bare GEMM [T,D]x[D,E]", "x", 2, true, "cost",
       [](R r) {
         return r.overall().gemm_us_per_1k() > 0
                    ? r.overall().router_us_per_1k() / r.overall().gemm_us_per_1k()
                    : kNaN;
       }},
      {"tokens_per_s", "whole-model inference, all ranks", "tok/s", 0, false, "cost",
       [](R r) { return r.tokens_per_s(); }},
      {"routing_entropy", "routing entropy / log E (mean over layers)", "", 3, true, "routing",
       [](R r) { return r.overall().routing_entropy_norm(); }},
      {"load_entropy", "load entropy / log E (mean over layers)", "", 3, false, "routing",
       [](R r) { return r.overall().load_entropy_norm(); }},
      {"utilization", "experts with any token (mean over layers)", "%", 1, false, "routing",
       [](R r) { return 100 * r.overall().utilization(); }},
      {"expert_max_mean", "expert load max/mean (worst layer)", "", 2, true, "routing",
       [](R r) { return r.overall().expert_load_max_over_mean(); }},
      {"expert_cv", "expert load CV (mean over layers)", "", 3, true, "routing",
       [](R r) { return r.overall().expert_load_cv(); }},
      {"drops_c100", "assignments dropped at capacity factor 1.0", "%", 2, true, "routing",
       [](R r) { return 100 * r.overall().drop_fraction_c1(); }},
      {"drops_c125", "assignments dropped at capacity factor 1.25", "%", 2, true, "routing",
       [](R r) { return 100 * r.overall().drop_fraction_c125(); }},
      {"rank_max_mean", "rows received per rank max/mean (worst layer)", "", 2, true,
       "communication", [](R r) { return r.overall().rank_load_max_over_mean(); }},
      {"study_local", "assignments kept on their own rank", "%", 1, false, "communication",
       [](R r) { return 100 * r.overall().local_fraction(); }},
      {"study_bytes", "bytes to other ranks per token (all layers)", "B", 0, true, "communication",
       [](R r) { return r.overall().bytes_between_ranks_per_token(); }},
      {"study_ranks", "ranks a token's rows go to (mean)", "", 2, true, "communication",
       [](R r) { return r.overall().ranks_per_token(); }},
      {"exchange_share", "exchange share of the MoE layers' time", "%", 1, true, "communication",
       [](R r) {
         return r.overall().layer_s() > 0 ? 100 * r.overall().exchange_s() / r.overall().layer_s()
                                          : kNaN;
       }},
  };
  std::vector<MetricRow> rows;
  for (const Def& d : defs) {
    MetricRow row;
    row.key = d.key;
    row.title = d.title;
    row.unit = d.unit;
    row.decimals = d.decimals;
    row.lower_is_better = d.lower;
    row.group = d.group;
    for (const auto& r : s.routers()) row.values.push_back(d.get(r));
    rows.push_back(std::move(row));
  }
  return rows;
}

// The study's rows and series first, then compare_reports' figures of the measured passes
// (steady state: the first forward left out).
StatusOr<Comparison> StudyComparison(const std::string& dir, const switchyard::Study& s,
                                     std::vector<switchyard::ClusterReport>* merged) {
  std::vector<std::string> labels;
  merged->clear();
  merged->reserve(static_cast<size_t>(s.routers_size()));
  for (const auto& r : s.routers()) {
    labels.push_back(r.router());
    SY_ASSIGN_OR_RETURN(switchyard::ClusterReport cr, load_run_report(dir + "/" + r.report_dir()));
    merged->push_back(std::move(cr));
  }
  std::vector<const switchyard::ClusterReport*> ptrs;
  for (const auto& cr : *merged) ptrs.push_back(&cr);
  SY_ASSIGN_OR_RETURN(Comparison c, compare_reports(labels, ptrs, 1));
  // compare_reports' routing and communication figures say again, over the steady forwards,
  // what the study's rows say over all of them; its times per step are kept.
  std::vector<MetricRow> rows = StudyRows(s);
  for (const MetricRow& row : c.rows)
    if (row.group == "time") rows.push_back(row);
  c.rows = std::move(rows);
  Series loss{"finetune_loss", "fine-tuning loss (language model)", "nats", {}};
  Series imb{"finetune_max_mean", "fine-tuning: worst layer's expert load max/mean", "", {}};
  for (const auto& r : s.routers()) {
    loss.per_run.emplace_back();
    imb.per_run.emplace_back();
    for (const auto& p : r.curve()) {
      loss.per_run.back().emplace_back(static_cast<double>(p.step()), p.loss());
      imb.per_run.back().emplace_back(static_cast<double>(p.step()), p.max_over_mean());
    }
  }
  c.series.insert(c.series.begin(), {loss, imb});
  return c;
}

std::string SettingsLine(const switchyard::Study& s) {
  const auto& st = s.settings();
  char buf[1024];
  std::snprintf(
      buf, sizeof buf,
      "Model `%s` (%d MoE layers, %d experts, top-%d, d %d), %d rank%s, routed "
      "experts %s, %s, %lld held-out tokens; each router warm-started from the gate "
      "(%s), then %lld router-only steps of %lld x %d x %lld tokens at lr %g, "
      "balancing coefficient %s, capacity factor %s.",
      st.model().c_str(), s.moe_layers(), s.num_experts(), s.top_k(), s.d_model(), st.ranks(),
      st.ranks() == 1 ? "" : "s", st.quantize().c_str(), st.data().c_str(),
      (long long)st.eval_tokens(),
      st.distill_iterations() < 0
          ? "no distillation"
          : ("distilled, " + std::to_string(st.distill_iterations()) + " Adam iterations per layer")
                .c_str(),
      (long long)st.steps(), (long long)st.batch(), st.ranks(), (long long)st.seq_len(), st.lr(),
      st.aux_loss() >= 0       ? std::to_string(st.aux_loss()).c_str()
      : st.objective().empty() ? "the checkpoint's"
                               : "0.01 (Switch Transformer's; BERT configs carry none)",
      st.capacity_factor() <= 0 ? "dropless" : std::to_string(st.capacity_factor()).c_str());
  std::string line = buf;
  if (st.balance_rate() >= 0) {
    std::snprintf(buf, sizeof buf, " Balance bias rate %g (0: none).", st.balance_rate());
    line += buf;
  }
  for (const auto& r : s.routers())
    if (r.calibration_passes() > 0) {
      std::snprintf(buf, sizeof buf,
                    " Routers with a balance bias ran %lld balance-calibration passes after "
                    "fine-tuning (weights fixed).",
                    (long long)st.calibrate_balance());
      line += buf;
      break;
    }
  if (!st.objective().empty())  // an encoder: no next-token loss
    line += " Every loss is the " + st.objective() +
            " loss (15% of positions masked, the same masks for every router).";
  if (st.upcycle_experts() > 0) {
    std::snprintf(buf, sizeof buf,
                  " The model is a dense BERT upcycled on load (%lld expert copies every %lld "
                  "layer%s, noise %g): its gate, the baseline, is a freshly initialized linear "
                  "router, not a trained one.",
                  (long long)st.upcycle_experts(), (long long)st.moe_every(),
                  st.moe_every() == 1 ? "" : "s", st.upcycle_noise());
    line += buf;
  }
  return line;
}

// Per-layer expert load max/mean, one row per router: where collapse happens.
std::string LayerTable(const switchyard::Study& s) {
  std::string md = "\n### Expert load max/mean per MoE layer\n\n| router |";
  int L = 0;
  for (const auto& r : s.routers()) L = std::max(L, r.layers_size());
  for (int l = 0; l < L; ++l) md += " layer " + std::to_string(l) + " |";
  md += "\n|---|";
  for (int l = 0; l < L; ++l) md += "---:|";
  md += "\n";
  char cell[64];
  for (const auto& r : s.routers()) {
    md += "| " + r.router() + " |";
    for (int l = 0; l < L; ++l) {
      if (l < r.layers_size()) {
        const double v = r.layers(l).expert_load_max_over_mean();
        std::snprintf(cell, sizeof cell, " %.2f%s |", v,
                      v > s.collapse_threshold() ? " (collapsed)" : "");
        md += cell;
      } else {
        md += " |";
      }
    }
    md += "\n";
  }
  std::snprintf(cell, sizeof cell, "%.2f", s.collapse_threshold());
  md += "\nCollapsed: max/mean above " + std::string(cell) + " (routers/metrics.h).\n";
  return md;
}

}  // namespace

Status write_study(const std::string& dir, const switchyard::Study& s) {
  SY_ASSIGN_OR_RETURN(std::string json, report_message_to_json(s));
  SY_RETURN_IF_ERROR(write_file_atomic(dir + "/study.json", json));
  std::vector<switchyard::ClusterReport> merged;
  SY_ASSIGN_OR_RETURN(Comparison c, StudyComparison(dir, s, &merged));
  const std::string settings = SettingsLine(s);
  std::string md =
      "# Router study\n\n" + settings + "\n\n" + comparison_markdown(c) + LayerTable(s);
  SY_RETURN_IF_ERROR(write_file_atomic(dir + "/study.md", md));
  const std::string html = comparison_html(c, "Switchyard router study", "<p>" + settings + "</p>");
  return write_file_atomic(dir + "/study.html", html);
}

}  // namespace sy::launch
