// The projection's table and projection.json (projection.h).
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <numeric>

#include "runtime/project/projection.h"

namespace sy {
namespace {
using json = nlohmann::json;

int64_t sum(const std::vector<int64_t>& v) {
  return std::accumulate(v.begin(), v.end(), int64_t{0});
}
// Column `tier` of an [R * 3] array.
std::vector<int64_t> tier_of(const std::vector<int64_t>& v_R3, int tier) {
  std::vector<int64_t> out(v_R3.size() / 3);
  for (size_t q = 0; q < out.size(); ++q) out[q] = v_R3[q * 3 + static_cast<size_t>(tier)];
  return out;
}
double mean_hist(const std::vector<int64_t>& h) {
  int64_t n = 0, s = 0;
  for (size_t i = 0; i < h.size(); ++i) n += h[i], s += h[i] * static_cast<int64_t>(i);
  return n > 0 ? static_cast<double>(s) / static_cast<double>(n) : 0;
}

// What the replay did, in words (the output says it is a sample).
std::string sampling_text(const RouterProjection& r, const PointProjection* pt) {
  char buf[512];
  std::snprintf(
      buf, sizeof(buf),
      "%lld trace tokens in %lld %ss (mean %.1f tokens); each rank replays %lld whole "
      "%ss, %s, cyclically where ranks x %ss exceed the trace",
      static_cast<long long>(r.trace_tokens), static_cast<long long>(r.units), r.unit_kind.c_str(),
      r.mean_unit_tokens, static_cast<long long>(pt ? pt->units_per_rank : 0), r.unit_kind.c_str(),
      r.interleaved ? "interleaved in trace order (rank q: q, q+P, ...)" : "in trace order",
      r.unit_kind.c_str());
  std::string out = buf;
  if (pt && pt->units_per_exchange > 0 && pt->units_per_exchange < pt->units_per_rank) {
    std::snprintf(buf, sizeof(buf), ", %lld %ss per exchange (times are per exchange)",
                  static_cast<long long>(pt->units_per_exchange), r.unit_kind.c_str());
    out += buf;
  }
  return out;
}

std::string drops_text(const RouterProjection& r) {
  char buf[256];
  if (r.drop_mismatch < 0) {
    std::snprintf(buf, sizeof(buf),
                  "drops recomputed at capacity factor %g (the trace ran at "
                  "another)",
                  r.capacity_factor);
  } else {
    std::snprintf(buf, sizeof(buf),
                  "drops recomputed at capacity factor %g: %s the recording (%lld of %lld "
                  "assignments differ)",
                  r.capacity_factor, r.drop_mismatch == 0 ? "match" : "DIFFER FROM",
                  static_cast<long long>(r.drop_mismatch), static_cast<long long>(r.drop_compared));
  }
  return buf;
}

json cluster_json(const ClusterModel& c) {
  return {
      {"name", c.name},
      {"label", c.label},
      {"gpus_per_node", c.gpus_per_node},
      {"flops", c.flops},
      {"same_node",
       {{"latency_s", c.same_node.latency_s}, {"bandwidth_Bps", c.same_node.bandwidth_Bps}}},
      {"other_node",
       {{"latency_s", c.other_node.latency_s}, {"bandwidth_Bps", c.other_node.bandwidth_Bps}}},
      {"same_rank",
       {{"bandwidth_Bps", std::isfinite(c.same_rank.bandwidth_Bps) ? json(c.same_rank.bandwidth_Bps)
                                                                   : json(nullptr)}}}};
}

json layer_json(const LayerProjection& l, const PointProjection& pt, int64_t row_bytes,
                int pairs_max_ranks) {
  json j = {{"layer", l.layer},
            {"model_layer", l.model_layer},
            {"routed", l.routed},
            {"dropped", l.dropped},
            {"routed_E", l.routed_E},
            {"dropped_E", l.dropped_E},
            {"rank_load_max_over_mean", l.rank_load_max_over_mean},
            {"expert_load_max_over_mean", l.expert_load_max_over_mean},
            {"fanout_ranks_hist", l.fanout_ranks_hist},
            {"fanout_nodes_hist", l.fanout_nodes_hist},
            {"dispatch_s", l.dispatch_s},
            {"combine_s", l.combine_s},
            {"compute_s", l.compute_s},
            {"compute_mean_s", l.compute_mean_s},
            {"exchanges", l.exchanges}};
  const char* tiers[3] = {"self", "same_node", "other_node"};
  for (int t = 0; t < 3; ++t) {
    const std::vector<int64_t> s = tier_of(l.sent_R3, t), r = tier_of(l.recv_R3, t);
    j["rows_sent_total"][tiers[t]] = sum(s);
    j["bytes_sent_total"][tiers[t]] = t == 0 ? 0 : sum(s) * row_bytes;
    j["rows_sent_max"][tiers[t]] = s.empty() ? 0 : *std::max_element(s.begin(), s.end());
    j["rows_recv_max"][tiers[t]] = r.empty() ? 0 : *std::max_element(r.begin(), r.end());
    if (pt.ranks <= pairs_max_ranks) {
      j["rows_sent_R"][tiers[t]] = s;
      j["rows_recv_R"][tiers[t]] = r;
    }
  }
  if (!l.pair_rows_RR.empty()) {
    json rows = json::array(), bytes = json::array();
    for (int q = 0; q < pt.ranks; ++q) {
      std::vector<int64_t> rr(l.pair_rows_RR.begin() + static_cast<int64_t>(q) * pt.ranks,
                              l.pair_rows_RR.begin() + static_cast<int64_t>(q + 1) * pt.ranks);
      std::vector<int64_t> bb(rr.size());
      for (size_t d = 0; d < rr.size(); ++d)
        bb[d] = static_cast<int>(d) == q ? 0 : rr[d] * row_bytes;
      rows.push_back(rr);
      bytes.push_back(bb);
    }
    j["pair_rows"] = rows;
    j["pair_bytes"] = bytes;
  }
  return j;
}

}  // namespace

double MeasuredPoint::mean_exchange_s() const {
  return exchange_s.empty() ? 0
                            : std::accumulate(exchange_s.begin(), exchange_s.end(), 0.0) /
                                  static_cast<double>(exchange_s.size());
}
double MeasuredPoint::mean_compute_s() const {
  return compute_s.empty() ? 0
                           : std::accumulate(compute_s.begin(), compute_s.end(), 0.0) /
                                 static_cast<double>(compute_s.size());
}

std::string self_copy_text(const ClusterModel& c) {
  if (!std::isfinite(c.same_rank.bandwidth_Bps)) return "free";
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.3g GB/s", c.same_rank.bandwidth_Bps / 1e9);
  return buf;
}

MeasuredSummary measured_summary(const MeasuredPoint& m, const PointProjection& pt) {
  MeasuredSummary a;
  a.exchange_s = m.mean_exchange_s();
  a.compute_s = m.mean_compute_s();
  const double L = static_cast<double>(pt.layers.size());
  for (const LayerProjection& l : pt.layers) {
    a.projected_exchange_s += (l.dispatch_s + l.combine_s) / L;
    a.projected_compute_s += l.compute_s / L;
  }
  auto error_pct = [](double projected, double measured) {
    return measured > 0 ? 100.0 * (projected - measured) / measured : 0;
  };
  a.exchange_error_pct = error_pct(a.projected_exchange_s, a.exchange_s);
  a.compute_error_pct = error_pct(a.projected_compute_s, a.compute_s);
  a.counts = m.first_difference.empty()
                 ? "equal (" + std::to_string(m.numbers_compared) + " numbers)"
                 : "DIFFER: " + m.first_difference;
  return a;
}

PointSummary point_summary(const PointProjection& pt, const ProjectOptions& opt) {
  PointSummary m;
  const double L = static_cast<double>(std::max<size_t>(pt.layers.size(), 1));
  const double row_bytes = static_cast<double>(opt.hidden) * 4.0;
  int64_t tier[3] = {0, 0, 0}, routed = 0, dropped = 0, other_max = 0;
  for (const LayerProjection& l : pt.layers) {
    for (int t = 0; t < 3; ++t) tier[t] += sum(tier_of(l.sent_R3, t));
    const std::vector<int64_t> o = tier_of(l.sent_R3, 2);
    if (!o.empty()) other_max = std::max(other_max, *std::max_element(o.begin(), o.end()));
    routed += l.routed;
    dropped += l.dropped;
    m.rank_load = std::max(m.rank_load, l.rank_load_max_over_mean);
    m.expert_load = std::max(m.expert_load, l.expert_load_max_over_mean);
    m.fanout_ranks += mean_hist(l.fanout_ranks_hist) / L;
    m.fanout_nodes += mean_hist(l.fanout_nodes_hist) / L;
    m.dispatch_s += l.dispatch_s / L;
    m.compute_s += l.compute_s / L;
    m.combine_s += l.combine_s / L;
  }
  const double rows = static_cast<double>(tier[0] + tier[1] + tier[2]);
  const double P = static_cast<double>(std::max(pt.ranks, 1));
  for (int t = 0; t < 3; ++t) m.pct[t] = rows > 0 ? 100.0 * static_cast<double>(tier[t]) / rows : 0;
  m.rows_per_rank = rows / L / P;
  m.other_max_bytes = static_cast<double>(other_max) * row_bytes;
  m.other_mean_bytes = static_cast<double>(tier[2]) * row_bytes / L / P;
  m.drop_pct = routed > 0 ? 100.0 * static_cast<double>(dropped) / static_cast<double>(routed) : 0;
  return m;
}

std::string projection_text(const RouterProjection& r, const ProjectOptions& opt) {
  std::string s;
  char buf[512];
  std::snprintf(buf, sizeof(buf), "router %s%s, trace %s\n  %s\n  %s\n", r.router.c_str(),
                r.synthetic_routing ? " (synthetic routing)" : "", r.trace_dir.c_str(),
                sampling_text(r, r.points.empty() ? nullptr : &r.points.front()).c_str(),
                drops_text(r).c_str());
  s += buf;
  const ClusterModel& c = opt.cluster;
  std::snprintf(buf, sizeof(buf),
                "  cluster %s (%s): %d GPUs/node, same-node %.3g GB/s %.1f us, other-node %.3g "
                "GB/s %.1f us, self copy %s, %.3g TFLOP/s; D %lld, F %lld, placement %s\n",
                c.name.c_str(), c.label.c_str(), c.gpus_per_node, c.same_node.bandwidth_Bps / 1e9,
                c.same_node.latency_s * 1e6, c.other_node.bandwidth_Bps / 1e9,
                c.other_node.latency_s * 1e6, self_copy_text(c).c_str(), c.flops / 1e12,
                static_cast<long long>(opt.hidden), static_cast<long long>(opt.ffn_hidden),
                opt.placement_name.c_str());
  s += buf;
  s += "   ranks  EPxDP     nodes tok/rank  rows/rank  self%  node% other% xnodeMB/rank   "
       "load-max/mean    drop%  ranks/tok nodes/tok  dispatch-us compute-us combine-us\n"
       "                                   (per layer)                       (max)  rank  "
       "expert                              (per layer: max over ranks)\n";
  for (const PointProjection& pt : r.points) {
    const PointSummary m = point_summary(pt, opt);
    char epdp[32];
    std::snprintf(epdp, sizeof(epdp), "%dx%d", pt.ep, pt.dp);
    std::snprintf(buf, sizeof(buf),
                  "  %6d  %-9s %5d %8lld %10.1f %6.1f %6.1f %6.1f %12.3f %6.2f %7.2f %8.2f %10.2f "
                  "%9.2f %12.1f %10.1f %10.1f\n",
                  pt.ranks, epdp, pt.nodes,
                  static_cast<long long>(pt.tokens / std::max(1, pt.ranks)), m.rows_per_rank,
                  m.pct[0], m.pct[1], m.pct[2], m.other_max_bytes / 1e6, m.rank_load, m.expert_load,
                  m.drop_pct, m.fanout_ranks, m.fanout_nodes, m.dispatch_s * 1e6, m.compute_s * 1e6,
                  m.combine_s * 1e6);
    s += buf;
  }
  bool header = false;
  for (const PointProjection& pt : r.points)
    for (const MeasuredPoint& m : pt.measured) {
      if (!header) {
        s += "  measured beside projected, per layer (load reports of real runs; exchange = count "
             "exchange + dispatch + return of one forward, each phase the rank that waited least, "
             "median over forwards):\n"
             "   ranks  counts (rows, bytes per rank pair; loads, drops)   exchange-us: measured "
             "projected  error   compute-us: measured projected  error  run\n";
        header = true;
      }
      const MeasuredSummary a = measured_summary(m, pt);
      std::snprintf(buf, sizeof(buf),
                    "  %6d  %-50s %20.1f %9.1f %+6.1f%% %20.1f %9.1f %+6.1f%%  %s\n", pt.ranks,
                    a.counts.c_str(), a.exchange_s * 1e6, a.projected_exchange_s * 1e6,
                    a.exchange_error_pct, a.compute_s * 1e6, a.projected_compute_s * 1e6,
                    a.compute_error_pct, m.dir.c_str());
      s += buf;
    }
  return s;
}

std::string projection_json(const std::vector<RouterProjection>& rs, const ProjectOptions& opt) {
  const int64_t row_bytes = opt.hidden * 4;
  json j = {{"format", "switchyard.projection"},    {"version", 1},
            {"cluster", cluster_json(opt.cluster)}, {"hidden", opt.hidden},
            {"ffn_hidden", opt.ffn_hidden},         {"row_bytes", row_bytes},
            {"placement", opt.placement_name},      {"routers", json::array()}};
  for (const RouterProjection& r : rs) {
    json jr = {{"trace", r.trace_dir},
               {"router", r.router},
               {"model", r.model},
               {"synthetic_routing", r.synthetic_routing},
               {"trace_tokens", r.trace_tokens},
               {"units", r.units},
               {"unit_kind", r.unit_kind},
               {"sampling", sampling_text(r, r.points.empty() ? nullptr : &r.points.front())},
               {"capacity_factor", r.capacity_factor},
               {"drop_mismatch", r.drop_mismatch},
               {"drop_compared", r.drop_compared},
               {"points", json::array()}};
    for (const PointProjection& pt : r.points) {
      json jp = {{"ranks", pt.ranks},     {"ep", pt.ep},
                 {"dp", pt.dp},           {"nodes", pt.nodes},
                 {"tokens", pt.tokens},   {"units_per_rank", pt.units_per_rank},
                 {"time_s", pt.time_s()}, {"layers", json::array()}};
      jp["units_per_exchange"] = pt.units_per_exchange;
      for (const LayerProjection& l : pt.layers)
        jp["layers"].push_back(layer_json(l, pt, row_bytes, opt.pairs_max_ranks));
      for (const MeasuredPoint& m : pt.measured) {
        const MeasuredSummary a = measured_summary(m, pt);
        jp["measured"].push_back({{"dir", m.dir},
                                  {"numbers_compared", m.numbers_compared},
                                  {"counts_equal", m.first_difference.empty()},
                                  {"first_difference", m.first_difference},
                                  {"exchange_s", m.exchange_s},
                                  {"compute_s", m.compute_s},
                                  {"exchange_s_mean", a.exchange_s},
                                  {"projected_exchange_s_mean", a.projected_exchange_s},
                                  {"exchange_error_pct", a.exchange_error_pct},
                                  {"compute_s_mean", a.compute_s},
                                  {"projected_compute_s_mean", a.projected_compute_s},
                                  {"compute_error_pct", a.compute_error_pct}});
      }
      jr["points"].push_back(std::move(jp));
    }
    j["routers"].push_back(std::move(jr));
  }
  return j.dump(1) + "\n";
}

}  // namespace sy
