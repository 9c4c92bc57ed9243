// Load-report files and the cluster report: round trips, merges checked against known answers,
// rejection of inconsistent sets, and corrupt or mutated files (never a crash).
#include <google/protobuf/stubs/logging.h>
#include <google/protobuf/util/message_differencer.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <climits>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "runtime/report/cluster_report.h"
#include "runtime/report/report_io.h"
#include "tests/runtime/report_test_util.h"

namespace sy {
namespace {
namespace fs = std::filesystem;
using switchyard::ClusterReport;
using switchyard::LayerStepReport;
using switchyard::RankReport;
using testing::make_synthetic_reports;
using testing::SyntheticTruth;

// Removes the test folders when the test program ends.
struct DirCleanup {
  std::vector<fs::path> dirs;
  ~DirCleanup() {
    std::error_code ec;
    for (const fs::path& d : dirs) fs::remove_all(d, ec);
  }
};
DirCleanup g_cleanup;

// A fresh folder per test under the system temp folder.
std::string fresh_dir(const std::string& name) {
  const fs::path p =
      fs::temp_directory_path() / ("sy_report_test_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(p);
  fs::create_directories(p);
  g_cleanup.dirs.push_back(p);
  return p.string();
}

std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

void spit(const std::string& path, const std::string& data) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f << data;
}

void write_all(const std::string& dir, const std::vector<RankReport>& reps) {
  for (const RankReport& r : reps) ASSERT_TRUE(write_rank_report(dir, r).ok());
}

TEST(ReportIo, RoundTripPbAndJsonIsBitIdentical) {
  const std::string dir = fresh_dir("roundtrip");
  RankReport r = make_synthetic_reports(2, 4, 2, 2, 3, 32, 7)[1];
  r.set_router("hybrid \"q\" <&>");
  r.set_config_text("moe {\n  top_k: 2\n}\n");
  ASSERT_TRUE(write_rank_report(dir, r).ok());
  for (const char* ext : {"pb", "json"}) {
    StatusOr<RankReport> back = read_rank_report(rank_report_path(dir, 1, ext));
    ASSERT_TRUE(back.ok()) << back.status().ToString();
    EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(r, *back)) << ext;
    EXPECT_EQ(r.SerializeAsString(), back->SerializeAsString()) << ext;
  }
  // Canonical JSON with the field names of report.proto and zeros printed.
  const std::string json = slurp(rank_report_path(dir, 1, "json"));
  EXPECT_NE(json.find("\"local_expert_begin\":2"), std::string::npos) << json.substr(0, 300);
  EXPECT_NE(json.find("\"wall_s\""), std::string::npos);
  // Only the two reports are left: no temp files.
  int files = 0;
  for (const auto& e : fs::directory_iterator(dir)) files += e.is_regular_file() ? 1 : 0;
  EXPECT_EQ(files, 2);
}

TEST(ReportIo, WriteFailuresAreStatusesAndLeaveNoTempFile) {
  const std::string dir = fresh_dir("enospc");
  const RankReport r = make_synthetic_reports(1, 2, 1, 1, 1, 4, 1)[0];
  ReportWriteOptions opt;
  opt.fail_enospc = true;
  const Status st = write_rank_report(dir, r, opt);
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find("No space left"), std::string::npos) << st.ToString();
  EXPECT_TRUE(fs::is_empty(dir));
  spit(dir + "/plainfile", "x");
  EXPECT_FALSE(write_rank_report(dir + "/plainfile/sub", r).ok());
}

// Two ranks, E = 4 (rank 0 owns experts 0-1, rank 1 owns 2-3), one layer, two steps, K = 1.
// Bytes are rows * 100. The expected sums are worked out by hand in the comments.
LayerStepReport hand_entry(int step, std::vector<int64_t> routed, std::vector<int64_t> dropped,
                           std::vector<int64_t> received, std::vector<int64_t> sent,
                           std::vector<int64_t> recv, double route_s, double dispatch_s,
                           double entropy_sum) {
  LayerStepReport e;
  e.set_layer(0);
  e.set_step(step);
  int64_t nr = 0, nd = 0;
  for (int64_t v : routed) nr += v;
  for (int64_t v : dropped) nd += v;
  e.set_tokens(nr);
  e.set_assignments_routed(nr);
  e.set_assignments_dropped(nd);
  for (int64_t v : routed) e.add_routed_per_expert(v);
  for (int64_t v : dropped) e.add_dropped_per_expert(v);
  for (int64_t v : received) e.add_received_per_local_expert(v);
  for (int64_t v : sent) e.add_rows_sent_to_peer(v), e.add_bytes_sent_to_peer(100 * v);
  for (int64_t v : recv) e.add_rows_recv_from_peer(v), e.add_bytes_recv_from_peer(100 * v);
  e.mutable_times()->set_route_s(route_s);
  e.mutable_times()->set_dispatch_s(dispatch_s);
  e.mutable_metrics()->set_tokens(nr);
  e.mutable_metrics()->set_entropy_sum(entropy_sum);
  return e;
}

