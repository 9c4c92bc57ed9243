#include "routers/hash.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <string>

#include "routers/registry.h"
#include "runtime/backend/ops.h"
#include "runtime/core/rng.h"

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
  const int64_t E = cfg_.num_experts, K = cfg_.top_k;
  const int64_t max_probes = 64 * E;
  for (int64_t k = 0; k < K; ++k) {
    const uint64_t h = hash_combine(hash_combine(cfg_.seed, static_cast<uint64_t>(k)),
                                    static_cast<uint64_t>(static_cast<uint32_t>(token)));
    const auto held = [&](int32_t e) { return std::find(ids_K, ids_K + k, e) != ids_K + k; };
    int32_t e = -1;
    for (int64_t probe = 0; probe < max_probes; ++probe) {
      const uint64_t hp = probe == 0 ? h : hash_combine(h, static_cast<uint64_t>(probe));
      const auto cand = static_cast<int32_t>(hp % static_cast<uint64_t>(E));
      if (!held(cand)) {
        e = cand;
        break;
      }
    }
    for (int32_t c = 0; e < 0; ++c)  // unreachable in practice; keeps termination certain
      if (!held(c)) e = c;
    ids_K[k] = e;
  }
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
  return Status::Ok();
}

void HashRouter::route(const float* /*x_TD*/, const int32_t* token_ids_T, int64_t T,
                       RouterOutput* out) {
  const int64_t K = cfg_.top_k;
  const float w = 1.0f / static_cast<float>(K);
  std::fill(out->logits_TE.data.begin(), out->logits_TE.data.end(), -INFINITY);
  out->probs_TE.zero();
  // With a balanced table routing is a table lookup (a backend op); without, fixed hashes.
  const bool table = has_table();
  auto check_id = [&](int64_t t) {
    const int32_t id = token_ids_T[t];
    SY_CHECK(id >= 0 && id < cfg_.vocab_size) << "router 'hash': token " << t << " has id " << id
                                              << ", outside [0, vocab_size=" << cfg_.vocab_size
                                              << "); validate untrusted ids with check_token_ids()";
  };
  if (table) {
    for (int64_t t = 0; t < T; ++t) check_id(t);
    ops::hash_route_table(ctx(), table_VK_.data(), token_ids_T, T, K, out->topk_ids_TK.data());
  }
  for (int64_t t = 0; t < T; ++t) {
    int32_t* ids = out->topk_ids_TK.data() + t * K;
    if (!table) {
      check_id(t);
      experts_for(token_ids_T[t], ids);
    }
    for (int64_t k = 0; k < K; ++k) {
      out->logits_TE.at(t, ids[k]) = 0.0f;
      out->probs_TE.at(t, ids[k]) = w;
      out->topk_weights_TK.at(t, k) = w;
    }
  }
  // The -inf logits are the encoding of "not chosen", not an overflow.
  out->finite = true;
}

}  // namespace sy
