// Self-contained HTML page of a ClusterReport: inline CSS, SVG charts built by hand, no
// scripts and no external resources, so report.html opens anywhere, offline, and can be
// attached to a ticket. Every string from the reports (router, hosts, warnings) is escaped.
#include <algorithm>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <string>
#include <vector>

#include "runtime/report/cluster_report.h"
#include "runtime/report/html_svg.h"
#include "runtime/report/report_io.h"

namespace sy {
using switchyard::ClusterReport;
using LayerSummary = switchyard::ClusterReport::LayerSummary;

namespace {
using namespace html;  // NOLINT: the page is built from these helpers throughout

// Categorical colours (Tableau 10), one per phase in phase_values() order.
const char* const kPhaseColors[] = {"#4e79a7", "#f28e2b", "#e15759", "#76b7b2",
                                    "#59a14f", "#edc948", "#b07aa1"};
const char* const kKeptColor = "#4e79a7";
const char* const kDroppedColor = "#e15759";
// Traffic tiers: same rank, intra-host, inter-host (the costly one in red).
const char* const kTierColors[] = {"#76b7b2", "#4e79a7", "#e15759"};
const char* const kTierNames[] = {"same rank", "intra-host", "inter-host"};

std::vector<int> expert_owners(const ClusterReport& c) {
  std::vector<int> owner(static_cast<size_t>(std::max(c.num_experts(), 0)), 0);
  for (const auto& r : c.ranks())
    for (int j = 0; j < r.local_expert_count(); ++j) {
      const int e = local_expert_id(r, j);
      if (e >= 0 && e < c.num_experts()) owner[static_cast<size_t>(e)] = r.rank();
    }
  return owner;
}

// Stacked bars of rows per expert (kept = received, dropped on top), owner ranks as bands.
std::string load_chart(const LayerSummary& s, const std::vector<int>& owner) {
  const int E = s.load_per_expert_size();
  const double W = 640, H = 300, ml = 64, mr = 48, mt = 40, mb = 46;
  const double pw = W - ml - mr, ph = H - mt - mb, slot = pw / std::max(E, 1);
  double top = 0.0;
  for (int e = 0; e < E; ++e)
    top = std::max(top, static_cast<double>(s.load_per_expert(e) + s.dropped_per_expert(e)));
  const std::vector<double> ticks = nice_ticks(top);
  const double ymax = ticks.back();
  std::string g = svg_open(static_cast<int>(W), static_cast<int>(H),
                           fmt("Load per expert, layer %d", s.layer()));
  // Owner bands: alternate shading per rank, labelled when there is room.
  for (int e = 0, band = 0; e < E; ++band) {
    int f = e;
    while (f < E && owner[static_cast<size_t>(f)] == owner[static_cast<size_t>(e)]) ++f;
    if (band % 2 == 1) g += rect(ml + e * slot, mt, (f - e) * slot, ph, "#f3f4f6");
    if ((f - e) * slot >= 24)
      g += text(ml + (e + f) * slot / 2, mt + 12, fmt("r%d", owner[static_cast<size_t>(e)]),
                "middle", "class=\"band\"");
    e = f;
  }
  g += y_axis(ticks, ml, mt, pw, ph, "rows (assignments)");
  const double bw = std::max(1.0, slot * 0.78);
  for (int e = 0; e < E; ++e) {
    const double kept = static_cast<double>(s.load_per_expert(e));
    const double drop = static_cast<double>(s.dropped_per_expert(e));
    const double x = ml + e * slot + (slot - bw) / 2;
    const double hk = kept / ymax * ph, hd = drop / ymax * ph;
    const std::string tip =
        fmt("expert %d (rank %d): %s kept, %s dropped", e, owner[static_cast<size_t>(e)],
            grouped(s.load_per_expert(e)).c_str(), grouped(s.dropped_per_expert(e)).c_str());
    g += rect(x, mt + ph - hk, bw, hk, kKeptColor, tip);
    if (drop > 0) g += rect(x, mt + ph - hk - hd, bw, hd, kDroppedColor, tip);
  }
  if (E > 0 && s.received() > 0) {
    const double mean = static_cast<double>(s.received()) / E;
    const double y = mt + ph - mean / ymax * ph;
    g +=
        fmt("<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#111827\" "
            "stroke-dasharray=\"5,4\"/>\n",
            ml, y, ml + pw, y);
    g += text(ml + pw + 4, y - 2, "mean", "start", "class=\"tick\"");
    g += text(ml + pw + 4, y + 11, short_num(mean), "start", "class=\"tick\"");
  }
  const int every = label_step(slot, 28.0);
  for (int e = 0; e < E; e += every)
    g += text(ml + (e + 0.5) * slot, mt + ph + 15, std::to_string(e), "middle", "class=\"tick\"");
  g += text(ml + pw / 2, H - 8, "expert (shaded bands: owning rank)", "middle", "class=\"axis\"");
  g += legend(ml, 20,
              {{"kept (rows received)", kKeptColor}, {"dropped by capacity", kDroppedColor}});
  return g + "</svg>\n";
}

// P x P heat map of dispatch bytes, row = sender, column = receiver. With hosts known, a strip
// coloured by host runs along both axes and a dark line is drawn wherever the host changes.
std::string traffic_chart(const LayerSummary& s, int P, const RankHosts& hosts,
                          const std::string& svg_id = "", const std::string& label = "") {
  const bool by_host = static_cast<int>(hosts.of_rank.size()) == P;
  const auto host_of = [&](int r) { return hosts.of_rank[static_cast<size_t>(r)]; };
  const int cell = std::max(4, std::min(56, 320 / std::max(P, 1)));
  const double plot = static_cast<double>(cell) * P;
  const double ml = 56, mt = by_host ? 66 : 52, mr = 80, mb = 20;
  const double W = ml + plot + mr, H = mt + plot + mb;
  int64_t maxb = 0;
  for (int64_t b : s.traffic_bytes()) maxb = std::max(maxb, b);
  // One unit for the whole matrix, so the cells read as short numbers.
  const double kib = 1024.0;
  const double mx = static_cast<double>(maxb);
  const double div = mx >= kib * kib * kib ? kib * kib * kib
                     : mx >= kib * kib     ? kib * kib
                     : mx >= kib           ? kib
                                           : 1.0;
  const char* unit = div == 1.0 ? "bytes" : div == kib ? "KiB" : div == kib * kib ? "MiB" : "GiB";
  std::string g =
      svg_open(static_cast<int>(W), static_cast<int>(H),
               label.empty() ? fmt("Traffic matrix, layer %d", s.layer()) : label, svg_id);
  const int every = label_step(cell, 24.0);
  for (int i = 0; i < P; ++i)
    for (int j = 0; j < P; ++j) {
      const int64_t b = s.traffic_bytes(i * P + j);
      const double t = maxb > 0 ? static_cast<double>(b) / static_cast<double>(maxb) : 0.0;
      std::string where = i == j ? " (stays on the rank)" : "";
      if (by_host && i != j)
        where = host_of(i) == host_of(j)
                    ? " (within host " + hosts.names[static_cast<size_t>(host_of(i))] + ")"
                    : " (between hosts " + hosts.names[static_cast<size_t>(host_of(i))] + " and " +
                          hosts.names[static_cast<size_t>(host_of(j))] + ")";
      const std::string tip =
          fmt("rank %d -> rank %d: %.4g %s, %s rows", i, j, static_cast<double>(b) / div, unit,
              grouped(s.traffic_rows(i * P + j)).c_str()) +
          where;
      g += rect(ml + j * cell, mt + i * cell, cell, cell, blues(t), tip,
                i == j ? "stroke=\"#111827\" stroke-dasharray=\"3,2\"" : "stroke=\"#ffffff\"");
      if (cell >= 40)
        g += text(ml + (j + 0.5) * cell, mt + (i + 0.5) * cell + 4,
                  short_num(static_cast<double>(b) / div), "middle",
                  t > 0.55 ? "class=\"cell\" fill=\"#ffffff\"" : "class=\"cell\"");
    }
  const double pad = by_host ? 10 : 6;  // room for the host strips
  if (by_host) {
    for (int k = 0; k < P; ++k) {
      const std::string& name = hosts.names[static_cast<size_t>(host_of(k))];
      const char* color = kPhaseColors[host_of(k) % 7];
      g += rect(ml - 6, mt + k * cell, 4, cell, color, "rank " + std::to_string(k) + ": " + name);
      g += rect(ml + k * cell, mt - 6, cell, 4, color, "rank " + std::to_string(k) + ": " + name);
    }
    for (int k = 1; k < P; ++k) {
      if (host_of(k) == host_of(k - 1)) continue;
      g +=
          fmt("<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#111827\" "
              "stroke-width=\"2\"/>\n",
              ml + k * cell, mt - 6.0, ml + k * cell, mt + plot);
      g +=
          fmt("<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#111827\" "
              "stroke-width=\"2\"/>\n",
              ml - 6.0, mt + k * cell, ml + plot, mt + k * cell);
    }
    // Host names over their columns where a host's ranks are contiguous and there is room.
    for (int a = 0; a < P;) {
      int b = a;
      while (b < P && host_of(b) == host_of(a)) ++b;
      const std::string& name = hosts.names[static_cast<size_t>(host_of(a))];
      if ((b - a) * cell >= 7.0 * static_cast<double>(name.size()) + 8)
        g += text(ml + (a + b) * cell / 2.0, mt - 30, name, "middle", "class=\"host\"");
      a = b;
    }
  }
  for (int k = 0; k < P; k += every) {
    g += text(ml - pad, mt + (k + 0.5) * cell + 4, fmt("r%d", k), "end", "class=\"tick\"");
    g += text(ml + (k + 0.5) * cell, mt - pad, fmt("r%d", k), "middle", "class=\"tick\"");
  }
  g += text(ml + plot / 2, 16, "to rank", "middle", "class=\"axis\"");
  g +=
      fmt("<text transform=\"translate(14,%.1f) rotate(-90)\" text-anchor=\"middle\" "
          "class=\"axis\">from rank</text>\n",
          mt + plot / 2);
  // Colour legend: a vertical gradient, 0 at the bottom.
  const std::string id = svg_id.empty() ? fmt("blues%d", s.layer()) : svg_id + "-blues";
  g += "<defs><linearGradient id=\"" + id + "\" x1=\"0\" y1=\"1\" x2=\"0\" y2=\"0\">";
  for (int k = 0; k <= 4; ++k)
    g += fmt("<stop offset=\"%d%%\" stop-color=\"%s\"/>", k * 25, blues(k / 4.0).c_str());
  g += "</linearGradient></defs>\n";
  const double lx = ml + plot + 20;
  g += rect(lx, mt, 14, plot, "url(#" + id + ")", "", "stroke=\"#d0d7de\"");
  g += text(lx + 20, mt + 9, short_num(mx / div), "start", "class=\"tick\"");
  g += text(lx + 20, mt + plot, "0", "start", "class=\"tick\"");
  g += text(lx + 20, mt + plot / 2 + 4, unit, "start", "class=\"tick\"");
  return g + "</svg>\n";
}

// Per rank, seconds per phase summed over every layer and step, stacked.
std::string phase_chart(const ClusterReport& c) {
  const std::vector<std::vector<double>> t = rank_phase_seconds(c, -1);
  const int P = static_cast<int>(t.size());
  const double W = 720, H = 300, ml = 64, mr = 16, mt = 44, mb = 40;
  const double pw = W - ml - mr, ph = H - mt - mb, slot = pw / std::max(P, 1);
  double top = 0.0;
  for (const auto& r : t) {
    double sum = 0.0;
    for (double x : r) sum += x;
    top = std::max(top, sum);
  }
  const std::vector<double> ticks = nice_ticks(top);
  const double ymax = ticks.back();
  std::string g = svg_open(static_cast<int>(W), static_cast<int>(H), "Time per phase per rank");
  g += y_axis(ticks, ml, mt, pw, ph, "seconds");
  const double bw = std::max(1.0, std::min(64.0, slot * 0.7));
  const std::vector<PhaseValue> names = phase_values(switchyard::PhaseTimes());
  for (int r = 0; r < P; ++r) {
    double y = mt + ph;
    const double x = ml + r * slot + (slot - bw) / 2;
    for (size_t k = 0; k < names.size() && k < t[static_cast<size_t>(r)].size(); ++k) {
      const double v = t[static_cast<size_t>(r)][k], h = v / ymax * ph;
      y -= h;
      g += rect(x, y, bw, h, kPhaseColors[k], fmt("rank %d %s: %.6f s", r, names[k].name, v));
    }
  }
  const int every = label_step(slot, 28.0);
  for (int r = 0; r < P; r += every)
    g += text(ml + (r + 0.5) * slot, mt + ph + 15, fmt("r%d", r), "middle", "class=\"tick\"");
  g += text(ml + pw / 2, H - 6, "rank", "middle", "class=\"axis\"");
  std::vector<std::pair<std::string, std::string>> items;
  for (size_t k = 0; k < names.size(); ++k) items.emplace_back(names[k].name, kPhaseColors[k]);
  g += legend(ml, 18, items);
  return g + "</svg>\n";
}

std::string tile(const std::string& value, const std::string& key) {
  return "<div class=\"tile\"><div class=\"v\">" + esc(value) + "</div><div class=\"k\">" +
         esc(key) + "</div></div>\n";
}

// One table row of the tier split: a stacked bar of the bytes, then per tier MiB, rows, share
// and bytes per token.
std::string tier_row(const std::string& label, const switchyard::TrafficSplit& t) {
  const switchyard::TrafficTier* tiers[3] = {&t.same_rank(), &t.intra_host(), &t.inter_host()};
  std::string bar = "<div class=\"split\">";
  for (int k = 0; k < 3; ++k)
    if (tiers[k]->share() > 0)
      bar += fmt("<span style=\"width:%.3f%%;background:%s\" title=\"", 100.0 * tiers[k]->share(),
                 kTierColors[k]) +
             esc(fmt("%s: %.2f%%", kTierNames[k], 100.0 * tiers[k]->share())) + "\"></span>";
  std::string row = "<tr><td>" + esc(label) + "</td><td>" + bar + "</div></td>";
  for (const switchyard::TrafficTier* x : tiers)
    row += fmt("<td>%.3f</td><td>", to_mib(x->bytes())) + grouped(x->rows()) +
           fmt("</td><td>%.2f%%</td><td>%.1f</td>", 100.0 * x->share(), x->bytes_per_token());
  return row + "</tr>\n";
}

// Traffic by tier per layer and over all layers, and which ranks each host holds.
std::string tier_card(const ClusterReport& c, const RankHosts& hosts) {
  std::string h =
      "<section class=\"card\"><h2>Traffic by tier: same rank, intra-host, "
      "inter-host</h2>\n<p class=\"note\" style=\"margin:0 0 8px\">";
  for (int k = 0; k < 3; ++k)
    h += fmt("<span class=\"swatch\" style=\"background:%s\"></span>%s", kTierColors[k],
             kTierNames[k]);
  h += "</p>\n<table>\n<tr><th rowspan=\"2\">layer</th><th rowspan=\"2\">share of rows</th>";
  for (const char* name : kTierNames)
    h += std::string("<th colspan=\"4\" style=\"text-align:center\">") + name + "</th>";
  h += "</tr>\n<tr>";
  for (int k = 0; k < 3; ++k) h += "<th>MiB</th><th>rows</th><th>share</th><th>B/token</th>";
  h += "</tr>\n";
  for (const auto& s : c.layers())
    if (s.has_traffic_split()) h += tier_row(std::to_string(s.layer()), s.traffic_split());
  h += tier_row("all layers", c.traffic_split());
  h += "</table>\n<p class=\"note\">Dispatch payload summed over steps; shares are of the "
       "rows (switchyard's runtime counts no bytes for the rows a rank keeps). B/token: bytes per "
       "token routed; for all layers, the sum over the MoE layers (what one token costs through "
       "the model). Hosts: ";
  const int shown = std::min<int>(static_cast<int>(hosts.names.size()), 64);
  for (int k = 0; k < shown; ++k)
    h += (k > 0 ? " &middot; " : "") + esc(hosts.names[static_cast<size_t>(k)]) + " (ranks " +
         hosts.ranks_of(k) + ")";
  if (shown < static_cast<int>(hosts.names.size()))
    h += fmt(" &middot; and %d more", static_cast<int>(hosts.names.size()) - shown);
  return h + ".</p></section>\n";
}

}  // namespace

std::string render_traffic_svg(const LayerSummary& s, int P, const RankHosts& hosts,
                               const std::string& id, const std::string& label) {
  return traffic_chart(s, P, hosts, id, label);
}

std::string render_cluster_html(const ClusterReport& c, const std::string& extra_html) {
  const int P = c.world_size(), E = c.num_experts();
  const std::vector<int> owner = expert_owners(c);
  const RankHosts hosts = rank_hosts(c);
  int64_t steps = 0, routed = 0, dropped = 0, remote = 0;
  double worst = 0.0, time_mean = 0.0;
  for (const auto& s : c.layers()) {
    steps = std::max(steps, s.steps());
    routed += s.routed();
    dropped += s.dropped();
    worst = std::max(worst, s.imbalance_max_over_mean());
    for (int i = 0; i < P; ++i)
      for (int j = 0; j < P; ++j)
        if (i != j && i * P + j < s.traffic_bytes_size()) remote += s.traffic_bytes(i * P + j);
    for (const PhaseValue& v : phase_values(s.mean_times())) time_mean += v.seconds;
  }
  std::string h =
      "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
      "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
      "<title>switchyard report: router " +
      esc(c.router()) + "</title>\n";
  h += kStyle;
  h += "</head><body>\n<header><h1>switchyard cluster report</h1><div class=\"sub\">router <b>" +
       esc(c.router()) + "</b> &middot; " +
       fmt("%d ranks &middot; %d experts, top-%d &middot; %d layers &middot; %lld step%s", P, E,
           c.top_k(), c.num_layers(), static_cast<long long>(steps), steps == 1 ? "" : "s") +
       (hosts.names.empty()
            ? std::string()
            : fmt(" &middot; %d host%s", c.num_hosts(), c.num_hosts() == 1 ? "" : "s")) +
       "</div></header>\n<main>\n";
  for (const std::string& w : c.warnings()) h += "<p class=\"warn\">warning: " + esc(w) + "</p>\n";
  h += "<div class=\"tiles\" style=\"margin-top:16px\">\n";
  h += tile(grouped(routed), "assignments routed (all layers)");
  h += tile(fmt("%.2f%%", routed > 0 ? 100.0 * dropped / routed : 0.0), "dropped by capacity");
  h += tile(fmt("%.3f", worst), "worst layer imbalance (max/mean)");
  h += tile(fmt("%.2f MiB", to_mib(remote)), "dispatched between ranks");
  if (c.has_traffic_split())
    h += tile(fmt("%.2f MiB", to_mib(c.traffic_split().inter_host().bytes())),
              fmt("dispatched between hosts (%.1f%% of rows)",
                  100.0 * c.traffic_split().inter_host().share()));
  h += tile(fmt("%.4f s", time_mean), "MoE time per rank (mean)");
  h += "</div>\n";
  h += extra_html;

  h += "<section class=\"card\"><h2>Summary by layer</h2>\n<table>\n<tr><th>layer</th>"
       "<th>steps</th><th>routed</th><th>dropped</th><th>drop %</th><th>imbalance max/mean</th>"
       "<th>(max&minus;mean)/mean</th><th>entropy / log E</th><th>utilization</th>"
       "<th>MiB between ranks</th><th>time mean (s)</th><th>time max (s)</th></tr>\n";
  for (const auto& s : c.layers()) {
    int64_t rb = 0;
    for (int i = 0; i < P; ++i)
      for (int j = 0; j < P; ++j)
        if (i != j && i * P + j < s.traffic_bytes_size()) rb += s.traffic_bytes(i * P + j);
    double tmean = 0.0, tmax = 0.0;
    for (const PhaseValue& v : phase_values(s.mean_times())) tmean += v.seconds;
    for (const auto& r : rank_phase_seconds(c, s.layer())) {
      double sum = 0.0;
      for (double x : r) sum += x;
      tmax = std::max(tmax, sum);
    }
    h += fmt("<tr><td>%d</td><td>%lld</td>", s.layer(), static_cast<long long>(s.steps())) +
         "<td>" + grouped(s.routed()) + "</td><td>" + grouped(s.dropped()) + "</td>" +
         fmt("<td>%.2f</td><td>%.3f</td><td>%.3f</td><td>%.3f</td><td>%.0f%%</td><td>%.3f</td>"
             "<td>%.5f</td><td>%.5f</td></tr>\n",
             s.routed() > 0 ? 100.0 * s.dropped() / s.routed() : 0.0, s.imbalance_max_over_mean(),
             s.imbalance_excess(), s.metrics().entropy_norm(), 100.0 * s.metrics().utilization(),
             to_mib(rb), tmean, tmax);
  }
  h += "</table>\n<p class=\"note\">Counts are summed over steps and ranks. Imbalance is over "
       "the rows each expert received. Times are each rank's total over steps: mean and max "
       "over ranks.</p></section>\n";
  if (c.has_traffic_split()) h += tier_card(c, hosts);

  h += "<section class=\"card\"><h2>Time per phase per rank (all layers)</h2>\n" + phase_chart(c);
  h += "<p class=\"note\">A rank that spends long in count_exchange or dispatch is usually "
       "waiting for a slower peer.</p>\n";
  if (c.ranks_size() <= 64) {
    // Step times, where every rank timed the same steps: per step, and the rank's own work.
    const bool timed = c.rank_times_size() == c.ranks_size();
    h += "<table><tr><th>rank</th><th>host</th><th>experts</th><th>MoE time (s)</th>"
         "<th>wall (s)</th>";
    if (timed) h += "<th>step (s/step)</th><th>own work (s/step)</th>";
    h += "</tr>\n";
    const std::vector<std::vector<double>> rt = rank_phase_seconds(c, -1);
    for (int i = 0; i < c.ranks_size(); ++i) {
      const auto& r = c.ranks(i);
      double sum = 0.0;
      for (double x : rt[static_cast<size_t>(i)]) sum += x;
      std::string experts = r.local_expert_count() == 0
                                ? "none"
                                : fmt("%d&ndash;%d", r.local_expert_begin(),
                                      r.local_expert_begin() + r.local_expert_count() - 1);
      if (r.local_expert_ids_size() > 0) {  // a placement file: the ids themselves
        experts.clear();
        for (int32_t e : r.local_expert_ids())
          experts += (experts.empty() ? "" : " ") + fmt("%d", e);
      }
      h += fmt("<tr><td>%d</td><td>", r.rank()) + esc(r.host()) + "</td><td>" + experts +
           fmt("</td><td>%.5f</td><td>%.2f</td>", sum, r.wall_s());
      if (timed) {
        const auto& t = c.rank_times(i);
        const double k = static_cast<double>(std::max<int64_t>(t.steps(), 1));
        h += fmt("<td>%.5f</td><td>%.5f%s</td>", t.step_seconds() / k, t.own_seconds() / k,
                 t.straggler() ? " <b>straggler</b>" : "");
      }
      h += "</tr>\n";
    }
    h += "</table>\n";
  }
  h += "</section>\n";

  for (const auto& s : c.layers()) {
    if (s.load_per_expert_size() != E || s.dropped_per_expert_size() != E ||
        s.traffic_bytes_size() != P * P || s.traffic_rows_size() != P * P)
      continue;
    h += fmt("<section class=\"card\"><h2>Layer %d</h2>\n<div class=\"charts\">\n", s.layer());
    h += "<div><h3>Load per expert</h3>\n" + load_chart(s, owner) + "</div>\n";
    h +=
        "<div><h3>Traffic matrix (dispatch bytes)</h3>\n" + traffic_chart(s, P, hosts) + "</div>\n";
    h += "</div>\n<table style=\"margin-top:10px\"><tr><th>phase (s)</th>";
    const std::vector<PhaseValue> mean = phase_values(s.mean_times());
    const std::vector<PhaseValue> max = phase_values(s.max_times());
    for (const PhaseValue& v : mean) h += "<th>" + std::string(v.name) + "</th>";
    h += "</tr>\n<tr><td>mean over ranks</td>";
    for (const PhaseValue& v : mean) h += fmt("<td>%.5f</td>", v.seconds);
    h += "</tr>\n<tr><td>max over ranks</td>";
    for (const PhaseValue& v : max) h += fmt("<td>%.5f</td>", v.seconds);
    h +=
        fmt("</tr></table>\n<p class=\"note\">imbalance max/mean %.3f &middot; dropped %s of %s "
            "&middot; routing entropy %.3f nats, %.2f effective experts, top-k mass %.3f%s</p>"
            "</section>\n",
            s.imbalance_max_over_mean(), grouped(s.dropped()).c_str(), grouped(s.routed()).c_str(),
            s.metrics().entropy(), s.metrics().effective_experts(), s.metrics().topk_mass(),
            s.metrics().collapsed() ? " &middot; <b>collapsed</b>" : "");
  }
  std::string version;
  if (c.ranks_size() > 0) version = c.ranks(0).switchyard_version();
  h += "<p class=\"note\">Generated by switchyard " + esc(version) +
       ". Bytes are dispatch payload; the dashed diagonal of a traffic matrix stays on its rank. "
       "Hover a bar or a cell for its numbers.</p>\n</main></body></html>\n";
  return h;
}

}  // namespace sy