std::vector<RankReport> hand_reports() {
  std::vector<RankReport> reps(2);
  for (int r = 0; r < 2; ++r) {
    reps[r].set_rank(r);
    reps[r].set_world_size(2);
    reps[r].set_router("linear");
    reps[r].set_num_experts(4);
    reps[r].set_top_k(1);
    reps[r].set_local_expert_begin(2 * r);
    reps[r].set_local_expert_count(2);
    reps[r].set_num_layers(1);
  }
  // Step 0: rank 0 keeps [2,1,2,2] (drops 1 of expert 0), rank 1 keeps [1,1,3,2] (drops 1 of 2).
  *reps[0].add_entries() =
      hand_entry(0, {3, 1, 2, 2}, {1, 0, 0, 0}, {3, 2}, {3, 4}, {3, 2}, 1.0, 2.0, 4.0);
  *reps[1].add_entries() =
      hand_entry(0, {1, 1, 4, 2}, {0, 0, 1, 0}, {5, 4}, {2, 5}, {4, 5}, 0.5, 4.0, 2.0);
  // Step 1: everyone routes 2 to every expert, nothing dropped.
  *reps[0].add_entries() =
      hand_entry(1, {2, 2, 2, 2}, {0, 0, 0, 0}, {4, 4}, {4, 4}, {4, 4}, 1.0, 1.0, 6.0);
  *reps[1].add_entries() =
      hand_entry(1, {2, 2, 2, 2}, {0, 0, 0, 0}, {4, 4}, {4, 4}, {4, 4}, 0.5, 1.0, 4.0);
  return reps;
}

TEST(ClusterReport, MergeTwoRanksByHand) {
  StatusOr<ClusterReport> c = merge_rank_reports(hand_reports());
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  ASSERT_EQ(c->layers_size(), 1);
  const auto& s = c->layers(0);
  EXPECT_EQ(s.steps(), 2);
  EXPECT_EQ(std::vector<int64_t>(s.load_per_expert().begin(), s.load_per_expert().end()),
            (std::vector<int64_t>{7, 6, 9, 8}));
  EXPECT_EQ(std::vector<int64_t>(s.routed_per_expert().begin(), s.routed_per_expert().end()),
            (std::vector<int64_t>{8, 6, 10, 8}));
  EXPECT_EQ(std::vector<int64_t>(s.dropped_per_expert().begin(), s.dropped_per_expert().end()),
            (std::vector<int64_t>{1, 0, 1, 0}));
  EXPECT_EQ(std::vector<int64_t>(s.traffic_rows().begin(), s.traffic_rows().end()),
            (std::vector<int64_t>{7, 8, 6, 9}));
  EXPECT_EQ(std::vector<int64_t>(s.traffic_bytes().begin(), s.traffic_bytes().end()),
            (std::vector<int64_t>{700, 800, 600, 900}));
  EXPECT_EQ(s.routed(), 32);
  EXPECT_EQ(s.dropped(), 2);
  EXPECT_EQ(s.received(), 30);
  EXPECT_DOUBLE_EQ(s.imbalance_max_over_mean(), 9.0 / 7.5);
  EXPECT_DOUBLE_EQ(s.imbalance_excess(), 1.5 / 7.5);
  // Per-rank totals: route 2.0 and 1.0, dispatch 3.0 and 5.0.
  EXPECT_DOUBLE_EQ(s.mean_times().route_s(), 1.5);
  EXPECT_DOUBLE_EQ(s.max_times().route_s(), 2.0);
  EXPECT_DOUBLE_EQ(s.mean_times().dispatch_s(), 4.0);
  EXPECT_DOUBLE_EQ(s.max_times().dispatch_s(), 5.0);
  EXPECT_EQ(s.metrics().tokens(), 32);
  EXPECT_DOUBLE_EQ(s.metrics().entropy(), 16.0 / 32.0);
  EXPECT_DOUBLE_EQ(s.metrics().drop_fraction(), 2.0 / 32.0);
  EXPECT_DOUBLE_EQ(s.metrics().imbalance(), 10.0 / 8.0);  // routed (before drops) max/mean
  EXPECT_EQ(c->ranks_size(), 2);
}

