#include "runtime/trace/trace_stats.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>
#include <set>
#include <unordered_map>

namespace sy {
namespace {
using json = nlohmann::json;

// Tokens per expert pair: a dense E x E table while it is small, a hash map beyond (E is at
// most kTraceMaxExperts, whose square would not fit).
class PairCounter {
 public:
  explicit PairCounter(int64_t E) : E_(E) {
    if (E <= kDenseMax) dense_.assign(static_cast<size_t>(E * E), 0);
  }
  void add(int32_t a, int32_t b) {
    const int64_t key = static_cast<int64_t>(std::min(a, b)) * E_ + std::max(a, b);
    if (!dense_.empty()) {
      ++dense_[static_cast<size_t>(key)];
    } else {
      ++sparse_[key];
    }
  }
  // Every pair chosen at least once, by tokens descending, then (a, b).
  std::vector<ExpertPair> pairs() const {
    std::vector<ExpertPair> out;
    auto push = [&](int64_t key, int64_t n) {
      if (n > 0) out.push_back({static_cast<int32_t>(key / E_), static_cast<int32_t>(key % E_), n});
    };
    for (size_t k = 0; k < dense_.size(); ++k) push(static_cast<int64_t>(k), dense_[k]);
    for (const auto& [k, n] : sparse_) push(k, n);
    std::sort(out.begin(), out.end(), [](const ExpertPair& x, const ExpertPair& y) {
      if (x.tokens != y.tokens) return x.tokens > y.tokens;
      return x.a != y.a ? x.a < y.a : x.b < y.b;
    });
    return out;
  }

 private:
  static constexpr int64_t kDenseMax = 1024;
  int64_t E_;
  std::vector<int64_t> dense_;
  std::unordered_map<int64_t, int64_t> sparse_;
};

std::string percent(int64_t part, int64_t whole) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.1f%%",
                whole > 0 ? 100.0 * static_cast<double>(part) / static_cast<double>(whole) : 0.0);
  return buf;
}

}  // namespace

StatusOr<TraceStats> trace_stats(const Trace& t, int ep, int64_t top) {
  const TraceMeta& m = t.meta();
  const int64_t E = m.experts, K = m.top_k;
  if (ep < 1 || E % ep != 0)
    return InvalidArgument("--ep " + std::to_string(ep) +
                           ": the expert-parallel degree must be "
                           "at least 1 and divide the trace's " +
                           std::to_string(E) + " experts");
  if (top < 0) return InvalidArgument("--top " + std::to_string(top) + ": must be >= 0");
  const int64_t per_rank = E / ep, max_fan = std::min<int64_t>(K, ep);
  TraceStats s;
  s.ep = ep;
  std::vector<int32_t> ranks(static_cast<size_t>(K));
  for (int64_t l = 0; l < m.layers(); ++l) {
    TraceLayerStats ls;
    ls.layer = l;
    ls.model_layer = m.model_layer[static_cast<size_t>(l)];
    ls.routed_E.assign(static_cast<size_t>(E), 0);
    ls.kept_E.assign(static_cast<size_t>(E), 0);
    ls.fanout_hist.assign(static_cast<size_t>(max_fan + 1), 0);
    PairCounter pairs(E);
    for (const TraceShard& sh : t.shards) {
      const TraceLayer& L = sh.layers[static_cast<size_t>(l)];
      for (int64_t i = 0; i < sh.tokens(); ++i) {
        const int32_t* ids = &L.topk_ids_NK[static_cast<size_t>(i * K)];
        const uint8_t* kept = &L.kept_NK[static_cast<size_t>(i * K)];
        int64_t n = 0;
        for (int64_t k = 0; k < K; ++k) {
          ++ls.routed_E[static_cast<size_t>(ids[k])];
          for (int64_t j = 0; j < k; ++j) pairs.add(ids[j], ids[k]);
          if (!kept[k]) continue;
          ++ls.kept_E[static_cast<size_t>(ids[k])];
          ranks[static_cast<size_t>(n++)] = static_cast<int32_t>(ids[k] / per_rank);
        }
        std::sort(ranks.begin(), ranks.begin() + n);
        const auto fan = std::unique(ranks.begin(), ranks.begin() + n) - ranks.begin();
        ++ls.fanout_hist[static_cast<size_t>(fan)];
      }
      ls.tokens += sh.tokens();
    }
    for (int64_t e = 0; e < E; ++e) {
      ls.routed += ls.routed_E[static_cast<size_t>(e)];
      ls.kept += ls.kept_E[static_cast<size_t>(e)];
    }
    const int64_t mx = *std::max_element(ls.routed_E.begin(), ls.routed_E.end());
    ls.max_over_mean = ls.routed > 0 ? static_cast<double>(mx) * static_cast<double>(E) /
                                           static_cast<double>(ls.routed)
                                     : 0.0;
    double fan_sum = 0;
    for (size_t f = 0; f < ls.fanout_hist.size(); ++f)
      fan_sum += static_cast<double>(f) * static_cast<double>(ls.fanout_hist[f]);
    ls.fanout_mean = ls.tokens > 0 ? fan_sum / static_cast<double>(ls.tokens) : 0.0;
    ls.top_pairs = pairs.pairs();
    ls.pairs_nonzero = static_cast<int64_t>(ls.top_pairs.size());
    if (static_cast<int64_t>(ls.top_pairs.size()) > top)
      ls.top_pairs.resize(static_cast<size_t>(top));
    s.layers.push_back(std::move(ls));
  }
  return s;
}

