// The figures of compare.h from the runs' rank reports, and the text and Markdown tables.
// Legend: P ranks, E experts, S steps of a run.
#include "runtime/report/compare.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <map>
#include <set>

#include "runtime/report/cluster_report.h"
#include "runtime/report/report_io.h"

namespace sy {
using switchyard::ClusterReport;
using switchyard::LayerStepReport;
using switchyard::RankReport;

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// max / mean of v (NaN when the sum is 0: nothing to be imbalanced).
double max_over_mean(const std::vector<int64_t>& v) {
  int64_t sum = 0, max = 0;
  for (int64_t x : v) {
    sum += x;
    max = std::max(max, x);
  }
  return sum > 0
             ? static_cast<double>(max) * static_cast<double>(v.size()) / static_cast<double>(sum)
             : kNaN;
}

double mean_of(const std::vector<double>& v) {
  double sum = 0;
  int n = 0;
  for (double x : v)
    if (!std::isnan(x)) {
      sum += x;
      ++n;
    }
  return n > 0 ? sum / n : kNaN;
}

// What one (layer, step) looked like over all ranks.
struct LayerStep {
  std::vector<int64_t> load_E, recv_P;
  double exchange_s = 0, moe_s = 0;  // summed over ranks
};

// One run's figures, per step (every step) and over its steady steps.
struct RunFigures {
  std::vector<int64_t> steps;  // every recorded step, ascending
  int left_out = 0;
  // Per step: mean over layers of the imbalances; sums over layers of the times, mean over ranks.
  std::vector<double> expert_imbalance_S, recv_imbalance_S, exchange_ms_S, moe_ms_S;
  std::vector<double> loss_S;  // NaN where none was recorded
  // Over the steady steps.
  double expert_imbalance = kNaN, recv_imbalance = kNaN, exchange_ms = kNaN, moe_ms = kNaN;
  double local_fraction = kNaN, bytes_per_token = kNaN, inter_host_bytes_per_token = kNaN;
  double ranks_per_token = kNaN, drop_pct = kNaN, load_cv = kNaN;
  double loss_mean = kNaN, loss_last = kNaN;
  bool has_loss = false, multi_host = false, has_rank_counts = true;
};

// Per-step figures from the ranks' entries.
void step_figures(const ClusterReport& c, RunFigures* f) {
  const int P = c.world_size(), E = c.num_experts();
  std::map<std::pair<int64_t, int>, LayerStep> at;  // (step, layer)
  for (const RankReport& r : c.ranks())
    for (const LayerStepReport& e : r.entries()) {
      LayerStep& x = at[{e.step(), e.layer()}];
      if (x.load_E.empty()) {
        x.load_E.assign(static_cast<size_t>(E), 0);
        x.recv_P.assign(static_cast<size_t>(P), 0);
      }
      for (int j = 0; j < e.received_per_local_expert_size(); ++j) {
        x.load_E[static_cast<size_t>(local_expert_id(r, j))] += e.received_per_local_expert(j);
        x.recv_P[static_cast<size_t>(r.rank())] += e.received_per_local_expert(j);
      }
      const auto& t = e.times();
      x.exchange_s += t.dispatch_exchange_s() + t.combine_s();
      for (const PhaseValue& v : phase_values(t)) x.moe_s += v.seconds;
    }
  std::set<int64_t> steps;
  for (const auto& [key, x] : at) steps.insert(key.first);
  f->steps.assign(steps.begin(), steps.end());
  std::map<int64_t, double> loss_at;
  if (c.ranks_size() > 0)
    for (const auto& l : c.ranks(0).step_losses()) loss_at[l.step()] = l.loss();
  f->has_loss = !loss_at.empty();
  std::vector<double> steady_expert, steady_recv, steady_exchange, steady_moe, steady_loss;
  for (size_t k = 0; k < f->steps.size(); ++k) {
    const int64_t s = f->steps[k];
    std::vector<double> expert, recv;
    double exchange = 0, moe = 0;
    for (auto it = at.lower_bound({s, -1}); it != at.end() && it->first.first == s; ++it) {
      expert.push_back(max_over_mean(it->second.load_E));
      recv.push_back(max_over_mean(it->second.recv_P));
      exchange += it->second.exchange_s / P;
      moe += it->second.moe_s / P;
    }
    f->expert_imbalance_S.push_back(mean_of(expert));
    f->recv_imbalance_S.push_back(mean_of(recv));
    f->exchange_ms_S.push_back(1e3 * exchange);
    f->moe_ms_S.push_back(1e3 * moe);
    const auto l = loss_at.find(s);
    f->loss_S.push_back(l == loss_at.end() ? kNaN : l->second);
    if (static_cast<int>(k) < f->left_out) continue;
    // The imbalances over the steady (layer, step) pairs, not over the steps' means: a step
    // with fewer layers (none in practice) must not weigh more.
    steady_expert.insert(steady_expert.end(), expert.begin(), expert.end());
    steady_recv.insert(steady_recv.end(), recv.begin(), recv.end());
    steady_exchange.push_back(f->exchange_ms_S.back());
    steady_moe.push_back(f->moe_ms_S.back());
    steady_loss.push_back(f->loss_S.back());
  }
  f->expert_imbalance = mean_of(steady_expert);
  f->recv_imbalance = mean_of(steady_recv);
  f->exchange_ms = mean_of(steady_exchange);
  f->moe_ms = mean_of(steady_moe);
  f->loss_mean = mean_of(steady_loss);
  for (auto it = steady_loss.rbegin(); it != steady_loss.rend(); ++it)
    if (!std::isnan(*it)) {
      f->loss_last = *it;
      break;
    }
}

// Steady figures from the merge of the steady entries (`steady`), plus what the merge does not
// keep (tokens per layer, the per-token rank counts), from the entries themselves.
void steady_figures(const ClusterReport& steady, RunFigures* f) {
  const int P = steady.world_size();
  std::map<int, int64_t> tokens_L;
  int64_t with_ranks = 0, rank_sum = 0;
  for (const RankReport& r : steady.ranks())
    for (const LayerStepReport& e : r.entries()) {
      tokens_L[e.layer()] += e.tokens();
      if (e.tokens_by_rank_count().empty()) {
        f->has_rank_counts = f->has_rank_counts && e.tokens() == 0;
        continue;
      }
      for (int k = 0; k < e.tokens_by_rank_count_size(); ++k) {
        with_ranks += e.tokens_by_rank_count(k);
        rank_sum += k * e.tokens_by_rank_count(k);
      }
    }
  if (f->has_rank_counts && with_ranks > 0)
    f->ranks_per_token = static_cast<double>(rank_sum) / static_cast<double>(with_ranks);
  int64_t rows = 0, kept = 0, routed = 0, dropped = 0;
  double bytes_per_token = 0, cv = 0;
  for (const auto& s : steady.layers()) {
    int64_t remote = 0;
    for (int i = 0; i < P; ++i)
      for (int j = 0; j < P; ++j) {
        rows += s.traffic_rows(i * P + j);
        if (i == j) kept += s.traffic_rows(i * P + j);
        if (i != j) remote += s.traffic_bytes(i * P + j);
      }
    const int64_t tokens = tokens_L[s.layer()];
    if (tokens > 0) bytes_per_token += static_cast<double>(remote) / static_cast<double>(tokens);
    routed += s.routed();
    dropped += s.dropped();
    cv += s.metrics().load_cv();
  }
  if (rows > 0) f->local_fraction = static_cast<double>(kept) / static_cast<double>(rows);
  if (steady.layers_size() > 0) {
    f->bytes_per_token = bytes_per_token;
    f->load_cv = cv / steady.layers_size();
  }
  if (routed > 0) f->drop_pct = 100.0 * static_cast<double>(dropped) / static_cast<double>(routed);
  f->multi_host = steady.num_hosts() > 1;
  if (f->multi_host && steady.has_traffic_split())
    f->inter_host_bytes_per_token = steady.traffic_split().inter_host().bytes_per_token();
}

// The run's reports without the entries of its warm-up steps, merged again.
StatusOr<ClusterReport> merge_steady(const ClusterReport& c, const RunFigures& f) {
  const std::set<int64_t> warm(f.steps.begin(), f.steps.begin() + f.left_out);
  std::vector<RankReport> ranks(c.ranks().begin(), c.ranks().end());
  for (RankReport& r : ranks) {
    auto* entries = r.mutable_entries();
    entries->erase(std::remove_if(entries->begin(), entries->end(),
                                  [&](const LayerStepReport& e) { return warm.count(e.step()); }),
                   entries->end());
  }
  return merge_rank_reports(ranks);
}

MetricRow row(const char* key, const char* title, const char* unit, const char* group, int decimals,
              bool lower_is_better) {
  return MetricRow{key, title, unit, {}, decimals, lower_is_better, group};
}

}  // namespace

