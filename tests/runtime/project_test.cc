// switchyard project's replay (runtime/project/projection.h) on hand-made traces whose counts
// are worked out by hand, and the cluster model's presets and defensive file reader.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "runtime/project/calibration.h"
#include "runtime/project/cluster.h"
#include "runtime/project/projection.h"

namespace sy {
namespace {

// One shard, one layer, E experts, K = 2, tokens 0 .. N-1 in groups of G; ids_NK given.
Trace make_trace(int64_t E, int64_t G, const std::vector<int32_t>& ids_NK,
                 const std::vector<float>& w_NK, const std::vector<uint8_t>& kept_NK,
                 double capacity_factor) {
  TraceShard s;
  const int64_t K = 2, N = static_cast<int64_t>(ids_NK.size()) / K;
  s.meta.source = "infer";
  s.meta.model = "synthetic";
  s.meta.router = "hand";
  s.meta.synthetic_routing = true;
  s.meta.experts = E;
  s.meta.top_k = K;
  s.meta.model_layer = {0};
  s.meta.capacity_factor = capacity_factor;
  s.meta.group_tokens = G;
  s.meta.steps = 1;
  for (int64_t n = 0; n < N; ++n) {
    s.step_N.push_back(0);
    s.token_index_N.push_back(n);
    s.token_id_N.push_back(static_cast<int32_t>(n));
  }
  TraceLayer l;
  l.topk_ids_NK = ids_NK;
  l.topk_weights_NK = w_NK;
  l.kept_NK = kept_NK;
  s.layers.push_back(l);
  Trace t;
  t.dir = "hand";
  t.shards.push_back(s);
  return t;
}

ProjectOptions options(std::vector<int> ranks, int gpus_per_node) {
  ProjectOptions o;
  o.ranks = std::move(ranks);
  o.hidden = 4;
  o.ffn_hidden = 8;
  o.cluster = cluster_preset("dgx-h100").value();
  o.cluster.gpus_per_node = gpus_per_node;
  return o;
}

// 4 tokens, E = 4, two groups of 2 tokens; token n chooses experts (n, (n+1) % 4). Dropless.
Trace four_tokens() {
  return make_trace(4, 2, {0, 1, 1, 2, 2, 3, 3, 0}, std::vector<float>(8, 0.5f),
                    std::vector<uint8_t>(8, 1), 0.0);
}

TEST(Project, CountsRowsPerRankPairByHand) {
  // P = 2, one group per rank: rank 0 holds tokens 0, 1 and experts 0, 1; rank 1 tokens 2, 3
  // and experts 2, 3. Token 0 -> experts 0, 1 (self, self); token 1 -> 1 (self), 2 (rank 1);
  // token 2 -> 2, 3 (self, self); token 3 -> 3 (self), 0 (rank 0).
  StatusOr<RouterProjection> r = project_trace(four_tokens(), options({2}, 1));
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ASSERT_EQ(r->points.size(), 1u);
  const PointProjection& pt = r->points[0];
  EXPECT_EQ(pt.ranks, 2);
  EXPECT_EQ(pt.nodes, 2);
  EXPECT_EQ(pt.units_per_rank, 1);  // trace tokens / max P = 2 tokens = one group
  const LayerProjection& l = pt.layers[0];
  EXPECT_EQ(l.pair_rows_RR, (std::vector<int64_t>{3, 1, 1, 3}));
  // [rank][self, same node, other node]: one GPU per node, so the cross rows are other-node.
  EXPECT_EQ(l.sent_R3, (std::vector<int64_t>{3, 0, 1, 3, 0, 1}));
  EXPECT_EQ(l.recv_R3, (std::vector<int64_t>{3, 0, 1, 3, 0, 1}));
  EXPECT_EQ(l.peers_sent_R3, (std::vector<int64_t>{0, 0, 1, 0, 0, 1}));
  EXPECT_EQ(l.routed_E, (std::vector<int64_t>{2, 2, 2, 2}));
  EXPECT_EQ(l.dropped, 0);
  // Tokens 0 and 2 stay on one rank; 1 and 3 go to two ranks, on two nodes.
  EXPECT_EQ(l.fanout_ranks_hist, (std::vector<int64_t>{0, 2, 2}));
  EXPECT_EQ(l.fanout_nodes_hist, (std::vector<int64_t>{0, 2, 2}));
  EXPECT_DOUBLE_EQ(l.rank_load_max_over_mean, 1.0);
  // Dispatch: the self copy of 3 rows of D * 4 = 16 bytes, one other-node row each way, one
  // message to the one peer that gets rows plus one count message: 3 * 16 B / self bandwidth +
  // 2 latencies + 16 B / bandwidth. Combine: no counts.
  const ClusterModel cm = options({2}, 1).cluster;
  const LinkTier other = cm.other_node;
  const double copy = 3 * 16 / cm.same_rank.bandwidth_Bps;
  EXPECT_NEAR(l.dispatch_s, copy + 2 * other.latency_s + 16 / other.bandwidth_Bps, 1e-15);
  EXPECT_NEAR(l.combine_s, copy + other.latency_s + 16 / other.bandwidth_Bps, 1e-15);
  // Compute: 4 rows received * 6 * D * F flops.
  EXPECT_NEAR(l.compute_s, 4 * 6.0 * 4 * 8 / options({2}, 1).cluster.flops, 1e-18);

  // Two ranks in one node: the same rows, now same-node.
  StatusOr<RouterProjection> one_node = project_trace(four_tokens(), options({2}, 8));
  ASSERT_TRUE(one_node.ok());
  EXPECT_EQ(one_node->points[0].layers[0].sent_R3, (std::vector<int64_t>{3, 1, 0, 3, 1, 0}));
  EXPECT_EQ(one_node->points[0].nodes, 1);
}

TEST(Project, ExchangesSumCountsAndAverageTimes) {
  // P = 1 replaying both groups (4 tokens): all in one exchange, or one group per exchange.
  // Counts are the same totals; times are per exchange: one rank, no peers, so only compute,
  // 8 rows at once or 4 per exchange.
  ProjectOptions o = options({1}, 8);
  o.tokens_per_rank = 4;
  StatusOr<RouterProjection> once = project_trace(four_tokens(), o);
  o.tokens_per_exchange = 2;
  StatusOr<RouterProjection> twice = project_trace(four_tokens(), o);
  ASSERT_TRUE(once.ok() && twice.ok());
  const LayerProjection &a = once->points[0].layers[0], &b = twice->points[0].layers[0];
  EXPECT_EQ(a.exchanges, 1);
  EXPECT_EQ(b.exchanges, 2);
  EXPECT_EQ(twice->points[0].units_per_exchange, 1);
  EXPECT_EQ(a.recv_R3, b.recv_R3);
  EXPECT_EQ(a.routed_E, b.routed_E);
  EXPECT_NEAR(b.compute_s, a.compute_s / 2, 1e-18);
  // The self copy costs bytes / same_rank bandwidth there and back: 8 rows of D * 4 = 16 bytes
  // (the dgx-h100 preset: half of 3.35 TB/s HBM3); a cluster without it copies for free.
  EXPECT_NEAR(a.dispatch_s, 8 * 16 / 1.675e12, 1e-18);
  EXPECT_NEAR(a.combine_s, 8 * 16 / 1.675e12, 1e-18);
  o.cluster.same_rank.bandwidth_Bps = HUGE_VAL;
  EXPECT_EQ(project_trace(four_tokens(), o)->points[0].layers[0].dispatch_s, 0);
  // P = 2 on two nodes, one group per rank either way: one exchange of the same rows.
  o = options({2}, 1);
  o.tokens_per_exchange = 2;
  StatusOr<RouterProjection> p2 = project_trace(four_tokens(), o);
  ASSERT_TRUE(p2.ok());
  const LinkTier other = o.cluster.other_node;
  EXPECT_EQ(p2->points[0].layers[0].exchanges, 1);
  EXPECT_NEAR(
      p2->points[0].layers[0].dispatch_s,
      3 * 16 / o.cluster.same_rank.bandwidth_Bps + 2 * other.latency_s + 16 / other.bandwidth_Bps,
      1e-15);
}

TEST(Calibration, FitRecoversTheTiersOfExactSamples) {
  // 2 hosts x 2 ranks: 1 same-node peer, 2 other-node peers; times made by the model itself
  // from known tiers (the self copy included) are fitted back exactly.
  const LinkTier self{0, 20e9}, same{2e-6, 5e9}, other{20e-6, 1e9};
  const int peers[2] = {1, 2};
  std::vector<CalibrationSample> s;
  const bool to_self[3] = {true, false, false}, to_same[3] = {false, true, false},
             to_other[3] = {false, false, true}, to_all[3] = {false, true, true};
  for (const bool* to : {to_self, to_same, to_other, to_all})
    for (int64_t n : {1, 16, 256, 4096}) {
      CalibrationSample x = calibration_sample("p", peers, to, n, 1024);
      x.measured_s = x.messages[0] * same.latency_s + x.messages[1] * other.latency_s +
                     x.bytes[0] / self.bandwidth_Bps + x.bytes[1] / same.bandwidth_Bps +
                     x.bytes[2] / other.bandwidth_Bps;
      s.push_back(x);
    }
  // The features: the self copy of 16 rows: the count exchange to all 3 peers, rows there and
  // back to itself; same-node only: rows there and back to the 1 same-node peer.
  EXPECT_EQ(s[1].messages[0], 1);
  EXPECT_EQ(s[1].messages[1], 2);
  EXPECT_EQ(s[1].bytes[0], 2 * 16 * 1024);
  EXPECT_EQ(s[5].messages[0], 1 + 2);
  EXPECT_EQ(s[5].bytes[0], 0);
  EXPECT_EQ(s[5].bytes[1], 2 * 16 * 1024);
  EXPECT_EQ(s[5].bytes[2], 0);
  StatusOr<CalibrationFit> fit = fit_link_tiers(&s);
  ASSERT_TRUE(fit.ok()) << fit.status().ToString();
  EXPECT_TRUE(fit->measured[0] && fit->measured[1] && fit->measured[2]);
  EXPECT_NEAR(fit->tier[1].latency_s, same.latency_s, 1e-12);
  EXPECT_NEAR(fit->tier[2].latency_s, other.latency_s, 1e-12);
  EXPECT_NEAR(fit->tier[0].bandwidth_Bps / self.bandwidth_Bps, 1, 1e-9);
  EXPECT_NEAR(fit->tier[1].bandwidth_Bps / same.bandwidth_Bps, 1, 1e-9);
  EXPECT_NEAR(fit->tier[2].bandwidth_Bps / other.bandwidth_Bps, 1, 1e-9);
  EXPECT_LT(fit->max_error_pct, 1e-6);
  for (const CalibrationSample& x : s) EXPECT_NEAR(x.fitted_s / x.measured_s, 1, 1e-9);

  // One host: no other-node samples, so that tier is not measured; noise that would make the
  // latency negative is clamped at 0 (a bandwidth-only fit).
  const int one_host[2] = {1, 0};
  std::vector<CalibrationSample> t;
  for (int64_t n : {1, 64, 4096}) {
    CalibrationSample x = calibration_sample("same_node", one_host, to_same, n, 1024);
    x.measured_s = x.bytes[1] / same.bandwidth_Bps * (n == 1 ? 0.5 : 1.0);
    t.push_back(x);
  }
  fit = fit_link_tiers(&t);
  ASSERT_TRUE(fit.ok()) << fit.status().ToString();
  EXPECT_FALSE(fit->measured[0] || fit->measured[2]);
  EXPECT_EQ(fit->tier[1].latency_s, 0);
  EXPECT_GT(fit->tier[1].bandwidth_Bps, 0);
  // Nothing measured: an error, not a model.
  std::vector<CalibrationSample> none(1);
  EXPECT_EQ(fit_link_tiers(&none).status().code(), StatusCode::kInvalidArgument);
}

TEST(Project, RecomputesDropsPerGroupAndComparesWithTheRecording) {
  // E = 4, one group of 4 tokens, all choose experts 0 and 1; capacity factor 1: C =
  // ceil(1 * 4 * 2 / 4) = 2 per expert, so each of experts 0, 1 keeps the 2 of 4 with the
  // highest probability and drops the rest (rows ranked by weight: tokens 3, 2 win at expert 0).
  const std::vector<int32_t> ids = {0, 1, 0, 1, 0, 1, 0, 1};
  const std::vector<float> w = {0.1f, 0.9f, 0.2f, 0.8f, 0.3f, 0.7f, 0.4f, 0.6f};
  const std::vector<uint8_t> kept = {0, 1, 0, 1, 1, 0, 1, 0};
  Trace t = make_trace(4, 4, ids, w, kept, 1.0);
  StatusOr<RouterProjection> r = project_trace(t, options({1}, 8));
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->drop_mismatch, 0);
  EXPECT_EQ(r->drop_compared, 8);
  EXPECT_EQ(r->points[0].layers[0].dropped_E, (std::vector<int64_t>{2, 2, 0, 0}));

