// projection.html (projection.h): the projection's three headline curves against P, one line per
// router, the settings and the tables, in one file with inline CSS and SVG and no scripts, so it
// opens offline. Small local helpers: runtime/report's page builders are out of this layer's
// reach (tests/launch/layering_test.py).
#include <algorithm>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "runtime/project/projection.h"

namespace sy {
namespace {

// Categorical colours (Tableau 10), one per router in order.
const char* const kColors[] = {"#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f",
                               "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac"};

// printf to a string of any length (trace paths can be long).
__attribute__((format(printf, 1, 2))) std::string f(const char* spec, ...) {
  va_list ap, again;
  va_start(ap, spec);
  va_copy(again, ap);
  const int n = std::vsnprintf(nullptr, 0, spec, ap);
  va_end(ap);
  std::string out(static_cast<size_t>(std::max(n, 0)) + 1, '\0');
  std::vsnprintf(&out[0], out.size(), spec, again);
  va_end(again);
  out.pop_back();
  return out;
}

// HTML text and attribute values: the five characters that could end either.
std::string html(const std::string& s) {
  std::string out;
  for (char ch : s) {
    if (ch == '&')
      out += "&amp;";
    else if (ch == '<')
      out += "&lt;";
    else if (ch == '>')
      out += "&gt;";
    else if (ch == '"')
      out += "&quot;";
    else if (ch == '\'')
      out += "&#39;";
    else
      out += ch;
  }
  return out;
}

// Axis label: 2.5e6 -> "2.5M".
std::string si(double v) {
  const char* const units[] = {"", "k", "M", "G", "T"};
  int u = 0;
  while (std::fabs(v) >= 1000.0 && u < 4) v /= 1000.0, ++u;
  return f("%.3g%s", v, units[u]);
}

// 0 .. a round top >= max: 1, 2 or 5 x 10^k per step, about 5 steps.
std::vector<double> y_ticks(double max) {
  if (!(max > 0) || !std::isfinite(max)) return {0, 1};
  const double p10 = std::pow(10.0, std::floor(std::log10(max / 5)));
  double step = p10;
  for (double m : {1.0, 2.0, 5.0, 10.0})
    if (max / (m * p10) <= 6) {
      step = m * p10;
      break;
    }
  std::vector<double> t = {0};
  while (t.back() < max * (1 - 1e-9)) t.push_back(t.back() + step);
  return t;
}

struct Series {
  std::string name;
  std::vector<std::pair<int, double>> points;  // (P, value)
  std::vector<std::pair<int, double>> marks;   // measured (P, value): hollow diamonds
};

// A line chart against P (log2 axis), one polyline per series, a legend below.
std::string line_chart(const std::string& title, const std::string& y_title,
                       const std::vector<Series>& series) {
  const double W = 560, H = 330, ml = 70, mr = 20, mt = 34, mb = 78;
  const double pw = W - ml - mr, ph = H - mt - mb;
  std::vector<int> xs;
  double y_max = 0;
  bool any_marks = false;
  for (const Series& s : series) {
    for (const auto& [P, v] : s.points) {
      xs.push_back(P);
      if (std::isfinite(v)) y_max = std::max(y_max, v);
    }
    for (const auto& [P, v] : s.marks)
      if (std::isfinite(v)) y_max = std::max(y_max, v), any_marks = true;
  }
  std::sort(xs.begin(), xs.end());
  xs.erase(std::unique(xs.begin(), xs.end()), xs.end());
  const double lo = xs.empty() ? 0 : std::log2(xs.front()),
               hi = xs.empty() ? 1 : std::log2(xs.back());
  auto X = [&](int P) { return hi > lo ? ml + (std::log2(P) - lo) / (hi - lo) * pw : ml + pw / 2; };
  const std::vector<double> ticks = y_ticks(y_max);
  auto Y = [&](double v) { return mt + ph - v / ticks.back() * ph; };

  std::string g = f("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" "
                    "viewBox=\"0 0 %.0f %.0f\" role=\"img\" aria-label=\"",
                    W, H, W, H) +
                  html(title) + "\">\n";
  g += f("<text x=\"%.0f\" y=\"20\" class=\"title\">", ml) + html(title) + "</text>\n";
  for (double t : ticks) {
    g += f("<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\"/>\n", ml, Y(t),
           ml + pw, Y(t), t == 0 ? "#57606a" : "#e5e7eb");
    g += f("<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\" class=\"tick\">%s</text>\n", ml - 6,
           Y(t) + 4, si(t).c_str());
  }
  for (int P : xs)
    g +=
        f("<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#57606a\"/>"
          "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" class=\"tick\">%d</text>\n",
          X(P), mt + ph, X(P), mt + ph + 4, X(P), mt + ph + 17, P);
  g +=
      f("<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" class=\"axis\">ranks P (log2)</text>\n",
        ml + pw / 2, mt + ph + 34);
  g += f("<text transform=\"translate(16,%.1f) rotate(-90)\" text-anchor=\"middle\" "
         "class=\"axis\">",
         mt + ph / 2) +
       html(y_title) + "</text>\n";
  double lx = ml, ly = H - 30;
  for (size_t i = 0; i < series.size(); ++i) {
    const Series& s = series[i];
    const char* color = kColors[i % (sizeof(kColors) / sizeof(kColors[0]))];
    std::string pts, dots;
    for (const auto& [P, v] : s.points) {
      if (!std::isfinite(v)) continue;
      pts += f("%.1f,%.1f ", X(P), Y(v));
      dots += f("<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"%s\"><title>", X(P), Y(v), color) +
              html(s.name) + f(", P %d: %.4g</title></circle>\n", P, v);
    }
    // A dash pattern per series as well as a colour: routers with equal values (synthetic
    // traces often give the same exchange) stay visible as overlapping dashes.
    static const char* const kDash[] = {"", "8 4", "3 3", "12 3 3 3", "2 6", "6 2"};
    const char* dash = kDash[i % (sizeof(kDash) / sizeof(kDash[0]))];
    for (const auto& [P, v] : s.marks) {
      if (!std::isfinite(v)) continue;
      dots += f("<path class=\"measured\" d=\"M%.1f %.1fl6 6l-6 6l-6 -6z\" fill=\"#fff\" "
                "stroke=\"%s\" stroke-width=\"2\"><title>",
                X(P), Y(v) - 6, color) +
              html(s.name) + f(", P %d, measured: %.4g</title></path>\n", P, v);
    }
    g += f("<polyline class=\"series\" fill=\"none\" stroke=\"%s\" stroke-width=\"2\" "
           "stroke-dasharray=\"%s\" points=\"",
           color, dash) +
         pts + "\"/>\n" + dots;
    const double width = 34 + 6.6 * static_cast<double>(s.name.size());
    if (lx > ml && lx + width > W) lx = ml, ly += 18;  // the legend wraps
    g +=
        f("<rect x=\"%.1f\" y=\"%.1f\" width=\"14\" height=\"3\" fill=\"%s\"/>", lx, ly - 5, color);
    g += f("<text x=\"%.1f\" y=\"%.1f\" class=\"legend\">", lx + 19, ly) + html(s.name) +
         "</text>\n";
    lx += width;
  }
  if (any_marks) {
    if (lx > ml && lx + 90 > W) lx = ml, ly += 18;
    g +=
        f("<path d=\"M%.1f %.1fl5 5l-5 5l-5 -5z\" fill=\"#fff\" stroke=\"#57606a\" "
          "stroke-width=\"1.5\"/><text x=\"%.1f\" y=\"%.1f\" class=\"legend\">measured</text>\n",
          lx + 7, ly - 9, lx + 17, ly);
  }
  return g + "</svg>\n";
}

const char* const kStyle = R"(<style>
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:0;
background:#f6f7f9;color:#1f2328}
header{background:#1f2937;color:#f9fafb;padding:18px 32px}
header h1{margin:0 0 4px;font-size:22px}
main{padding:8px 32px 32px}
section{background:#fff;border:1px solid #d0d7de;border-radius:8px;padding:12px 16px;margin:16px 0}
h2{font-size:17px;margin:4px 0 10px}
.charts{display:flex;flex-wrap:wrap;gap:12px}
svg{background:#fff;border:1px solid #e5e7eb;border-radius:6px}
svg .title{font-size:14px;font-weight:600;fill:#1f2328}
svg .tick{font-size:11px;fill:#57606a}
svg .axis{font-size:12px;fill:#1f2328}
svg .legend{font-size:12px;fill:#1f2328}
dl{display:grid;grid-template-columns:max-content 1fr;gap:3px 16px;margin:0}
dt{color:#57606a}
.wide{overflow-x:auto}
dd{margin:0}
table{border-collapse:collapse;font-size:12.5px;font-variant-numeric:tabular-nums}
th,td{border-bottom:1px solid #e5e7eb;padding:3px 8px;text-align:right}
th{background:#f6f7f9}
.tag{display:inline-block;background:#fff8c5;border:1px solid #d4a72c;border-radius:4px;
padding:0 6px;font-size:12px}
</style>
)";

std::string row(const std::string& key, const std::string& value_html) {
  return "<dt>" + html(key) + "</dt><dd>" + value_html + "</dd>\n";
}

// Every router's points as one series of `value`.
std::vector<Series> series_of(const std::vector<RouterProjection>& rs, const ProjectOptions& opt,
                              const std::function<double(const PointSummary&)>& value) {
  std::vector<Series> out;
  for (const RouterProjection& r : rs) {
    Series s{r.router, {}};
    for (const PointProjection& pt : r.points)
      s.points.emplace_back(pt.ranks, value(point_summary(pt, opt)));
    out.push_back(std::move(s));
  }
  return out;
}

std::string router_table(const RouterProjection& r, const ProjectOptions& opt) {
  std::string t =
      "<table><tr><th>ranks</th><th>EP&times;DP</th><th>nodes</th><th>tok/rank</th>"
      "<th>rows/rank</th><th>self %</th><th>node %</th><th>other %</th>"
      "<th>other-node MB/rank, max</th><th>other-node MB/rank, mean</th><th>load max/mean, "
      "rank</th><th>load max/mean, expert</th><th>drop %</th><th>ranks/tok</th>"
      "<th>nodes/tok</th><th>dispatch &micro;s</th><th>compute &micro;s</th>"
      "<th>combine &micro;s</th></tr>\n";
  for (const PointProjection& pt : r.points) {
    const PointSummary m = point_summary(pt, opt);
    t += f("<tr><td>%d</td><td>%dx%d</td><td>%d</td><td>%lld</td><td>%.1f</td><td>%.1f</td>",
           pt.ranks, pt.ep, pt.dp, pt.nodes,
           static_cast<long long>(pt.tokens / std::max(1, pt.ranks)), m.rows_per_rank, m.pct[0]);
    t += f("<td>%.1f</td><td>%.1f</td><td>%.3f</td><td>%.3f</td><td>%.2f</td><td>%.2f</td>",
           m.pct[1], m.pct[2], m.other_max_bytes / 1e6, m.other_mean_bytes / 1e6, m.rank_load,
           m.expert_load);
    t += f("<td>%.2f</td><td>%.2f</td><td>%.2f</td><td>%.1f</td><td>%.1f</td><td>%.1f</td></tr>\n",
           m.drop_pct, m.fanout_ranks, m.fanout_nodes, m.dispatch_s * 1e6, m.compute_s * 1e6,
           m.combine_s * 1e6);
  }
  t += "</table>\n";
  bool header = false;
  for (const PointProjection& pt : r.points)
    for (const MeasuredPoint& m : pt.measured) {
      if (!header)
        t += "<p>Measured beside projected, per layer and exchange (load reports of real runs; "
             "exchange = count exchange + dispatch + return, each phase the rank that waited "
             "least, median over forwards):</p>\n<table><tr><th>ranks</th><th>run</th>"
             "<th>counts</th><th>exchange &micro;s, measured</th><th>projected</th>"
             "<th>error</th><th>compute &micro;s, measured</th><th>projected</th></tr>\n";
      header = true;
      const MeasuredSummary a = measured_summary(m, pt);
      t += f("<tr><td>%d</td><td style=\"text-align:left\">", pt.ranks) + html(m.dir) +
           "</td><td style=\"text-align:left\">" + html(a.counts) +
           f("</td><td>%.1f</td><td>%.1f</td><td>%+.1f%%</td><td>%.1f</td><td>%.1f</td></tr>\n",
             a.exchange_s * 1e6, a.projected_exchange_s * 1e6, a.exchange_error_pct,
             a.compute_s * 1e6, a.projected_compute_s * 1e6);
    }
  if (header) t += "</table>\n";
  return t;
}

}  // namespace

std::string projection_html(const std::vector<RouterProjection>& rs, const ProjectOptions& opt) {
  const ClusterModel& c = opt.cluster;
  std::string names;
  for (const RouterProjection& r : rs) names += (names.empty() ? "" : ", ") + r.router;
  std::string p =
      "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
      "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
      "<title>switchyard projection: " +
      html(names) + "</title>\n" + kStyle + "</head><body>\n";
  p += "<header><h1>switchyard projection</h1><div>routers " + html(names) +
       "; exact counts from the traces, times from a cluster model</div></header>\n<main>\n";

  p += "<section><h2>Settings</h2><dl>\n";
  p += row("cluster", html(c.name) + " <span class=\"tag\">" + html(c.label) + "</span>");
  p += row("links",
           html(f("%d GPUs/node; same-node %.3g GB/s, %.1f us; other-node %.3g GB/s, "
                  "%.1f us; self copy %s; %.3g TFLOP/s",
                  c.gpus_per_node, c.same_node.bandwidth_Bps / 1e9, c.same_node.latency_s * 1e6,
                  c.other_node.bandwidth_Bps / 1e9, c.other_node.latency_s * 1e6,
                  self_copy_text(c).c_str(), c.flops / 1e12)));
  p += row("model sizes",
           html(f("D %lld, F %lld (row %lld bytes)", static_cast<long long>(opt.hidden),
                  static_cast<long long>(opt.ffn_hidden), static_cast<long long>(opt.hidden * 4))));
  p += row("placement", html(opt.placement_name));
  p += row("tokens per rank",
           opt.tokens_per_rank > 0
               ? html(std::to_string(opt.tokens_per_rank))
               : html("trace tokens / the largest rank count (at least one unit); per P below"));
  if (opt.tokens_per_exchange > 0)
    p += row("tokens per exchange",
             html(std::to_string(opt.tokens_per_exchange) + " per rank (times are per exchange)"));
  if (opt.dp > 1) p += row("data-parallel replicas", html(std::to_string(opt.dp)));
  for (const RouterProjection& r : rs)
    p += row("router " + r.router,
             html(f("trace %s, model %s, %lld tokens in %lld %ss, capacity factor %g",
                    r.trace_dir.c_str(), r.model.c_str(), static_cast<long long>(r.trace_tokens),
                    static_cast<long long>(r.units), r.unit_kind.c_str(), r.capacity_factor)) +
                 (r.synthetic_routing ? " <span class=\"tag\">synthetic routing</span>" : ""));
  p += "</dl></section>\n";

  p += "<section><h2>Against P</h2><div class=\"charts\">\n";
  std::vector<Series> exchange =
      series_of(rs, opt, [](const PointSummary& m) { return (m.dispatch_s + m.combine_s) * 1e6; });
  for (size_t i = 0; i < rs.size(); ++i)
    for (const PointProjection& pt : rs[i].points)
      for (const MeasuredPoint& m : pt.measured)
        exchange[i].marks.emplace_back(pt.ranks, m.mean_exchange_s() * 1e6);
  p += line_chart("Exchange time per layer (dispatch + combine, model)", "microseconds", exchange);
  p += line_chart("Load per rank, max/mean (max over layers)", "max / mean rows received",
                  series_of(rs, opt, [](const PointSummary& m) { return m.rank_load; }));
  p += line_chart("Other-node bytes per rank per layer (mean)", "bytes sent",
                  series_of(rs, opt, [](const PointSummary& m) { return m.other_mean_bytes; }));
  p += "</div></section>\n";

  for (const RouterProjection& r : rs)
    p += "<section><h2>Router " + html(r.router) +
         (r.synthetic_routing ? " <span class=\"tag\">synthetic routing</span>" : "") +
         "</h2>\n<div class=\"wide\">" + router_table(r, opt) + "</div></section>\n";
  return p + "</main></body></html>\n";
}

}  // namespace sy