int metric_best_run(const MetricRow& r) {
  int best = -1;
  for (size_t i = 0; i < r.values.size(); ++i) {
    const double v = r.values[i];
    if (std::isnan(v)) continue;
    if (best < 0 || (r.lower_is_better ? v < r.values[static_cast<size_t>(best)]
                                       : v > r.values[static_cast<size_t>(best)]))
      best = static_cast<int>(i);
  }
  if (best < 0) return -1;
  // Ties as shown: a best that reads the same as another run's value is no single best.
  const std::string shown = metric_value_text(r, r.values[static_cast<size_t>(best)]);
  int others = 0;
  for (size_t i = 0; i < r.values.size(); ++i) {
    if (static_cast<int>(i) == best || std::isnan(r.values[i])) continue;
    if (metric_value_text(r, r.values[i]) == shown) return -1;
    ++others;
  }
  return others > 0 ? best : -1;
}

std::string metric_value_text(const MetricRow& r, double v) {
  if (std::isnan(v)) return "n/a";
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.*f", std::max(0, std::min(r.decimals, 12)), v);
  return buf;
}

std::string metric_title(const MetricRow& r) {
  return r.unit.empty() ? r.title : r.title + " (" + r.unit + ")";
}

namespace {

// The groups of c.rows in order of first appearance, each with its rows' indices.
std::vector<std::pair<std::string, std::vector<size_t>>> groups_of(const Comparison& c) {
  std::vector<std::pair<std::string, std::vector<size_t>>> g;
  for (size_t i = 0; i < c.rows.size(); ++i) {
    auto it =
        std::find_if(g.begin(), g.end(), [&](const auto& x) { return x.first == c.rows[i].group; });
    if (it == g.end()) it = g.insert(g.end(), {c.rows[i].group, {}});
    it->second.push_back(i);
  }
  return g;
}

}  // namespace

