// The harness shared by the backend conformance cases (backend_conformance_test.cc and
// backend_conformance_moe.cc, one binary): tolerances, seeded host data, comparisons, and the
// fixture that runs every case once per registered backend.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <functional>
#include <iomanip>
#include <limits>
#include <map>
#include <numeric>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

#include "runtime/backend/backend.h"
#include "runtime/backend/ops.h"
#include "runtime/core/rng.h"
#include "runtime/kernels/capacity.h"  // CapacityConfig, CapacityPlan: the plan's host types
#include "runtime/kernels/quant.h"     // QuantizedMatrix and quantize(): host weight preparation

namespace sy {
namespace conformance {

inline constexpr double kU = 1.0 / 16777216.0;  // 2^-24
inline constexpr double kElemRel = 2e-6;
inline constexpr double kAttnRel = 2e-5;
inline constexpr double kDoubleRel = 1e-10;
inline constexpr double kTiny = 1e-30;  // so that an exact 0 must come out as 0
inline constexpr double kPi = 3.14159265358979323846;
inline const float kNaN = std::numeric_limits<float>::quiet_NaN();
inline const float kInf = std::numeric_limits<float>::infinity();

inline double sum_tol(int64_t n, double mag) {
  return static_cast<double>(n + 2) * kU * mag + kTiny;
}
inline double elem_tol(double mag) {
  return kElemRel * mag + kTiny;
}
inline double sigmoid(double x) {
  return 1.0 / (1.0 + std::exp(-x));
}

// ---- host data and comparisons ---------------------------------------------------------------

inline std::vector<float> randn(int64_t n, double scale, uint64_t seed, double offset = 0.0) {
  std::vector<float> v(static_cast<size_t>(n));
  Rng rng(seed);
  for (float& x : v) x = static_cast<float>(offset + scale * rng.normal());
  return v;
}
inline std::vector<int32_t> randint(int64_t n, int32_t lo, int32_t hi, uint64_t seed) {  // [lo, hi)
  std::vector<int32_t> v(static_cast<size_t>(n));
  Rng rng(seed);
  for (int32_t& x : v) x = lo + static_cast<int32_t>(rng.below(static_cast<uint64_t>(hi - lo)));
  return v;
}
inline std::vector<float> nans(int64_t n) {
  return std::vector<float>(static_cast<size_t>(n), kNaN);
}
using Span = std::pair<int64_t, int64_t>;  // first row, row count
template <typename T>
std::vector<T> slice(const std::vector<T>& v, int64_t row0, int64_t rows, int64_t width) {
  return std::vector<T>(v.begin() + row0 * width, v.begin() + (row0 + rows) * width);
}

// Reference values with an allowed error per element.
struct Ref {
  std::vector<double> v, tol;
  void add(double value, double t) {
    v.push_back(value);
    tol.push_back(t);
  }
};

inline void expect_close(const std::vector<float>& got, const Ref& ref, const std::string& what) {
  ASSERT_EQ(got.size(), ref.v.size()) << what;
  int64_t bad = 0;
  std::ostringstream first;
  first << std::setprecision(9);
  for (size_t i = 0; i < got.size(); ++i) {
    const double g = got[i], r = ref.v[i];
    const bool ok = g == r || (std::isnan(g) && std::isnan(r)) || std::fabs(g - r) <= ref.tol[i];
    if (!ok && bad++ < 3)
      first << "\n  [" << i << "] got " << g << ", want " << r << " +- " << ref.tol[i];
  }
  EXPECT_EQ(bad, 0) << what << ": " << bad << " of " << got.size() << " outside tolerance"
                    << first.str();
}

template <typename T>
inline void expect_bitwise(const std::vector<T>& got, const std::vector<T>& want,
                           const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < got.size(); ++i)
    if (std::memcmp(&got[i], &want[i], sizeof(T)) != 0) {
      ADD_FAILURE() << what << ": first bitwise difference at [" << i << "]: got " << +got[i]
                    << ", want " << +want[i];
      return;
    }
}

// ---- buffers ---------------------------------------------------------------------------------

template <typename T>
DType dtype_of() {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double> ||
                std::is_same_v<T, int32_t> || std::is_same_v<T, int64_t> ||
                std::is_same_v<T, int8_t> || std::is_same_v<T, uint8_t>);
  if (std::is_same_v<T, float>) return DType::kFloat32;
  if (std::is_same_v<T, double>) return DType::kFloat64;
  if (std::is_same_v<T, int32_t>) return DType::kInt32;
  if (std::is_same_v<T, int64_t>) return DType::kInt64;
  return std::is_same_v<T, int8_t> ? DType::kInt8 : DType::kUInt8;
}

template <typename T>
std::vector<T> down(const Buffer& b) {
  std::vector<T> h(static_cast<size_t>(b.numel()));
  b.copy_to_host(h.data());
  return h;
}

class BackendConformance : public ::testing::TestWithParam<std::string> {
 protected:
  // A registered backend without its device here (CUDA on a machine without a GPU) skips,
  // saying why.
  void SetUp() override {
    const std::string why = backend_unavailable(GetParam());
    if (!why.empty()) GTEST_SKIP() << GetParam() << ": " << why;
  }
  Backend* backend() const { return find_backend(GetParam()); }
  const ExecContext& ctx(bool deterministic = false) const {
    return *make_context(GetParam(), deterministic);
  }
  // A buffer on the backend holding a copy of host.
  template <typename T>
  Buffer up(const std::vector<T>& host) const {
    Buffer b(backend(), dtype_of<T>(), static_cast<int64_t>(host.size()));
    b.copy_from_host(host.data());
    return b;
  }
};

inline const char* mode_name(bool deterministic) {
  return deterministic ? "deterministic context" : "fast context";
}

}  // namespace conformance
}  // namespace sy