TEST(ClusterReport, MergeFourRanksMatchesGroundTruth) {
  SyntheticTruth truth;
  const int P = 4, E = 8, L = 2;
  std::vector<RankReport> reps = make_synthetic_reports(P, E, 2, L, 3, 64, 42, &truth);
  std::swap(reps[0], reps[3]);  // any order
  StatusOr<ClusterReport> c = merge_rank_reports(reps);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  ASSERT_EQ(c->layers_size(), L);
  for (int l = 0; l < L; ++l) {
    const auto& s = c->layers(l);
    EXPECT_EQ(s.layer(), l);
    EXPECT_EQ(std::vector<int64_t>(s.load_per_expert().begin(), s.load_per_expert().end()),
              truth.load_LE[l]);
    EXPECT_EQ(std::vector<int64_t>(s.dropped_per_expert().begin(), s.dropped_per_expert().end()),
              truth.dropped_LE[l]);
    EXPECT_EQ(std::vector<int64_t>(s.traffic_bytes().begin(), s.traffic_bytes().end()),
              truth.bytes_LPP[l]);
    EXPECT_EQ(std::vector<int64_t>(s.traffic_rows().begin(), s.traffic_rows().end()),
              truth.rows_LPP[l]);
    int64_t sum = 0, max = 0;
    for (int64_t v : truth.load_LE[l]) sum += v, max = std::max(max, v);
    const double mean = static_cast<double>(sum) / E;
    EXPECT_NEAR(s.imbalance_max_over_mean(), max / mean, 1e-12);
    EXPECT_NEAR(s.imbalance_excess(), (max - mean) / mean, 1e-12);
    EXPECT_GT(s.dropped(), 0);  // the synthetic capacity does bite
    const std::vector<PhaseValue> mt = phase_values(s.mean_times()),
                                  xt = phase_values(s.max_times());
    for (int k = 0; k < 7; ++k) {
      double tsum = 0.0, tmax = 0.0;
      for (int r = 0; r < P; ++r)
        tsum += truth.times_LP[l][r][k], tmax = std::max(tmax, truth.times_LP[l][r][k]);
      EXPECT_NEAR(mt[k].seconds, tsum / P, 1e-15) << mt[k].name;
      EXPECT_DOUBLE_EQ(xt[k].seconds, tmax) << xt[k].name;
    }
    EXPECT_EQ(s.metrics().tokens(), P * 3 * 64);
  }
  // The text and HTML renderers see the same numbers.
  const std::string text = render_cluster_text(*c);
  EXPECT_NE(text.find("== layer 1"), std::string::npos);
  EXPECT_NE(text.find("traffic matrix"), std::string::npos);
  // Rows that stay on their own rank are counted (they carry no bytes): layer 1's line.
  int64_t rows = 0, self = 0;
  for (int i = 0; i < P * P; ++i) {
    rows += truth.rows_LPP[1][static_cast<size_t>(i)];
    if (i % (P + 1) == 0) self += truth.rows_LPP[1][static_cast<size_t>(i)];
  }
  const size_t at = text.find("== layer 1");
  EXPECT_NE(text.find("traffic: " + std::to_string(rows) + " rows dispatched, " +
                          std::to_string(self) + " (",
                      at),
            std::string::npos)
      << text.substr(at, 400);
  EXPECT_GT(self, 0);
  // The cold first step is said apart from the others' mean per step.
  EXPECT_NE(text.find("(cold): ", at), std::string::npos);
  EXPECT_NE(text.find("the other 2 steps: ", at), std::string::npos) << text.substr(at, 1200);
}

TEST(ClusterReport, SumsThatDisagreeAreRejectedNamingTheLayer) {
  std::vector<RankReport> reps = make_synthetic_reports(2, 4, 2, 2, 2, 16, 3);
  // One more row received by rank 1's first expert in layer 1 step 0.
  for (auto& e : *reps[1].mutable_entries())
    if (e.layer() == 1 && e.step() == 0)
      e.set_received_per_local_expert(0, e.received_per_local_expert(0) + 1);
  StatusOr<ClusterReport> c = merge_rank_reports(reps);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), StatusCode::kBadInput);
  EXPECT_NE(c.status().message().find("layer 1: rank 1"), std::string::npos)
      << c.status().ToString();

  // The same extra row, made consistent along the exchange (sender and receiver agree) and
  // without per-expert lists: only the layer totals can tell.
  reps = make_synthetic_reports(2, 4, 2, 1, 1, 16, 3);
  for (RankReport& r : reps) {
    LayerStepReport* e = r.mutable_entries(0);
    e->clear_routed_per_expert();
    e->clear_dropped_per_expert();
  }
  LayerStepReport* recv = reps[1].mutable_entries(0);
  recv->set_received_per_local_expert(0, recv->received_per_local_expert(0) + 1);
  recv->set_rows_recv_from_peer(0, recv->rows_recv_from_peer(0) + 1);
  reps[0].mutable_entries(0)->set_rows_sent_to_peer(1, reps[0].entries(0).rows_sent_to_peer(1) + 1);
  c = merge_rank_reports(reps);
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("layer 0: rows received by all ranks"), std::string::npos)
      << c.status().ToString();

  // rows_sent i -> j must equal rows_recv j <- i.
  reps = make_synthetic_reports(2, 4, 2, 1, 1, 16, 3);
  auto* e0 = reps[0].mutable_entries(0);
  e0->set_rows_sent_to_peer(1, e0->rows_sent_to_peer(1) + 2);
  c = merge_rank_reports(reps);
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("layer 0: rank 0 sent"), std::string::npos)
      << c.status().ToString();
  EXPECT_NE(c.status().message().find("rank 1"), std::string::npos);
}

