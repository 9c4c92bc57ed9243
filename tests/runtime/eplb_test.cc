#include "runtime/project/eplb.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>

namespace sy {
namespace {

// Load per rank, a copy carrying load / copies (what the projection assumes).
std::vector<double> rank_loads(const ExpertPlacement& p, const std::vector<int64_t>& load_E) {
  const auto ranks = p.ranks_of_expert();
  std::vector<double> out(static_cast<size_t>(p.ranks), 0.0);
  for (int r = 0; r < p.ranks; ++r) {
    for (int32_t e : p.experts_of_rank[r]) {
      out[r] += static_cast<double>(load_E[e]) / static_cast<double>(ranks[e].size());
    }
  }
  return out;
}

double max_over_mean(const std::vector<double>& v) {
  const double mean = std::accumulate(v.begin(), v.end(), 0.0) / static_cast<double>(v.size());
  return *std::max_element(v.begin(), v.end()) / mean;
}

// A skewed load with its hot experts next to each other (what contiguous placement suffers
// from): a Zipf-like curve over the first experts.
std::vector<int64_t> skewed(int64_t E) {
  std::vector<int64_t> l(static_cast<size_t>(E));
  for (int64_t e = 0; e < E; ++e) l[e] = 10000 / (e + 1) + 7 * (e % 3);
  return l;
}

TEST(Eplb, PermutationIsMoreEvenThanContiguous) {
  const std::vector<int64_t> load = skewed(64);
  for (int P : {2, 4, 8, 16}) {
    for (int rpn : {2, 8}) {
      auto p = eplb_placement(load, P, rpn, 0);
      ASSERT_TRUE(p.ok()) << p.status().ToString();
      EXPECT_TRUE(p->validate(/*allow_replicas=*/false).ok()) << p->validate(false).ToString();
      EXPECT_EQ(p->replicas(), 0);
      const double eplb = max_over_mean(rank_loads(*p, load));
      const double contiguous = max_over_mean(rank_loads(ExpertPlacement::contiguous(64, P), load));
      EXPECT_LT(eplb, contiguous) << "P = " << P << ", ranks_per_node = " << rpn;
      // Near the lower bound max(mean, hottest expert): the hot expert's rank gets the coldest.
      const std::vector<double> loads = rank_loads(*p, load);
      const double mean = std::accumulate(loads.begin(), loads.end(), 0.0) / P;
      const double bound = std::max(mean, static_cast<double>(load[0]));
      EXPECT_LT(*std::max_element(loads.begin(), loads.end()), 1.2 * bound) << "P = " << P;
    }
  }
}

TEST(Eplb, Deterministic) {
  const std::vector<int64_t> load = skewed(32);
  EXPECT_EQ(*eplb_placement(load, 8, 4, 8), *eplb_placement(load, 8, 4, 8));
  // Equal loads: ties by id, so uniform load over one node is the contiguous layout's set of
  // experts per rank in some order of ranks; every rank holds E/P.
  auto u = eplb_placement(std::vector<int64_t>(8, 5), 4, 4, 0);
  ASSERT_TRUE(u.ok());
  for (const auto& l : u->experts_of_rank) EXPECT_EQ(l.size(), 2u);
}

TEST(Eplb, ReplicatesTheHottestExperts) {
  // Experts 3 and 7 carry most of the load: with R = 2 they get the replicas.
  std::vector<int64_t> load = {10, 12, 9, 500, 11, 8, 10, 400};
  auto p = eplb_placement(load, 2, 2, 2);
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_TRUE(p->validate(/*allow_replicas=*/true).ok());
  EXPECT_FALSE(p->validate(/*allow_replicas=*/false).ok());
  EXPECT_EQ(p->replicas(), 2);
  const auto ranks = p->ranks_of_expert();
  EXPECT_EQ(ranks[3].size(), 2u);
  EXPECT_EQ(ranks[7].size(), 2u);
  for (const auto& l : p->experts_of_rank) EXPECT_EQ(l.size(), 5u);
  EXPECT_LT(max_over_mean(rank_loads(*p, load)), 1.05);

  // Hierarchical: 4 nodes of 4 ranks, 64 experts, 16 replicas (E + R = 80, 5 per rank).
  const std::vector<int64_t> big = skewed(64);
  auto h = eplb_placement(big, 16, 4, 16);
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  EXPECT_TRUE(h->validate(true).ok()) << h->validate(true).ToString();
  EXPECT_EQ(h->replicas(), 16);
  const auto hr = h->ranks_of_expert();
  EXPECT_GE(hr[0].size(), 2u);  // the hottest expert is replicated, inside one node
  for (size_t i = 1; i < hr[0].size(); ++i) EXPECT_EQ(hr[0][i] / 4, hr[0][0] / 4);
  const double with_r = max_over_mean(rank_loads(*h, big));
  const double without = max_over_mean(rank_loads(*eplb_placement(big, 16, 4, 0), big));
  EXPECT_LT(with_r, without);
}

TEST(Eplb, ReplicasNeverShareARank) {
  // One very hot expert and many replicas: at most one copy per rank of its node.
  std::vector<int64_t> load(8, 1);
  load[5] = 1000000;
  auto p = eplb_placement(load, 4, 4, 4);
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_TRUE(p->validate(true).ok()) << p->validate(true).ToString();
  EXPECT_EQ(p->ranks_of_expert()[5].size(), 4u);
}

// Random loads and shapes: every result is a valid placement with the asked-for replicas (the
// packing's swap path, when every rank with room already holds the expert, included).
TEST(Eplb, RandomShapesAreValid) {
  uint64_t x = 12345;
  auto next = [&x] { return (x = x * 6364136223846793005ULL + 1442695040888963407ULL) >> 33; };
  for (int trial = 0; trial < 300; ++trial) {
    const int rpn = 1 + static_cast<int>(next() % 4), nodes = 1 + static_cast<int>(next() % 4);
    const int P = rpn * nodes;
    const int64_t per_rank = 1 + static_cast<int64_t>(next() % 4);
    const int64_t E = P * (1 + static_cast<int64_t>(next() % 3));
    const int64_t R = std::min<int64_t>(P * per_rank, E * (rpn - 1) / P * P);
    std::vector<int64_t> load(static_cast<size_t>(E));
    for (auto& l : load) l = next() % 3 == 0 ? static_cast<int64_t>(next() % 100000) : next() % 10;
    auto p = eplb_placement(load, P, rpn, R);
    ASSERT_TRUE(p.ok()) << p.status().ToString();
    EXPECT_TRUE(p->validate(R > 0).ok()) << p->validate(R > 0).ToString();
    EXPECT_EQ(p->replicas(), R);
  }
}

TEST(Eplb, BadArguments) {
  const std::vector<int64_t> load(8, 1);
  auto want = [](StatusOr<ExpertPlacement> p, const char* text) {
    ASSERT_FALSE(p.ok()) << text;
    EXPECT_EQ(p.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(p.status().message().find(text), std::string::npos) << p.status().message();
  };
  want(eplb_placement(load, 3, 8, 0), "multiple of P");
  want(eplb_placement(load, 4, 8, 1), "multiple of P");
  want(eplb_placement(load, 12, 8, 4), "multiple of ranks_per_node");
  want(eplb_placement(load, 2, 2, 10), "more replicas than ranks");
  want(eplb_placement({}, 2, 2, 0), "need E");
  want(eplb_placement({1, -1}, 2, 2, 0), "load of expert 1 is negative");
  want(eplb_placement(load, 0, 2, 0), "need E");
}

}  // namespace
}  // namespace sy
