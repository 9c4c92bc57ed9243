// Merge of rank reports into a ClusterReport, with the cross-rank consistency checks.
// Legend: P ranks, E experts, e local experts of a rank.
#include "runtime/report/cluster_report.h"

#include <algorithm>
#include <array>
#include <iterator>
#include <map>
#include <set>
#include <sstream>

#include "routers/metrics.h"
#include "runtime/report/report_io.h"

namespace sy {
using switchyard::ClusterReport;
using switchyard::LayerStepReport;
using switchyard::PhaseTimes;
using switchyard::RankReport;
using switchyard::RoutingMetricsReport;
using switchyard::TrafficSplit;

std::vector<PhaseValue> phase_values(const PhaseTimes& t) {
  return {{"route", t.route_s()},
          {"plan", t.plan_s()},
          {"count_exchange", t.count_exchange_s()},
          {"dispatch", t.dispatch_s()},
          {"experts", t.experts_s()},
          {"combine", t.combine_s()},
          {"unpermute", t.unpermute_s()}};
}

std::vector<std::vector<double>> rank_phase_seconds(const ClusterReport& c, int layer) {
  std::vector<std::vector<double>> out;
  for (const RankReport& r : c.ranks()) {
    std::vector<double> sum(7, 0.0);
    for (const LayerStepReport& e : r.entries()) {
      if (layer >= 0 && e.layer() != layer) continue;
      const std::vector<PhaseValue> t = phase_values(e.times());
      for (size_t k = 0; k < t.size(); ++k) sum[k] += t[k].seconds;
    }
    out.push_back(std::move(sum));
  }
  return out;
}

namespace {

constexpr int kPhases = 7;
using Phases = std::array<double, kPhases>;

void set_phases(const Phases& a, PhaseTimes* t) {
  t->set_route_s(a[0]);
  t->set_plan_s(a[1]);
  t->set_count_exchange_s(a[2]);
  t->set_dispatch_s(a[3]);
  t->set_experts_s(a[4]);
  t->set_combine_s(a[5]);
  t->set_unpermute_s(a[6]);
}

// Sums over ranks and steps of one layer. Traffic matrices are [i * P + j], i the sender.
struct LayerAcc {
  std::set<int64_t> steps;
  std::vector<int64_t> load_E, routed_E, dropped_E;
  std::vector<int64_t> rows_sent_PP, rows_recv_PP, bytes_sent_PP, bytes_recv_PP;
  std::vector<int64_t> received_P;  // rows each rank's experts received
  std::vector<Phases> times_P;      // each rank's total per phase
  int64_t routed = 0, dropped = 0, received = 0, tokens = 0;
  int64_t tokens_routed = 0;  // LayerStepReport.tokens: the denominator of bytes per token
  // Whether any entry carried the list at all: a list nobody fills is not checked.
  bool per_expert_complete = true, any_rows_sent = false, any_rows_recv = false;
  bool any_bytes_sent = false, any_bytes_recv = false;
  RoutingMetrics metrics;