StatusOr<Comparison> compare_reports(const std::vector<std::string>& labels,
                                     const std::vector<const ClusterReport*>& reports, int warmup) {
  if (labels.size() != reports.size())
    return InvalidArgument("compare_reports: " + std::to_string(labels.size()) + " labels for " +
                           std::to_string(reports.size()) + " runs");
  if (warmup < 0) return InvalidArgument("compare_reports: warmup must be >= 0");
  Comparison c;
  c.labels = labels;
  c.reports = reports;
  c.warmup_left_out = warmup;
  std::vector<RunFigures> f(reports.size());
  for (size_t i = 0; i < reports.size(); ++i) {
    c.steady.emplace_back();
    if (!reports[i] || reports[i]->ranks_size() == 0) {  // the figures need the ranks' entries
      c.left_out_of_run.push_back(0);
      c.first_steady_step.push_back(-1);
      c.notes.push_back(labels[i] + ": no load reports; its figures are n/a");
      continue;
    }
    std::set<int64_t> steps;
    for (const RankReport& r : reports[i]->ranks())
      for (const LayerStepReport& e : r.entries()) steps.insert(e.step());
    f[i].left_out = std::min<int>(warmup, std::max<int>(0, static_cast<int>(steps.size()) - 1));
    step_figures(*reports[i], &f[i]);
    StatusOr<ClusterReport> steady = merge_steady(*reports[i], f[i]);
    if (!steady.ok())
      return BadInput(labels[i] + ": the steady steps do not merge: " + steady.status().ToString());
    c.steady.back() = std::move(*steady);
    steady_figures(c.steady.back(), &f[i]);
    c.left_out_of_run.push_back(f[i].left_out);
    c.first_steady_step.push_back(f[i].left_out > 0 ? f[i].steps[static_cast<size_t>(f[i].left_out)]
                                                    : -1);
    if (f[i].left_out < warmup)
      c.notes.push_back(labels[i] + ": only " + std::to_string(steps.size()) + " step" +
                        (steps.size() == 1 ? "" : "s") + " recorded, " +
                        std::to_string(f[i].left_out) + " left out as warm-up");
    if (!f[i].has_rank_counts)
      c.notes.push_back(labels[i] +
                        ": its reports do not count the ranks per token (an older switchyard)");
  }
  c.notes.insert(c.notes.begin(),
                 "steady state: the first " + std::to_string(warmup) + " recorded step" +
                     (warmup == 1 ? "" : "s") +
                     " of each run left out as warm-up (--warmup); the per-step series keep "
                     "every step");

  bool any_multi_host = false, any_loss = false;
  for (const RunFigures& x : f) {
    any_multi_host |= x.multi_host;
    any_loss |= x.has_loss;
  }
  struct Def {
    MetricRow r;
    double RunFigures::*field;
  };
  std::vector<Def> defs = {
      {row("imbalance", "expert imbalance (max/mean rows per expert)", "", "routing", 3, true),
       &RunFigures::expert_imbalance},
      {row("load_cv", "expert load CV (steps summed)", "", "routing", 3, true),
       &RunFigures::load_cv},
      {row("drops", "assignments dropped by capacity", "%", "routing", 2, true),
       &RunFigures::drop_pct},
      {row("local_fraction", "assignments kept on their own rank", "%", "communication", 1, false),
       &RunFigures::local_fraction},
      {row("recv_imbalance", "receive imbalance (max/mean rows per rank)", "", "communication", 3,
           true),
       &RunFigures::recv_imbalance},
      {row("ranks_per_token", "distinct ranks per token", "", "communication", 2, true),
       &RunFigures::ranks_per_token},
      {row("bytes_per_token", "bytes to other ranks per token (all layers)", "B", "communication",
           0, true),
       &RunFigures::bytes_per_token},
  };
  if (any_multi_host)
    defs.push_back({row("inter_host_bytes_per_token", "bytes between hosts per token", "B",
                        "communication", 0, true),
                    &RunFigures::inter_host_bytes_per_token});
  defs.push_back(
      {row("moe_ms", "MoE forward time per step (mean over ranks)", "ms", "time", 3, true),
       &RunFigures::moe_ms});
  defs.push_back(
      {row("exchange_ms", "exchange time per step (dispatch + return)", "ms", "time", 3, true),
       &RunFigures::exchange_ms});
  if (any_loss) {
    defs.push_back({row("loss", "training loss (mean over steady steps)", "", "quality", 4, true),
                    &RunFigures::loss_mean});
    defs.push_back({row("loss_last", "training loss (last step)", "", "quality", 4, true),
                    &RunFigures::loss_last});
  }
  for (Def& d : defs) {
    for (size_t i = 0; i < f.size(); ++i) {
      double v = f[i].*d.field;
      if (d.field == &RunFigures::local_fraction) v *= 100.0;
      d.r.values.push_back(v);
    }
    c.rows.push_back(std::move(d.r));
  }

  struct SeriesDef {
    const char *key, *title, *unit;
    std::vector<double> RunFigures::*field;
  };
  std::vector<SeriesDef> sdefs = {
      {"imbalance", "expert imbalance per step (max/mean, mean over layers)", "",
       &RunFigures::expert_imbalance_S},
      {"recv_imbalance", "receive imbalance per step (max/mean over ranks)", "",
       &RunFigures::recv_imbalance_S},
      {"exchange_ms", "exchange time per step (mean over ranks)", "ms", &RunFigures::exchange_ms_S},
  };
  if (any_loss) sdefs.push_back({"loss", "training loss per step", "", &RunFigures::loss_S});
  for (const SeriesDef& d : sdefs) {
    Series s;
    s.key = d.key;
    s.title = d.title;
    s.unit = d.unit;
    for (const RunFigures& x : f) {
      s.per_run.emplace_back();
      const std::vector<double>& y = x.*d.field;
      for (size_t k = 0; k < x.steps.size() && k < y.size(); ++k)
        s.per_run.back().emplace_back(static_cast<double>(x.steps[k]), y[k]);
    }
    c.series.push_back(std::move(s));
  }
  return c;
}