TEST(ClusterReport, MissingDuplicateAndMismatchedRanksAreRejected) {
  const std::vector<RankReport> reps = make_synthetic_reports(4, 8, 2, 1, 2, 16, 9);
  {  // missing rank 2
    const std::string dir = fresh_dir("missing");
    write_all(dir, {reps[0], reps[1], reps[3]});
    StatusOr<RankReportSet> s = load_rank_reports(dir);
    ASSERT_FALSE(s.ok());
    EXPECT_EQ(s.status().code(), StatusCode::kBadInput);
    EXPECT_NE(s.status().message().find("missing the report of rank 2"), std::string::npos)
        << s.status().ToString();
  }
  {  // rank-3.pb holding rank 1's report: a duplicate
    const std::string dir = fresh_dir("dup");
    write_all(dir, {reps[0], reps[1], reps[2]});
    RankReport copy = reps[1];
    spit(dir + "/rank-3.pb", copy.SerializeAsString());
    StatusOr<RankReportSet> s = load_rank_reports(dir);
    ASSERT_FALSE(s.ok());
    EXPECT_NE(s.status().message().find("rank-3.pb"), std::string::npos) << s.status().ToString();
    std::vector<RankReport> v = {reps[0], reps[1], reps[1], reps[3]};
    StatusOr<ClusterReport> c = merge_rank_reports(v);
    ASSERT_FALSE(c.ok());
    EXPECT_NE(c.status().message().find("duplicate rank 1"), std::string::npos)
        << c.status().ToString();
  }
  {  // router differs
    const std::string dir = fresh_dir("router");
    std::vector<RankReport> v = reps;
    v[2].set_router("hash");
    write_all(dir, v);
    StatusOr<RankReportSet> s = load_rank_reports(dir);
    ASSERT_FALSE(s.ok());
    EXPECT_NE(s.status().message().find("rank-2.pb: router 'hash'"), std::string::npos)
        << s.status().ToString();
  }
  {  // a step missing on one rank, and world_size disagreeing
    std::vector<RankReport> v = reps;
    v[3].mutable_entries()->RemoveLast();
    StatusOr<ClusterReport> c = merge_rank_reports(v);
    ASSERT_FALSE(c.ok());
    EXPECT_NE(c.status().message().find("no entry for layer 0 step 1"), std::string::npos)
        << c.status().ToString();
    v = reps;
    v[1].set_world_size(5);
    EXPECT_FALSE(merge_rank_reports(v).ok());
  }
  {  // an empty folder, and one that does not exist
    EXPECT_EQ(load_rank_reports(fresh_dir("empty")).status().code(), StatusCode::kBadInput);
    EXPECT_FALSE(load_rank_reports("/nonexistent/sy_reports").ok());
  }
}

// docs/RELIABILITY.md A5: a straggler is named from the step times (its own work, not the time
// inside collectives), only where every rank timed a step; C3: skipped steps are counted.
TEST(ClusterReport, StragglerNamedFromStepTimes) {
  const int P = 4;
  std::vector<RankReport> reps = make_synthetic_reports(P, 8, 2, 1, 3, 64, 7);
  auto time = [&](int rank, int64_t step, double seconds, double collective_s) {
    switchyard::StepTime* t = reps[static_cast<size_t>(rank)].add_step_times();
    t->set_step(step);
    t->set_seconds(seconds);
    t->set_collective_s(collective_s);
  };
  // Steps 0 and 1 on every rank (rank 2 also step 5, which the others did not time): rank 2
  // works 1.0 s per step where the others work 0.2 s and wait 0.8 s for it.
  for (int r = 0; r < P; ++r)
    for (int64_t step = 0; step < 2; ++step) time(r, step, 1.1, r == 2 ? 0.1 : 0.9);
  time(2, 5, 9.0, 0.0);
  for (RankReport& r : reps) r.set_skipped_steps(2);
  StatusOr<ClusterReport> c = merge_rank_reports(reps);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  ASSERT_EQ(c->rank_times_size(), P);
  for (int r = 0; r < P; ++r) {
    const ClusterReport::RankTime& t = c->rank_times(r);
    EXPECT_EQ(t.rank(), r);
    EXPECT_EQ(t.steps(), 2);
    EXPECT_DOUBLE_EQ(t.step_seconds(), 2.2);
    EXPECT_NEAR(t.own_seconds(), r == 2 ? 2.0 : 0.4, 1e-12);
    EXPECT_EQ(t.straggler(), r == 2) << r;
  }
  EXPECT_EQ(c->skipped_steps(), 2);
  const std::string text = render_cluster_text(*c);
  EXPECT_NE(text.find("rank 2 is a straggler: 1.000 s of its own work per step against a "
                      "median of 0.200 s"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("training steps skipped (non-finite gradients): 2"), std::string::npos);
  EXPECT_NE(render_cluster_html(*c).find("<b>straggler</b>"), std::string::npos);

  // Even ranks: none flagged, no warning.
  for (RankReport& r : reps) r.clear_step_times();
  for (int r = 0; r < P; ++r) time(r, 0, 1.0, 0.5 + 0.01 * r);
  c = merge_rank_reports(reps);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  ASSERT_EQ(c->rank_times_size(), P);
  for (const auto& t : c->rank_times()) EXPECT_FALSE(t.straggler());
  EXPECT_EQ(render_cluster_text(*c).find("straggler"), std::string::npos);

  // A rank without step times (an older producer): no rank times at all.
  reps[1].clear_step_times();
  c = merge_rank_reports(reps);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->rank_times_size(), 0);

  // Bad step times are bad input, naming the field.
  reps[1].clear_step_times();
  time(1, 0, -1.0, 0.0);
  c = merge_rank_reports(reps);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), StatusCode::kBadInput);
  EXPECT_NE(c.status().message().find("step_times"), std::string::npos) << c.status().message();
  reps[1].clear_step_times();
  time(1, 0, 1.0, 0.5);
  time(1, 0, 1.0, 0.5);
  c = merge_rank_reports(reps);
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("twice"), std::string::npos) << c.status().message();
}

