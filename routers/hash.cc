#include "routers/hash.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <string>

#include "routers/registry.h"
#include "runtime/backend/ops.h"
#include "runtime/kernels/hash_route.h"

namespace sy {

HashRouter::HashRouter(const RouterConfig& cfg) : Router(cfg) {}

namespace {

Status validate_hash_router(const RouterConfig& cfg) {
  const int64_t kMaxIds = int64_t{std::numeric_limits<int32_t>::max()} + 1;
  if (cfg.vocab_size < 1 || cfg.vocab_size > kMaxIds)
    return InvalidArgument("router 'hash' needs vocab_size in [1, 2^31] (got " +
                           std::to_string(cfg.vocab_size) + "): it routes by token id");
  if (cfg.num_experts > std::numeric_limits<int32_t>::max())
    return InvalidArgument("router 'hash': num_experts must fit in int32");
  return Status::Ok();
}

std::unique_ptr<Router> make_hash_router(const RouterConfig& cfg) {
  return std::make_unique<HashRouter>(cfg);
}

}  // namespace

SY_REGISTER_ROUTER(hash, 60,
                   "token id -> K distinct experts by fixed hashes or a balanced table (no params)",
                   make_hash_router, validate_hash_router);

Status HashRouter::check_token_ids(const int32_t* token_ids_T, int64_t T) const {
  if (T > 0 && token_ids_T == nullptr)
    return InvalidArgument("router 'hash' needs token ids (got none for " + std::to_string(T) +
                           " tokens)");
  for (int64_t t = 0; t < T; ++t) {
    const int32_t id = token_ids_T[t];
    if (id < 0 || id >= cfg_.vocab_size)
      return InvalidArgument("router 'hash': token " + std::to_string(t) + " has id " +
                             std::to_string(id) +
                             ", outside [0, vocab_size=" + std::to_string(cfg_.vocab_size) + ")");
  }
  return Status::Ok();
}

void HashRouter::hash_experts(int32_t token, int32_t* ids_K) const {
  hash_route_experts(cfg_.seed, cfg_.num_experts, cfg_.top_k, token, /*sorted=*/false, ids_K);
}

void HashRouter::experts_for(int32_t token, int32_t* ids_K) const {
  const int64_t K = cfg_.top_k;
  if (has_table()) {
    const int32_t* row = table_VK_.data() + static_cast<int64_t>(token) * K;
    std::copy(row, row + K, ids_K);
    return;
  }
  hash_experts(token, ids_K);
  std::sort(ids_K, ids_K + K);
}

Status HashRouter::build_balanced_table(const std::vector<int64_t>& freq_V) {
  const int64_t V = cfg_.vocab_size, E = cfg_.num_experts, K = cfg_.top_k;
  if (static_cast<int64_t>(freq_V.size()) != V)
    return InvalidArgument("router 'hash': balanced table needs " + std::to_string(V) +
                           " frequencies (vocab_size), got " + std::to_string(freq_V.size()));
  int64_t total = 0;
  for (int64_t v = 0; v < V; ++v) {
    const int64_t f = freq_V[static_cast<size_t>(v)];
    if (f < 0)
      return InvalidArgument("router 'hash': frequency of token " + std::to_string(v) +
                             " is negative (" + std::to_string(f) + ")");
    // Each load is at most total*K; keep it in int64.
    if (f > (std::numeric_limits<int64_t>::max() / K) - total)
      return InvalidArgument("router 'hash': token frequencies sum past int64 range");
    total += f;
  }
  std::vector<int32_t> order;
  for (int64_t v = 0; v < V; ++v)
    if (freq_V[static_cast<size_t>(v)] > 0) order.push_back(static_cast<int32_t>(v));
  std::sort(order.begin(), order.end(), [&](int32_t a, int32_t b) {
    const int64_t fa = freq_V[static_cast<size_t>(a)], fb = freq_V[static_cast<size_t>(b)];
    return fa != fb ? fa > fb : a < b;
  });

  std::vector<int32_t> table(static_cast<size_t>(V * K));
  std::vector<int64_t> load_E(static_cast<size_t>(E), 0);
  std::vector<char> held_E(static_cast<size_t>(E), 0);
  for (int32_t v : order) {
    const int64_t f = freq_V[static_cast<size_t>(v)];
    int32_t* row = table.data() + static_cast<int64_t>(v) * K;
    for (int64_t k = 0; k < K; ++k) {
      int32_t best = -1;
      for (int32_t e = 0; e < E; ++e)
        if (!held_E[e] && (best < 0 || load_E[e] < load_E[best])) best = e;
      row[k] = best;
      held_E[best] = 1;
      load_E[best] += f;
    }
    for (int64_t k = 0; k < K; ++k) held_E[row[k]] = 0;
  }
  for (int64_t v = 0; v < V; ++v) {
    int32_t* row = table.data() + v * K;
    if (freq_V[static_cast<size_t>(v)] == 0) hash_experts(static_cast<int32_t>(v), row);
    std::sort(row, row + K);
  }
  table_VK_ = std::move(table);
  table_stale_ = true;
  return Status::Ok();
}

void HashRouter::route(const float* /*x_TD*/, const int32_t* token_ids_T, int64_t T,
                       RouterOutput* out) {
  // Routing is one backend op: a table lookup with a balanced table, fixed hashes without.
  const int32_t* table = nullptr;
  if (has_table()) {
    if (table_stale_ || table_dev_.memory() != mem()) {
      table_dev_ = DeviceArray<int32_t>(mem(), table_VK_);
      table_stale_ = false;
    }
    table = table_dev_.data();
  }
  ops::hash_route(ctx(), table, cfg_.vocab_size, cfg_.seed, token_ids_T, T, cfg_.num_experts,
                  cfg_.top_k, out->topk_ids_TK.data(), out->logits_TE.ptr(), out->probs_TE.ptr(),
                  out->topk_weights_TK.ptr());
  // The -inf logits are the encoding of "not chosen", not an overflow.
  out->finite = true;
}

}  // namespace sy