  LayerAcc(int64_t P, int64_t E)
      : load_E(E),
        routed_E(E),
        dropped_E(E),
        rows_sent_PP(P * P),
        rows_recv_PP(P * P),
        bytes_sent_PP(P * P),
        bytes_recv_PP(P * P),
        received_P(P),
        times_P(P, Phases{}) {}
};

bool add(int64_t* acc, int64_t v) {
  return !__builtin_add_overflow(*acc, v, acc);
}

template <typename... Args>
Status layer_error(int layer, const Args&... parts) {
  std::ostringstream os;
  os << "layer " << layer << ": ";
  (os << ... << parts);
  return BadInput(os.str());
}

Status overflow(int layer) {
  return layer_error(layer, "counts overflow int64");
}

// Adds one rank's entry into the layer's sums.
Status accumulate(const RankReport& r, const LayerStepReport& e, LayerAcc* L) {
  const int64_t P = r.world_size(), p = r.rank();
  const int layer = e.layer();
  L->steps.insert(e.step());
  for (int j = 0; j < e.received_per_local_expert_size(); ++j) {
    const int64_t v = e.received_per_local_expert(j);
    if (!add(&L->load_E[static_cast<size_t>(local_expert_id(r, j))], v) || !add(&L->received, v) ||
        !add(&L->received_P[static_cast<size_t>(p)], v))
      return overflow(layer);
  }
  for (int x = 0; x < e.routed_per_expert_size(); ++x)
    if (!add(&L->routed_E[static_cast<size_t>(x)], e.routed_per_expert(x))) return overflow(layer);
  for (int x = 0; x < e.dropped_per_expert_size(); ++x)
    if (!add(&L->dropped_E[static_cast<size_t>(x)], e.dropped_per_expert(x)))
      return overflow(layer);
  if (e.routed_per_expert().empty() ||
      (e.dropped_per_expert().empty() && e.assignments_dropped() > 0))
    L->per_expert_complete = false;
  if (!add(&L->routed, e.assignments_routed()) || !add(&L->dropped, e.assignments_dropped()) ||
      !add(&L->tokens_routed, e.tokens()))
    return overflow(layer);
  for (int64_t q = 0; q < P; ++q) {
    const auto get = [q](const google::protobuf::RepeatedField<int64_t>& v) {
      return v.empty() ? int64_t{0} : v.Get(static_cast<int>(q));
    };
    if (!add(&L->rows_sent_PP[p * P + q], get(e.rows_sent_to_peer())) ||
        !add(&L->bytes_sent_PP[p * P + q], get(e.bytes_sent_to_peer())) ||
        !add(&L->rows_recv_PP[q * P + p], get(e.rows_recv_from_peer())) ||
        !add(&L->bytes_recv_PP[q * P + p], get(e.bytes_recv_from_peer())))
      return overflow(layer);
  }
  L->any_rows_sent |= !e.rows_sent_to_peer().empty();
  L->any_rows_recv |= !e.rows_recv_from_peer().empty();
  L->any_bytes_sent |= !e.bytes_sent_to_peer().empty();
  L->any_bytes_recv |= !e.bytes_recv_from_peer().empty();
  const std::vector<PhaseValue> t = phase_values(e.times());
  for (int k = 0; k < kPhases; ++k) L->times_P[static_cast<size_t>(p)][k] += t[k].seconds;

  // Routing metrics: the per-rank sums, merged and finalized by routers/metrics.
  const RoutingMetricsReport& m = e.metrics();
  if (!add(&L->tokens, m.tokens())) return overflow(layer);
  RoutingMetrics part;
  part.E = r.num_experts();
  part.K = r.top_k();
  part.tokens = m.tokens();
  part.entropy_sum = m.entropy_sum();
  part.exp_entropy_sum = m.exp_entropy_sum();
  part.topk_mass_sum = m.topk_mass_sum();
  part.load_E.assign(static_cast<size_t>(part.E), 0);
  part.dropped_E.assign(static_cast<size_t>(part.E), 0);
  std::copy(e.routed_per_expert().begin(), e.routed_per_expert().end(), part.load_E.begin());
  std::copy(e.dropped_per_expert().begin(), e.dropped_per_expert().end(), part.dropped_E.begin());
  part.have_drops = true;
  routing_metrics_merge(part, &L->metrics);
  return Status::Ok();
}

// The most specific check first, so the message points at the rank whose numbers disagree.
Status check_layer(int layer, int64_t P, const std::vector<const RankReport*>& by_rank,
                   const LayerAcc& L) {
  if (L.any_rows_recv) {
    for (int64_t j = 0; j < P; ++j) {
      int64_t in = 0;
      for (int64_t i = 0; i < P; ++i)
        if (!add(&in, L.rows_recv_PP[i * P + j])) return overflow(layer);
      if (in != L.received_P[j])
        return layer_error(layer, "rank ", j, " received ", in,
                           " rows from its peers but its experts received ", L.received_P[j]);
    }
  }
  if (L.per_expert_complete) {
    for (size_t x = 0; x < L.load_E.size(); ++x) {
      if (L.load_E[x] == L.routed_E[x] - L.dropped_E[x]) continue;
      int owner = 0;
      for (int64_t q = 0; q < P; ++q)
        for (int j = 0; j < by_rank[q]->local_expert_count(); ++j)
          if (local_expert_id(*by_rank[q], j) == static_cast<int32_t>(x))
            owner = static_cast<int>(q);
      return layer_error(layer, "expert ", x, " (owned by rank ", owner, ") received ", L.load_E[x],
                         " rows but the ranks routed ", L.routed_E[x], " - dropped ",
                         L.dropped_E[x], " to it");
    }
  }
  const auto check_pairs = [&](const std::vector<int64_t>& sent, const std::vector<int64_t>& recv,
                               const char* unit) -> Status {
    for (int64_t i = 0; i < P; ++i)
      for (int64_t j = 0; j < P; ++j)
        if (sent[i * P + j] != recv[i * P + j])
          return layer_error(layer, "rank ", i, " sent ", sent[i * P + j], " ", unit, " to rank ",
                             j, " but rank ", j, " received ", recv[i * P + j], " from rank ", i);
    return Status::Ok();
  };
  if (L.any_rows_sent && L.any_rows_recv)
    SY_RETURN_IF_ERROR(check_pairs(L.rows_sent_PP, L.rows_recv_PP, "rows"));
  if (L.any_bytes_sent && L.any_bytes_recv)
    SY_RETURN_IF_ERROR(check_pairs(L.bytes_sent_PP, L.bytes_recv_PP, "bytes"));
  if (L.received != L.routed - L.dropped)
    return layer_error(layer, "rows received by all ranks (", L.received, ") != routed (", L.routed,
                       ") - dropped (", L.dropped, ") summed over ranks and steps");
  return Status::Ok();
}

void fill_summary(int layer, int64_t P, const LayerAcc& L, ClusterReport::LayerSummary* s) {
  s->set_layer(layer);
  s->set_steps(static_cast<int64_t>(L.steps.size()));
  for (int64_t v : L.load_E) s->add_load_per_expert(v);
  for (int64_t v : L.routed_E) s->add_routed_per_expert(v);
  for (int64_t v : L.dropped_E) s->add_dropped_per_expert(v);
  for (int64_t v : L.bytes_sent_PP) s->add_traffic_bytes(v);
  for (int64_t v : L.rows_sent_PP) s->add_traffic_rows(v);
  const int64_t max_load =
      L.load_E.empty() ? 0 : *std::max_element(L.load_E.begin(), L.load_E.end());
  if (L.received > 0) {
    const double mean = static_cast<double>(L.received) / static_cast<double>(L.load_E.size());
    s->set_imbalance_max_over_mean(static_cast<double>(max_load) / mean);
    s->set_imbalance_excess((static_cast<double>(max_load) - mean) / mean);
  }
  s->set_routed(L.routed);
  s->set_dropped(L.dropped);
  s->set_received(L.received);
  Phases mean{}, max{};
  for (const Phases& t : L.times_P)
    for (int k = 0; k < kPhases; ++k) {
      mean[k] += t[k] / static_cast<double>(P);
      max[k] = std::max(max[k], t[k]);
    }
  set_phases(mean, s->mutable_mean_times());
  set_phases(max, s->mutable_max_times());
  if (L.metrics.E > 0) metrics_to_report(L.metrics, s->mutable_metrics());
}

// Dispatch bytes and rows of one layer (or of all) by tier: 0 same rank, 1 intra-host,
// 2 inter-host.
struct TierSums {
  std::array<int64_t, 3> bytes{}, rows{};
};

Status sum_tiers(int layer, int64_t P, const LayerAcc& L, const std::vector<int>& host_of,
                 TierSums* t) {
  for (int64_t i = 0; i < P; ++i)
    for (int64_t j = 0; j < P; ++j) {
      const size_t k = i == j                                                               ? 0
                       : host_of[static_cast<size_t>(i)] == host_of[static_cast<size_t>(j)] ? 1
                                                                                            : 2;
      if (!add(&t->bytes[k], L.bytes_sent_PP[i * P + j]) ||
          !add(&t->rows[k], L.rows_sent_PP[i * P + j]))
        return overflow(layer);
    }
  return Status::Ok();
}

// Shares are of the rows: the runtime's dispatcher counts no bytes for what a rank keeps
// (comm/dispatcher.h), so a share of the bytes would hide the same-rank tier.
void set_split(const TierSums& t, int64_t tokens, TrafficSplit* out) {
  const double total = static_cast<double>(t.rows[0]) + static_cast<double>(t.rows[1]) +
                       static_cast<double>(t.rows[2]);
  switchyard::TrafficTier* tiers[3] = {out->mutable_same_rank(), out->mutable_intra_host(),
                                       out->mutable_inter_host()};
  for (size_t k = 0; k < 3; ++k) {
    const double b = static_cast<double>(t.bytes[k]);
    tiers[k]->set_bytes(t.bytes[k]);
    tiers[k]->set_rows(t.rows[k]);
    tiers[k]->set_share(total > 0 ? static_cast<double>(t.rows[k]) / total : 0.0);
    tiers[k]->set_bytes_per_token(tokens > 0 ? b / static_cast<double>(tokens) : 0.0);
  }
  out->set_tokens(tokens);
}

// Each rank's step times over the steps every rank timed, and the stragglers among them
// (ClusterReport.rank_times says the rule). Leaves c alone when some rank timed no step.
void fill_rank_times(const std::vector<const RankReport*>& by_rank, ClusterReport* c) {
  std::set<int64_t> common;
  for (size_t i = 0; i < by_rank.size(); ++i) {
    std::set<int64_t> mine;
    for (const switchyard::StepTime& t : by_rank[i]->step_times()) mine.insert(t.step());
    if (i == 0) {
      common = std::move(mine);
    } else {
      std::set<int64_t> both;
      std::set_intersection(common.begin(), common.end(), mine.begin(), mine.end(),
                            std::inserter(both, both.end()));
      common = std::move(both);
    }
  }
  if (common.empty()) return;
  double step_sum = 0;
  for (const RankReport* r : by_rank) {
    ClusterReport::RankTime* t = c->add_rank_times();
    t->set_rank(r->rank());
    t->set_steps(static_cast<int64_t>(common.size()));
    for (const switchyard::StepTime& s : r->step_times()) {
      if (common.count(s.step()) == 0) continue;
      t->set_step_seconds(t->step_seconds() + s.seconds());
      t->set_collective_seconds(t->collective_seconds() + s.collective_s());
    }
    t->set_own_seconds(std::max(0.0, t->step_seconds() - t->collective_seconds()));
    step_sum += t->step_seconds();
  }
  const size_t P = by_rank.size();
  if (P < 2) return;
  const double mean_step = step_sum / static_cast<double>(P);
  // The median of the other ranks' own work: the sorted values without one copy of this rank's.
  std::vector<double> sorted;
  for (const auto& t : c->rank_times()) sorted.push_back(t.own_seconds());
  std::sort(sorted.begin(), sorted.end());
  for (size_t i = 0; i < P; ++i) {
    ClusterReport::RankTime* t = c->mutable_rank_times(static_cast<int>(i));
    const size_t k = static_cast<size_t>(
        std::lower_bound(sorted.begin(), sorted.end(), t->own_seconds()) - sorted.begin());
    const auto other = [&](size_t j) { return sorted[j < k ? j : j + 1]; };
    const size_t m = P - 1;
    const double median = m % 2 ? other(m / 2) : 0.5 * (other(m / 2 - 1) + other(m / 2));
    if (t->own_seconds() < 1.5 * median || t->own_seconds() - median < 0.2 * mean_step) continue;
    t->set_straggler(true);
    const double n = static_cast<double>(t->steps());
    std::ostringstream os;
    os.setf(std::ios::fixed);
    os.precision(3);
    os << "rank " << t->rank() << " is a straggler: " << t->own_seconds() / n
       << " s of its own work per step against a median of " << median / n
       << " s on the other ranks (they wait for it inside their collectives; " << t->steps()
       << " step" << (t->steps() == 1 ? "" : "s") << " timed)";
    c->add_warnings(os.str());
  }
}

}  // namespace

std::string rank_ranges(const std::vector<int>& ranks) {
  std::string out;
  for (size_t a = 0; a < ranks.size();) {
    size_t b = a;
    while (b + 1 < ranks.size() && ranks[b + 1] == ranks[b] + 1) ++b;
    if (!out.empty()) out += ", ";
    out += std::to_string(ranks[a]);
    if (b > a) out += (b == a + 1 ? ", " : "-") + std::to_string(ranks[b]);
    a = b + 1;
  }
  return out;
}

std::string RankHosts::ranks_of(int h) const {
  std::vector<int> ranks;
  for (size_t r = 0; r < of_rank.size(); ++r)
    if (of_rank[r] == h) ranks.push_back(static_cast<int>(r));
  return rank_ranges(ranks);
}

RankHosts rank_hosts(const ClusterReport& c) {
  RankHosts h;
  if (c.rank_hosts_size() != c.world_size()) return h;
  std::map<std::string, int> index;
  for (const std::string& name : c.rank_hosts()) {
    if (name.empty()) return RankHosts{};
    const auto [it, fresh] = index.emplace(name, static_cast<int>(h.names.size()));
    if (fresh) h.names.push_back(name);
    h.of_rank.push_back(it->second);
  }
  return h;
}

void metrics_to_report(const RoutingMetrics& m, RoutingMetricsReport* out) {
  out->set_tokens(m.tokens);
  out->set_entropy(m.entropy);
  out->set_entropy_norm(m.entropy_norm);
  out->set_effective_experts(m.effective_experts);
  out->set_topk_mass(m.topk_mass);
  out->set_load_entropy_norm(m.load_entropy_norm);
  out->set_utilization(m.utilization);
  out->set_imbalance(m.imbalance);
  out->set_load_cv(m.load_cv);
  out->set_drop_fraction(m.drop_fraction);
  out->set_collapsed(m.collapsed);
  out->set_entropy_sum(m.entropy_sum);
  out->set_exp_entropy_sum(m.exp_entropy_sum);
  out->set_topk_mass_sum(m.topk_mass_sum);
}

StatusOr<ClusterReport> merge_rank_reports(const std::vector<RankReport>& reports,
                                           const std::vector<std::string>& sources) {
  for (size_t i = 0; i < reports.size(); ++i)
    SY_RETURN_IF_ERROR(check_rank_report(
        reports[i], i < sources.size() ? sources[i] : "rank " + std::to_string(reports[i].rank())));
  SY_RETURN_IF_ERROR(check_rank_report_set(reports, sources));
  std::vector<const RankReport*> by_rank(reports.size());
  for (const RankReport& r : reports) by_rank[static_cast<size_t>(r.rank())] = &r;
  const RankReport& ref = *by_rank[0];
  const int64_t P = ref.world_size(), E = ref.num_experts();

  std::set<int> layers;
  for (const LayerStepReport& e : ref.entries()) layers.insert(e.layer());
  // What the merge allocates, bounded before it allocates (the inputs are untrusted).
  const double cells = static_cast<double>(layers.size()) * static_cast<double>(3 * E + 5 * P * P);
  if (cells > static_cast<double>(int64_t{1} << 28))
    return BadInput("reports too large to merge: " + std::to_string(layers.size()) + " layers x (" +
                    std::to_string(E) + " experts, " + std::to_string(P) + "^2 rank pairs)");

  std::map<int, LayerAcc> acc;
  for (int layer : layers) acc.emplace(layer, LayerAcc(P, E));
  for (const RankReport* r : by_rank)
    for (const LayerStepReport& e : r->entries())
      SY_RETURN_IF_ERROR(accumulate(*r, e, &acc.at(e.layer())));
  for (const auto& [layer, L] : acc) SY_RETURN_IF_ERROR(check_layer(layer, P, by_rank, L));

  ClusterReport c;
  c.set_world_size(ref.world_size());
  c.set_router(ref.router());
  c.set_num_experts(ref.num_experts());
  c.set_top_k(ref.top_k());
  c.set_num_layers(ref.num_layers());
  std::vector<int> hostless;
  for (const RankReport* r : by_rank) {
    c.add_rank_hosts(r->host());
    if (r->host().empty()) hostless.push_back(r->rank());
  }
  const RankHosts hosts = rank_hosts(c);
  c.set_num_hosts(static_cast<int32_t>(hosts.names.size()));
  if (!hostless.empty())
    c.add_warnings((hostless.size() == 1 ? "rank " : "ranks ") + rank_ranges(hostless) +
                   (hostless.size() == 1 ? " has" : " have") +
                   " no host (reports of an older or foreign producer?): the traffic split into "
                   "intra-host and inter-host is left out");
  TierSums all;
  int64_t most_tokens = 0;
  double bytes_per_token[3] = {0, 0, 0};
  for (const auto& [layer, L] : acc) {
    ClusterReport::LayerSummary* s = c.add_layers();
    fill_summary(layer, P, L, s);
    if (hosts.names.empty()) continue;
    TierSums t;
    SY_RETURN_IF_ERROR(sum_tiers(layer, P, L, hosts.of_rank, &t));
    set_split(t, L.tokens_routed, s->mutable_traffic_split());
    for (size_t k = 0; k < 3; ++k)
      if (!add(&all.bytes[k], t.bytes[k]) || !add(&all.rows[k], t.rows[k])) return overflow(layer);
    most_tokens = std::max(most_tokens, L.tokens_routed);
    bytes_per_token[0] += s->traffic_split().same_rank().bytes_per_token();
    bytes_per_token[1] += s->traffic_split().intra_host().bytes_per_token();
    bytes_per_token[2] += s->traffic_split().inter_host().bytes_per_token();
  }
  if (!hosts.names.empty()) {
    // A token passes every MoE layer: what it costs over the model is the sum of the layers'.
    TrafficSplit* total = c.mutable_traffic_split();
    set_split(all, most_tokens, total);
    total->mutable_same_rank()->set_bytes_per_token(bytes_per_token[0]);
    total->mutable_intra_host()->set_bytes_per_token(bytes_per_token[1]);
    total->mutable_inter_host()->set_bytes_per_token(bytes_per_token[2]);
  }
  fill_rank_times(by_rank, &c);
  for (const RankReport* r : by_rank)
    c.set_skipped_steps(std::max(c.skipped_steps(), r->skipped_steps()));
  for (const RankReport* r : by_rank) *c.add_ranks() = *r;
  return c;
}

}  // namespace sy
