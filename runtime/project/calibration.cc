#include "runtime/project/calibration.h"

#include <algorithm>
#include <array>
#include <cmath>

namespace sy {
namespace {

constexpr int kUnknowns = 5;  // latency same, other; 1/bandwidth self, same, other
using Row = std::array<double, kUnknowns>;

// Least squares on the columns in `use` (a bit mask over the unknowns) by Gaussian
// elimination of the normal equations; false when they are singular.
bool solve_subset(const std::vector<Row>& a, const std::vector<double>& b, unsigned use, Row* x) {
  std::vector<int> cols;
  for (int j = 0; j < kUnknowns; ++j)
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
                                     const bool rows_to[3], int64_t rows_per_peer,
                                     double row_bytes) {
  CalibrationSample s;
  s.pattern = pattern;
  s.rows_per_peer = rows_per_peer;
  const double rows = static_cast<double>(rows_per_peer);
  s.bytes[0] = rows_to[0] ? 2 * rows * row_bytes : 0;  // the self copy, there and back
  for (int t = 0; t < 2; ++t) {
    const double with_rows = rows_to[t + 1] && rows_per_peer > 0 ? peers[t] : 0;
    // dispatch: the count exchange to every peer + a message per peer with rows; return: the
    // rows back.
    s.messages[t] = peers[t] + 2 * with_rows;
    s.bytes[t + 1] = 2 * with_rows * rows * row_bytes;
  }
  return s;
}

StatusOr<CalibrationFit> fit_link_tiers(std::vector<CalibrationSample>* samples) {
  // Unknowns (Row): latency same, latency other, 1/bandwidth self, same, other. Rows scaled by
  // 1/measured: the relative error is what is minimized.
  auto features = [](const CalibrationSample& s) -> Row {
    return {s.messages[0], s.messages[1], s.bytes[0], s.bytes[1], s.bytes[2]};
  };
  std::vector<Row> a;
  std::vector<double> b;
  CalibrationFit fit;
  for (const CalibrationSample& s : *samples) {
    if (!(s.measured_s > 0) || !std::isfinite(s.measured_s)) continue;
    Row r = features(s);
    for (double& v : r) v /= s.measured_s;
    a.push_back(r);
    b.push_back(1.0);
    for (int t = 0; t < 3; ++t) fit.measured[t] = fit.measured[t] || s.bytes[t] > 0;
  }
  if (a.empty()) return InvalidArgument("calibration: no sample with a positive time");
  unsigned allowed = 0;
  for (int t = 0; t < 3; ++t)
    if (fit.measured[t]) allowed |= (1u << (t + 2)) | (t > 0 ? 1u << (t - 1) : 0u);
  // The non-negative least squares of 5 unknowns: the best feasible solution over every
  // subset of free columns (31 small solves).
  double best = HUGE_VAL;
  Row best_x{};
  for (unsigned use = 1; use < (1u << kUnknowns); ++use) {
    if ((use & ~allowed) != 0) continue;
    Row x;
    if (!solve_subset(a, b, use, &x)) continue;
    if (std::any_of(x.begin(), x.end(), [](double v) { return v < 0; })) continue;
    double r2 = 0;
    for (size_t i = 0; i < a.size(); ++i) {
      double y = 0;
      for (int j = 0; j < kUnknowns; ++j) y += a[i][j] * x[j];
      r2 += (y - b[i]) * (y - b[i]);
    }
    if (r2 < best) best = r2, best_x = x;
  }
  const char* const names[3] = {"self-copy", "same-node", "other-node"};
  for (int t = 0; t < 3; ++t) {
    if (!fit.measured[t]) continue;
    if (!(best_x[t + 2] > 0))
      return InvalidArgument(std::string("calibration: the ") + names[t] +
                             " tier's bandwidth cannot be fitted (its times do not grow with "
                             "the bytes; use larger sizes)");
    fit.tier[t].latency_s = t > 0 ? best_x[t - 1] : 0;
    fit.tier[t].bandwidth_Bps = 1.0 / best_x[t + 2];
  }
  std::vector<double> err;
  for (CalibrationSample& s : *samples) {
    const Row r = features(s);
    s.fitted_s = 0;
    for (int j = 0; j < kUnknowns; ++j) s.fitted_s += r[j] * best_x[j];
    if (s.measured_s > 0)
      err.push_back(100.0 * std::fabs(s.fitted_s - s.measured_s) / s.measured_s);
  }
  std::sort(err.begin(), err.end());
  fit.max_error_pct = err.back();
  fit.median_error_pct = err[err.size() / 2];
  return fit;
}

}  // namespace sy