TEST(ReportIo, CorruptFilesAreBadInputNotCrashes) {
  google::protobuf::LogSilencer quiet;
  const std::string dir = fresh_dir("corrupt");
  const RankReport r = make_synthetic_reports(1, 4, 2, 2, 2, 16, 5)[0];
  const std::string pb = r.SerializeAsString();
  const std::string path_pb = dir + "/rank-0.pb", path_json = dir + "/rank-0.json";
  const auto expect_bad = [](const std::string& path, const std::string& why) {
    StatusOr<RankReport> got = read_rank_report(path);
    ASSERT_FALSE(got.ok()) << why;
    EXPECT_EQ(got.status().code(), StatusCode::kBadInput) << why << ": " << got.status().ToString();
    EXPECT_NE(got.status().message().find(path), std::string::npos) << why;
  };
  spit(path_pb, pb.substr(0, pb.size() / 2));
  expect_bad(path_pb, "truncated pb");
  std::mt19937_64 rng(11);
  std::string noise(4096, '\0');
  for (char& ch : noise) ch = static_cast<char>(rng());
  spit(path_pb, noise);
  expect_bad(path_pb, "random bytes");
  spit(path_pb, "");
  expect_bad(path_pb, "0-byte pb");
  spit(path_json, "");
  expect_bad(path_json, "0-byte json");
  spit(path_json, "{\"rank\": 0, \"world_size\": 1,");
  expect_bad(path_json, "invalid JSON");
  spit(path_json, "{\"rank\": \"zero\", \"world_size\": 1}");
  expect_bad(path_json, "wrong type (string for int)");
  spit(path_json, "{\"world_size\": 1, \"num_experts\": 4, \"entries\": 5}");
  expect_bad(path_json, "wrong type (number for list)");
  spit(path_json, "[1, 2, 3]");
  expect_bad(path_json, "array at the top");
  spit(path_json,
       "{\"world_size\": 1, \"num_experts\": 4, \"num_layers\": 1, \"entries\": "
       "[{\"layer\": 0, \"routed_per_expert\": [1, 2]}]}");
  expect_bad(path_json, "list of the wrong length");
  // A good .json next to a corrupt .pb is used, with a warning.
  spit(path_pb, pb.substr(0, pb.size() - 3));
  ASSERT_TRUE(write_file_atomic(path_json, *report_message_to_json(r)).ok());
  StatusOr<RankReportSet> set = load_rank_reports(dir);
  ASSERT_TRUE(set.ok()) << set.status().ToString();
  ASSERT_EQ(set->warnings.size(), 1u);
  EXPECT_NE(set->warnings[0].find("rank-0.pb"), std::string::npos);
  EXPECT_EQ(set->files[0], path_json);
}

// Seeded mutations of a valid .pb and .json: flips, truncations, insertions. Every read either
// succeeds (then the merge and both renderers run) or is BadInput.
TEST(ReportIo, MutatedFilesNeverCrash) {
  google::protobuf::LogSilencer quiet;
  const std::string dir = fresh_dir("fuzz");
  const RankReport r = make_synthetic_reports(1, 4, 2, 2, 2, 16, 13)[0];
  const std::string good[2] = {r.SerializeAsString(), *report_message_to_json(r)};
  const std::string paths[2] = {dir + "/rank-0.pb", dir + "/rank-0.json"};
  std::mt19937_64 rng(2024);
  int ok = 0, bad = 0;
  for (int it = 0; it < 1000; ++it) {
    const int f = it % 2;
    std::string data = good[f];
    const int kind = static_cast<int>(rng() % 4);
    const int n = 1 + static_cast<int>(rng() % 8);
    for (int k = 0; k < n && !data.empty(); ++k) {
      const size_t at = rng() % data.size();
      if (kind == 0) data[at] = static_cast<char>(data[at] ^ (1 << (rng() % 8)));
      if (kind == 1) data[at] = static_cast<char>(rng());
      if (kind == 2) data.insert(at, 1, static_cast<char>(rng()));
      if (kind == 3) data.resize(at);
    }
    fs::remove(paths[1 - f]);
    spit(paths[f], data);
    StatusOr<RankReport> got = read_rank_report(paths[f]);
    if (!got.ok()) {
      EXPECT_EQ(got.status().code(), StatusCode::kBadInput) << got.status().ToString();
      ++bad;
      continue;
    }
    ++ok;
    StatusOr<ClusterReport> c = merge_rank_reports({*got});
    if (c.ok()) {
      EXPECT_FALSE(render_cluster_text(*c).empty());
      EXPECT_FALSE(render_cluster_html(*c).empty());
    } else {
      EXPECT_EQ(c.status().code(), StatusCode::kBadInput);
    }
  }
  EXPECT_GT(bad, 100);
  EXPECT_GT(ok, 10);  // many flips hit values, not structure
}

