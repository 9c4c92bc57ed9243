#include "runtime/project/projection.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <numeric>
#include <tuple>

#include "runtime/kernels/capacity.h"

namespace sy {
namespace {

// The trace flattened in unit order: token rows of every shard, units contiguous.
struct Flat {
  int64_t N = 0, K = 0, E = 0;
  std::vector<int64_t> token_index_N;
  std::vector<int64_t> unit_begin;           // [units + 1]
  std::vector<std::vector<int32_t>> ids_L;   // [L][N*K]
  std::vector<std::vector<uint8_t>> kept_L;  // [L][N*K] recomputed at the projection's c
};

Status flatten(const Trace& t, double c, Flat* f, RouterProjection* out) {
  const TraceMeta& m = t.meta();
  f->E = m.experts;
  f->K = m.top_k;
  const int64_t G = m.group_tokens, K = f->K, L = m.layers();
  // (unit major key, unit minor key, token_index, shard, row)
  std::vector<std::tuple<int64_t, int64_t, int64_t, int32_t, int64_t>> rows;
  rows.reserve(static_cast<size_t>(t.tokens()));
  // Without groups a unit is one rank's forward (shard, step), placed by its first token.
  std::map<std::pair<size_t, int64_t>, int64_t> first_token;
  if (G <= 0)
    for (size_t s = 0; s < t.shards.size(); ++s) {
      const TraceShard& sh = t.shards[s];
      for (int64_t i = 0; i < sh.tokens(); ++i) {
        const auto key = std::make_pair(s, sh.step_N[static_cast<size_t>(i)]);
        const int64_t ti = sh.token_index_N[static_cast<size_t>(i)];
        auto [it, fresh] = first_token.emplace(key, ti);
        if (!fresh) it->second = std::min(it->second, ti);
      }
    }
  const int64_t shards = static_cast<int64_t>(t.shards.size());
  for (size_t s = 0; s < t.shards.size(); ++s) {
    const TraceShard& sh = t.shards[s];
    for (int64_t i = 0; i < sh.tokens(); ++i) {
      const int64_t ti = sh.token_index_N[static_cast<size_t>(i)];
      const int64_t st = sh.step_N[static_cast<size_t>(i)];
      if (G > 0) {
        rows.emplace_back(ti / G, st, ti, static_cast<int32_t>(s), i);
      } else {
        rows.emplace_back(first_token[{s, st}], st * shards + static_cast<int64_t>(s), ti,
                          static_cast<int32_t>(s), i);
      }
    }
  }
  std::sort(rows.begin(), rows.end());
  f->N = static_cast<int64_t>(rows.size());
  f->token_index_N.resize(rows.size());
  f->ids_L.assign(static_cast<size_t>(L), std::vector<int32_t>(rows.size() * K));
  f->kept_L.assign(static_cast<size_t>(L), std::vector<uint8_t>(rows.size() * K));
  std::vector<std::vector<float>> p_L(static_cast<size_t>(L), std::vector<float>(rows.size() * K));
  std::vector<std::vector<uint8_t>> rec_L(static_cast<size_t>(L),
                                          std::vector<uint8_t>(rows.size() * K));
  f->unit_begin.clear();
  for (size_t n = 0; n < rows.size(); ++n) {
    const auto& [k1, k2, ti, s, i] = rows[n];
    if (n == 0 || k1 != std::get<0>(rows[n - 1]) || k2 != std::get<1>(rows[n - 1]))
      f->unit_begin.push_back(static_cast<int64_t>(n));
    f->token_index_N[n] = ti;
    const TraceShard& sh = t.shards[static_cast<size_t>(s)];
    for (int64_t l = 0; l < L; ++l) {
      const TraceLayer& tl = sh.layers[static_cast<size_t>(l)];
      for (int64_t k = 0; k < K; ++k) {
        const size_t src = static_cast<size_t>(i * K + k), dst = n * K + k;
        const int32_t e = tl.topk_ids_NK[src];
        f->ids_L[l][dst] = e;
        rec_L[l][dst] = tl.kept_NK[src];
        // The runtime ranks drops by the chosen probabilities (moe_layer.cc).
        p_L[l][dst] =
            m.probs ? tl.probs_NE[static_cast<size_t>(i * f->E + e)] : tl.topk_weights_NK[src];
      }
    }
  }
  f->unit_begin.push_back(f->N);
  const int64_t units = static_cast<int64_t>(f->unit_begin.size()) - 1;
  out->units = units;
  out->unit_kind = G > 0 ? "sequence" : "forward";
  out->mean_unit_tokens = units > 0 ? static_cast<double>(f->N) / static_cast<double>(units) : 0;

  CapacityConfig cc;
  cc.capacity_factor = c;
  cc.policy = DropPolicy::kProbs;
  CapacityPlan plan;
  const bool compare = c == m.capacity_factor || (c <= 0 && m.capacity_factor <= 0);
  int64_t mismatch = 0;
  for (int64_t l = 0; l < L; ++l) {
    for (int64_t u = 0; u < units; ++u) {
      const int64_t b = f->unit_begin[u], T = f->unit_begin[u + 1] - b;
      SY_RETURN_IF_ERROR(plan_capacity_into(f->ids_L[l].data() + b * K, p_L[l].data() + b * K, T,
                                            f->E, K, 1, cc, nullptr, &plan));
      std::copy(plan.kept_TK.begin(), plan.kept_TK.end(), f->kept_L[l].begin() + b * K);
    }
    if (compare)
      for (size_t a = 0; a < f->kept_L[l].size(); ++a) mismatch += f->kept_L[l][a] != rec_L[l][a];
  }
  out->drop_mismatch = compare ? mismatch : -1;
  out->drop_compared = compare ? f->N * K * L : 0;
  return Status::Ok();
}

double max_over_mean(const std::vector<int64_t>& v) {
  if (v.empty()) return 0;
  const int64_t mx = *std::max_element(v.begin(), v.end());
  const double sum = static_cast<double>(std::accumulate(v.begin(), v.end(), int64_t{0}));
  return sum > 0 ? static_cast<double>(mx) * static_cast<double>(v.size()) / sum : 0;
}

// The expert group's layout at EP ranks: for expert e, its copies (rank, instance id).
struct Layout {
  int ep = 0;
  int64_t instances = 0;              // placed copies per expert group
  std::vector<int64_t> copies_begin;  // [E + 1] into copy_rank / copy_instance
  std::vector<int32_t> copy_rank;
  std::vector<int64_t> copy_instance;
};

StatusOr<Layout> make_layout(const Flat& f, int ep, const ProjectOptions& opt) {
  Layout lay;
  lay.ep = ep;
  const int64_t E = f.E;
  std::vector<std::vector<std::pair<int32_t, int64_t>>> copies(static_cast<size_t>(E));
  if (!opt.placement) {
    if (E % ep != 0)
      return InvalidArgument("--ep " + std::to_string(ep) + " does not divide the " +
                             std::to_string(E) +
                             " experts (contiguous placement, no replicas): use a divisor of E, "
                             "or --placement eplb with --redundant-experts");
    const int64_t e_per = E / ep;
    for (int64_t e = 0; e < E; ++e) copies[e].push_back({static_cast<int32_t>(e / e_per), e});
    lay.instances = E;
  } else {
    std::vector<int64_t> load_E(static_cast<size_t>(E), 0);
    for (const auto& ids : f.ids_L)
      for (int32_t e : ids) ++load_E[static_cast<size_t>(e)];
    SY_ASSIGN_OR_RETURN(ExpertPlacement p, opt.placement(load_E, ep));
    if (p.num_experts != E || p.ranks != ep || static_cast<int>(p.experts_of_rank.size()) != ep)
      return InvalidArgument("placement '" + opt.placement_name + "' is for " +
                             std::to_string(p.num_experts) + " experts on " +
                             std::to_string(p.ranks) + " ranks, not " + std::to_string(E) + " on " +
                             std::to_string(ep));
    for (int r = 0; r < ep; ++r)
      for (int32_t e : p.experts_of_rank[static_cast<size_t>(r)]) {
        if (e < 0 || e >= E)
          return InvalidArgument("placement '" + opt.placement_name + "': expert id " +
                                 std::to_string(e) + " out of range");
        copies[static_cast<size_t>(e)].push_back({r, lay.instances++});
      }
    for (int64_t e = 0; e < E; ++e)
      if (copies[static_cast<size_t>(e)].empty())
        return InvalidArgument("placement '" + opt.placement_name + "': expert " +
                               std::to_string(e) + " is on no rank");
  }
  lay.copies_begin.push_back(0);
  for (auto& c : copies) {
    std::sort(c.begin(), c.end());
    for (const auto& [r, inst] : c) {
      lay.copy_rank.push_back(r);
      lay.copy_instance.push_back(inst);
    }
    lay.copies_begin.push_back(static_cast<int64_t>(lay.copy_rank.size()));
  }
  return lay;
}

// The unit rank q replays j-th: contiguous (q * upr + j) or interleaved (j * ranks + q), in
// trace order, cyclically.
int64_t unit_of(int q, int64_t j, int ranks, int64_t upr, int64_t units, bool interleaved) {
  const int64_t i = interleaved ? j * ranks + q : static_cast<int64_t>(q) * upr + j;
  return i % units;
}

struct ExchangeTimes {
  double dispatch_s = 0, combine_s = 0, compute_s = 0, compute_mean_s = 0;
};

// The time model of one exchange (projection.h, "Time") from its rows and peers per rank and
// tier. Count-exchange peers of rank q per tier: its expert group's ranks on its node, and the
// rest of the group.
ExchangeTimes exchange_times(const std::vector<int64_t>& sent_R3,
                             const std::vector<int64_t>& recv_R3,
                             const std::vector<int64_t>& peers_sent_R3,
                             const std::vector<int64_t>& peers_recv_R3, int ep, int gpn,
                             const ProjectOptions& opt) {
  const ClusterModel& cm = opt.cluster;
  const int R = static_cast<int>(sent_R3.size() / 3);
  const double row_bytes = static_cast<double>(opt.hidden) * 4.0;
  const double row_flops =
      6.0 * static_cast<double>(opt.hidden) * static_cast<double>(opt.ffn_hidden);
  ExchangeTimes t;
  double comp_sum = 0;
  for (int q = 0; q < R; ++q) {
    const int64_t g0 = static_cast<int64_t>(q / ep) * ep, g1 = g0 + ep;
    const int64_t n0 = static_cast<int64_t>(q / gpn) * gpn, n1 = n0 + gpn;
    const double same = static_cast<double>(std::min(g1, n1) - std::max(g0, n0) - 1);
    const double other = static_cast<double>(ep - 1) - same;
    auto side = [&](const std::vector<int64_t>& rows, const std::vector<int64_t>& peers,
                    bool counts) {
      const size_t i = static_cast<size_t>(q) * 3;
      return static_cast<double>(rows[i]) * row_bytes / cm.same_rank.bandwidth_Bps +
             ClusterModel::seconds(cm.same_node, static_cast<double>(rows[i + 1]) * row_bytes,
                                   static_cast<double>(peers[i + 1]) + (counts ? same : 0)) +
             ClusterModel::seconds(cm.other_node, static_cast<double>(rows[i + 2]) * row_bytes,
                                   static_cast<double>(peers[i + 2]) + (counts ? other : 0));
    };
    t.dispatch_s = std::max(t.dispatch_s, std::max(side(sent_R3, peers_sent_R3, true),
                                                   side(recv_R3, peers_recv_R3, true)));
    t.combine_s = std::max(t.combine_s, std::max(side(sent_R3, peers_sent_R3, false),
                                                 side(recv_R3, peers_recv_R3, false)));
    const size_t i = static_cast<size_t>(q) * 3;
    const double c =
        static_cast<double>(recv_R3[i] + recv_R3[i + 1] + recv_R3[i + 2]) * row_flops / cm.flops;
    t.compute_s = std::max(t.compute_s, c);
    comp_sum += c;
  }
  t.compute_mean_s = R > 0 ? comp_sum / R : 0;
  return t;
}

// The exact counts of one layer at one point, then its times.
void replay_layer(const Flat& f, int64_t l, const Layout& lay, const PointProjection& pt,
                  const ProjectOptions& opt, LayerProjection* out) {
  const int R = pt.ranks, gpn = opt.cluster.gpus_per_node, ep = lay.ep;
  const int64_t K = f.K, units = static_cast<int64_t>(f.unit_begin.size()) - 1;
  const std::vector<int32_t>& ids = f.ids_L[static_cast<size_t>(l)];
  const std::vector<uint8_t>& kept = f.kept_L[static_cast<size_t>(l)];
  out->sent_R3.assign(static_cast<size_t>(R) * 3, 0);
  out->recv_R3.assign(static_cast<size_t>(R) * 3, 0);
  out->peers_sent_R3.assign(static_cast<size_t>(R) * 3, 0);
  out->peers_recv_R3.assign(static_cast<size_t>(R) * 3, 0);
  const bool pairs = R <= opt.pairs_max_ranks;
  if (pairs) out->pair_rows_RR.assign(static_cast<size_t>(R) * R, 0);
  out->routed_E.assign(static_cast<size_t>(f.E), 0);
  out->dropped_E.assign(static_cast<size_t>(f.E), 0);
  out->instance_routed.assign(static_cast<size_t>(lay.instances) * pt.dp, 0);
  out->fanout_ranks_hist.assign(static_cast<size_t>(K + 1), 0);
  out->fanout_nodes_hist.assign(static_cast<size_t>(K + 1), 0);
  // The exchanges: every rank sends its units in batches of units_per_exchange (the runtime's
  // forwards, one token exchange each); all ranks take part in every exchange, so its time is
  // the slowest rank's. Counts are totals over the exchanges.
  const int64_t upe = pt.units_per_exchange > 0 ? std::min(pt.units_per_exchange, pt.units_per_rank)
                                                : pt.units_per_rank;
  const int64_t exchanges = (pt.units_per_rank + upe - 1) / upe;
  // This exchange's rows and peers per rank and tier (the time model's input).
  std::vector<int64_t> xs_R3(static_cast<size_t>(R) * 3), xr_R3(xs_R3.size()), ps_R3(xs_R3.size()),
      pr_R3(xs_R3.size());
  // last_src[d]: the last source that sent rank d a row in this exchange, so each (source,
  // dest) pair counts once as a peer: sources are replayed in order, each one's tokens together.
  std::vector<int32_t> last_src(static_cast<size_t>(R), -1);
  std::vector<int32_t> dests(static_cast<size_t>(K)), nodes(static_cast<size_t>(K));
  ExchangeTimes sum;
  for (int64_t x = 0; x < exchanges; ++x) {
    std::fill(xs_R3.begin(), xs_R3.end(), 0);
    std::fill(xr_R3.begin(), xr_R3.end(), 0);
    std::fill(ps_R3.begin(), ps_R3.end(), 0);
    std::fill(pr_R3.begin(), pr_R3.end(), 0);
    std::fill(last_src.begin(), last_src.end(), -1);
    const int64_t j0 = x * upe, j1 = std::min(pt.units_per_rank, j0 + upe);
    for (int q = 0; q < R; ++q) {
      const int replica = q / ep, node_q = q / gpn;
      const int64_t base = static_cast<int64_t>(replica) * ep;
      for (int64_t j = j0; j < j1; ++j) {
        const int64_t u = unit_of(q, j, pt.ranks, pt.units_per_rank, units, opt.interleaved);
        for (int64_t n = f.unit_begin[u]; n < f.unit_begin[u + 1]; ++n) {
          int nd = 0, nn = 0;
          for (int64_t k = 0; k < K; ++k) {
            const size_t a = static_cast<size_t>(n * K + k);
            const int32_t e = ids[a];
            const int64_t cb = lay.copies_begin[e], nc = lay.copies_begin[e + 1] - cb;
            const int64_t c = cb + (nc == 1 ? 0 : f.token_index_N[n] % nc);
            ++out->routed_E[e];
            ++out->instance_routed[replica * lay.instances + lay.copy_instance[c]];
            if (!kept[a]) {
              ++out->dropped_E[e];
              continue;
            }
            const int d = static_cast<int>(base + lay.copy_rank[c]);
            const int node_d = d / gpn;
            const int tier = d == q ? 0 : (node_d == node_q ? 1 : 2);
            ++xs_R3[q * 3 + tier];
            ++xr_R3[d * 3 + tier];
            if (pairs) ++out->pair_rows_RR[static_cast<size_t>(q) * R + d];
            if (tier > 0 && last_src[d] != q) {
              last_src[d] = q;
              ++ps_R3[q * 3 + tier];
              ++pr_R3[d * 3 + tier];
            }
            if (std::find(dests.begin(), dests.begin() + nd, d) == dests.begin() + nd)
              dests[nd++] = d;
            if (std::find(nodes.begin(), nodes.begin() + nn, node_d) == nodes.begin() + nn)
              nodes[nn++] = node_d;
          }
          ++out->fanout_ranks_hist[nd];
          ++out->fanout_nodes_hist[nn];
        }
      }
    }
    const ExchangeTimes t = exchange_times(xs_R3, xr_R3, ps_R3, pr_R3, ep, gpn, opt);
    sum.dispatch_s += t.dispatch_s;
    sum.combine_s += t.combine_s;
    sum.compute_s += t.compute_s;
    sum.compute_mean_s += t.compute_mean_s;
    for (size_t i = 0; i < xs_R3.size(); ++i) {
      out->sent_R3[i] += xs_R3[i];
      out->recv_R3[i] += xr_R3[i];
      out->peers_sent_R3[i] = std::max(out->peers_sent_R3[i], ps_R3[i]);
      out->peers_recv_R3[i] = std::max(out->peers_recv_R3[i], pr_R3[i]);
    }
  }
  out->exchanges = exchanges;
  out->dispatch_s = sum.dispatch_s / static_cast<double>(exchanges);
  out->combine_s = sum.combine_s / static_cast<double>(exchanges);
  out->compute_s = sum.compute_s / static_cast<double>(exchanges);
  out->compute_mean_s = sum.compute_mean_s / static_cast<double>(exchanges);
  out->routed = std::accumulate(out->routed_E.begin(), out->routed_E.end(), int64_t{0});
  out->dropped = std::accumulate(out->dropped_E.begin(), out->dropped_E.end(), int64_t{0});
  std::vector<int64_t> load_R(static_cast<size_t>(R));
  for (int q = 0; q < R; ++q)
    load_R[q] = out->recv_R3[q * 3] + out->recv_R3[q * 3 + 1] + out->recv_R3[q * 3 + 2];
  out->rank_load_max_over_mean = max_over_mean(load_R);
  out->expert_load_max_over_mean = max_over_mean(out->instance_routed);
}

}  // namespace

double PointProjection::time_s() const {
  double s = 0;
  for (const LayerProjection& l : layers) s += l.dispatch_s + l.compute_s + l.combine_s;
  return s;
}

StatusOr<RouterProjection> project_trace(const Trace& t, const ProjectOptions& opt) {
  const TraceMeta& m = t.meta();
  const int64_t E = m.experts;
  if (opt.hidden < 1 || opt.ffn_hidden < 1)
    return InvalidArgument("--hidden and --ffn-hidden must be >= 1");
  if (opt.dp < 1) return InvalidArgument("--dp must be >= 1 (got " + std::to_string(opt.dp) + ")");
  if (opt.tokens_per_rank < 0) return InvalidArgument("--tokens-per-rank must be >= 0");
  if (opt.tokens_per_exchange < 0) return InvalidArgument("--exchange-tokens must be >= 0");
  if (opt.ranks.empty()) return InvalidArgument("--ep: no expert-parallel degree given");
  if (opt.cluster.gpus_per_node < 1) return InvalidArgument("--gpus-per-node must be >= 1");
  for (int P : opt.ranks) {
    if (P < 1) return InvalidArgument("--ep: " + std::to_string(P) + " is not >= 1");
    if (P > E && P % E != 0)
      return InvalidArgument("--ep " + std::to_string(P) + ": beyond E = " + std::to_string(E) +
                             " ranks are data-parallel replicas of the expert group, so E must "
                             "divide P");
    if (static_cast<int64_t>(P) * opt.dp > (1 << 24))
      return InvalidArgument("--ep x --dp beyond 2^24 ranks");
  }
  RouterProjection out;
  out.trace_dir = t.dir;
  out.router = m.router;
  out.model = m.model;
  out.synthetic_routing = m.synthetic_routing;
  out.interleaved = opt.interleaved;
  out.trace_tokens = t.tokens();
  out.capacity_factor = std::isnan(opt.capacity_factor) ? m.capacity_factor : opt.capacity_factor;
  if (!std::isfinite(out.capacity_factor))
    return InvalidArgument("--capacity-factor must be finite (<= 0: dropless)");
  Flat f;
  SY_RETURN_IF_ERROR(flatten(t, out.capacity_factor, &f, &out));
  if (f.N == 0) return BadInput("trace " + t.dir + ": no tokens");

  const int max_ranks = *std::max_element(opt.ranks.begin(), opt.ranks.end()) * opt.dp;
  const int64_t tpr =
      opt.tokens_per_rank > 0 ? opt.tokens_per_rank : std::max<int64_t>(1, f.N / max_ranks);
  const int64_t upr =
      std::max<int64_t>(1, std::llround(static_cast<double>(tpr) / out.mean_unit_tokens));
  int64_t total = 0;
  for (int P : opt.ranks) total += static_cast<int64_t>(P) * opt.dp * upr;
  total = static_cast<int64_t>(static_cast<double>(total) * out.mean_unit_tokens) * m.layers();
  int64_t done = 0;
  for (int P : opt.ranks) {
    PointProjection pt;
    pt.ep = P <= E ? P : static_cast<int>(E);
    pt.dp = (P <= E ? 1 : P / static_cast<int>(E)) * opt.dp;
    pt.ranks = pt.ep * pt.dp;
    pt.nodes = (pt.ranks + opt.cluster.gpus_per_node - 1) / opt.cluster.gpus_per_node;
    pt.units_per_rank = upr;
    if (opt.tokens_per_exchange > 0)
      pt.units_per_exchange = std::max<int64_t>(
          1, std::llround(static_cast<double>(opt.tokens_per_exchange) / out.mean_unit_tokens));
    SY_ASSIGN_OR_RETURN(Layout lay, make_layout(f, pt.ep, opt));
    const int64_t units = static_cast<int64_t>(f.unit_begin.size()) - 1;
    for (int q = 0; q < pt.ranks; ++q)
      for (int64_t j = 0; j < upr; ++j) {
        const int64_t u = unit_of(q, j, pt.ranks, upr, units, opt.interleaved);
        pt.tokens += f.unit_begin[u + 1] - f.unit_begin[u];
      }
    for (int64_t l = 0; l < m.layers(); ++l) {
      LayerProjection lp;
      lp.layer = l;
      lp.model_layer = m.model_layer[static_cast<size_t>(l)];
      replay_layer(f, l, lay, pt, opt, &lp);
      pt.layers.push_back(std::move(lp));
      done += pt.tokens;
      if (opt.progress) opt.progress(done, std::max(total, done));
    }
    out.points.push_back(std::move(pt));
  }
  return out;
}

}  // namespace sy
