// Weight-only quantization arithmetic shared by the CPU path (quant.cc) and, later, a CUDA
// dequantize-in-GEMM kernel (SY_HD = __host__ __device__ under nvcc, from math.h). No
// allocation, no library calls beyond <cmath>.
//
// Symmetric, per group of G consecutive input columns of one output row:
//   int8: scale = max|w| / 127, q = clamp(rint(w / scale), -127, 127)   (-128 never produced)
//   int4: scale = max|w| / 7,   q = clamp(rint(w / scale), -7, 7)       (-8 never produced, but
//         decodes correctly: every nibble 0..15 maps to -8..7 two's complement)
//   w' = q * scale; an all-zero group has scale 0 and decodes to exact zeros (no 0/0).
// Storage of one row: int8 one byte per value (two's complement); int4 two values per byte,
// column 2k in the LOW nibble and 2k+1 in the HIGH nibble, rows padded to (I + 1) / 2 bytes so
// every row starts on a byte.
#pragma once

#include <cmath>
#include <cstdint>

#include "runtime/kernels/math.h"

namespace sy {

// Largest magnitude produced by quantize for a bit width (8 -> 127, 4 -> 7).
SY_HD inline int quant_qmax(int bits) {
  return bits == 4 ? 7 : 127;
}

// Bytes that hold one row of I quantized values.
SY_HD inline int64_t quant_row_bytes(int64_t I, int bits) {
  return bits == 4 ? (I + 1) / 2 : I;
}

// q = clamp(rint(w / scale), -qmax, qmax); 0 when scale == 0 (an all-zero group).
SY_HD inline int quantize_value(float w, float scale, int qmax) {
  if (!(scale > 0.0f)) return 0;
  float r = rintf(w / scale);
  r = r > static_cast<float>(qmax) ? static_cast<float>(qmax) : r;
  r = r < static_cast<float>(-qmax) ? static_cast<float>(-qmax) : r;
  return static_cast<int>(r);
}

// int4 packing: lo, hi in [-8, 7] -> one byte (lo in bits 0..3, hi in bits 4..7).
SY_HD inline uint8_t int4_pack(int lo, int hi) {
  return static_cast<uint8_t>((lo & 0xF) | ((hi & 0xF) << 4));
}
// Sign-extend a nibble (0..15 -> -8..7) without relying on arithmetic shifts.
SY_HD inline int int4_lo(uint8_t b) {
  return ((b & 0xF) ^ 0x8) - 0x8;
}
SY_HD inline int int4_hi(uint8_t b) {
  return ((b >> 4) ^ 0x8) - 0x8;
}
SY_HD inline int int8_value(uint8_t b) {
  return static_cast<int>(static_cast<int8_t>(b));
}

// The quantized value at column i of a row (row = first byte of the row).
SY_HD inline int quant_get(const uint8_t* row, int64_t i, int bits) {
  if (bits == 4) return (i & 1) ? int4_hi(row[i >> 1]) : int4_lo(row[i >> 1]);
  return int8_value(row[i]);
}

// Dequantize columns [c0, c1) of one row (all in one group, scale s) into out[c0..c1).
SY_HD inline void dequant_span_int8(const uint8_t* row, float s, int64_t c0, int64_t c1,
                                    float* out) {
  for (int64_t i = c0; i < c1; ++i) out[i] = static_cast<float>(static_cast<int8_t>(row[i])) * s;
}
SY_HD inline void dequant_span_int4(const uint8_t* row, float s, int64_t c0, int64_t c1,
                                    float* out) {
  int64_t i = c0;
  if (i < c1 && (i & 1)) {  // a group may start on a high nibble when G is odd
    out[i] = static_cast<float>(int4_hi(row[i >> 1])) * s;
    ++i;
  }
  // Whole bytes (i is even here): a plain counted loop over bytes, so compilers vectorize it.
  const int64_t k0 = i >> 1, k1 = c1 >> 1;
  for (int64_t k = k0; k < k1; ++k) {
    const uint8_t b = row[k];
    out[2 * k] = static_cast<float>(int4_lo(b)) * s;
    out[2 * k + 1] = static_cast<float>(int4_hi(b)) * s;
  }
  i = k1 > k0 ? 2 * k1 : i;
  if (i < c1) out[i] = static_cast<float>(int4_lo(row[i >> 1])) * s;
}

// Dequantize one full row of I values: row bytes and its ceil(I / G) scales -> out[0..I).
SY_HD inline void dequant_row(const uint8_t* row, const float* scales, int64_t I, int64_t G,
                              int bits, float* out) {
  for (int64_t c0 = 0, g = 0; c0 < I; c0 += G, ++g) {
    const int64_t c1 = c0 + G < I ? c0 + G : I;
    if (bits == 4)
      dequant_span_int4(row, scales[g], c0, c1, out);
    else
      dequant_span_int8(row, scales[g], c0, c1, out);
  }
}

}  // namespace sy