// Seeded changes of single values of a valid 2-rank set (extremes included: overflow, NaN,
// out-of-range sizes): the merge returns a report or BadInput, never a crash or UB.
TEST(ClusterReport, MutatedValuesNeverCrashTheMerge) {
  const std::vector<RankReport> good = make_synthetic_reports(2, 4, 2, 2, 2, 16, 21);
  std::mt19937_64 rng(77);
  const int64_t extremes[] = {-1, 0, 1, 3, INT64_MAX, INT64_MAX / 2, INT64_MIN, 1 << 20};
  const double bad_times[] = {-1.0, NAN, INFINITY, 1e300};
  int ok = 0;
  for (int it = 0; it < 600; ++it) {
    std::vector<RankReport> v = good;
    RankReport& r = v[rng() % 2];
    const int64_t x = rng() % 3 == 0 ? static_cast<int64_t>(rng()) : extremes[rng() % 8];
    const int32_t x32 = static_cast<int32_t>(x);
    LayerStepReport* e = r.mutable_entries(static_cast<int>(rng() % r.entries_size()));
    switch (rng() % 12) {
      case 0:
        r.set_world_size(x32);
        break;
      case 1:
        r.set_num_experts(x32);
        break;
      case 2:
        r.set_top_k(x32);
        break;
      case 3:
        r.set_local_expert_begin(x32);
        break;
      case 4:
        r.set_local_expert_count(x32);
        break;
      case 5:
        r.set_num_layers(x32);
        break;
      case 6:
        e->set_layer(x32);
        break;
      case 7:
        e->set_routed_per_expert(static_cast<int>(rng() % 4), x);
        break;
      case 8:
        e->set_received_per_local_expert(static_cast<int>(rng() % 2), x);
        break;
      case 9:
        e->set_bytes_sent_to_peer(static_cast<int>(rng() % 2), x);
        break;
      case 10:
        e->mutable_times()->set_experts_s(bad_times[rng() % 4]);
        break;
      case 11:
        e->add_rows_recv_from_peer(x);
        break;
    }
    StatusOr<ClusterReport> c = merge_rank_reports(v);
    if (c.ok()) {
      ++ok;
      EXPECT_FALSE(render_cluster_html(*c).empty());
      EXPECT_FALSE(render_cluster_text(*c).empty());
    } else {
      EXPECT_EQ(c.status().code(), StatusCode::kBadInput) << c.status().ToString();
    }
  }
  EXPECT_GT(ok, 0);  // some changes are harmless (a big time, a matching value)
}

TEST(ClusterReport, HtmlHasOneSvgPerChartAndEscapes) {
  std::vector<RankReport> reps = make_synthetic_reports(2, 4, 2, 3, 2, 16, 17);
  for (RankReport& r : reps) r.set_router("<script>alert('x')</script>&co");
  StatusOr<ClusterReport> c = merge_rank_reports(reps);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  const std::string html = render_cluster_html(*c);
  size_t svgs = 0;
  for (size_t at = html.find("<svg"); at != std::string::npos; at = html.find("<svg", at + 1))
    ++svgs;
  EXPECT_EQ(svgs, 1u + 2u * 3u);  // phase times, and per layer: loads and traffic
  EXPECT_EQ(html.find("<script"), std::string::npos);
  EXPECT_NE(html.find("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;co"), std::string::npos);
  for (const char* external : {"<link", "src=", "@import", "<iframe"})  // self-contained
    EXPECT_EQ(html.find(external), std::string::npos) << external;
  EXPECT_NE(html.find("<table>"), std::string::npos);
}

// Layer 0: rows rank i sent to rank j, one step's worth (4 ranks).
const std::vector<int64_t> kRowsA = {5, 3, 2, 1,   //
                                     4, 6, 0, 2,   //
                                     1, 2, 7, 3,   //
                                     0, 1, 4, 8};  // 49 rows
// Layer 1: every rank sends 4 rows to rank 3 (16 rows).
const std::vector<int64_t> kRowsB = {0, 0, 0, 4, 0, 0, 0, 4, 0, 0, 0, 4, 0, 0, 0, 4};

void expect_tier(const switchyard::TrafficTier& t, int64_t rows, int64_t bytes, double share,
                 double bytes_per_token, const char* what) {
  EXPECT_EQ(t.rows(), rows) << what;
  EXPECT_EQ(t.bytes(), bytes) << what;
  EXPECT_DOUBLE_EQ(t.share(), share) << what;
  EXPECT_DOUBLE_EQ(t.bytes_per_token(), bytes_per_token) << what;
}

