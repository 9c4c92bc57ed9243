#include "runtime/project/calibration.h"

#include <algorithm>
#include <array>
#include <cmath>

namespace sy {
namespace {

// Least squares on the columns in `use` (a bit mask over the 4 unknowns) by Gaussian
// elimination of the normal equations; false when they are singular.
bool solve_subset(const std::vector<std::array<double, 4>>& a, const std::vector<double>& b,
                  unsigned use, std::array<double, 4>* x) {
  std::vector<int> cols;
  for (int j = 0; j < 4; ++j)
    if (use & (1u << j)) cols.push_back(j);
  const size_t n = cols.size();
  std::vector<std::vector<double>> m(n, std::vector<double>(n + 1, 0));
  for (size_t i = 0; i < a.size(); ++i)
    for (size_t r = 0; r < n; ++r) {
      for (size_t c = 0; c < n; ++c) m[r][c] += a[i][cols[r]] * a[i][cols[c]];
      m[r][n] += a[i][cols[r]] * b[i];
    }
  for (size_t p = 0; p < n; ++p) {
    size_t piv = p;
    for (size_t r = p + 1; r < n; ++r)
      if (std::fabs(m[r][p]) > std::fabs(m[piv][p])) piv = r;
    if (std::fabs(m[piv][p]) < 1e-300) return false;
    std::swap(m[p], m[piv]);
    for (size_t r = 0; r < n; ++r) {
      if (r == p) continue;
      const double f = m[r][p] / m[p][p];
      for (size_t c = p; c <= n; ++c) m[r][c] -= f * m[p][c];
    }
  }
  x->fill(0);
  for (size_t r = 0; r < n; ++r) (*x)[cols[r]] = m[r][n] / m[r][r];
  return true;
}

}  // namespace

CalibrationSample calibration_sample(const std::string& pattern, const int peers[2],
                                     const bool rows_to[2], int64_t rows_per_peer,
                                     double row_bytes) {
  CalibrationSample s;
  s.pattern = pattern;
  s.rows_per_peer = rows_per_peer;
  for (int t = 0; t < 2; ++t) {
    const double with_rows = rows_to[t] && rows_per_peer > 0 ? peers[t] : 0;
    // dispatch: the count exchange to every peer + a message per peer with rows; return: the
    // rows back.
    s.messages[t] = peers[t] + 2 * with_rows;
    s.bytes[t] = 2 * with_rows * static_cast<double>(rows_per_peer) * row_bytes;
  }
  return s;
}

StatusOr<CalibrationFit> fit_link_tiers(std::vector<CalibrationSample>* samples) {
  // Unknowns: latency same, latency other, 1/bandwidth same, 1/bandwidth other. Rows scaled by
  // 1/measured: the relative error is what is minimized.
  std::vector<std::array<double, 4>> a;
  std::vector<double> b;
  CalibrationFit fit;
  for (const CalibrationSample& s : *samples) {
    if (!(s.measured_s > 0) || !std::isfinite(s.measured_s)) continue;
    const double w = 1.0 / s.measured_s;
    a.push_back({s.messages[0] * w, s.messages[1] * w, s.bytes[0] * w, s.bytes[1] * w});
    b.push_back(1.0);
    for (int t = 0; t < 2; ++t) fit.measured[t] = fit.measured[t] || s.bytes[t] > 0;
  }
  if (a.empty()) return InvalidArgument("calibration: no sample with a positive time");
  unsigned allowed = 0;
  for (int t = 0; t < 2; ++t)
    if (fit.measured[t]) allowed |= (1u << t) | (1u << (t + 2));
  // The non-negative least squares of 4 unknowns: the best feasible solution over every
  // subset of free columns (16 small solves).
  double best = HUGE_VAL;
  std::array<double, 4> best_x{};
  for (unsigned use = 1; use < 16; ++use) {
    if ((use & ~allowed) != 0) continue;
    std::array<double, 4> x;
    if (!solve_subset(a, b, use, &x)) continue;
    if (std::any_of(x.begin(), x.end(), [](double v) { return v < 0; })) continue;
    double r2 = 0;
    for (size_t i = 0; i < a.size(); ++i) {
      double y = 0;
      for (int j = 0; j < 4; ++j) y += a[i][j] * x[j];
      r2 += (y - b[i]) * (y - b[i]);
    }
    if (r2 < best) best = r2, best_x = x;
  }
  for (int t = 0; t < 2; ++t) {
    if (!fit.measured[t]) continue;
    if (!(best_x[t + 2] > 0))
      return InvalidArgument(std::string("calibration: the ") +
                             (t == 0 ? "same-node" : "other-node") +
                             " tier's bandwidth cannot be fitted (its times do not grow with "
                             "the bytes; use larger sizes)");
    fit.tier[t].latency_s = best_x[t];
    fit.tier[t].bandwidth_Bps = 1.0 / best_x[t + 2];
  }
  std::vector<double> err;
  for (CalibrationSample& s : *samples) {
    s.fitted_s = 0;
    for (int t = 0; t < 2; ++t)
      s.fitted_s += s.messages[t] * best_x[t] + s.bytes[t] * best_x[t + 2];
    if (s.measured_s > 0)
      err.push_back(100.0 * std::fabs(s.fitted_s - s.measured_s) / s.measured_s);
  }
  std::sort(err.begin(), err.end());
  fit.max_error_pct = err.back();
  fit.median_error_pct = err[err.size() / 2];
  return fit;
}

}  // namespace sy
