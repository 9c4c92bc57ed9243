// Reports that compare runs (runtime/report/compare.h): the figures of three synthetic runs
// against a computation straight from their rank reports' entries (no merge), the warm-up left
// out, and the three renderings. SY_COMPARE_SAMPLE_DIR=D writes D/compare.html for the
// headless-browser check (tests/launch/compare_html_check.sh).
#include "runtime/report/compare.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <map>
#include <set>

#include "report_test_util.h"
#include "runtime/report/cluster_report.h"

namespace sy {
namespace {
using switchyard::ClusterReport;
using switchyard::LayerStepReport;
using switchyard::RankReport;
using testing::make_synthetic_reports;

constexpr int P = 4, E = 8, K = 2, L = 2, S = 5, T = 64;

// A run of `router`: synthetic reports plus what the synthetic generator leaves out: the
// dispatch exchange's seconds, a per-token rank count and (when with_loss) a loss per step.
// Step 0 is made slow, as a cold first step is.
std::vector<RankReport> make_run(uint64_t seed, const std::string& router, bool with_loss) {
  std::vector<RankReport> reps = make_synthetic_reports(P, E, K, L, S, T, seed, nullptr, router);
  for (RankReport& r : reps) {
    for (LayerStepReport& e : *r.mutable_entries()) {
      auto* t = e.mutable_times();
      t->set_dispatch_exchange_s(0.5 * t->dispatch_s());
      if (e.step() == 0) t->set_combine_s(t->combine_s() * 50);
      // Tokens over 1 or 2 ranks, a split that differs by rank, layer, step and seed.
      const int64_t two = (seed + r.rank() + 3 * e.layer() + 5 * e.step()) % (T + 1);
      for (int k = 0; k <= P; ++k) e.add_tokens_by_rank_count(k == 1 ? T - two : k == 2 ? two : 0);
    }
    if (with_loss)
      for (int s = 0; s < S; ++s) {
        auto* l = r.add_step_losses();
        l->set_step(s);
        l->set_loss(5.0 - 0.1 * s - 0.01 * static_cast<double>(seed % 7));
      }
  }
  return reps;
}

// The figures compare.h promises, computed from the entries of steps >= first.
std::map<std::string, double> expected(const std::vector<RankReport>& reps, int first) {
  std::map<std::pair<int, int>, std::vector<int64_t>> load, recv;  // (layer, step)
  std::map<int, double> exchange_s, moe_s;                         // per step, summed over ranks
  std::map<int, int64_t> tokens_l, remote_bytes_l;
  int64_t kept = 0, rows = 0, routed = 0, dropped = 0, hist_n = 0, hist_sum = 0;
  for (const RankReport& r : reps)
    for (const LayerStepReport& e : r.entries()) {
      if (e.step() < first) continue;
      const std::pair<int, int> key{e.layer(), static_cast<int>(e.step())};
      load[key].resize(E);
      recv[key].resize(P);
      for (int j = 0; j < e.received_per_local_expert_size(); ++j) {
        load[key][r.local_expert_begin() + j] += e.received_per_local_expert(j);
        recv[key][r.rank()] += e.received_per_local_expert(j);
      }
      const auto& t = e.times();
      exchange_s[key.second] += t.dispatch_exchange_s() + t.combine_s();
      moe_s[key.second] += t.route_s() + t.plan_s() + t.count_exchange_s() + t.dispatch_s() +
                           t.experts_s() + t.combine_s() + t.unpermute_s();
      for (int q = 0; q < P; ++q) {
        rows += e.rows_sent_to_peer(q);
        if (q == r.rank()) kept += e.rows_sent_to_peer(q);
        if (q != r.rank()) remote_bytes_l[e.layer()] += e.bytes_sent_to_peer(q);
      }
      tokens_l[e.layer()] += e.tokens();
      routed += e.assignments_routed();
      dropped += e.assignments_dropped();
      for (int k = 0; k <= P; ++k) {
        hist_n += e.tokens_by_rank_count(k);
        hist_sum += k * e.tokens_by_rank_count(k);
      }
    }
  const auto max_over_mean = [](const std::vector<int64_t>& v) {
    double sum = 0, max = 0;
    for (int64_t x : v) {
      sum += x;
      max = std::max(max, static_cast<double>(x));
    }
    return max / (sum / v.size());
  };
  std::map<std::string, double> out;
  for (const auto& [key, v] : load) out["imbalance"] += max_over_mean(v) / load.size();
  for (const auto& [key, v] : recv) out["recv_imbalance"] += max_over_mean(v) / recv.size();
  for (const auto& [s, x] : exchange_s) out["exchange_ms"] += 1e3 * x / P / exchange_s.size();
  for (const auto& [s, x] : moe_s) out["moe_ms"] += 1e3 * x / P / moe_s.size();
  for (const auto& [l, b] : remote_bytes_l)
    out["bytes_per_token"] += static_cast<double>(b) / tokens_l[l];
  out["local_fraction"] = 100.0 * kept / rows;
  out["drops"] = 100.0 * dropped / routed;
  out["ranks_per_token"] = static_cast<double>(hist_sum) / hist_n;
  if (reps[0].step_losses_size() > 0) {
    double sum = 0;
    int n = 0;
    for (const auto& l : reps[0].step_losses())
      if (l.step() >= first) {
        sum += l.loss();
        ++n;
      }
    out["loss"] = sum / n;
    out["loss_last"] = reps[0].step_losses(S - 1).loss();
  }
  return out;
}

const MetricRow* find_row(const Comparison& c, const std::string& key) {
  for (const MetricRow& r : c.rows)
    if (r.key == key) return &r;
  return nullptr;
}

struct Runs {
  std::vector<std::vector<RankReport>> reps;
  std::vector<ClusterReport> merged;
  std::vector<const ClusterReport*> ptrs;
  std::vector<std::string> labels = {"topk", "sinkhorn", "<b>ec</b>"};
  Runs() {
    reps = {make_run(3, "topk", true), make_run(11, "sinkhorn", true),
            make_run(29, "expert_choice", false)};
    for (const auto& r : reps) {
      StatusOr<ClusterReport> c = merge_rank_reports(r);
      EXPECT_TRUE(c.ok()) << c.status().ToString();
      merged.push_back(*c);
    }
    for (const auto& c : merged) ptrs.push_back(&c);
  }
};

TEST(Compare, SteadyFiguresMatchAComputationFromTheEntries) {
  Runs runs;
  StatusOr<Comparison> c = compare_reports(runs.labels, runs.ptrs, 1);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->warmup_left_out, 1);
  EXPECT_EQ(c->left_out_of_run, std::vector<int>({1, 1, 1}));
  EXPECT_EQ(c->first_steady_step, std::vector<int64_t>({1, 1, 1}));
  ASSERT_EQ(c->notes.size(), 1u);
  EXPECT_NE(c->notes[0].find("first 1 recorded step "), std::string::npos) << c->notes[0];
  for (size_t i = 0; i < runs.reps.size(); ++i) {
    const std::map<std::string, double> want = expected(runs.reps[i], 1);
    for (const auto& [key, v] : want) {
      const MetricRow* r = find_row(*c, key);
      ASSERT_NE(r, nullptr) << key;
      ASSERT_EQ(r->values.size(), 3u);
      EXPECT_NEAR(r->values[i], v, 1e-9 * std::max(1.0, std::fabs(v))) << key << " run " << i;
    }
    if (!want.count("loss")) {
      EXPECT_TRUE(std::isnan(find_row(*c, "loss")->values[i]));
    }
  }
  // The cold step is out: with it, the exchange time is several times larger.
  StatusOr<Comparison> cold = compare_reports(runs.labels, runs.ptrs, 0);
  ASSERT_TRUE(cold.ok());
  EXPECT_NEAR(find_row(*cold, "exchange_ms")->values[0], expected(runs.reps[0], 0)["exchange_ms"],
              1e-9);
  EXPECT_GT(find_row(*cold, "exchange_ms")->values[0], 2 * find_row(*c, "exchange_ms")->values[0]);
  // The steady merge is the merge of steps 1.. alone.
  EXPECT_EQ(c->steady[0].layers(0).steps(), S - 1);
  // Series: every step, warm-up included.
  for (const Series& s : c->series) {
    ASSERT_EQ(s.per_run.size(), 3u) << s.key;
    EXPECT_EQ(s.per_run[0].size(), static_cast<size_t>(S)) << s.key;
  }
}

TEST(Compare, ShortRunsKeepTheirLastStepAndSaySo) {
  std::vector<RankReport> one = make_synthetic_reports(P, E, K, L, 1, T, 5);
  StatusOr<ClusterReport> m = merge_rank_reports(one);
  ASSERT_TRUE(m.ok());
  StatusOr<Comparison> c = compare_reports({"a"}, {&*m}, 3);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->left_out_of_run[0], 0);
  EXPECT_EQ(c->first_steady_step[0], -1);
  EXPECT_FALSE(std::isnan(find_row(*c, "imbalance")->values[0]));
  // No rank counts in these reports (an older producer): n/a, with a note.
  EXPECT_TRUE(std::isnan(find_row(*c, "ranks_per_token")->values[0]));
  const std::string text = comparison_text(*c);
  EXPECT_NE(text.find("only 1 step recorded, 0 left out"), std::string::npos) << text;
  EXPECT_NE(text.find("do not count the ranks per token"), std::string::npos) << text;
  EXPECT_FALSE(compare_reports({"a", "b"}, {&*m}, 1).ok());
  EXPECT_FALSE(compare_reports({"a"}, {&*m}, -1).ok());
  // A run without reports: n/a throughout.
  StatusOr<Comparison> none = compare_reports({"a", "b"}, {&*m, nullptr}, 1);
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(std::isnan(find_row(*none, "imbalance")->values[1]));
  ClusterReport bare = *m;  // a cluster.json without its ranks: n/a too
  bare.clear_ranks();
  StatusOr<Comparison> no_ranks = compare_reports({"a", "b"}, {&*m, &bare}, 1);
  ASSERT_TRUE(no_ranks.ok());
  EXPECT_TRUE(std::isnan(find_row(*no_ranks, "recv_imbalance")->values[1]));
  EXPECT_FALSE(std::isnan(find_row(*no_ranks, "recv_imbalance")->values[0]));
}