// 4 ranks on 2 hosts (h1: 0, 1; h2: 2, 3), two steps of known traffic, 100 bytes a row.
TEST(ClusterReport, TrafficSplitTwoHostsByHand) {
  StatusOr<ClusterReport> c = merge_rank_reports(
      testing::make_traffic_reports({kRowsA, kRowsB}, {"h1", "h1", "h2", "h2"}, 2, 100));
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(std::vector<std::string>(c->rank_hosts().begin(), c->rank_hosts().end()),
            (std::vector<std::string>{"h1", "h1", "h2", "h2"}));
  EXPECT_EQ(c->num_hosts(), 2);
  EXPECT_TRUE(c->warnings().empty());
  ASSERT_EQ(c->layers_size(), 2);
  // Layer 0 per step: same rank 5+6+7+8 = 26, intra-host 3+4 + 3+4 = 14, inter-host 2+1+0+2 +
  // 1+2+0+1 = 9 rows; 49 tokens. Two steps double every count.
  const auto& a = c->layers(0).traffic_split();
  EXPECT_EQ(a.tokens(), 98);
  expect_tier(a.same_rank(), 52, 5200, 26.0 / 49, 5200.0 / 98, "layer 0 same rank");
  expect_tier(a.intra_host(), 28, 2800, 14.0 / 49, 2800.0 / 98, "layer 0 intra-host");
  expect_tier(a.inter_host(), 18, 1800, 9.0 / 49, 1800.0 / 98, "layer 0 inter-host");
  // Layer 1 per step: 3 -> 3 stays, 2 -> 3 within h2, 0 -> 3 and 1 -> 3 cross; 16 tokens.
  const auto& b = c->layers(1).traffic_split();
  EXPECT_EQ(b.tokens(), 32);
  expect_tier(b.same_rank(), 8, 800, 0.25, 25.0, "layer 1 same rank");
  expect_tier(b.intra_host(), 8, 800, 0.25, 25.0, "layer 1 intra-host");
  expect_tier(b.inter_host(), 16, 1600, 0.5, 50.0, "layer 1 inter-host");
  // All layers: counts add up; bytes per token is what a token costs over both layers.
  const auto& t = c->traffic_split();
  EXPECT_EQ(t.tokens(), 98);
  expect_tier(t.same_rank(), 60, 6000, 6000.0 / 13000, 5200.0 / 98 + 25.0, "total same rank");
  expect_tier(t.intra_host(), 36, 3600, 3600.0 / 13000, 2800.0 / 98 + 25.0, "total intra-host");
  expect_tier(t.inter_host(), 34, 3400, 3400.0 / 13000, 1800.0 / 98 + 50.0, "total inter-host");

  const std::string text = render_cluster_text(*c);
  EXPECT_NE(text.find("hosts: 2\n  h1: ranks 0, 1\n  h2: ranks 2, 3\n"), std::string::npos) << text;
  EXPECT_NE(text.find("inter-host"), std::string::npos);
  EXPECT_NE(text.find("== all layers =="), std::string::npos);
  const std::string html = render_cluster_html(*c);
  EXPECT_NE(html.find("Traffic by tier"), std::string::npos);
  EXPECT_NE(html.find("between hosts h1 and h2"), std::string::npos);  // a heat map cell's tip
  EXPECT_NE(html.find("h2 (ranks 2, 3)"), std::string::npos);
  const std::string json = *report_message_to_json(*c);
  EXPECT_NE(json.find("\"rank_hosts\":[\"h1\",\"h1\",\"h2\",\"h2\"]"), std::string::npos);
  EXPECT_NE(json.find("\"inter_host\":{\"bytes\":\"3400\""), std::string::npos)
      << json.substr(0, 400);
}

// Hosts need not hold contiguous ranks (h1: 0, 2; h2: 1, 3), and the split matches a brute
// force over the synthetic run's ground truth.
TEST(ClusterReport, TrafficSplitRoundRobinHostsAndSyntheticTruth) {
  StatusOr<ClusterReport> c =
      merge_rank_reports(testing::make_traffic_reports({kRowsA}, {"h1", "h2", "h1", "h2"}, 1, 100));
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  const auto& a = c->layers(0).traffic_split();
  EXPECT_EQ(a.same_rank().rows(), 26);
  EXPECT_EQ(a.intra_host().rows(), 2 + 1 + 2 + 1);  // 0 <-> 2, 1 <-> 3
  EXPECT_EQ(a.inter_host().rows(), 3 + 1 + 4 + 0 + 0 + 2 + 3 + 4);

  SyntheticTruth truth;
  const int P = 4, L = 2;
  const std::vector<RankReport> reps = make_synthetic_reports(P, 8, 2, L, 3, 64, 5, &truth);
  c = merge_rank_reports(reps);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->num_hosts(), 2);  // node0: 0, 1; node1: 2, 3
  for (int l = 0; l < L; ++l) {
    int64_t bytes[3] = {0, 0, 0}, rows[3] = {0, 0, 0};
    for (int i = 0; i < P; ++i)
      for (int j = 0; j < P; ++j) {
        const int k = i == j ? 0 : i / 2 == j / 2 ? 1 : 2;
        bytes[k] += truth.bytes_LPP[l][i * P + j];
        rows[k] += truth.rows_LPP[l][i * P + j];
      }
    const auto& s = c->layers(l).traffic_split();
    EXPECT_EQ(s.same_rank().bytes(), bytes[0]);
    EXPECT_EQ(s.intra_host().bytes(), bytes[1]);
    EXPECT_EQ(s.inter_host().bytes(), bytes[2]);
    EXPECT_EQ(s.same_rank().rows(), rows[0]);
    EXPECT_EQ(s.intra_host().rows(), rows[1]);
    EXPECT_EQ(s.inter_host().rows(), rows[2]);
    EXPECT_GT(rows[2], 0);
    EXPECT_EQ(s.tokens(), P * 3 * 64);
    EXPECT_NEAR(s.same_rank().share() + s.intra_host().share() + s.inter_host().share(), 1.0,
                1e-12);
  }
}