  // A recording that disagrees is counted.
  Trace bad = make_trace(4, 4, ids, w, std::vector<uint8_t>(8, 1), 1.0);
  EXPECT_EQ(project_trace(bad, options({1}, 8))->drop_mismatch, 4);
  // Another capacity factor: no comparison; dropless drops nothing.
  ProjectOptions o = options({1}, 8);
  o.capacity_factor = 0;
  StatusOr<RouterProjection> dropless = project_trace(t, o);
  EXPECT_EQ(dropless->drop_mismatch, -1);
  EXPECT_EQ(dropless->points[0].layers[0].dropped, 0);
}

TEST(Project, BeyondEIsDataParallelAndSamplesCyclically) {
  // P = 8 > E = 4: 4-way EP x 2 replicas; each rank replays one group (tokens / max P rounds
  // up to one group), groups taken cyclically, and no row leaves its replica.
  ProjectOptions o = options({8}, 8);
  StatusOr<RouterProjection> r = project_trace(four_tokens(), o);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  const PointProjection& pt = r->points[0];
  EXPECT_EQ(pt.ep, 4);
  EXPECT_EQ(pt.dp, 2);
  EXPECT_EQ(pt.tokens, 16);  // 8 ranks x 1 group of 2 tokens
  const LayerProjection& l = pt.layers[0];
  for (int q = 0; q < 8; ++q)
    for (int d = 0; d < 8; ++d)
      if (q / 4 != d / 4) {
        EXPECT_EQ(l.pair_rows_RR[q * 8 + d], 0) << q << " -> " << d;
      }
  int64_t rows = 0;
  for (int64_t x : l.pair_rows_RR) rows += x;
  EXPECT_EQ(rows, 32);

  // E must divide P beyond E; P must divide E below it (no replicas): exit 21.
  EXPECT_EQ(project_trace(four_tokens(), options({6}, 8)).status().code(),
            StatusCode::kInvalidArgument);
  StatusOr<RouterProjection> three = project_trace(four_tokens(), options({3}, 8));
  EXPECT_EQ(three.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(three.status().message().find("does not divide the 4 experts"), std::string::npos);
}

int64_t count(const std::string& s, const std::string& what) {
  int64_t n = 0;
  for (size_t at = s.find(what); at != std::string::npos; at = s.find(what, at + 1)) ++n;
  return n;
}

TEST(Project, HtmlPageHasAChartPerMetricAndALinePerRouter) {
  // Two routers, one with a name that needs escaping, at P = 1, 2, 4: three charts, each with
  // one polyline per router and a point per P; no scripts, no raw name.
  ProjectOptions o = options({1, 2, 4}, 2);
  StatusOr<RouterProjection> a = project_trace(four_tokens(), o);
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  RouterProjection b = *a;
  b.router = "<b>&\"x\"";
  const std::string page = projection_html({*a, b}, o);
  EXPECT_EQ(page.rfind("<!DOCTYPE html>", 0), 0u);
  EXPECT_EQ(count(page, "<svg"), 3);
  EXPECT_EQ(count(page, "</svg>"), 3);
  EXPECT_EQ(count(page, "<polyline"), 6);
  EXPECT_EQ(count(page, "<circle"), 18);
  EXPECT_EQ(count(page, "<script"), 0);
  EXPECT_EQ(count(page, "<b>&"), 0);
  EXPECT_GE(count(page, "&lt;b&gt;&amp;&quot;x&quot;"), 4);  // legend x3, heading
  EXPECT_NE(page.find("preset, from published figures"), std::string::npos);
  EXPECT_NE(page.find("synthetic routing"), std::string::npos);
  EXPECT_NE(page.find("contiguous"), std::string::npos);
  EXPECT_EQ(count(page, "<tr><td>"), 6);  // a table row per router and P
  EXPECT_EQ(count(page, "class=\"measured\""), 0);

  // A measured run at P = 2 (project --measured): a hollow diamond on the exchange chart at
  // its time, its row in the router's table, and the legend says "measured".
  MeasuredPoint m;
  m.dir = "runs/p2";
  m.numbers_compared = 12;
  m.exchange_s = {2e-6, 4e-6};
  m.compute_s = {1e-6, 1e-6};
  EXPECT_DOUBLE_EQ(m.mean_exchange_s(), 3e-6);
  a->points[1].measured.push_back(m);
  const std::string with = projection_html({*a}, o);
  EXPECT_EQ(count(with, "class=\"measured\""), 1);
  EXPECT_NE(with.find("P 2, measured: 3</title>"), std::string::npos);
  EXPECT_NE(with.find(">measured</text>"), std::string::npos);
  EXPECT_NE(with.find("<td style=\"text-align:left\">runs/p2</td>"), std::string::npos);
  EXPECT_NE(with.find("equal (12 numbers)"), std::string::npos);
}

TEST(Project, ReplicatedExpertsShareTokensByTokenIndex) {
  // Expert 0 on both ranks (a placement with one replica): token n's assignment to expert 0
  // goes to replica n % 2.
  ProjectOptions o = options({2}, 1);
  o.placement_name = "test";
  o.placement = [](const std::vector<int64_t>& load_E, int P) -> StatusOr<ExpertPlacement> {
    EXPECT_EQ(load_E, (std::vector<int64_t>{2, 2, 2, 2}));
    ExpertPlacement p;
    p.num_experts = 4;
    p.ranks = P;
    p.experts_of_rank = {{0, 1}, {0, 2, 3}};
    return p;
  };
  StatusOr<RouterProjection> r = project_trace(four_tokens(), o);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  // Token 0 (rank 0) -> expert 0 replica 0 (rank 0); token 3 (rank 1) -> expert 0 replica 1
  // (rank 1): both now stay home. Token 1 -> expert 2 still crosses.
  EXPECT_EQ(r->points[0].layers[0].pair_rows_RR, (std::vector<int64_t>{3, 1, 0, 4}));
  EXPECT_EQ(r->points[0].layers[0].instance_routed.size(), 5u);
}

std::string write_file(const std::string& name, const std::string& text) {
  const std::string path =
      ::testing::TempDir() + "/project_test_" + std::to_string(getpid()) + "_" + name;
  std::ofstream(path) << text;
  return path;
}

TEST(Cluster, PresetsAndFiles) {
  StatusOr<ClusterModel> h = cluster_preset("dgx-h100");
  ASSERT_TRUE(h.ok());
  EXPECT_EQ(h->label, "preset, from published figures");
  EXPECT_EQ(h->gpus_per_node, 8);
  EXPECT_GT(h->same_node.bandwidth_Bps, h->other_node.bandwidth_Bps);
  EXPECT_EQ(resolve_cluster("dgx-b9000").status().code(), StatusCode::kInvalidArgument);

  const std::string good = write_file(
      "good.json",
      R"({"format": "switchyard.cluster", "version": 1, "name": "lab", "gpus_per_node": 4,
          "flops": 1e14, "same_node": {"latency_us": 2, "bandwidth_GBps": 100},
          "other_node": {"latency_us": 0, "bandwidth_GBps": 12.5}})");
  StatusOr<ClusterModel> c = resolve_cluster(good);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->name, "lab");
  EXPECT_EQ(c->gpus_per_node, 4);
  EXPECT_DOUBLE_EQ(c->same_node.latency_s, 2e-6);
  EXPECT_DOUBLE_EQ(c->other_node.bandwidth_Bps, 12.5e9);

