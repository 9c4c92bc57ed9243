// Building blocks of the report pages (cluster_report_html.cc, compare_html.cc): formatting,
// escaping, and hand-built SVG (axes, bars, legends, a sequential colour scale) under one
// stylesheet, so every page is self-contained (no scripts, no external resources) and looks
// the same. Every string that reaches the page from a report goes through esc().
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace sy::html {

// printf into a std::string (at most 511 characters).
__attribute__((format(printf, 1, 2))) std::string fmt(const char* f, ...);
// & < > " ' as entities.
std::string esc(const std::string& s);
// 12345678 -> "12,345,678".
std::string grouped(int64_t v);
// Axis labels: 1500 -> "1.5k", 0.0025 -> "0.0025".
std::string short_num(double v);
double to_mib(int64_t bytes);
// 0 = max(v) .. a round number >= max in steps of 1, 2 or 5 x 10^k (at most ~10 ticks).
std::vector<double> nice_ticks(double max);
// Sequential blues for heat maps; t in [0, 1].
std::string blues(double t);
// Label every n-th slot, n a round number, so labels are at least `room` pixels apart.
int label_step(double slot_px, double room);
// <svg ...> of w x h with an aria-label; id (when not empty) is the element's id.
std::string svg_open(int w, int h, const std::string& label, const std::string& id = "");
std::string text(double x, double y, const std::string& s, const char* anchor = "middle",
                 const char* extra = "");
// A rectangle with an optional hover tip (<title>).
std::string rect(double x, double y, double w, double h, const std::string& fill,
                 const std::string& tip = "", const char* extra = "");
// Horizontal gridlines at `ticks` (the last is the top) with labels on the left, the y-axis
// title rotated; the plot is (ml, mt) + pw x ph.
std::string y_axis(const std::vector<double>& ticks, double ml, double mt, double pw, double ph,
                   const std::string& title);
// Swatches with labels in a row from (x, y): {name, colour}.
std::string legend(double x, double y,
                   const std::vector<std::pair<std::string, std::string>>& items);

// The pages' stylesheet, a <style> element.
extern const char* const kStyle;

}  // namespace sy::html