StatusOr<ClusterReport> load_run_report(const std::string& dir,
                                        std::vector<std::string>* read_warnings) {
  StatusOr<RankReportSet> set = load_rank_reports(dir);
  if (!set.ok()) return set.status();
  StatusOr<ClusterReport> c = merge_rank_reports(set->reports, set->files);
  if (!c.ok()) return c.status();
  for (const std::string& w : set->warnings) {
    c->add_warnings(w);
    if (read_warnings) read_warnings->push_back(w);
  }
  return c;
}

std::vector<std::string> comparison_labels(const std::vector<std::string>& dirs,
                                           const std::vector<std::string>& routers) {
  std::vector<std::string> names;
  for (const std::string& d : dirs) {
    std::filesystem::path p = std::filesystem::path(d).lexically_normal();
    if (!p.has_filename() && p.has_parent_path()) p = p.parent_path();  // "a/b/" -> "a/b"
    names.push_back(p.filename().string().empty() ? d : p.filename().string());
  }
  const auto distinct = [](const std::vector<std::string>& v) {
    const std::set<std::string> s(v.begin(), v.end());
    return s.size() == v.size() && !s.count("") && !s.count(".");
  };
  if (routers.size() == dirs.size() && distinct(routers)) return routers;
  return distinct(names) ? names : dirs;  // the whole paths tell them apart
}

