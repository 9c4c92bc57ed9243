#include "comm/placement.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <fstream>
#include <string>

namespace sy {
namespace {

std::string temp_path(const std::string& name) {
  return ::testing::TempDir() + "placement_" + std::to_string(::getpid()) + "_" + name;
}

std::string write_text(const std::string& name, const std::string& text) {
  const std::string path = temp_path(name);
  std::ofstream(path, std::ios::binary) << text;
  return path;
}

TEST(Placement, Contiguous) {
  const ExpertPlacement p = ExpertPlacement::contiguous(8, 4);
  EXPECT_EQ(p.num_experts, 8);
  EXPECT_EQ(p.ranks, 4);
  ASSERT_EQ(p.experts_of_rank.size(), 4u);
  EXPECT_EQ(p.experts_of_rank[2], (std::vector<int32_t>{4, 5}));
  EXPECT_EQ(p.replicas(), 0);
  EXPECT_TRUE(p.validate(false).ok());
  const auto ranks = p.ranks_of_expert();
  for (int e = 0; e < 8; ++e) EXPECT_EQ(ranks[e], (std::vector<int32_t>{e / 2}));
}

TEST(Placement, ReplicasAndRanksOfExpert) {
  ExpertPlacement p;
  p.num_experts = 4;
  p.ranks = 2;
  p.experts_of_rank = {{3, 0, 1}, {2, 3}};
  EXPECT_EQ(p.replicas(), 1);
  EXPECT_TRUE(p.validate(true).ok());
  const Status s = p.validate(false);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("expert 3 is on 2 ranks"), std::string::npos) << s.message();
  EXPECT_EQ(p.ranks_of_expert()[3], (std::vector<int32_t>{0, 1}));
}

TEST(Placement, ValidateNamesTheOffence) {
  auto bad = [](std::vector<std::vector<int32_t>> l, int64_t E, bool allow, const char* want) {
    ExpertPlacement p;
    p.num_experts = E;
    p.ranks = static_cast<int>(l.size());
    p.experts_of_rank = std::move(l);
    const Status s = p.validate(allow);
    ASSERT_FALSE(s.ok()) << want;
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
    EXPECT_NE(s.message().find(want), std::string::npos) << s.message();
  };
  bad({{0, 1}, {2, 4}}, 4, true, "expert 4 on rank 1 outside [0, 4)");
  bad({{0, 0}, {1, 2, 3}}, 4, true, "expert 0 on rank 0 twice");
  bad({{0, 1}, {1, 2}}, 4, true, "expert 3 is on no rank");
  bad({{0, 1, 2}, {3}}, 4, false, "rank 0 holds 3 experts, not E/P = 2");
  bad({{0, 1, 2}}, 4, true, "expert 3 is on no rank");
  ExpertPlacement p = ExpertPlacement::contiguous(4, 2);
  p.experts_of_rank = {{2, 1}, {0, 3}};  // a permutation is fine
  EXPECT_TRUE(p.validate(false).ok());
}

TEST(Placement, FileRoundTrip) {
  ExpertPlacement p;
  p.num_experts = 6;
  p.ranks = 3;
  p.experts_of_rank = {{5, 0}, {1, 3, 5}, {2, 4}};
  const std::string path = temp_path("roundtrip.json");
  ASSERT_TRUE(write_placement_file(path, p).ok());
  auto q = read_placement_file(path);
  ASSERT_TRUE(q.ok()) << q.status().ToString();
  EXPECT_EQ(*q, p);
  EXPECT_EQ(placement_to_json(*q), placement_to_json(p));
}

// Every field of a hostile or broken file is checked: BadInput (exit 22) naming file and field.
TEST(Placement, BadFiles) {
  const std::string head = R"({"format": "switchyard.placement", "version": 1, )";
  struct Case {
    const char* name;
    std::string text;
    const char* want;
  };
  const Case cases[] = {
      {"empty", "", "not valid JSON"},
      {"truncated", head + R"("num_experts": 4, "ranks": 2, "experts_of_rank": [[0, 1], [2)",
       "not valid JSON"},
      {"array", "[1, 2]", "not a JSON object"},
      {"no_format", R"({"version": 1})", "field 'format' missing"},
      {"wrong_format", R"({"format": "other", "version": 1})", "field 'format' is \"other\""},
      {"version", R"({"format": "switchyard.placement", "version": 2})", "field 'version' is 2"},
      {"version_float", R"({"format": "switchyard.placement", "version": 1.0})",
       "field 'version' is not an integer"},
      {"no_experts", head + R"("ranks": 2})", "field 'num_experts' missing"},
      {"neg_experts", head + R"("num_experts": -4, "ranks": 2})",
       "field 'num_experts' = -4 outside"},
      {"huge_experts", head + R"("num_experts": 18446744073709551615, "ranks": 2})",
       "field 'num_experts' = 18446744073709551615 outside"},
      {"zero_ranks", head + R"("num_experts": 4, "ranks": 0})", "field 'ranks' = 0 outside"},
      {"string_ranks", head + R"("num_experts": 4, "ranks": "2"})",
       "field 'ranks' is not an integer"},
      {"no_lists", head + R"("num_experts": 4, "ranks": 2})", "field 'experts_of_rank' missing"},
      {"lists_object", head + R"("num_experts": 4, "ranks": 2, "experts_of_rank": {}})",
       "field 'experts_of_rank' is not an array"},
      {"lists_count", head + R"("num_experts": 4, "ranks": 2, "experts_of_rank": [[0,1,2,3]]})",
       "has 1 lists, field 'ranks' says 2"},
      {"list_not_array", head + R"("num_experts": 4, "ranks": 2, "experts_of_rank": [[0,1], 2]})",
       "field 'experts_of_rank[1]' is not an array"},
      {"id_too_big", head + R"("num_experts": 4, "ranks": 2, "experts_of_rank": [[0,1], [2,4]]})",
       "field 'experts_of_rank[1][1]' = 4 is not an expert id in [0, 4)"},
      {"id_negative", head + R"("num_experts": 4, "ranks": 2, "experts_of_rank": [[-1,1], [2,3]]})",
       "field 'experts_of_rank[0][0]' = -1"},
      {"id_float", head + R"("num_experts": 4, "ranks": 2, "experts_of_rank": [[0.5,1], [2,3]]})",
       "field 'experts_of_rank[0][0]' = 0.5"},
      {"id_null", head + R"("num_experts": 4, "ranks": 2, "experts_of_rank": [[null,1], [2,3]]})",
       "field 'experts_of_rank[0][0]' = null"},
      {"too_many", head + R"("num_experts": 2, "ranks": 1, "experts_of_rank": [[0,1,0]]})",
       "field 'experts_of_rank[0]' has 3 entries for 2 experts"},
      {"missing_expert",
       head + R"("num_experts": 4, "ranks": 2, "experts_of_rank": [[0,1], [1,2]]})",
       "field 'experts_of_rank': placement: expert 3 is on no rank"},
      {"duplicate", head + R"("num_experts": 4, "ranks": 2, "experts_of_rank": [[0,0], [1,2,3]]})",
       "field 'experts_of_rank': placement: expert 0 on rank 0 twice"},
  };
  for (const Case& c : cases) {
    const std::string path = write_text(std::string(c.name) + ".json", c.text);
    auto p = read_placement_file(path);
    ASSERT_FALSE(p.ok()) << c.name;
    EXPECT_EQ(p.status().code(), StatusCode::kBadInput) << c.name;
    EXPECT_EQ(p.status().exit_code(), 22) << c.name;
    const std::string& m = p.status().message();
    EXPECT_NE(m.find("placement file " + path + ": "), std::string::npos) << c.name << ": " << m;
    EXPECT_NE(m.find(c.want), std::string::npos) << c.name << ": " << m;
  }
  auto missing = read_placement_file(temp_path("does_not_exist.json"));
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("no such file"), std::string::npos);
}

// Replicas are legal in a file (the projection writes them); the runtime refuses them with
// validate(false).
TEST(Placement, FileWithReplicasReadsButDoesNotRun) {
  const std::string path = write_text(
      "replicas.json", R"({"format": "switchyard.placement", "version": 1, "num_experts": 2,
                          "ranks": 2, "experts_of_rank": [[0, 1], [1]]})");
  auto p = read_placement_file(path);
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_EQ(p->replicas(), 1);
  EXPECT_FALSE(p->validate(false).ok());
}

}  // namespace
}  // namespace sy