TEST(Compare, RenderingsCarryEveryRunAndEveryChart) {
  Runs runs;
  StatusOr<Comparison> c = compare_reports(runs.labels, runs.ptrs, 1);
  ASSERT_TRUE(c.ok());
  const std::string text = comparison_text(*c), md = comparison_markdown(*c);
  const std::string html = comparison_html(*c, "routers <compared>", "<p>intro</p>");
  for (const MetricRow& r : c->rows) {
    EXPECT_NE(text.find(metric_title(r)), std::string::npos) << r.key;
    EXPECT_NE(md.find(metric_title(r)), std::string::npos) << r.key;
    // The text table shows each value as the Markdown does.
    for (double v : r.values) EXPECT_NE(md.find(metric_value_text(r, v)), std::string::npos);
  }
  for (const char* g : {"| routing |", "| communication |", "| time |", "| quality |"})
    EXPECT_NE(md.find(g), std::string::npos) << g;
  EXPECT_NE(md.find("|---|---:|---:|---:|"), std::string::npos) << md;
  // One <svg> per chart id, each id once; labels and the title escaped; self-contained.
  const std::vector<std::string> ids = comparison_chart_ids(*c);
  EXPECT_EQ(ids.size(), c->rows.size() + c->series.size() + 2 * 3);
  size_t svgs = 0;
  for (size_t at = html.find("<svg"); at != std::string::npos; at = html.find("<svg", at + 1))
    ++svgs;
  EXPECT_EQ(svgs, ids.size());
  for (const std::string& id : ids) {
    const std::string attr = "id=\"" + id + "\"";
    const size_t at = html.find(attr);
    EXPECT_NE(at, std::string::npos) << id;
    EXPECT_EQ(html.find(attr, at + 1), std::string::npos) << id;
  }
  EXPECT_EQ(html.find("<b>ec</b>"), std::string::npos);
  EXPECT_NE(html.find("&lt;b&gt;ec&lt;/b&gt;"), std::string::npos);
  EXPECT_NE(html.find("routers &lt;compared&gt;"), std::string::npos);
  EXPECT_NE(html.find("<p>intro</p>"), std::string::npos);
  for (const char* external : {"<script", "<link", "src=", "@import", "<iframe"})
    EXPECT_EQ(html.find(external), std::string::npos) << external;
  if (const char* dir = std::getenv("SY_COMPARE_SAMPLE_DIR")) {
    std::ofstream(std::string(dir) + "/compare.html") << html;
    std::ofstream ids_out(std::string(dir) + "/chart_ids.txt");
    for (const std::string& id : ids) ids_out << id << "\n";
  }
}

