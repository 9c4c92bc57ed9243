#include "runtime/report/load_report.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <utility>

#include "comm/fault.h"
#include "runtime/core/check.h"
#include "runtime/core/version.h"
#include "runtime/report/cluster_report.h"
#include "runtime/report/report_io.h"

namespace sy {

RoutingMetrics layer_step_metrics(const MoeLayer& layer) {
  const MoeStepStats& st = layer.last_stats();
  const RouterOutput& ro = layer.router_output();
  const MoeLayerConfig& lc = layer.config();
  if (ro.probs_TE.data.host_accessible())
    return routing_metrics_from_counts(ro.probs_TE.ptr(), ro.topk_ids_TK.data(), st.T,
                                       lc.num_experts, ro.K, st.routed_E.data(),
                                       st.dropped_E.data(), {}, layer.last_mask());
  // The layer runs on a device: the metrics read host copies of what they need.
  const std::vector<float> probs = ro.probs_TE.data.to_host();
  const std::vector<int32_t> ids = ro.topk_ids_TK.to_host();
  std::vector<uint8_t> mask;
  if (layer.last_mask()) {
    mask.resize(static_cast<size_t>(st.T));
    ro.probs_TE.memory()->copy_to_host(mask.data(), layer.last_mask(), st.T);
  }
  return routing_metrics_from_counts(probs.data(), ids.data(), st.T, lc.num_experts, ro.K,
                                     st.routed_E.data(), st.dropped_E.data(), {},
                                     mask.empty() ? nullptr : mask.data());
}

namespace {

// [P+1] this rank's unmasked tokens by how many distinct ranks hold their top-k experts, from
// the router's ids and the layer's placement (before capacity drops: what the router asked for).
std::vector<int64_t> tokens_by_rank_count(const MoeLayer& layer, int64_t P) {
  const MoeStepStats& st = layer.last_stats();
  const MoeLayerConfig& lc = layer.config();
  const int64_t E = lc.num_experts, K = lc.top_k;
  std::vector<int32_t> owner_E(static_cast<size_t>(E), 0);
  if (lc.placement && lc.placement->ranks == P) {
    const std::vector<std::vector<int32_t>> ranks = lc.placement->ranks_of_expert();
    for (int64_t e = 0; e < E; ++e)
      if (!ranks[static_cast<size_t>(e)].empty()) owner_E[e] = ranks[static_cast<size_t>(e)][0];
  } else if (E % P == 0) {
    for (int64_t e = 0; e < E; ++e) owner_E[e] = static_cast<int32_t>(e / (E / P));
  }
  const RouterOutput& ro = layer.router_output();
  std::vector<int32_t> host_ids;
  const int32_t* ids_TK = ro.topk_ids_TK.data();
  if (!ro.topk_ids_TK.host_accessible()) {
    host_ids = ro.topk_ids_TK.to_host();
    ids_TK = host_ids.data();
  }
  std::vector<uint8_t> mask;
  const uint8_t* mask_T = layer.last_mask();
  if (mask_T && !ro.probs_TE.data.host_accessible()) {
    mask.resize(static_cast<size_t>(st.T));
    ro.probs_TE.memory()->copy_to_host(mask.data(), mask_T, st.T);
    mask_T = mask.data();
  }
  std::vector<int64_t> hist(static_cast<size_t>(P + 1), 0);
  std::vector<int64_t> seen_P(static_cast<size_t>(P), -1);  // the last token that hit the rank
  for (int64_t t = 0; t < st.T; ++t) {
    if (mask_T && !mask_T[t]) continue;
    int64_t ranks = 0;
    for (int64_t k = 0; k < K; ++k) {
      const int32_t e = ids_TK[t * K + k];
      if (e < 0 || e >= E) continue;
      int64_t& seen = seen_P[static_cast<size_t>(owner_E[e])];
      if (seen != t) ++ranks;
      seen = t;
    }
    ++hist[static_cast<size_t>(ranks)];
  }
  return hist;
}

}  // namespace

void fill_layer_step(const MoeLayer& layer, int l, int64_t step, const RoutingMetrics& m,
                     switchyard::LayerStepReport* r) {
  const MoeStepStats& st = layer.last_stats();
  r->set_layer(l);
  r->set_step(step);
  r->set_tokens(st.tokens);
  r->set_assignments_routed(st.routed);
  r->set_assignments_dropped(st.dropped);
  for (int64_t v : st.routed_E) r->add_routed_per_expert(v);
  for (int64_t v : st.dropped_E) r->add_dropped_per_expert(v);
  const ExchangeLoad& x = st.exchange;
  for (int64_t v : x.rows_recv_e) r->add_received_per_local_expert(v);
  for (int64_t v : x.rows_sent_P) r->add_rows_sent_to_peer(v);
  for (int64_t v : x.rows_recv_P) r->add_rows_recv_from_peer(v);
  for (int64_t v : x.bytes_sent_P) r->add_bytes_sent_to_peer(v);
  for (int64_t v : x.bytes_recv_P) r->add_bytes_recv_from_peer(v);
  for (int64_t v : tokens_by_rank_count(
           layer, std::max<int64_t>(1, static_cast<int64_t>(x.rows_sent_P.size()))))
    r->add_tokens_by_rank_count(v);
  // The report's phases (proto/report.proto, a fixed format) are coarser than the layer's:
  // its dispatch_s includes the permute, its combine_s is the return exchange and its
  // unpermute_s the weighted combine plus the shared expert.
  const MoePhaseTimes& t = st.forward;
  auto* pt = r->mutable_times();
  pt->set_route_s(t.route_s);
  pt->set_plan_s(t.plan_s);
  pt->set_count_exchange_s(t.count_exchange_s);
  pt->set_dispatch_s(t.permute_s + t.dispatch_exchange_s);
  pt->set_dispatch_exchange_s(t.dispatch_exchange_s);
  pt->set_experts_s(t.experts_s);
  pt->set_combine_s(t.return_exchange_s);
  pt->set_unpermute_s(t.weighted_combine_s + t.shared_expert_s);
  r->set_exchange_bandwidth_gbps(st.bandwidth_gbps);
  metrics_to_report(m, r->mutable_metrics());
}

void fill_rank_header(const MoeLayer& first, int num_layers, const std::string& config_text,
                      const Communicator& comm, switchyard::RankReport* r) {
  const MoeLayerConfig& lc = first.config();
  r->set_rank(comm.rank());
  r->set_world_size(comm.size());
  r->set_host(host_name());
  r->set_router(lc.router.name);
  r->set_num_experts(static_cast<int32_t>(lc.num_experts));
  r->set_top_k(static_cast<int32_t>(lc.top_k));
  r->set_d_model(static_cast<int32_t>(lc.d_model));
  r->set_local_expert_begin(static_cast<int32_t>(first.first_local_expert()));
  r->set_local_expert_count(static_cast<int32_t>(first.num_local_experts()));
  const std::vector<int32_t>& ids = first.local_expert_ids();
  for (size_t j = 0; j < ids.size(); ++j)
    if (ids[j] != first.first_local_expert() + static_cast<int64_t>(j)) {  // not a range
      r->set_local_expert_begin(0);
      for (int32_t e : ids) r->add_local_expert_ids(e);
      break;
    }
  r->set_num_layers(num_layers);
  r->set_config_text(config_text);
  r->set_switchyard_version(kVersion);
}

RoutingMetrics merge_routing_metrics(Communicator* comm, RoutingMetrics m, int layer, int64_t E,
                                     int64_t K) {
  if (m.E == 0) {  // a rank with no tokens
    m.E = E;
    m.K = K;
    m.load_E.assign(static_cast<size_t>(m.E), 0);
    m.dropped_E.assign(static_cast<size_t>(m.E), 0);
  }
  double sums[3] = {m.entropy_sum, m.exp_entropy_sum, m.topk_mass_sum};
  comm->allreduce(sums, 3, ReduceOp::kSum, {"metrics.sums", layer});
  int64_t tokens = m.tokens;
  comm->allreduce(&tokens, 1, ReduceOp::kSum, {"metrics.tokens", layer});
  comm->allreduce(m.load_E.data(), m.E, ReduceOp::kSum, {"metrics.load", layer});
  comm->allreduce(m.dropped_E.data(), m.E, ReduceOp::kSum, {"metrics.dropped", layer});
  m.entropy_sum = sums[0];
  m.exp_entropy_sum = sums[1];
  m.topk_mass_sum = sums[2];
  m.tokens = tokens;
  m.have_drops = true;
  routing_metrics_finalize(&m);
  return m;
}

StepTimer::StepTimer(const Communicator& comm)
    : comm_(comm), t0_(std::chrono::steady_clock::now()), collective0_(comm.collective_seconds()) {}

switchyard::StepTime StepTimer::stop(int64_t step) const {
  switchyard::StepTime t;
  t.set_step(step);
  t.set_seconds(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count());
  t.set_collective_s(comm_.collective_seconds() - collective0_);
  return t;
}

int write_rank_reports(Communicator& comm, const std::string& dir,
                       const switchyard::RankReport& report) {
  const int rank = comm.rank(), P = comm.size();
  ReportWriteOptions opt;
  // SY_FAULT=enospc@rank=r without a step: this rank's report writes fail as on a full disk.
  opt.fail_enospc = fault_fires(FaultKind::kEnospc, rank, -1);
  Status s = write_rank_report(dir, report, opt);
  if (!s.ok())  // a report is not worth losing the run for: warn and go on
    std::fprintf(stderr, "[switchyard] rank %d: warning: load report not written: %s\n", rank,
                 s.ToString().c_str());
  const int32_t failed = s.ok() ? 0 : 1;
  std::vector<int32_t> all(static_cast<size_t>(P));
  comm.allgather(&failed, all.data(), 1, {"report.written"});
  std::vector<int> failed_ranks;
  for (int r = 0; r < P; ++r)
    if (all[static_cast<size_t>(r)]) failed_ranks.push_back(r);
  const int count = static_cast<int>(failed_ranks.size());
  if (count > 0 && rank == 0)
    std::fprintf(stderr,
                 "[switchyard] warning: %d of %d load report%s not written (rank%s %s); "
                 "switchyard report %s needs every rank's\n",
                 count, P, P == 1 ? "" : "s", count == 1 ? "" : "s",
                 rank_ranges(failed_ranks).c_str(), dir.c_str());
  return count;
}

void print_routing_table(const std::vector<InferResult>& runs, int P) {
  std::printf("\n%-13s %5s %7s %8s %9s %7s %6s %9s %6s %7s %10s\n", "router", "layer", "H/logE",
              "eff.exp", "topk-mass", "load-H", "util", "max/mean", "CV", "drop%", "tok/s");
  for (const InferResult& r : runs)
    for (size_t l = 0; l < r.per_layer.size(); ++l) {
      const RoutingMetrics& m = r.per_layer[l];
      std::printf("%-13s %5zu %7.3f %8.2f %9.3f %7.3f %6.2f %9.2f %6.2f %6.2f%% %10.0f%s\n",
                  r.router.c_str(), l, m.entropy_norm, m.effective_experts, m.topk_mass,
                  m.load_entropy_norm, m.utilization, m.imbalance, m.load_cv,
                  100.0 * m.drop_fraction, r.seconds > 0 ? r.tokens / r.seconds : 0.0,
                  m.collapsed ? "  COLLAPSED" : "");
    }
  std::printf("(%d rank%s; metrics over all tokens of all ranks; tok/s is the whole job's)\n", P,
              P == 1 ? "" : "s");
}

RoutingCollector::RoutingCollector(std::vector<MoeLayer*> moe, const std::string& config_text,
                                   Communicator& comm, std::string out)
    : moe_(std::move(moe)), comm_(comm), out_(std::move(out)) {
  if (moe_.empty()) return;
  fill_rank_header(*moe_[0], static_cast<int>(moe_.size()), config_text, comm, &report_);
  mine_.resize(moe_.size());
}

namespace {

// into += add, element by element (an empty list stands for zeros: report.proto).
void add_into(const google::protobuf::RepeatedField<int64_t>& add,
              google::protobuf::RepeatedField<int64_t>* into) {
  if (into->empty()) into->Resize(add.size(), 0);
  for (int i = 0; i < add.size() && i < into->size(); ++i) into->Set(i, into->Get(i) + add.Get(i));
}

// Another forward of the same layer and step added into its entry; `m` its merged metrics.
void add_forward(const switchyard::LayerStepReport& add, const RoutingMetrics& m,
                 switchyard::LayerStepReport* into) {
  into->set_tokens(into->tokens() + add.tokens());
  into->set_assignments_routed(into->assignments_routed() + add.assignments_routed());
  into->set_assignments_dropped(into->assignments_dropped() + add.assignments_dropped());
  add_into(add.routed_per_expert(), into->mutable_routed_per_expert());
  add_into(add.dropped_per_expert(), into->mutable_dropped_per_expert());
  add_into(add.received_per_local_expert(), into->mutable_received_per_local_expert());
  add_into(add.rows_sent_to_peer(), into->mutable_rows_sent_to_peer());
  add_into(add.rows_recv_from_peer(), into->mutable_rows_recv_from_peer());
  add_into(add.bytes_sent_to_peer(), into->mutable_bytes_sent_to_peer());
  add_into(add.bytes_recv_from_peer(), into->mutable_bytes_recv_from_peer());
  add_into(add.tokens_by_rank_count(), into->mutable_tokens_by_rank_count());
  // The bandwidth over both: bytes / seconds of the two exchanges, each bandwidth x its time.
  auto xs = [](const switchyard::LayerStepReport& e) {
    return e.times().dispatch_exchange_s() + e.times().combine_s();
  };
  const double t0 = xs(*into), t1 = xs(add);
  if (t0 + t1 > 0)
    into->set_exchange_bandwidth_gbps(
        (into->exchange_bandwidth_gbps() * t0 + add.exchange_bandwidth_gbps() * t1) / (t0 + t1));
  const switchyard::PhaseTimes& a = add.times();
  switchyard::PhaseTimes* t = into->mutable_times();
  t->set_route_s(t->route_s() + a.route_s());
  t->set_plan_s(t->plan_s() + a.plan_s());
  t->set_count_exchange_s(t->count_exchange_s() + a.count_exchange_s());
  t->set_dispatch_s(t->dispatch_s() + a.dispatch_s());
  t->set_experts_s(t->experts_s() + a.experts_s());
  t->set_combine_s(t->combine_s() + a.combine_s());
  t->set_unpermute_s(t->unpermute_s() + a.unpermute_s());
  t->set_dispatch_exchange_s(t->dispatch_exchange_s() + a.dispatch_exchange_s());
  metrics_to_report(m, into->mutable_metrics());
}

}  // namespace

void RoutingCollector::add_step(int64_t step) {
  for (size_t l = 0; l < moe_.size(); ++l) {
    const MoeLayer& layer = *moe_[l];
    if (layer.last_stats().T == 0) continue;
    const RoutingMetrics part = layer_step_metrics(layer);
    routing_metrics_merge(part, &mine_[l]);
    if (out_.empty()) continue;
    const int li = static_cast<int>(l);
    auto it = entry_of_.find({li, step});
    if (it == entry_of_.end()) {
      entry_of_[{li, step}] = {report_.entries_size(), part};
      fill_layer_step(layer, li, step, part, report_.add_entries());
      continue;
    }
    switchyard::LayerStepReport more;
    fill_layer_step(layer, li, step, part, &more);
    RoutingMetrics& m = it->second.second;
    routing_metrics_merge(part, &m);
    add_forward(more, m, report_.mutable_entries(it->second.first));
  }
}

void RoutingCollector::add_loss(int64_t step, double loss) {
  if (out_.empty()) return;
  switchyard::StepLoss* l = report_.add_step_losses();
  l->set_step(step);
  l->set_loss(loss);
}

void RoutingCollector::finish(int64_t tokens, double seconds, const char* title) {
  if (moe_.empty()) return;
  InferResult res;
  res.router = moe_[0]->router().name();
  res.tokens = tokens;
  res.seconds = seconds;
  for (size_t l = 0; l < moe_.size(); ++l) {
    const MoeLayerConfig& lc = moe_[l]->config();
    res.per_layer.push_back(merge_routing_metrics(&comm_, mine_[l], static_cast<int>(l),
                                                  lc.num_experts,
                                                  moe_[l]->router().slots_per_token()));
  }
  if (comm_.rank() == 0 && title) {
    std::printf("%s", title);
    print_routing_table({res}, comm_.size());
  }
  if (!out_.empty()) {
    report_.set_wall_s(seconds);
    std::error_code ec;
    std::filesystem::create_directories(out_, ec);
    write_rank_reports(comm_, out_, report_);
    if (comm_.rank() == 0 && title)
      std::printf("load reports: %s/rank-<r>.{json,pb}; merge with: switchyard report %s\n",
                  out_.c_str(), out_.c_str());
  }
  std::fflush(stdout);
}

}  // namespace sy
