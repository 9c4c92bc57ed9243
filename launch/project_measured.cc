#include "launch/project_measured.h"

#include <algorithm>
#include <map>

#include "runtime/report/report_io.h"

namespace sy::launch {
namespace {

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// "what: projected a, measured b" for the first difference.
std::string differ(const std::string& what, int64_t projected, int64_t measured) {
  return what + ": projected " + std::to_string(projected) + ", measured " +
         std::to_string(measured);
}

}  // namespace

Status add_measured_run(const std::string& dir, int64_t row_bytes,
                        std::vector<RouterProjection>* rs) {
  SY_ASSIGN_OR_RETURN(RankReportSet set, load_rank_reports(dir));
  const std::vector<switchyard::RankReport>& reps = set.reports;
  const int P = reps.front().world_size();
  std::string routers;
  RouterProjection* r = nullptr;
  for (RouterProjection& x : *rs) {
    routers += (routers.empty() ? "" : ", ") + x.router;
    if (x.router == reps.front().router() && r == nullptr) r = &x;
  }
  if (r == nullptr)
    return InvalidArgument("--measured " + dir + ": the run's router " + reps.front().router() +
                           " is none of the traces' (" + routers + ")");
  auto pt = std::find_if(r->points.begin(), r->points.end(),
                         [P](const PointProjection& p) { return p.ranks == P; });
  if (pt == r->points.end())
    return InvalidArgument("--measured " + dir + ": a run at " + std::to_string(P) +
                           " ranks, but --ep does not project P = " + std::to_string(P));
  const int64_t E = reps.front().num_experts();
  if (E != static_cast<int64_t>(pt->layers.front().routed_E.size()))
    return InvalidArgument("--measured " + dir + ": the run has " + std::to_string(E) +
                           " experts, the " + r->router + " trace " +
                           std::to_string(pt->layers.front().routed_E.size()));
  if (reps.front().num_layers() != static_cast<int>(pt->layers.size()))
    return InvalidArgument("--measured " + dir + ": " + std::to_string(reps.front().num_layers()) +
                           " MoE layers, the trace has " + std::to_string(pt->layers.size()));
  MeasuredPoint m;
  m.dir = dir;
  const bool pairs = !pt->layers.front().pair_rows_RR.empty();
  for (const LayerProjection& lp : pt->layers) {
    const int l = static_cast<int>(lp.layer);
    // Sums over the run's forwards; times per forward (step) in step order.
    std::vector<int64_t> rows_RR(static_cast<size_t>(P) * P, 0), bytes_RR(rows_RR.size(), 0);
    std::vector<int64_t> routed_E(static_cast<size_t>(E), 0), dropped_E(routed_E.size(), 0),
        kept_E(routed_E.size(), 0);
    // step -> per phase the min over ranks (count exchange, dispatch, return), max of experts
    std::map<int64_t, std::array<double, 4>> step_t;
    for (const switchyard::RankReport& rk : reps) {
      const int q = rk.rank();
      for (const switchyard::LayerStepReport& e : rk.entries()) {
        if (e.layer() != l) continue;
        for (int d = 0; d < e.rows_sent_to_peer_size(); ++d) {
          rows_RR[static_cast<size_t>(q) * P + d] += e.rows_sent_to_peer(d);
          bytes_RR[static_cast<size_t>(q) * P + d] += e.bytes_sent_to_peer(d);
        }
        for (int x = 0; x < e.routed_per_expert_size(); ++x) routed_E[x] += e.routed_per_expert(x);
        for (int x = 0; x < e.dropped_per_expert_size(); ++x)
          dropped_E[x] += e.dropped_per_expert(x);
        for (int j = 0; j < e.received_per_local_expert_size(); ++j)
          kept_E[static_cast<size_t>(local_expert_id(rk, j))] += e.received_per_local_expert(j);
        const auto& t = e.times();
        // Reports from before dispatch_exchange_s count the permute in the dispatch.
        const double disp = t.dispatch_exchange_s() > 0 ? t.dispatch_exchange_s() : t.dispatch_s();
        const std::array<double, 4> v = {t.count_exchange_s(), disp, t.combine_s(), t.experts_s()};
        auto [it, fresh] = step_t.emplace(e.step(), v);
        if (!fresh)
          for (int k = 0; k < 3; ++k) it->second[k] = std::min(it->second[k], v[k]);
        if (!fresh) it->second[3] = std::max(it->second[3], v[3]);
      }
    }
    std::vector<double> xs, cs;
    for (const auto& [step, t] : step_t) {
      xs.push_back(t[0] + t[1] + t[2]);
      cs.push_back(t[3]);
    }
    m.exchange_s.push_back(median(xs));
    m.compute_s.push_back(median(cs));
    if (!m.first_difference.empty()) continue;
    const std::string at = "layer " + std::to_string(l);
    for (int64_t x = 0; x < E && m.first_difference.empty(); ++x) {
      if (routed_E[x] != lp.routed_E[x])
        m.first_difference =
            differ(at + " expert " + std::to_string(x) + " routed", lp.routed_E[x], routed_E[x]);
      else if (dropped_E[x] != lp.dropped_E[x])
        m.first_difference =
            differ(at + " expert " + std::to_string(x) + " dropped", lp.dropped_E[x], dropped_E[x]);
      else if (kept_E[x] != lp.routed_E[x] - lp.dropped_E[x])
        m.first_difference = differ(at + " expert " + std::to_string(x) + " received",
                                    lp.routed_E[x] - lp.dropped_E[x], kept_E[x]);
      m.numbers_compared += 3;
    }
    if (!pairs) continue;
    for (int q = 0; q < P && m.first_difference.empty(); ++q)
      for (int d = 0; d < P && m.first_difference.empty(); ++d) {
        const size_t i = static_cast<size_t>(q) * P + d;
        const int64_t want_bytes = q == d ? 0 : lp.pair_rows_RR[i] * row_bytes;
        const std::string pair = at + " rank " + std::to_string(q) + " -> " + std::to_string(d);
        if (rows_RR[i] != lp.pair_rows_RR[i])
          m.first_difference = differ(pair + " rows", lp.pair_rows_RR[i], rows_RR[i]);
        else if (bytes_RR[i] != want_bytes)
          m.first_difference = differ(pair + " bytes", want_bytes, bytes_RR[i]);
        m.numbers_compared += 2;
      }
  }
  pt->measured.push_back(std::move(m));
  return Status::Ok();
}

}  // namespace sy::launch