TEST(Compare, BestRunAndLabels) {
  MetricRow r;
  r.values = {2.0, NAN, 1.0};
  EXPECT_EQ(metric_best_run(r), 2);
  r.lower_is_better = false;
  EXPECT_EQ(metric_best_run(r), 0);
  r.values = {1.0, 1.0};
  EXPECT_EQ(metric_best_run(r), -1);
  r.values = {1.0, NAN};
  EXPECT_EQ(metric_best_run(r), -1);
  r.values = {0.501, 0.5029, 0.3};  // the best two read the same at 2 decimals
  EXPECT_EQ(metric_best_run(r), -1);
  r.values = {0.501, 0.4, 0.3};
  EXPECT_EQ(metric_best_run(r), 0);
  EXPECT_EQ(comparison_labels({"runs/a", "runs/b/"}, {"topk", "topk"}),
            std::vector<std::string>({"a", "b"}));
  EXPECT_EQ(comparison_labels({"x/out", "y/out"}, {"topk", "sinkhorn"}),
            std::vector<std::string>({"topk", "sinkhorn"}));
  EXPECT_EQ(comparison_labels({"x/out", "y/out"}, {"topk", "topk"}),
            std::vector<std::string>({"x/out", "y/out"}));
}

}  // namespace
}  // namespace sy
