// Routing traces: recorder -> shard -> reader round trip, the reader's refusals (truncated and
// tampered files, ids >= E, versions, missing shards), statistics and diff on a hand-made trace.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "runtime/trace/trace_format.h"
#include "runtime/trace/trace_recorder.h"
#include "runtime/trace/trace_stats.h"
#include "tests/runtime/moe_test_util.h"

namespace sy {
namespace {
namespace fs = std::filesystem;
using testing_util::Make;
using testing_util::Normal;

class TraceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("sy_trace_test_" +
            std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()) + "_" +
            std::to_string(::getpid()));
    fs::remove_all(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  fs::path dir_;
};

TraceMeta SmallMeta(int64_t E, int64_t K, int64_t layers, bool probs) {
  TraceMeta m;
  m.source = "infer";
  m.model = "synthetic";
  m.router = "linear";
  m.synthetic_routing = true;
  m.experts = E;
  m.top_k = K;
  for (int64_t l = 0; l < layers; ++l) m.model_layer.push_back(l);
  m.capacity_factor = 1.0;
  m.probs = probs;
  m.host = "testhost";
  return m;
}

// A hand-made shard: row i is token i, step 0, experts chosen from the list.
TraceShard HandShard(int64_t E, const std::vector<std::vector<int32_t>>& ids,
                     const std::vector<std::vector<uint8_t>>& kept) {
  const int64_t K = static_cast<int64_t>(ids.front().size());
  TraceShard s;
  s.meta = SmallMeta(E, K, 1, false);
  s.meta.steps = 1;
  s.layers.resize(1);
  for (size_t i = 0; i < ids.size(); ++i) {
    s.step_N.push_back(0);
    s.token_index_N.push_back(static_cast<int64_t>(i));
    s.token_id_N.push_back(static_cast<int32_t>(100 + i));
    for (int64_t k = 0; k < K; ++k) {
      s.layers[0].topk_ids_NK.push_back(ids[i][static_cast<size_t>(k)]);
      s.layers[0].topk_weights_NK.push_back(0.5f);
      s.layers[0].kept_NK.push_back(kept[i][static_cast<size_t>(k)]);
    }
  }
  return s;
}

std::string ReadFile(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}
void WriteFile(const std::string& path, const std::string& bytes) {
  ::unlink(path.c_str());  // a fresh file (rewriting a truncated one flushes it on ext4)
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// Expects a kBadInput / kNotFound error (exit 22) whose message holds every `parts`.
void ExpectRefused(const StatusOr<Trace>& t, const std::vector<std::string>& parts) {
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().exit_code(), kExitBadInput) << t.status().ToString();
  for (const std::string& p : parts)
    EXPECT_NE(t.status().message().find(p), std::string::npos)
        << "'" << p << "' not in: " << t.status().message();
}

TEST_F(TraceTest, RecorderRoundTrip) {
  MoeLayerConfig c;
  c.d_model = 16;
  c.ffn_hidden = 8;
  c.num_experts = 8;
  c.top_k = 2;
  c.capacity_factor = 0.5;  // some assignments dropped
  c.router.name = "linear";
  auto layer = Make(c);
  const int64_t T = 24;
  TraceMeta meta = SmallMeta(8, 2, 1, /*probs=*/true);
  meta.model_layer = {3};
  TraceRecorder rec(meta);
  std::vector<std::vector<int32_t>> ids_by_step;
  std::vector<std::vector<int32_t>> topk_by_step;
  std::vector<std::vector<uint8_t>> kept_by_step;
  std::vector<std::vector<float>> probs_by_step;
  std::vector<float> y(static_cast<size_t>(T * c.d_model));
  for (int64_t step = 2; step < 4; ++step) {
    const std::vector<float> x = Normal(T * c.d_model, 7 + static_cast<uint64_t>(step));
    std::vector<int32_t> ids(static_cast<size_t>(T));
    for (int64_t t = 0; t < T; ++t)
      ids[static_cast<size_t>(t)] = static_cast<int32_t>(t * 3 + step);
    ASSERT_TRUE(layer->forward(x.data(), ids.data(), T, y.data()).ok());
    rec.add_range(step, {layer.get()}, 1000 * step, ids.data(), T);
    ids_by_step.push_back(ids);
    topk_by_step.push_back(layer->router_output().topk_ids_TK.to_host());
    kept_by_step.push_back(layer->plan().kept_TK);
    probs_by_step.push_back(layer->router_output().probs_TE.data.to_host());
  }
  ASSERT_GT(layer->last_stats().dropped, 0);
  ASSERT_TRUE(rec.write(dir_.string()).ok());

  auto t = read_trace(dir_.string());
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  ASSERT_EQ(t->shards.size(), 1u);
  const TraceShard& s = t->shards[0];
  EXPECT_EQ(s.meta.first_step, 2);
  EXPECT_EQ(s.meta.steps, 2);
  EXPECT_EQ(s.meta.model_layer, std::vector<int64_t>{3});
  EXPECT_EQ(s.meta.host, "testhost");
  EXPECT_TRUE(s.meta.synthetic_routing);
  ASSERT_EQ(s.tokens(), 2 * T);
  for (int64_t r = 0; r < 2; ++r) {
    for (int64_t i = 0; i < T; ++i) {
      const int64_t n = r * T + i;
      EXPECT_EQ(s.step_N[n], 2 + r);
      EXPECT_EQ(s.token_index_N[n], 1000 * (2 + r) + i);
      EXPECT_EQ(s.token_id_N[n], ids_by_step[r][i]);
      for (int64_t k = 0; k < 2; ++k) {
        EXPECT_EQ(s.layers[0].topk_ids_NK[n * 2 + k], topk_by_step[r][i * 2 + k]);
        EXPECT_EQ(s.layers[0].kept_NK[n * 2 + k], kept_by_step[r][i * 2 + k]);
      }
      for (int64_t e = 0; e < 8; ++e)
        EXPECT_EQ(s.layers[0].probs_NE[n * 8 + e], probs_by_step[r][i * 8 + e]);
    }
  }
  auto same = trace_diff(*t, *t);
  ASSERT_TRUE(same.ok());
  EXPECT_EQ(*same, "");
}

TEST_F(TraceTest, StatsAndDiff) {
  // E 4, K 2; at P = 2 experts {0,1} are rank 0, {2,3} rank 1.
  TraceShard s = HandShard(4, {{0, 1}, {0, 2}, {0, 1}, {3, 2}}, {{1, 1}, {1, 1}, {1, 0}, {0, 0}});
  ASSERT_TRUE(write_trace_shard_to_dir(dir_.string(), s).ok());
  auto t = read_trace(dir_.string());
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  auto st = trace_stats(*t, 2, 2);
  ASSERT_TRUE(st.ok());
  const TraceLayerStats& l = st->layers[0];
  EXPECT_EQ(l.routed_E, (std::vector<int64_t>{3, 2, 2, 1}));
  EXPECT_EQ(l.kept_E, (std::vector<int64_t>{3, 1, 1, 0}));
  EXPECT_DOUBLE_EQ(l.max_over_mean, 3.0 * 4 / 8);
  ASSERT_EQ(l.top_pairs.size(), 2u);
  EXPECT_EQ(l.top_pairs[0].a, 0);
  EXPECT_EQ(l.top_pairs[0].b, 1);
  EXPECT_EQ(l.top_pairs[0].tokens, 2);
  EXPECT_EQ(l.pairs_nonzero, 3);
  // Kept ranks per token: {0}, {0, 1}, {0}, {} -> fan-out 1, 2, 1, 0.
  EXPECT_EQ(l.fanout_hist, (std::vector<int64_t>{1, 2, 1}));
  EXPECT_DOUBLE_EQ(l.fanout_mean, 1.0);
  EXPECT_FALSE(trace_stats(*t, 3, 2).ok());  // 3 does not divide 4
  EXPECT_NE(trace_stats_json(*t, *st).find("\"fanout_hist\""), std::string::npos);
  EXPECT_NE(trace_stats_text(*t, *st).find("e0+e1 2"), std::string::npos);

  // The same tokens split over two ranks (P = 2, other steps) diff equal; a changed weight not.
  const fs::path two = dir_ / "two";
  TraceShard a = HandShard(4, {{0, 1}, {0, 2}}, {{1, 1}, {1, 1}});
  TraceShard b = HandShard(4, {{0, 1}, {3, 2}}, {{1, 0}, {0, 0}});
  a.meta.world_size = b.meta.world_size = 2;
  b.meta.rank = 1;
  b.token_index_N = {2, 3};
  b.token_id_N = {102, 103};
  ASSERT_TRUE(write_trace_shard_to_dir(two.string(), a).ok());
  ASSERT_TRUE(write_trace_shard_to_dir(two.string(), b).ok());
  auto t2 = read_trace(two.string());
  ASSERT_TRUE(t2.ok()) << t2.status().ToString();
  EXPECT_EQ(*trace_diff(*t, *t2), "");
  b.layers[0].topk_weights_NK[3] = 0.25f;
  ASSERT_TRUE(write_trace_shard_to_dir(two.string(), b).ok());
  EXPECT_EQ(*trace_diff(*t, *read_trace(two.string())), "token 3, layer 0: weights differ");
}

TEST_F(TraceTest, RefusesBadShards) {
  TraceShard s = HandShard(4, {{0, 1}, {0, 2}}, {{1, 1}, {1, 0}});
  const std::string d = dir_.string(), f = path("rank-0.safetensors");
  ASSERT_TRUE(write_trace_shard_to_dir(d, s).ok());
  const std::string good = ReadFile(f);

  WriteFile(f, good.substr(0, good.size() - 3));  // truncated
  ExpectRefused(read_trace(d), {f});

  TraceShard bad = s;
  bad.layers[0].topk_ids_NK[3] = 4;  // id == E
  ASSERT_TRUE(write_trace_shard_to_dir(d, bad).ok());
  ExpectRefused(read_trace(d), {f, "layer.0.topk_ids[1, 1] = 4", "< E = 4"});

  bad = s;
  bad.layers[0].topk_ids_NK[1] = 0;  // the same expert twice
  ASSERT_TRUE(write_trace_shard_to_dir(d, bad).ok());
  ExpectRefused(read_trace(d), {f, "chosen twice"});

  bad = s;
  bad.layers[0].kept_NK[0] = 7;
  ASSERT_TRUE(write_trace_shard_to_dir(d, bad).ok());
  ExpectRefused(read_trace(d), {f, "layer.0.kept[0, 0] = 7"});

  bad = s;
  bad.token_index_N[1] = 0;  // one token twice in a step
  ASSERT_TRUE(write_trace_shard_to_dir(d, bad).ok());
  ExpectRefused(read_trace(d), {f, "recorded twice"});

  bad = s;
  bad.step_N[1] = 5;  // outside first_step .. first_step + steps
  ASSERT_TRUE(write_trace_shard_to_dir(d, bad).ok());
  ExpectRefused(read_trace(d), {f, "step[1] = 5"});

  // Tampered header: the same length, another value. E 4 -> 5 breaks no size but the schema
  // would pass, so K -> 3 (shapes [2, 2] no longer match).
  auto tamper = [&](const std::string& from, const std::string& to) {
    std::string t = good;
    const size_t at = t.find(from);
    ASSERT_NE(at, std::string::npos) << from;
    t.replace(at, from.size(), to);
    WriteFile(f, t);
  };
  tamper("\"top_k\":\"2\"", "\"top_k\":\"3\"");
  ExpectRefused(read_trace(d), {f, "schema mismatch", "layer.0.topk_ids"});
  tamper("\"version\":\"1\"", "\"version\":\"9\"");
  ExpectRefused(read_trace(d), {f, "'version' = 9"});
  tamper("switchyard.trace", "switchyard.trick");
  ExpectRefused(read_trace(d), {f, "'format'"});
  tamper("\"experts\":\"4\"", "\"experts\":\"x\"");
  ExpectRefused(read_trace(d), {f, "'experts' = 'x'"});

  // A shard missing from a 2-rank trace; a shard from another run.
  bad = s;
  bad.meta.world_size = 2;
  ASSERT_TRUE(write_trace_shard_to_dir(d, bad).ok());
  ExpectRefused(read_trace(d), {path("rank-1.safetensors"), "missing (world size 2)"});
  TraceShard other = bad;
  other.meta.rank = 1;
  other.meta.router = "mlp";
  ASSERT_TRUE(write_trace_shard_to_dir(d, other).ok());
  ExpectRefused(read_trace(d), {path("rank-1.safetensors"), "'router' differs"});

  ExpectRefused(read_trace(path("nowhere")), {"nowhere"});
}

}  // namespace
}  // namespace sy