namespace {

struct RowRef {
  const TraceShard* shard = nullptr;
  int64_t row = 0;
};

// token_index -> its row; BadInput when one occurs twice.
StatusOr<std::unordered_map<int64_t, RowRef>> index_rows(const Trace& t) {
  std::unordered_map<int64_t, RowRef> rows;
  rows.reserve(static_cast<size_t>(t.tokens()));
  for (const TraceShard& s : t.shards)
    for (int64_t i = 0; i < s.tokens(); ++i)
      if (!rows.emplace(s.token_index_N[i], RowRef{&s, i}).second)
        return BadInput(t.dir + ": token_index " + std::to_string(s.token_index_N[i]) +
                        " occurs in more than one step: diff compares single-pass traces");
  return rows;
}

template <typename T>
bool same_row(const std::vector<T>& x, int64_t i, const std::vector<T>& y, int64_t j, int64_t n) {
  return std::memcmp(&x[static_cast<size_t>(i * n)], &y[static_cast<size_t>(j * n)],
                     static_cast<size_t>(n) * sizeof(T)) == 0;
}

}  // namespace

StatusOr<std::string> trace_diff(const Trace& a, const Trace& b) {
  const TraceMeta &ma = a.meta(), &mb = b.meta();
  if (ma.experts != mb.experts || ma.top_k != mb.top_k || ma.model_layer != mb.model_layer)
    return std::string("different shapes: E " + std::to_string(ma.experts) + " vs " +
                       std::to_string(mb.experts) + ", K " + std::to_string(ma.top_k) + " vs " +
                       std::to_string(mb.top_k) + ", " + std::to_string(ma.layers()) + " vs " +
                       std::to_string(mb.layers()) + " MoE layers");
  SY_ASSIGN_OR_RETURN(auto ra, index_rows(a));
  SY_ASSIGN_OR_RETURN(auto rb, index_rows(b));
  if (ra.size() != rb.size())
    return std::to_string(ra.size()) + " tokens vs " + std::to_string(rb.size());
  // In token order, so the first difference reported is the lowest token index.
  std::vector<int64_t> order;
  order.reserve(ra.size());
  for (const auto& kv : ra) order.push_back(kv.first);
  std::sort(order.begin(), order.end());
  const int64_t K = ma.top_k, E = ma.experts;
  const bool probs = ma.probs && mb.probs;
  for (int64_t tok : order) {
    auto it = rb.find(tok);
    const std::string at = "token " + std::to_string(tok);
    if (it == rb.end()) return at + ": only in " + a.dir;
    const RowRef x = ra.at(tok), y = it->second;
    if (x.shard->token_id_N[x.row] != y.shard->token_id_N[y.row]) return at + ": token id differs";
    for (int64_t l = 0; l < ma.layers(); ++l) {
      const TraceLayer& lx = x.shard->layers[static_cast<size_t>(l)];
      const TraceLayer& ly = y.shard->layers[static_cast<size_t>(l)];
      const std::string in = at + ", layer " + std::to_string(l) + ": ";
      if (!same_row(lx.topk_ids_NK, x.row, ly.topk_ids_NK, y.row, K))
        return in + "expert ids differ";
      if (!same_row(lx.topk_weights_NK, x.row, ly.topk_weights_NK, y.row, K))
        return in + "weights differ";
      if (!same_row(lx.kept_NK, x.row, ly.kept_NK, y.row, K)) return in + "kept flags differ";
      if (probs && !same_row(lx.probs_NE, x.row, ly.probs_NE, y.row, E))
        return in + "probabilities differ";
    }
  }
  return std::string();
}

