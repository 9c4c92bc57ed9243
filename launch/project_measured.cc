#include "launch/project_measured.h"

#include <algorithm>
#include <map>

#include "runtime/report/cluster_report.h"
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
  // The counts as `switchyard report` merges them (checked across ranks on the way).
  SY_ASSIGN_OR_RETURN(const switchyard::ClusterReport merged, merge_rank_reports(reps, set.files));
  MeasuredPoint m;
  m.dir = dir;
  const bool pairs = !pt->layers.front().pair_rows_RR.empty();
  for (const LayerProjection& lp : pt->layers) {
    const int l = static_cast<int>(lp.layer);
    // Times per forward (step): per phase the min over ranks (count exchange, dispatch, return),
    // the max of the experts.
    std::map<int64_t, std::array<double, 4>> step_t;
    for (const switchyard::RankReport& rk : reps)
      for (const switchyard::LayerStepReport& e : rk.entries()) {
        if (e.layer() != l) continue;
        const auto& t = e.times();
        // Reports from before dispatch_exchange_s count the permute in the dispatch.
        const double disp = t.dispatch_exchange_s() > 0 ? t.dispatch_exchange_s() : t.dispatch_s();
        const std::array<double, 4> v = {t.count_exchange_s(), disp, t.combine_s(), t.experts_s()};
        auto [it, fresh] = step_t.emplace(e.step(), v);
        if (fresh) continue;
        for (int k = 0; k < 3; ++k) it->second[k] = std::min(it->second[k], v[k]);
        it->second[3] = std::max(it->second[3], v[3]);
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
    auto s = std::find_if(merged.layers().begin(), merged.layers().end(),
                          [l](const auto& x) { return x.layer() == l; });
    if (s == merged.layers().end() || s->routed_per_expert_size() != E ||
        s->dropped_per_expert_size() != E || s->load_per_expert_size() != E ||
        (pairs && (s->traffic_rows_size() != P * P || s->traffic_bytes_size() != P * P))) {
      m.first_difference = at + ": the run's reports do not carry these counts";
      continue;
    }
    for (int64_t x = 0; x < E && m.first_difference.empty(); ++x) {
      const int i = static_cast<int>(x);
      if (s->routed_per_expert(i) != lp.routed_E[x])
        m.first_difference = differ(at + " expert " + std::to_string(x) + " routed", lp.routed_E[x],
                                    s->routed_per_expert(i));
      else if (s->dropped_per_expert(i) != lp.dropped_E[x])
        m.first_difference = differ(at + " expert " + std::to_string(x) + " dropped",
                                    lp.dropped_E[x], s->dropped_per_expert(i));
      else if (s->load_per_expert(i) != lp.routed_E[x] - lp.dropped_E[x])
        m.first_difference = differ(at + " expert " + std::to_string(x) + " received",
                                    lp.routed_E[x] - lp.dropped_E[x], s->load_per_expert(i));
      m.numbers_compared += 3;
    }
    if (!pairs) continue;
    for (int i = 0; i < P * P && m.first_difference.empty(); ++i) {
      const int64_t want_bytes = i % (P + 1) == 0 ? 0 : lp.pair_rows_RR[i] * row_bytes;
      const std::string pair =
          at + " rank " + std::to_string(i / P) + " -> " + std::to_string(i % P);
      if (s->traffic_rows(i) != lp.pair_rows_RR[i])
        m.first_difference = differ(pair + " rows", lp.pair_rows_RR[i], s->traffic_rows(i));
      else if (s->traffic_bytes(i) != want_bytes)
        m.first_difference = differ(pair + " bytes", want_bytes, s->traffic_bytes(i));
      m.numbers_compared += 2;
    }
  }
  pt->measured.push_back(std::move(m));
  return Status::Ok();
}

}  // namespace sy::launch
