#include "runtime/report/html_svg.h"

#include <algorithm>
#include <cmath>
#include <cstdarg>
#include <cstdio>

namespace sy::html {

std::string fmt(const char* f, ...) {
  char buf[512];
  va_list ap;
  va_start(ap, f);
  const int n = std::vsnprintf(buf, sizeof(buf), f, ap);
  va_end(ap);
  return n > 0 ? std::string(buf, static_cast<size_t>(std::min<int>(n, sizeof(buf) - 1))) : "";
}

std::string esc(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  for (char ch : s) {
    switch (ch) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        out += ch;
    }
  }
  return out;
}

// 12345678 -> "12,345,678".
std::string grouped(int64_t v) {
  std::string d = std::to_string(v < 0 ? -v : v), out;
  for (size_t i = 0; i < d.size(); ++i) {
    if (i > 0 && (d.size() - i) % 3 == 0) out += ',';
    out += d[i];
  }
  return v < 0 ? "-" + out : out;
}

// Axis labels: 1500 -> "1.5k", 0.0025 -> "0.0025".
std::string short_num(double v) {
  const double a = std::fabs(v);
  if (a >= 1e9) return fmt("%.3gG", v / 1e9);
  if (a >= 1e6) return fmt("%.3gM", v / 1e6);
  if (a >= 1e4) return fmt("%.3gk", v / 1e3);
  return fmt("%.4g", v);
}

double to_mib(int64_t bytes) {
  return static_cast<double>(bytes) / (1024.0 * 1024.0);
}

// 0 = max(v) .. a round number >= max in steps of 1, 2 or 5 x 10^k (at most ~10 ticks).
std::vector<double> nice_ticks(double max) {
  if (!(max > 0.0) || !std::isfinite(max)) return {0.0, 1.0};
  const double raw = max / 5.0;
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  const double r = raw / mag;
  const double step = (r <= 1.0 ? 1.0 : r <= 2.0 ? 2.0 : r <= 5.0 ? 5.0 : 10.0) * mag;
  std::vector<double> t;
  for (int i = 0; i <= 12; ++i) {
    t.push_back(step * i);
    if (step * i >= max * (1.0 - 1e-12)) break;
  }
  return t;
}

// Sequential blues for the heat map; t in [0, 1].
std::string blues(double t) {
  static const int stops[5][3] = {
      {247, 251, 255}, {198, 219, 239}, {107, 174, 214}, {33, 113, 181}, {8, 48, 107}};
  t = std::min(1.0, std::max(0.0, std::isfinite(t) ? t : 0.0)) * 4.0;
  const int i = std::min(3, static_cast<int>(t));
  const double f = t - i;
  int c[3];
  for (int k = 0; k < 3; ++k)
    c[k] = static_cast<int>(std::lround(stops[i][k] + f * (stops[i + 1][k] - stops[i][k])));
  return fmt("#%02x%02x%02x", c[0], c[1], c[2]);
}

// Label every n-th slot, n a round number, so labels are at least `room` pixels apart.
int label_step(double slot_px, double room) {
  for (int n : {1, 2, 4, 5, 8, 10, 16, 20, 25, 32, 50, 64, 100, 128, 200, 256, 500, 1000})
    if (n * slot_px >= room) return n;
  return 1 + static_cast<int>(room / std::max(slot_px, 1e-3));
}

std::string svg_open(int w, int h, const std::string& label, const std::string& id) {
  return fmt("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
             "viewBox=\"0 0 %d %d\" role=\"img\" ",
             w, h, w, h) +
         (id.empty() ? std::string() : "id=\"" + esc(id) + "\" ") + "aria-label=\"" + esc(label) +
         "\">\n";
}

std::string text(double x, double y, const std::string& s, const char* anchor, const char* extra) {
  return fmt("<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"%s\" %s>", x, y, anchor, extra) + esc(s) +
         "</text>\n";
}

std::string rect(double x, double y, double w, double h, const std::string& fill,
                 const std::string& tip, const char* extra) {
  std::string r = fmt("<rect x=\"%.2f\" y=\"%.2f\" width=\"%.2f\" height=\"%.2f\" fill=\"%s\" %s>",
                      x, y, std::max(w, 0.0), std::max(h, 0.0), fill.c_str(), extra);
  if (!tip.empty()) r += "<title>" + esc(tip) + "</title>";
  return r + "</rect>\n";
}

// Horizontal gridlines with labels on the left, the y-axis title rotated.
std::string y_axis(const std::vector<double>& ticks, double ml, double mt, double pw, double ph,
                   const std::string& title) {
  std::string s;
  const double top = ticks.back();
  for (double t : ticks) {
    const double y = mt + ph - t / top * ph;
    s += fmt("<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\"/>\n", ml, y,
             ml + pw, y, t == 0.0 ? "#57606a" : "#e5e7eb");
    s += text(ml - 6, y + 4, short_num(t), "end", "class=\"tick\"");
  }
  s += fmt("<text transform=\"translate(14,%.1f) rotate(-90)\" text-anchor=\"middle\" "
           "class=\"axis\">",
           mt + ph / 2) +
       esc(title) + "</text>\n";
  return s;
}

// Swatches with labels in a row from (x, y).
std::string legend(double x, double y,
                   const std::vector<std::pair<std::string, std::string>>& items) {
  std::string s;
  for (const auto& [name, color] : items) {
    s += rect(x, y - 9, 11, 11, color);
    s += text(x + 15, y, name, "start", "class=\"legend\"");
    x += 28 + 6.8 * static_cast<double>(name.size());
  }
  return s;
}

const char* const kStyle = R"(<style>
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:0;
background:#f6f7f9;color:#1f2328}
header{background:#1f2937;color:#f9fafb;padding:20px 32px}
header h1{margin:0;font-size:22px;font-weight:600}
header .sub{color:#d1d5db;margin-top:6px;font-size:14px}
main{max-width:1180px;margin:0 auto;padding:8px 32px 40px}
.card{background:#fff;border:1px solid #e1e4e8;border-radius:8px;padding:16px 20px;margin:16px 0}
h2{font-size:17px;margin:0 0 12px}
h3{font-size:14px;margin:4px 0 6px;color:#374151}
.tiles{display:flex;flex-wrap:wrap;gap:12px}
.tile{flex:1 1 150px;background:#fff;border:1px solid #e1e4e8;border-radius:8px;padding:12px 16px}
.tile .v{font-size:22px;font-weight:600}.tile .k{font-size:12px;color:#57606a}
table{border-collapse:collapse;font-size:13px;font-variant-numeric:tabular-nums}
th,td{padding:4px 10px;text-align:right;border-bottom:1px solid #eaecef}
th{background:#f3f4f6;font-weight:600}td:first-child,th:first-child{text-align:left}
.charts{display:flex;flex-wrap:wrap;gap:20px;align-items:flex-start}
.tick{font-size:11px;fill:#57606a}.axis{font-size:12px;fill:#374151}
.legend{font-size:12px;fill:#1f2328}.band{font-size:10px;fill:#9ca3af}.cell{font-size:10px}
.note{color:#57606a;font-size:12px;margin:8px 0 0}.warn{color:#9a3412}
.host{font-size:11px;fill:#374151}
.split{display:flex;width:220px;height:14px;background:#f3f4f6;border-radius:2px;overflow:hidden}
.split span{display:block;height:100%}
.swatch{display:inline-block;width:11px;height:11px;margin:0 4px 0 12px;vertical-align:-1px}
</style>
)";

}  // namespace sy::html