std::string trace_stats_text(const Trace& t, const TraceStats& s) {
  const TraceMeta& m = t.meta();
  std::set<std::string> hosts;
  for (const TraceShard& sh : t.shards) hosts.insert(sh.meta.host);
  std::string out;
  char buf[512];
  std::snprintf(buf, sizeof(buf),
                "trace %s: %s of %s, router %s%s; E %lld, K %lld, %lld MoE layer%s; recorded on "
                "%d rank%s (%zu host%s), steps %lld..%lld, %lld tokens\n",
                t.dir.c_str(), m.source.c_str(), m.model.c_str(), m.router.c_str(),
                m.synthetic_routing ? " (synthetic routing)" : "", (long long)m.experts,
                (long long)m.top_k, (long long)m.layers(), m.layers() == 1 ? "" : "s", m.world_size,
                m.world_size == 1 ? "" : "s", hosts.size(), hosts.size() == 1 ? "" : "s",
                (long long)m.first_step, (long long)(m.first_step + m.steps - 1),
                (long long)t.tokens());
  out += buf;
  for (const TraceLayerStats& ls : s.layers) {
    std::snprintf(buf, sizeof(buf),
                  "\nlayer %lld (model layer %lld): %lld tokens, %lld assignments, %s kept; "
                  "max/mean load %.3f\n  load per expert (routed / kept):\n",
                  (long long)ls.layer, (long long)ls.model_layer, (long long)ls.tokens,
                  (long long)ls.routed, percent(ls.kept, ls.routed).c_str(), ls.max_over_mean);
    out += buf;
    for (size_t e = 0; e < ls.routed_E.size(); ++e) {
      const bool end = e % 4 == 3 || e + 1 == ls.routed_E.size();
      std::snprintf(buf, sizeof(buf), "%se%-4zu %8lld / %-8lld%s", e % 4 == 0 ? "    " : "", e,
                    (long long)ls.routed_E[e], (long long)ls.kept_E[e], end ? "\n" : "  ");
      out += buf;
    }
    std::snprintf(
        buf, sizeof(buf),
        "  co-activated pairs (tokens choosing both; %lld pairs ever together), top %zu:\n",
        (long long)ls.pairs_nonzero, ls.top_pairs.size());
    out += buf;
    for (const ExpertPair& p : ls.top_pairs) {
      std::snprintf(buf, sizeof(buf), "    e%d+e%d %lld (%s of tokens)\n", p.a, p.b,
                    (long long)p.tokens, percent(p.tokens, ls.tokens).c_str());
      out += buf;
    }
    std::snprintf(buf, sizeof(buf),
                  "  send fan-out at EP %d (distinct ranks of a token's kept experts, contiguous "
                  "placement): mean %.3f;",
                  s.ep, ls.fanout_mean);
    out += buf;
    for (size_t f = 0; f < ls.fanout_hist.size(); ++f) {
      std::snprintf(buf, sizeof(buf), " %zu: %s", f, percent(ls.fanout_hist[f], ls.tokens).c_str());
      out += buf;
    }
    out += "\n";
  }
  return out;
}

std::string trace_stats_json(const Trace& t, const TraceStats& s) {
  const TraceMeta& m = t.meta();
  json hosts = json::array();
  for (const TraceShard& sh : t.shards) hosts.push_back(sh.meta.host);
  json j = {{"trace",
             {{"dir", t.dir},
              {"source", m.source},
              {"model", m.model},
              {"router", m.router},
              {"synthetic_routing", m.synthetic_routing},
              {"experts", m.experts},
              {"top_k", m.top_k},
              {"layers", m.model_layer},
              {"world_size", m.world_size},
              {"hosts", hosts},
              {"first_step", m.first_step},
              {"steps", m.steps},
              {"tokens", t.tokens()}}},
            {"ep", s.ep},
            {"layers", json::array()}};
  for (const TraceLayerStats& ls : s.layers) {
    json pairs = json::array();
    for (const ExpertPair& p : ls.top_pairs)
      pairs.push_back({{"a", p.a}, {"b", p.b}, {"tokens", p.tokens}});
    j["layers"].push_back({{"layer", ls.layer},
                           {"model_layer", ls.model_layer},
                           {"tokens", ls.tokens},
                           {"routed", ls.routed},
                           {"kept", ls.kept},
                           {"routed_E", ls.routed_E},
                           {"kept_E", ls.kept_E},
                           {"max_over_mean", ls.max_over_mean},
                           {"pairs_nonzero", ls.pairs_nonzero},
                           {"top_pairs", pairs},
                           {"fanout_hist", ls.fanout_hist},
                           {"fanout_mean", ls.fanout_mean}});
  }
  return j.dump(2) + "\n";
}

}  // namespace sy