std::string comparison_text(const Comparison& c) {
  size_t tw = 6;
  for (const MetricRow& r : c.rows) tw = std::max(tw, metric_title(r).size());
  std::vector<size_t> cw;
  for (const std::string& l : c.labels) cw.push_back(std::max<size_t>(10, l.size() + 1));
  std::string out;
  const auto pad = [](const std::string& s, size_t w, bool left) {
    const std::string fill(s.size() < w ? w - s.size() : 0, ' ');
    return left ? s + fill : fill + s;
  };
  out += pad("", tw, true);
  for (size_t i = 0; i < c.labels.size(); ++i) out += "  " + pad(c.labels[i], cw[i], false);
  out += "\n";
  for (const auto& [group, rows] : groups_of(c)) {
    out += group + "\n";
    for (size_t k : rows) {
      const MetricRow& r = c.rows[k];
      const int best = metric_best_run(r);
      out += pad("  " + metric_title(r), tw + 2, true);
      for (size_t i = 0; i < c.labels.size(); ++i) {
        const double v = i < r.values.size() ? r.values[i] : kNaN;
        out += pad(metric_value_text(r, v) + (static_cast<int>(i) == best ? "*" : " "), cw[i] + 1,
                   false);
      }
      out += "\n";
    }
  }
  if (c.labels.size() > 1) out += "(* the best run of the row)\n";
  for (const std::string& n : c.notes) out += n + "\n";
  return out;
}

std::string comparison_markdown(const Comparison& c) {
  const auto cell = [](std::string s) {  // a '|' would end the cell
    std::string out;
    for (char ch : s) out += ch == '|' ? std::string("\\|") : std::string(1, ch);
    return out;
  };
  std::string out;
  for (const auto& [group, rows] : groups_of(c)) {
    out += "| " + cell(group) + " |";
    for (const std::string& l : c.labels) out += " " + cell(l) + " |";
    out += "\n|---|";
    for (size_t i = 0; i < c.labels.size(); ++i) out += "---:|";
    out += "\n";
    for (size_t k : rows) {
      const MetricRow& r = c.rows[k];
      const int best = metric_best_run(r);
      out += "| " + cell(metric_title(r)) + " |";
      for (size_t i = 0; i < c.labels.size(); ++i) {
        const std::string v = metric_value_text(r, i < r.values.size() ? r.values[i] : kNaN);
        out += " " + (static_cast<int>(i) == best ? "**" + v + "**" : v) + " |";
      }
      out += "\n";
    }
    out += "\n";
  }
  for (const std::string& n : c.notes) out += "- " + cell(n) + "\n";
  return out;
}

}  // namespace sy
