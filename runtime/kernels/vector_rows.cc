// The elementwise loops that pay for vector code: the SiLU and SwiGLU loops of cpu_kernels.h and
// the AdamW update of rows.h and the cross-entropy's row loops of loss.h, in a file of their own so
// they can be built to vectorize (runtime/CMakeLists.txt: -O3 -fno-trapping-math, which lets the
// compiler turn the clamps of exp_poly into vector min/max, -fno-math-errno, so sqrt is an
// instruction and not a call that may set errno, and -ffp-contract=off, so no clone fuses a
// multiply and an add and every clone gives the scalar code's bits: +, *, /, sqrt and conversions
// are correctly rounded in every width). With GCC each loop is also cloned for AVX-512 and AVX2 and
// picked at load time by the CPU (target_clones); the values are the same on every clone and on a
// machine with none of them (kernels_test compares them with the scalar per-element functions).
//   SwiGLU pass: ~2.6 ns a value with glibc's expf, ~3x faster here (bench/ceiling_bench).
//   AdamW: double sqrt and divisions, ~6 ns a parameter scalar (bench/step_ceiling).
//   Cross-entropy: glibc's exp (loss) and expf with one serial fp32 sum (gradient), ~225 ms for
//   512 tokens x 50,257 logits (bench/step_ceiling).
#include "runtime/kernels/cpu_kernels.h"
#include "runtime/kernels/loss.h"
#include "runtime/kernels/math.h"
#include "runtime/kernels/rows.h"

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(SY_NO_CLONES)
#define SY_VECTOR_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define SY_VECTOR_CLONES
#endif

namespace sy {

SY_VECTOR_CLONES void silu_inplace(float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] = silu(x[i]);
}

SY_VECTOR_CLONES void silu_backward(const float* x, const float* dy, float* dx, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dx[i] = dy[i] * silu_grad(x[i]);
}

SY_VECTOR_CLONES void swiglu_rows(const float* g, const float* u, float* a, int64_t n) {
  for (int64_t i = 0; i < n; ++i) a[i] = silu(g[i]) * u[i];
}

SY_VECTOR_CLONES void swiglu_backward_rows(const float* g, const float* u, const float* da,
                                           float* dg, float* du, int64_t n) {
  if (dg == da) {  // in place: one pointer, so the compiler needs no overlap check to vectorize
    for (int64_t i = 0; i < n; ++i) {
      float dgi, dui;
      swiglu_backward_elem(g[i], u[i], dg[i], &dgi, &dui);
      dg[i] = dgi;
      du[i] = dui;
    }
    return;
  }
  for (int64_t i = 0; i < n; ++i) {
    float dgi, dui;
    swiglu_backward_elem(g[i], u[i], da[i], &dgi, &dui);
    dg[i] = dgi;
    du[i] = dui;
  }
}

SY_VECTOR_CLONES void adamw_update(float* w, const float* g, float* m, float* v, int64_t n,
                                   const AdamWStep& s) {
  // Scalars in a local: the loop then has no loads the stores to w, m, v could alias.
  const AdamWScalars k = adamw_scalars(s);
  for (int64_t i = 0; i < n; ++i) adamw_element(k, g[i], w + i, m + i, v + i);
}

// ---- cross-entropy rows (loss.h) ----
// Each sum keeps kLossLanes partial sums: element j goes to lane j % kLossLanes, each lane adds
// its elements in order, then the lanes are added in order 0, 1, ...: one fixed order, which
// every vector width reproduces (and kernels_test recomputes one element at a time).

// The lanes' partial sums added in lane order.
inline double add_lanes(const double (&lane)[kLossLanes]) {
  double z = 0.0;
  for (int k = 0; k < kLossLanes; ++k) z += lane[k];
  return z;
}

SY_VECTOR_CLONES float loss_row_max(const float* x, int64_t n) {
  float lane[kLossLanes];
  for (int k = 0; k < kLossLanes; ++k) lane[k] = -INFINITY;
  int64_t j = 0;
  for (; j + kLossLanes <= n; j += kLossLanes)
    for (int k = 0; k < kLossLanes; ++k) lane[k] = x[j + k] > lane[k] ? x[j + k] : lane[k];
  float m = -INFINITY;
  for (; j < n; ++j) m = x[j] > m ? x[j] : m;
  for (int k = 0; k < kLossLanes; ++k) m = lane[k] > m ? lane[k] : m;
  return m;
}

SY_VECTOR_CLONES double loss_row_sum_exp(const float* x, int64_t n, float m) {
  const double md = m;
  double lane[kLossLanes] = {};
  int64_t j = 0;
  for (; j + kLossLanes <= n; j += kLossLanes)
    for (int k = 0; k < kLossLanes; ++k)
      lane[k] += exp_neg_poly(static_cast<double>(x[j + k]) - md);
  for (int k = 0; j < n; ++j, ++k) lane[k] += exp_neg_poly(static_cast<double>(x[j]) - md);
  return add_lanes(lane);
}

SY_VECTOR_CLONES double loss_row_exp(const float* x, int64_t n, float m, float* p) {
  double lane[kLossLanes] = {};
  int64_t j = 0;
  for (; j + kLossLanes <= n; j += kLossLanes) {
    for (int k = 0; k < kLossLanes; ++k) {
      p[j + k] = exp_poly(x[j + k] - m);
      lane[k] += static_cast<double>(p[j + k]);
    }
  }
  for (int k = 0; j < n; ++j, ++k) {
    p[j] = exp_poly(x[j] - m);
    lane[k] += static_cast<double>(p[j]);
  }
  return add_lanes(lane);
}

SY_VECTOR_CLONES void loss_row_scale(float* p, int64_t n, float a, float b) {
  for (int64_t j = 0; j < n; ++j) p[j] = p[j] * a * b;
}

}  // namespace sy
