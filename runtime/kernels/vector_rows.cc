// The elementwise loops that pay for vector code: the SiLU and SwiGLU loops of cpu_kernels.h and
// the AdamW update of rows.h, in a file of their own so they can be built to vectorize
// (runtime/CMakeLists.txt: -O3 -fno-trapping-math, which lets the compiler turn the clamps of
// exp_poly into vector min/max, -fno-math-errno, so sqrt is an instruction and not a call that
// may set errno, and -ffp-contract=off, so no clone fuses a multiply and an add
// and every clone gives the scalar code's bits: +, *, /, sqrt and conversions are correctly
// rounded in every width). With GCC each loop is also cloned for AVX-512 and AVX2 and picked at
// load time by the CPU (target_clones); the values are the same on every clone and on a machine
// with none of them (kernels_test compares them with the scalar per-element functions).
//   SwiGLU pass: ~2.6 ns a value with glibc's expf, ~3x faster here (bench/ceiling_bench).
//   AdamW: double sqrt and divisions, ~6 ns a parameter scalar (bench/step_ceiling).
#include "runtime/kernels/cpu_kernels.h"
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

}  // namespace sy
