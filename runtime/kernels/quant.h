// Weight-only, group-wise, symmetric quantization of a linear layer's weight W_OI (Hugging Face
// layout [out, in], row-major) to int8 or int4, and a forward GEMM on the quantized weights.
//
// Format (arithmetic in quant_math.h, shared with a future CUDA kernel):
//   groups of G consecutive input columns per output row (the last group of a row is shorter
//   when I % G != 0); one fp32 scale per (row, group): int8: scale = max|w| / 127; int4: the
//   scale among c * max|w| / 7, c in {1.00, 0.95, ..., 0.70}, with the least squared error
//   over the group (clipping a few large weights buys a finer step for the rest; the choice is
//   choose_scale below). q = clamp(rint(w / scale), -qmax, qmax), so int8 uses [-127, 127] and
//   int4 [-7, 7] (symmetric: -8 is decodable but never produced). w' = q * scale, and
//   |w - w'| <= scale / 2 for every |w| <= qmax * scale (up to fp32 rounding); a clipped weight
//   decodes to +-qmax * scale. All-zero groups: scale 0, w' = 0.
//   data: [O, row_bytes] with row_bytes = I (int8, two's complement) or (I + 1) / 2 (int4: column
//   2k in the low nibble, 2k + 1 in the high nibble); scales: [O, ceil(I / G)].
//
// GEMM: linear_forward_quantized dequantizes tile_rows output rows at a time into a
// thread-local fp32 scratch buffer (tile_rows x I floats, reused: no allocation in steady state)
// and runs the ordinary gemm() on the tile, so the cost is fp32 GEMM + one dequantization of W
// per call (amortized over the T token rows).
#pragma once

#include <cstdint>
#include <vector>

namespace sy {

struct QuantizedMatrix {
  int64_t O = 0;              // output rows
  int64_t I = 0;              // input columns
  int64_t G = 0;              // group size (input columns per scale)
  int bits = 0;               // 8 or 4
  std::vector<uint8_t> data;  // [O, row_bytes()]
  std::vector<float> scales;  // [O, groups()]
  // Set by quantize(): unique in the process for that result (copies share it, as they share
  // its values), so a device backend uploads a matrix once and keeps it by uid. 0: not from
  // quantize() (a device backend uploads it on every use). Whoever changes data or scales in
  // place after quantize() must set it to 0.
  uint64_t uid = 0;

  int64_t groups() const { return G > 0 ? (I + G - 1) / G : 0; }
  int64_t row_bytes() const { return bits == 4 ? (I + 1) / 2 : I; }
  // Storage in bytes: packed values plus fp32 scales.
  int64_t bytes() const {
    return static_cast<int64_t>(data.size()) + static_cast<int64_t>(scales.size() * sizeof(float));
  }
};

constexpr int64_t kQuantDefaultGroup = 128;
constexpr int64_t kQuantTileRows = 128;
constexpr int kQuantClipSteps = 6;  // int4 clip ratios tried below 1: 0.95 ... 0.70

// The scale of one group of n weights with max|w| = amax (see the format above).
float choose_scale(const float* w, int64_t n, float amax, int bits);

// Quantizes W_OI ([O, I], row-major). bits must be 8 or 4, G >= 1; W must be finite.
QuantizedMatrix quantize(const float* W_OI, int64_t O, int64_t I, int64_t G = kQuantDefaultGroup,
                         int bits = 8);

// out_RI ([rows, I]) = dequantized rows [row0, row0 + rows) of q.
void dequantize_rows(const QuantizedMatrix& q, int64_t row0, int64_t rows, float* out_RI);

// y_TO = x_TI deq(q)^T (+ beta * y_TO), with q of shape [O, I]. In deterministic mode each
// tile goes through the row-stable kernel (a token's output bits do not depend on its batch).
void linear_forward_quantized(const float* x_TI, const QuantizedMatrix& q, float* y_TO, int64_t T,
                              float beta = 0.0f, int64_t tile_rows = kQuantTileRows,
                              bool deterministic = false);

}  // namespace sy
