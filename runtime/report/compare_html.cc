// The comparison page (compare.h): table, bar charts per row, line charts per series, and per
// run the expert-load heat map and the rank traffic matrix of its steady steps. Self-contained
// like report.html (html_svg.h); every label from a report or a caller is escaped.
#include <algorithm>
#include <cctype>
#include <cmath>
#include <string>
#include <vector>

#include "runtime/report/cluster_report.h"
#include "runtime/report/compare.h"
#include "runtime/report/html_svg.h"

namespace sy {
using switchyard::ClusterReport;

namespace {
using namespace html;  // NOLINT: the page is built from these helpers throughout

// One colour per run (Tableau 10, then again).
const char* const kRunColors[] = {"#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#b07aa1",
                                  "#76b7b2", "#edc948", "#ff9da7", "#9c755f", "#bab0ac"};

const char* run_color(size_t i) {
  return kRunColors[i % (sizeof(kRunColors) / sizeof(kRunColors[0]))];
}

// Chart ids must stay valid ids whatever a caller puts into a key.
std::string id_part(const std::string& key) {
  std::string out;
  for (char ch : key) out += std::isalnum(static_cast<unsigned char>(ch)) || ch == '_' ? ch : '-';
  return out;
}

// Where max is NaN or 0 the axis still needs a top.
double finite_max(double a, double b) {
  return std::isfinite(b) ? std::max(a, b) : a;
}

// One bar per run, the value over it; n/a where a run has none.
std::string bar_chart(const MetricRow& r, const std::vector<std::string>& labels) {
  const size_t n = labels.size();
  const double slot = 84, ml = 56, mr = 12, mt = 20, mb = 40, ph = 150;
  const double W = std::max(260.0, ml + mr + slot * static_cast<double>(n)), H = mt + ph + mb;
  double top = 0;
  for (double v : r.values) top = finite_max(top, v);
  const std::vector<double> ticks = nice_ticks(top);
  std::string g =
      svg_open(static_cast<int>(W), static_cast<int>(H), metric_title(r), "bar-" + id_part(r.key));
  g += y_axis(ticks, ml, mt, slot * static_cast<double>(n), ph, r.unit);
  for (size_t i = 0; i < n; ++i) {
    const double v = i < r.values.size() ? r.values[i] : NAN;
    const double x = ml + slot * static_cast<double>(i);
    const double h = std::isfinite(v) ? std::max(0.0, v) / ticks.back() * ph : 0.0;
    if (std::isfinite(v))
      g += rect(x + slot * 0.15, mt + ph - h, slot * 0.7, h, run_color(i),
                labels[i] + ": " + metric_value_text(r, v));
    g += text(x + slot / 2, mt + ph - h - 4, metric_value_text(r, v), "middle", "class=\"tick\"");
    const std::string l = labels[i].size() > 12 ? labels[i].substr(0, 11) + "~" : labels[i];
    g += text(x + slot / 2, mt + ph + 15, l, "middle", "class=\"axis\"");
  }
  return g + "</svg>\n";
}

// One polyline per run over the steps; the warm-up steps shaded.
std::string line_chart(const Series& s, const Comparison& c) {
  const double W = 560, H = 260, ml = 56, mr = 16, mt = 36, mb = 40;
  const double pw = W - ml - mr, ph = H - mt - mb;
  double x0 = INFINITY, x1 = -INFINITY, top = 0, warm_end = -INFINITY;
  for (size_t i = 0; i < s.per_run.size(); ++i) {
    const auto& pts = s.per_run[i];
    for (const auto& [x, y] : pts) {
      x0 = std::min(x0, x);
      x1 = std::max(x1, x);
      top = finite_max(top, y);
    }
  }
  // Steps are whole numbers: the warm-up ends half a step before the first steady one.
  for (size_t i = 0; i < c.first_steady_step.size() && i < s.per_run.size(); ++i)
    if (c.first_steady_step[i] >= 0 && !s.per_run[i].empty())
      warm_end = std::max(warm_end, static_cast<double>(c.first_steady_step[i]) - 0.5);
  if (!(warm_end > x0)) warm_end = -INFINITY;
  if (!(x1 > x0)) {  // one step (or none): a span of one around it
    x0 = std::isfinite(x0) ? x0 - 0.5 : 0;
    x1 = x0 + 1;
  }
  const std::vector<double> ticks = nice_ticks(top);
  const auto px = [&](double x) { return ml + (x - x0) / (x1 - x0) * pw; };
  const auto py = [&](double y) { return mt + ph - std::max(0.0, y) / ticks.back() * ph; };
  std::string g =
      svg_open(static_cast<int>(W), static_cast<int>(H), s.title, "line-" + id_part(s.key));
  if (std::isfinite(warm_end)) {
    g += rect(ml, mt, px(std::min(warm_end, x1)) - ml, ph, "#f3f4f6",
              "warm-up: left out of the figures");
    g += text(ml + 4, mt + 12, "warm-up", "start", "class=\"band\"");
  }
  g += y_axis(ticks, ml, mt, pw, ph, s.unit);
  for (size_t i = 0; i < s.per_run.size() && i < c.labels.size(); ++i) {
    std::string pts;
    for (const auto& [x, y] : s.per_run[i]) {
      if (!std::isfinite(y)) continue;
      pts += fmt("%.1f,%.1f ", px(x), py(y));
      g += fmt("<circle cx=\"%.1f\" cy=\"%.1f\" r=\"2.5\" fill=\"%s\">", px(x), py(y),
               run_color(i)) +
           "<title>" + esc(c.labels[i] + fmt(": step %g, %.4g", x, y)) + "</title></circle>\n";
    }
    if (!pts.empty())
      g += fmt("<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"1.5\" points=\"",
               run_color(i)) +
           pts + "\"/>\n";
  }
  for (double x : {x0, (x0 + x1) / 2, x1})
    g += text(px(x), mt + ph + 15, short_num(std::round(x * 10) / 10), "middle", "class=\"tick\"");
  g += text(ml + pw / 2, H - 6, s.x_title, "middle", "class=\"axis\"");
  std::vector<std::pair<std::string, std::string>> items;
  for (size_t i = 0; i < c.labels.size() && i < s.per_run.size(); ++i)
    items.emplace_back(c.labels[i], run_color(i));
  g += legend(ml, 18, items);
  return g + "</svg>\n";
}

// Layers x experts, each cell the expert's share of its layer's rows relative to the mean
// (1 = balanced); the colour scale tops out at the run's largest cell.
std::string heat_map(const ClusterReport& c, const std::string& id, const std::string& label) {
  const int E = c.num_experts(), Lc = c.layers_size();
  const double cw = std::max(3.0, std::min(24.0, 640.0 / std::max(E, 1)));
  const double ch = std::max(6.0, std::min(22.0, 320.0 / std::max(Lc, 1)));
  const double ml = 56, mt = 24, mr = 16, mb = 34;
  const double W = ml + cw * E + mr, H = mt + ch * Lc + mb;
  double top = 0;
  std::vector<std::vector<double>> rel(static_cast<size_t>(Lc));
  for (int l = 0; l < Lc; ++l) {
    const auto& s = c.layers(l);
    const double mean = s.received() > 0 ? static_cast<double>(s.received()) / E : 0;
    for (int e = 0; e < E && e < s.load_per_expert_size(); ++e) {
      rel[static_cast<size_t>(l)].push_back(
          mean > 0 ? static_cast<double>(s.load_per_expert(e)) / mean : 0);
      top = std::max(top, rel[static_cast<size_t>(l)].back());
    }
  }
  std::string g =
      svg_open(static_cast<int>(W), static_cast<int>(H), "Expert load per layer, " + label, id);
  for (int l = 0; l < Lc; ++l)
    for (size_t e = 0; e < rel[static_cast<size_t>(l)].size(); ++e) {
      const double v = rel[static_cast<size_t>(l)][e];
      g += rect(ml + cw * static_cast<double>(e), mt + ch * l, cw, ch, blues(top > 0 ? v / top : 0),
                fmt("layer %d, expert %zu: %s rows, %.2f x the mean", c.layers(l).layer(), e,
                    grouped(c.layers(l).load_per_expert(static_cast<int>(e))).c_str(), v));
    }
  const int every_l = label_step(ch, 12.0), every_e = label_step(cw, 24.0);
  for (int l = 0; l < Lc; l += every_l)
    g += text(ml - 6, mt + ch * (l + 0.5) + 4, fmt("L%d", c.layers(l).layer()), "end",
              "class=\"tick\"");
  for (int e = 0; e < E; e += every_e)
    g +=
        text(ml + cw * (e + 0.5), mt + ch * Lc + 14, std::to_string(e), "middle", "class=\"tick\"");
  g += text(ml + cw * E / 2, H - 4, fmt("expert (darkest: %.2f x the mean load)", top), "middle",
            "class=\"axis\"");
  return g + "</svg>\n";
}

// The run's traffic summed over its layers, as one layer summary for render_traffic_svg.
ClusterReport::LayerSummary traffic_over_layers(const ClusterReport& c) {
  ClusterReport::LayerSummary sum;
  const int PP = c.world_size() * c.world_size();
  sum.mutable_traffic_bytes()->Resize(PP, 0);
  sum.mutable_traffic_rows()->Resize(PP, 0);
  for (const auto& s : c.layers())
    for (int k = 0; k < PP && k < s.traffic_bytes_size() && k < s.traffic_rows_size(); ++k) {
      sum.set_traffic_bytes(k, sum.traffic_bytes(k) + s.traffic_bytes(k));
      sum.set_traffic_rows(k, sum.traffic_rows(k) + s.traffic_rows(k));
    }
  return sum;
}

bool has_maps(const Comparison& c, size_t i) {
  return i < c.steady.size() && c.steady[i].layers_size() > 0 && c.steady[i].world_size() > 0;
}

}  // namespace

std::string comparison_table_html(const Comparison& c) {
  std::string h = "<section class=\"card\"><h2>Steady-state figures</h2>\n<table>\n<tr><th></th>";
  for (size_t i = 0; i < c.labels.size(); ++i)
    h += fmt("<th><span class=\"swatch\" style=\"background:%s;margin-left:0\"></span>",
             run_color(i)) +
         esc(c.labels[i]) + "</th>";
  h += "</tr>\n";
  std::string group;
  for (const MetricRow& r : c.rows) {
    if (r.group != group || &r == &c.rows.front()) {
      group = r.group;
      h += fmt("<tr><th colspan=\"%zu\" style=\"text-align:left\">", c.labels.size() + 1) +
           esc(group) + "</th></tr>\n";
    }
    const int best = metric_best_run(r);
    h += "<tr><td>" + esc(metric_title(r)) + "</td>";
    for (size_t i = 0; i < c.labels.size(); ++i) {
      const std::string v = esc(metric_value_text(r, i < r.values.size() ? r.values[i] : NAN));
      h += "<td>" + (static_cast<int>(i) == best ? "<b>" + v + "</b>" : v) + "</td>";
    }
    h += "</tr>\n";
  }
  h += "</table>\n";
  for (const std::string& n : c.notes) h += "<p class=\"note\">" + esc(n) + "</p>\n";
  return h + "</section>\n";
}

std::vector<std::string> comparison_chart_ids(const Comparison& c) {
  std::vector<std::string> ids;
  for (const MetricRow& r : c.rows) ids.push_back("bar-" + id_part(r.key));
  for (const Series& s : c.series) ids.push_back("line-" + id_part(s.key));
  for (size_t i = 0; i < c.labels.size(); ++i)
    if (has_maps(c, i)) {
      ids.push_back(fmt("heat-%zu", i));
      ids.push_back(fmt("traffic-%zu", i));
    }
  return ids;
}

std::string comparison_html(const Comparison& c, const std::string& title,
                            const std::string& intro_html) {
  std::string h =
      "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
      "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>" +
      esc(title) + "</title>\n";
  h += kStyle;
  h += "</head><body>\n<header><h1>" + esc(title) + "</h1><div class=\"sub\">" +
       fmt("%zu run%s", c.labels.size(), c.labels.size() == 1 ? "" : "s") +
       fmt(" &middot; %d warm-up step%s left out of each", c.warmup_left_out,
           c.warmup_left_out == 1 ? "" : "s") +
       "</div></header>\n<main>\n" + intro_html;
  h += comparison_table_html(c);

  std::string group;
  for (const MetricRow& r : c.rows) {
    if (r.group != group || &r == &c.rows.front()) {
      if (&r != &c.rows.front()) h += "</div></section>\n";
      group = r.group;
      h += "<section class=\"card\"><h2>" + esc(group) + "</h2>\n<div class=\"charts\">\n";
    }
    h += "<div><h3>" + esc(metric_title(r)) + (r.lower_is_better ? " &darr;" : " &uarr;") +
         "</h3>\n" + bar_chart(r, c.labels) + "</div>\n";
  }
  if (!c.rows.empty()) h += "</div></section>\n";

  if (!c.series.empty()) {
    h += "<section class=\"card\"><h2>Per step</h2>\n<div class=\"charts\">\n";
    for (const Series& s : c.series)
      h += "<div><h3>" + esc(s.title) + "</h3>\n" + line_chart(s, c) + "</div>\n";
    h += "</div></section>\n";
  }

  for (size_t i = 0; i < c.labels.size(); ++i) {
    if (!has_maps(c, i)) continue;
    const ClusterReport& s = c.steady[i];
    h += "<section class=\"card\"><h2>" + esc(c.labels[i]) + "</h2>\n<p class=\"note\">router " +
         esc(s.router()) +
         fmt(" &middot; %d ranks &middot; %d experts, top-%d &middot; steady steps only</p>\n",
             s.world_size(), s.num_experts(), s.top_k()) +
         "<div class=\"charts\">\n";
    h += "<div><h3>Expert load per layer (relative to the layer's mean)</h3>\n" +
         heat_map(s, fmt("heat-%zu", i), c.labels[i]) + "</div>\n";
    h += "<div><h3>Traffic matrix, all layers (dispatch bytes)</h3>\n" +
         render_traffic_svg(traffic_over_layers(s), s.world_size(), rank_hosts(s),
                            fmt("traffic-%zu", i), "Traffic matrix, all layers, " + c.labels[i]) +
         "</div>\n</div></section>\n";
  }
  h += "<p class=\"note\">Bars: one per run, the best marked bold in the table (&darr; lower is "
       "better, &uarr; higher). Hover a bar, a point or a cell for its numbers.</p>\n"
       "</main></body></html>\n";
  return h;
}

}  // namespace sy