TEST(ClusterReport, TrafficSplitOneHostHasNoInterHost) {
  StatusOr<ClusterReport> c = merge_rank_reports(
      testing::make_traffic_reports({kRowsA, kRowsB}, {"h1", "h1", "h1", "h1"}, 1, 100));
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->num_hosts(), 1);
  for (const auto& s : c->layers()) {
    EXPECT_EQ(s.traffic_split().inter_host().rows(), 0);
    EXPECT_EQ(s.traffic_split().inter_host().bytes(), 0);
    EXPECT_EQ(s.traffic_split().inter_host().share(), 0.0);
  }
  EXPECT_EQ(c->traffic_split().inter_host().bytes(), 0);
  EXPECT_EQ(c->traffic_split().intra_host().rows(), 49 - 26 + 16 - 4);
}

// Reports of an older or foreign producer without a host (proto3 reads the absent field as "",
// in .pb and .json alike) are read and merged; the split by host is left out with a warning
// naming the ranks, rather than guessed.
TEST(ClusterReport, ReportsWithoutHostMergeWithoutTheSplit) {
  google::protobuf::LogSilencer quiet;
  const std::string dir = fresh_dir("nohost");
  const std::vector<RankReport> reps =
      testing::make_traffic_reports({kRowsA}, {"", "", "", ""}, 1, 100);
  for (const RankReport& r : reps) {
    const std::string json = *report_message_to_json(r);
    const size_t at = json.find("\"host\":\"\",");
    ASSERT_NE(at, std::string::npos) << json.substr(0, 200);
    std::string old = json;
    old.erase(at, std::string("\"host\":\"\",").size());  // as written before hosts existed
    spit(rank_report_path(dir, r.rank(), "json"), old);
  }
  StatusOr<RankReportSet> set = load_rank_reports(dir);
  ASSERT_TRUE(set.ok()) << set.status().ToString();
  StatusOr<ClusterReport> c = merge_rank_reports(set->reports, set->files);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->num_hosts(), 0);
  EXPECT_FALSE(c->has_traffic_split());
  EXPECT_FALSE(c->layers(0).has_traffic_split());
  EXPECT_EQ(c->layers(0).traffic_rows(5), 6);  // the rest of the report is all there
  ASSERT_EQ(c->warnings_size(), 1);
  EXPECT_NE(c->warnings(0).find("ranks 0-3 have no host"), std::string::npos) << c->warnings(0);
  EXPECT_NE(render_cluster_text(*c).find("warning: ranks 0-3 have no host"), std::string::npos);
  EXPECT_EQ(render_cluster_html(*c).find("Traffic by tier"), std::string::npos);

  // One rank without a host is enough to leave the split out.
  std::vector<RankReport> some =
      testing::make_traffic_reports({kRowsA}, {"h1", "h1", "", "h2"}, 1, 100);
  c = merge_rank_reports(some);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_FALSE(c->has_traffic_split());
  ASSERT_EQ(c->warnings_size(), 1);
  EXPECT_NE(c->warnings(0).find("rank 2 has no host"), std::string::npos) << c->warnings(0);
}

// With SY_REPORT_SAMPLE_DIR set, writes a sample set of rank reports there for
// `switchyard report DIR` (to look at report.html by eye).
TEST(ClusterReport, WriteSampleWhenAsked) {
  const char* dir = std::getenv("SY_REPORT_SAMPLE_DIR");
  if (!dir) GTEST_SKIP() << "set SY_REPORT_SAMPLE_DIR to write a sample";
  // SY_REPORT_SAMPLE_SHAPE="P,E,K,L,S,T" (default 4 ranks, 16 experts, top-2, 2 layers, 4 steps,
  // 256 tokens per rank and step).
  int P = 4, E = 16, K = 2, L = 2, S = 4, T = 256;
  if (const char* shape = std::getenv("SY_REPORT_SAMPLE_SHAPE")) {
    ASSERT_EQ(std::sscanf(shape, "%d,%d,%d,%d,%d,%d", &P, &E, &K, &L, &S, &T), 6) << shape;
  }
  write_all(dir, make_synthetic_reports(P, E, K, L, S, T, 99));
}

}  // namespace
}  // namespace sy