  struct Bad {
    const char* text;
    const char* field;
  };
  const Bad bad[] = {
      {R"({"flops": 1e14, "same_node": {"latency_us": 2, "bandwidth_GBps": 100},
           "other_node": {"latency_us": 1, "bandwidth_GBps": -5}})",
       "field other_node.bandwidth_GBps"},
      {R"({"flops": 1e14, "same_node": {"latency_us": -1, "bandwidth_GBps": 100},
           "other_node": {"latency_us": 1, "bandwidth_GBps": 5}})",
       "field same_node.latency_us"},
      {R"({"same_node": {"latency_us": 1, "bandwidth_GBps": 100},
           "other_node": {"latency_us": 1, "bandwidth_GBps": 5}})",
       "field flops: missing"},
      {R"({"flops": "fast", "same_node": {}, "other_node": {}})", "field flops"},
      {R"({"flops": 1e14, "same_node": {"latency_us": 1, "bandwidth_GBps": 100}})",
       "field other_node: missing"},
      {R"({"gpus_per_node": 0, "flops": 1})", "field gpus_per_node"},
      {R"([1, 2])", "not a JSON object"},
      {R"({"flops": 1e14, )", "not valid JSON"},
  };
  for (const Bad& b : bad) {
    const std::string path = write_file("bad.json", b.text);
    StatusOr<ClusterModel> r = read_cluster_file(path);
    ASSERT_FALSE(r.ok()) << b.text;
    EXPECT_EQ(r.status().code(), StatusCode::kBadInput) << b.text;
    EXPECT_EQ(r.status().exit_code(), 22);
    EXPECT_NE(r.status().message().find(path), std::string::npos) << r.status().message();
    EXPECT_NE(r.status().message().find(b.field), std::string::npos) << r.status().message();
  }
  EXPECT_EQ(read_cluster_file("/nonexistent/cluster.json").status().code(), StatusCode::kNotFound);
}

}  // namespace
}  // namespace sy
