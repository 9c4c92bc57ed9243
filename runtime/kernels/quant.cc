// The dequantization loops (quant_math.h) vectorize only with a runtime-trip-count cost model,
// which GCC's -O2 lacks ("very cheap"); turn it on for this file's functions (the inline
// helpers included below are instantiated here). Clang vectorizes them at -O2 already.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("tree-vectorize", "vect-cost-model=dynamic")
#endif

#include "runtime/kernels/quant.h"

#include <atomic>
#include <cmath>

#include "runtime/core/check.h"
#include "runtime/kernels/cpu_kernels.h"
#include "runtime/kernels/quant_math.h"

namespace sy {
namespace {

// Grow-only per-thread scratch: each thread that runs a quantized GEMM keeps one buffer of the
// largest tile it has seen (tile_rows x I floats), so steady state allocates nothing.
float* thread_scratch(std::vector<float>* v, int64_t n) {
  if (static_cast<int64_t>(v->size()) < n) v->resize(static_cast<size_t>(n));
  return v->data();
}
thread_local std::vector<float> tl_w_tile;  // dequantized W rows [rt, I]
thread_local std::vector<float> tl_y_tile;  // deterministic mode only: [T, rt]

}  // namespace

namespace {
// Sum of squared errors of a group quantized with scale s (an estimate for choosing s: rounds
// w / s by multiplying with 1 / s and the 1.5 * 2^23 trick, branch-free so it vectorizes; it
// can differ from quantize_value() only at exact ties).
float group_sse(const float* w, int64_t n, float s, int qmax) {
  const float inv = 1.0f / s, lim = static_cast<float>(qmax), magic = 12582912.0f;
  // Eight partial sums: the compiler may vectorize them without reassociating one sum.
  float acc[8] = {};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; ++j) {
      float q = (w[i + j] * inv + magic) - magic;  // round to nearest even, |w / s| < 2^22
      q = q < -lim ? -lim : (q > lim ? lim : q);
      const float d = w[i + j] - q * s;
      acc[j] += d * d;
    }
  for (; i < n; ++i) {
    float q = (w[i] * inv + magic) - magic;
    q = q < -lim ? -lim : (q > lim ? lim : q);
    const float d = w[i] - q * s;
    acc[0] += d * d;
  }
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}
}  // namespace

float choose_scale(const float* w, int64_t n, float amax, int bits) {
  const int qmax = quant_qmax(bits);
  const float s0 = amax / static_cast<float>(qmax);
  if (bits != 4 || s0 == 0.0f) return s0;
  // int4 has 15 levels: clipping the largest weights of a group buys a finer step for all the
  // others. Try clip ratios 1.00, 0.95, ..., 0.70 and keep the least squared error (ties: the
  // larger scale). Costs 7 passes over the group, once per load.
  float best_s = s0;
  float best = group_sse(w, n, s0, qmax);
  for (int k = 1; k <= kQuantClipSteps; ++k) {
    const float s = s0 * (1.0f - 0.05f * static_cast<float>(k));
    const float e = group_sse(w, n, s, qmax);
    if (e < best) {
      best = e;
      best_s = s;
    }
  }
  return best_s;
}

QuantizedMatrix quantize(const float* W_OI, int64_t O, int64_t I, int64_t G, int bits) {
  SY_CHECK(bits == 8 || bits == 4) << "quantize: bits must be 8 or 4, got " << bits;
  SY_CHECK(G >= 1) << "quantize: group size must be >= 1, got " << G;
  SY_CHECK(O >= 0 && I >= 0) << "quantize: bad shape [" << O << ", " << I << "]";
  QuantizedMatrix q;
  q.O = O;
  q.I = I;
  q.G = G;
  q.bits = bits;
  static std::atomic<uint64_t> next_uid{1};
  q.uid = next_uid.fetch_add(1, std::memory_order_relaxed);
  const int64_t rb = q.row_bytes(), ng = q.groups();
  q.data.assign(static_cast<size_t>(O * rb), 0);
  q.scales.assign(static_cast<size_t>(O * ng), 0.0f);
  const int qmax = quant_qmax(bits);
  for (int64_t o = 0; o < O; ++o) {
    const float* w = W_OI + o * I;
    uint8_t* row = q.data.data() + o * rb;
    for (int64_t g = 0; g < ng; ++g) {
      const int64_t c0 = g * G, c1 = c0 + G < I ? c0 + G : I;
      float amax = 0.0f;
      for (int64_t i = c0; i < c1; ++i) {
        SY_CHECK(std::isfinite(w[i]))
            << "quantize: non-finite weight at [" << o << ", " << i << "]";
        amax = std::fabs(w[i]) > amax ? std::fabs(w[i]) : amax;
      }
      const float s = choose_scale(w + c0, c1 - c0, amax, bits);
      q.scales[static_cast<size_t>(o * ng + g)] = s;
      for (int64_t i = c0; i < c1; ++i) {
        const int v = quantize_value(w[i], s, qmax);
        if (bits == 8) {
          row[i] = static_cast<uint8_t>(static_cast<int8_t>(v));
        } else {
          uint8_t& b = row[i >> 1];
          b = (i & 1) ? int4_pack(int4_lo(b), v) : int4_pack(v, int4_hi(b));
        }
      }
    }
  }
  return q;
}

void dequantize_rows(const QuantizedMatrix& q, int64_t row0, int64_t rows, float* out_RI) {
  SY_CHECK(row0 >= 0 && rows >= 0 && row0 + rows <= q.O)
      << "dequantize_rows: rows [" << row0 << ", " << row0 + rows << ") of " << q.O;
  const int64_t rb = q.row_bytes(), ng = q.groups();
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t o = row0 + r;
    dequant_row(q.data.data() + o * rb, q.scales.data() + o * ng, q.I, q.G, q.bits,
                out_RI + r * q.I);
  }
}

void linear_forward_quantized(const float* x_TI, const QuantizedMatrix& q, float* y_TO, int64_t T,
                              float beta, int64_t tile_rows, bool deterministic) {
  SY_CHECK(tile_rows >= 1) << "linear_forward_quantized: tile_rows must be >= 1";
  const int64_t O = q.O, I = q.I;
  if (T == 0 || O == 0) return;
  const int64_t rt_max = tile_rows < O ? tile_rows : O;
  float* w = thread_scratch(&tl_w_tile, rt_max * I);
  const bool det = deterministic;
  float* yt = det ? thread_scratch(&tl_y_tile, T * rt_max) : nullptr;
  for (int64_t r0 = 0; r0 < O; r0 += rt_max) {
    const int64_t rt = r0 + rt_max < O ? rt_max : O - r0;
    dequantize_rows(q, r0, rt, w);
    if (!det) {
      // y[:, r0:r0+rt] = x W_tile^T (+ beta y): C is a column block of y (ldc = O).
      gemm(false, true, T, rt, I, 1.0f, x_TI, I, w, I, beta, y_TO + r0, O);
      continue;
    }
    // Deterministic mode: gemm() uses the row-stable kernel only for a contiguous C (ldc = N),
    // so compute the tile into scratch and merge it.
    gemm(false, true, T, rt, I, 1.0f, x_TI, I, w, I, 0.0f, yt, rt, /*deterministic=*/true);
    for (int64_t t = 0; t < T; ++t) {
      float* yrow = y_TO + t * O + r0;
      const float* trow = yt + t * rt;
      for (int64_t j = 0; j < rt; ++j) yrow[j] = beta == 0.0f ? trow[j] : trow[j] + beta * yrow[j];
    }
  }
}

}  // namespace sy
