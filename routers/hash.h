// hash: token id -> K distinct experts, no learned parameters, no gradient (Roller et al.
// 2021, "Hash Layers for Large Sparse Models").
//
// Hashing. Slot k of token t takes expert splitmix64-hash(seed, k, t, probe) mod E for
// probe = 0, 1, ...: the first that no earlier slot of t holds. Every rank and every router
// object with the same seed routes a token the same way. (After 64*E colliding probes, which
// has probability far below 1e-100, the slot takes the lowest free expert, so routing always
// terminates.)
//
// Balanced table (optional). build_balanced_table(freq_V) assigns experts greedily from token
// frequencies of a corpus: token ids by descending frequency (ties: lower id); for each of
// the K slots the least-loaded expert the token does not hold yet (ties: lower expert id),
// and that expert's load grows by the token's frequency. Tokens with frequency 0 are not in
// the greedy order: they keep their hashed experts, because giving every unseen token the
// same K least-loaded experts (their load does not move) would pile all of them onto one
// expert set. With a table, routing reads it; otherwise it hashes.
//
// Measured (tests/routers/hash_router_test.cc): GPT-2 tokens of Moby Dick, table from the
// first 80%, max/mean expert load on the last 20%: E=16 K=2 hashed 1.42, table 1.04; E=60
// K=4 hashed 2.45, table 1.12 (1.38 if unseen tokens also went through the greedy).
//
// Outputs, for the interface's softmax/top-k view: the K chosen experts (ascending ids, so
// "descending probability, ties to the lower id" holds), weights 1/K, probs_TE 1/K on them
// and 0 elsewhere, logits_TE 0 on them and -inf elsewhere (softmax of these logits is probs;
// the logits carry no information beyond the choice, so no z-loss applies).
//
// Token ids must lie in [0, vocab_size). forward() cannot return a Status, so callers with
// untrusted ids call check_token_ids() first; route() re-checks with SY_CHECK (a bug past
// that point).
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "routers/router.h"

namespace sy {

class HashRouter final : public Router {
 public:
  explicit HashRouter(const RouterConfig& cfg);

  bool needs_token_ids() const override { return true; }
  bool differentiable() const override { return false; }
  int64_t flops_per_token() const override { return 0; }

  // InvalidArgument naming the first id outside [0, vocab_size).
  Status check_token_ids(const int32_t* token_ids_T, int64_t T) const;
  // freq_V: [V] counts >= 0, V = vocab_size. Replaces any previous table.
  Status build_balanced_table(const std::vector<int64_t>& freq_V);
  // The balanced table is the token table of Router::fit_token_table.
  bool fits_token_table() const override { return true; }
  Status fit_token_table(const std::vector<int64_t>& freq_V) override {
    return build_balanced_table(freq_V);
  }
  bool has_table() const { return !table_VK_.empty(); }
  // [V, K] expert ids when has_table(), else empty. Reported apart from num_params().
  const std::vector<int32_t>& table_VK() const { return table_VK_; }
  // The K experts of one token (ascending), by table or by hashing. ids_K: [K].
  void experts_for(int32_t token, int32_t* ids_K) const;

 protected:
  void route(const float* x_TD, const int32_t* token_ids_T, int64_t T, RouterOutput* out) override;
  // Unused: route() is overridden and nothing is learned.
  void compute_scores(const float*, const int32_t*, int64_t, float*) override {}
  void backward_scores(const float*, float*) override {}

 private:
  // The K hashed experts of `token`, in slot order.
  void hash_experts(int32_t token, int32_t* ids_K) const;

  std::vector<int32_t> table_VK_;   // [V, K], ascending per row (host)
  DeviceArray<int32_t> table_dev_;  // its copy where the routing op runs (made on first use)
  bool table_stale_ = false;        // table_VK_ changed since table_dev_ was made
};

}  // namespace sy
