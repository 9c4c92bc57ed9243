// Plain-text rendering of a ClusterReport for the terminal (`switchyard report`).
#include <algorithm>
#include <cstdarg>
#include <cstdio>
#include <set>
#include <string>
#include <vector>

#include "runtime/report/cluster_report.h"
#include "runtime/report/report_io.h"

namespace sy {
using switchyard::ClusterReport;

namespace {

constexpr int kBarWidth = 40;
constexpr int kMaxExpertLines = 64;  // above: a compact grid instead of one line per expert
constexpr int kMaxMatrixRanks = 16;  // above: per-rank totals instead of the P x P matrix
constexpr int kMaxHostLines = 64;    // above: the first ones and a count
constexpr int kMaxRankLines = 64;    // above: the first ones, the stragglers and a count

__attribute__((format(printf, 2, 3))) void appendf(std::string* out, const char* fmt, ...) {
  char buf[512];
  va_list ap;
  va_start(ap, fmt);
  const int n = std::vsnprintf(buf, sizeof(buf), fmt, ap);
  va_end(ap);
  if (n > 0) out->append(buf, static_cast<size_t>(std::min<int>(n, sizeof(buf) - 1)));
}

double to_mib(int64_t bytes) {
  return static_cast<double>(bytes) / (1024.0 * 1024.0);
}

long long ll(int64_t v) {
  return static_cast<long long>(v);
}

void render_loads(const ClusterReport::LayerSummary& s, const std::vector<int>& owner,
                  std::string* out) {
  const int E = s.load_per_expert_size();
  if (E > kMaxExpertLines) {
    appendf(out, "  rows received per expert (dropped in brackets):\n");
    for (int e = 0; e < E; ++e) {
      const std::string dropped = "(" + std::to_string(s.dropped_per_expert(e)) + ")";
      const bool eol = e % 6 == 5 || e == E - 1;
      appendf(out, "%s e%-4d %9lld %-*s%s", e % 6 == 0 ? "   " : "", e, ll(s.load_per_expert(e)),
              eol ? 0 : 8, dropped.c_str(), eol ? "\n" : "");
    }
    return;
  }
  int64_t top = 1;
  for (int e = 0; e < E; ++e) top = std::max(top, s.load_per_expert(e) + s.dropped_per_expert(e));
  appendf(out, "  load per expert (# rows received, x dropped; bar full = %lld rows)\n", ll(top));
  appendf(out, "    %-7s %-5s %10s %9s\n", "expert", "rank", "received", "dropped");
  for (int e = 0; e < E; ++e) {
    const int64_t kept = s.load_per_expert(e), drop = s.dropped_per_expert(e);
    const double scale = static_cast<double>(kBarWidth) / static_cast<double>(top);
    const int nk = static_cast<int>(static_cast<double>(kept) * scale + 0.5);
    const int nd =
        std::min(kBarWidth - nk, static_cast<int>(static_cast<double>(drop) * scale + 0.5));
    appendf(out, "    e%-6d r%-4d %10lld %9lld  |%s%s%*s|\n", e, owner[static_cast<size_t>(e)],
            ll(kept), ll(drop), std::string(static_cast<size_t>(nk), '#').c_str(),
            std::string(static_cast<size_t>(std::max(nd, 0)), 'x').c_str(),
            kBarWidth - nk - std::max(nd, 0), "");
  }
}

void render_traffic(const ClusterReport::LayerSummary& s, int P, std::string* out) {
  if (s.traffic_bytes_size() != P * P) return;
  std::vector<int64_t> sent(static_cast<size_t>(P), 0), recv(static_cast<size_t>(P), 0);
  int64_t remote = 0;
  for (int i = 0; i < P; ++i)
    for (int j = 0; j < P; ++j) {
      const int64_t b = s.traffic_bytes(i * P + j);
      sent[static_cast<size_t>(i)] += b;
      recv[static_cast<size_t>(j)] += b;
      if (i != j) remote += b;
    }
  // Rows count every kept assignment, those that stay on their own rank too; bytes only what
  // crosses between ranks (the runtime moves no bytes to itself).
  int64_t rows = 0, self_rows = 0;
  for (int i = 0; i < s.traffic_rows_size(); ++i) {
    rows += s.traffic_rows(i);
    if (i % (P + 1) == 0) self_rows += s.traffic_rows(i);
  }
  const double pct = rows > 0 ? 100.0 / static_cast<double>(rows) : 0;
  appendf(out,
          "  traffic: %lld rows dispatched, %lld (%.1f%%) kept on their own rank, %lld (%.1f%%) "
          "sent to another: %.3f MiB between ranks\n",
          ll(rows), ll(self_rows), pct * static_cast<double>(self_rows), ll(rows - self_rows),
          pct * static_cast<double>(rows - self_rows), to_mib(remote));
  if (P > kMaxMatrixRanks) {
    appendf(out, "    %-6s %12s %12s   (MiB)\n", "rank", "sent", "received");
    for (int i = 0; i < P; ++i)
      appendf(out, "    r%-5d %12.3f %12.3f\n", i, to_mib(sent[static_cast<size_t>(i)]),
              to_mib(recv[static_cast<size_t>(i)]));
    return;
  }
  appendf(out, "  traffic matrix, MiB (row = from rank, column = to rank)\n    %-6s", "");
  for (int j = 0; j < P; ++j) appendf(out, " %9s", ("r" + std::to_string(j)).c_str());
  appendf(out, " %9s\n", "sent");
  for (int i = 0; i < P; ++i) {
    appendf(out, "    r%-5d", i);
    for (int j = 0; j < P; ++j) appendf(out, " %9.3f", to_mib(s.traffic_bytes(i * P + j)));
    appendf(out, " %9.3f\n", to_mib(sent[static_cast<size_t>(i)]));
  }
  appendf(out, "    %-6s", "recv");
  for (int j = 0; j < P; ++j) appendf(out, " %9.3f", to_mib(recv[static_cast<size_t>(j)]));
  appendf(out, "\n");
}

// Same rank / intra-host / inter-host: bytes, rows, share of the rows and bytes per token.
void render_tiers(const switchyard::TrafficSplit& t, const char* title, std::string* out) {
  appendf(out, "  %s\n    %-29s %12s %14s %8s %12s\n", title, "tier", "MiB", "rows", "share",
          "bytes/token");
  const std::pair<const char*, const switchyard::TrafficTier*> tiers[] = {
      {"same rank", &t.same_rank()},
      {"intra-host (other rank)", &t.intra_host()},
      {"inter-host", &t.inter_host()}};
  for (const auto& [name, x] : tiers)
    appendf(out, "    %-29s %12.3f %14lld %7.2f%% %12.1f\n", name, to_mib(x->bytes()),
            ll(x->rows()), 100.0 * x->share(), x->bytes_per_token());
}

void render_hosts(const ClusterReport& c, std::string* out) {
  const RankHosts hosts = rank_hosts(c);
  if (hosts.names.empty()) return;
  const int n = static_cast<int>(hosts.names.size());
  appendf(out, "hosts: %d\n", n);
  for (int h = 0; h < std::min(n, kMaxHostLines); ++h) {
    const std::string ranks = hosts.ranks_of(h);
    out->append("  " + hosts.names[static_cast<size_t>(h)] + ": rank" +
                (ranks.find_first_of(",-") == std::string::npos ? " " : "s ") + ranks + "\n");
  }
  if (n > kMaxHostLines) appendf(out, "  ... and %d more hosts\n", n - kMaxHostLines);
}

void render_times(const ClusterReport& c, const ClusterReport::LayerSummary& s, std::string* out) {
  const std::vector<PhaseValue> mean = phase_values(s.mean_times());
  const std::vector<PhaseValue> max = phase_values(s.max_times());
  appendf(out, "  time per phase, seconds per rank summed over steps\n");
  appendf(out, "    %-15s %11s %11s\n", "phase", "mean", "max");
  double total_mean = 0.0;
  for (size_t k = 0; k < mean.size(); ++k) {
    appendf(out, "    %-15s %11.6f %11.6f\n", mean[k].name, mean[k].seconds, max[k].seconds);
    total_mean += mean[k].seconds;
  }
  // The max of the totals is not the sum of the per-phase maxima: take it from the ranks.
  double total_max = 0.0;
  for (const std::vector<double>& t : rank_phase_seconds(c, s.layer())) {
    double sum = 0.0;
    for (double x : t) sum += x;
    total_max = std::max(total_max, sum);
  }
  appendf(out, "    %-15s %11.6f %11.6f\n", "total", total_mean, total_max);
  // The first step runs cold (first touches, caches, allocations): its share, said apart, so
  // the totals above are not read as the steady state.
  int64_t first = -1;
  std::set<int64_t> steps;
  double first_s = 0.0, rest_s = 0.0;
  for (const auto& r : c.ranks())
    for (const auto& e : r.entries())
      if (e.layer() == s.layer()) steps.insert(e.step());
  if (steps.size() < 2) return;
  first = *steps.begin();
  for (const auto& r : c.ranks())
    for (const auto& e : r.entries()) {
      if (e.layer() != s.layer()) continue;
      double t = 0.0;
      for (const PhaseValue& v : phase_values(e.times())) t += v.seconds;
      (e.step() == first ? first_s : rest_s) += t / c.ranks_size();
    }
  const double per_step = rest_s / static_cast<double>(steps.size() - 1);
  appendf(out,
          "    first step %lld (cold): %.6f s per rank; the other %zu steps: %.6f s per step "
          "(the first is %.2fx)\n",
          ll(first), first_s, steps.size() - 1, per_step, per_step > 0 ? first_s / per_step : 0.0);
}

// Each rank's step time and how much of it was its own work (ClusterReport.rank_times).
void render_rank_times(const ClusterReport& c, std::string* out) {
  if (c.rank_times().empty()) return;
  const int64_t n = c.rank_times(0).steps();
  appendf(out, "\n== step time per rank (%lld step%s every rank timed; seconds per step) ==\n",
          ll(n), n == 1 ? "" : "s");
  appendf(out, "  %6s %11s %13s %11s\n", "rank", "step", "collectives", "own work");
  int hidden = 0;
  for (int i = 0; i < c.rank_times_size(); ++i) {
    const ClusterReport::RankTime& t = c.rank_times(i);
    if (i >= kMaxRankLines && !t.straggler()) {
      ++hidden;
      continue;
    }
    const double k = static_cast<double>(std::max<int64_t>(t.steps(), 1));
    appendf(out, "  %6d %11.6f %13.6f %11.6f%s\n", t.rank(), t.step_seconds() / k,
            t.collective_seconds() / k, t.own_seconds() / k, t.straggler() ? "  STRAGGLER" : "");
  }
  if (hidden > 0) appendf(out, "  ... and %d more ranks, none a straggler\n", hidden);
}

}  // namespace

std::string render_cluster_text(const ClusterReport& c) {
  std::string out;
  const int P = c.world_size(), E = c.num_experts();
  int64_t steps = 0;
  for (const auto& s : c.layers()) steps = std::max(steps, s.steps());
  appendf(&out, "switchyard cluster report: router %s, %d ranks, %d experts, top-%d, %d layers\n",
          c.router().c_str(), P, E, c.top_k(), c.num_layers());
  appendf(&out, "counts are summed over %lld step%s; times are each rank's total over steps\n",
          ll(steps), steps == 1 ? "" : "s");
  for (const std::string& w : c.warnings()) appendf(&out, "warning: %s\n", w.c_str());
  if (c.skipped_steps() > 0)
    appendf(&out, "training steps skipped (non-finite gradients): %lld\n", ll(c.skipped_steps()));
  render_hosts(c, &out);
  // Owner rank of each expert.
  std::vector<int> owner(static_cast<size_t>(std::max(E, 0)), 0);
  for (const auto& r : c.ranks())
    for (int j = 0; j < r.local_expert_count(); ++j) {
      const int e = local_expert_id(r, j);
      if (e >= 0 && e < E) owner[static_cast<size_t>(e)] = r.rank();
    }
  for (const auto& s : c.layers()) {
    if (s.load_per_expert_size() != E || s.dropped_per_expert_size() != E) continue;
    const auto& m = s.metrics();
    appendf(&out, "\n== layer %d (%lld step%s) ==\n", s.layer(), ll(s.steps()),
            s.steps() == 1 ? "" : "s");
    appendf(&out, "  assignments: routed %lld, dropped %lld (%.2f%%), received %lld\n",
            ll(s.routed()), ll(s.dropped()),
            s.routed() > 0 ? 100.0 * static_cast<double>(s.dropped()) / s.routed() : 0.0,
            ll(s.received()));
    appendf(&out, "  imbalance of received load: max/mean %.3f, (max-mean)/mean %.3f\n",
            s.imbalance_max_over_mean(), s.imbalance_excess());
    appendf(&out,
            "  routing: %lld tokens, entropy %.3f nats (%.3f of log E), effective experts %.2f, "
            "top-k mass %.3f\n",
            ll(m.tokens()), m.entropy(), m.entropy_norm(), m.effective_experts(), m.topk_mass());
    appendf(&out,
            "           load entropy %.3f, utilization %.0f%%, routed max/mean %.3f, load cv %.3f, "
            "collapsed %s\n",
            m.load_entropy_norm(), 100.0 * m.utilization(), m.imbalance(), m.load_cv(),
            m.collapsed() ? "YES" : "no");
    render_loads(s, owner, &out);
    render_traffic(s, P, &out);
    if (s.has_traffic_split())
      render_tiers(s.traffic_split(),
                   "traffic by tier (dispatch payload summed over steps; share of the rows)", &out);
    render_times(c, s, &out);
  }
  render_rank_times(c, &out);
  if (c.has_traffic_split()) {
    appendf(&out, "\n== all layers ==\n");
    render_tiers(c.traffic_split(),
                 "traffic by tier (bytes/token: over all MoE layers, per token routed)", &out);
  }
  return out;
}

}  // namespace sy
