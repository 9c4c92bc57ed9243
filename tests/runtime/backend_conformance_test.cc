// Backend conformance, in the spirit of ggml's test-backend-ops: every operation of the Backend
// table (runtime/backend/backend.h) on every registered backend, on seeded random inputs, against
// simple references written here in plain loops with double accumulation. Inputs are copied into
// Buffers on the backend, the op runs through ops::, outputs come back to the host. The suite is
// instantiated over backend_names(), so a backend registered later (CUDA) runs the same cases.
// GEMM-family ops run in a fast and a deterministic context; the deterministic one must also keep
// its promise: a token row's output bits do not depend on the batch it is computed in.
//
// Independence: no reference calls runtime/kernels/ (the CPU backend's code under test), except
// quantize() (runtime/kernels/quant.h), which only prepares the host QuantizedMatrix input; the
// test decodes the documented int8/int4 format itself. The capacity plan reference is a plain
// re-implementation of the drop rule documented in runtime/kernels/capacity.h, compared field by
// field.
//
// Contracts read from the kernel headers where backend.h is terse: beta = 0 means C is not read
// (BLAS; callers pass uninitialized workspace), so such outputs start as NaN here, as do outputs
// documented as written; rmsnorm_backward and bias_backward_rows accumulate; attention_backward
// writes dq and adds into dk, dv; softmax of an all -inf row is uniform; top-k ranks NaN as -inf
// (ties to the lower index, so a NaN before a -inf wins).
//
// Tolerances (u = 2^-24, fp32 unit roundoff; "mag" = the sum of |terms| that make one output,
// computed alongside the reference, so every bound scales with the data):
//   sums of n fp32 terms (GEMMs, linear, dot, combine, norms, bias gradients, scatter-add with
//     repeats): (n + 2) u mag, the worst-case bound of fp32 summation in any order. TF32 or
//     fp16 accumulation fails it, on purpose;
//   elementwise and transcendental (SiLU, GELU, sigmoid, softmax, RoPE, LayerNorm, AdamW (its
//     fp32 weight also one ulp), cross-entropy gradient): 2e-6 mag (~32 ulp: libm's expf/erff
//     differ by a few ulp, while a wrong formula, e.g. tanh-GELU for erf-GELU, is off by ~1e-4);
//   attention (scores pass through exp, so no simple per-element bound): 2e-5 x max |ref| of
//     each output tensor;
//   double results (sum_squares, cross_entropy_sum): 1e-10 relative;
//   bitwise (memcmp): top-k ids and values, gather_rows, hash_route, gather_topk_probs,
//     dequantize_rows, scatter_rows_weighted, add_inplace, add_bias_rows, bias_broadcast_rows,
//     scatter_add_rows with one contributor per row (each a single correctly rounded fp32
//     operation or a copy), the capacity plan, copy, fill_zero, Buffer and alloc round trips,
//     and the deterministic row-stability promise.
//
// Ops covered: covered_ops() in backend_conformance_coverage.cc lists each op with the case
// that checks it, and EveryOpHasACase checks that list against the table declared in backend.h.
// Row stability of gemm, linear_forward, linear_backward's dx and linear_forward_quantized:
// DeterministicRowsDoNotDependOnTheBatch.
//
// Legend: T tokens, D hidden, I/O linear in/out, E experts, K top-k, R rows, V vocabulary.
//
// The cases live in this file and in backend_conformance_moe.cc (routing and the MoE data path,
// the optimizer, reductions), the coverage check in backend_conformance_coverage.cc: one binary;
// the harness is backend_conformance.h.
#include "tests/runtime/backend_conformance.h"

#include <cstdio>
#include <tuple>

#include "runtime/core/tensor.h"

namespace sy {
namespace conformance {
namespace {

// ---- memory ----------------------------------------------------------------------------------

template <typename T>
void expect_round_trip(Backend* be, int64_t n, uint64_t seed) {
  std::vector<T> h(static_cast<size_t>(n));
  for (size_t i = 0; i < h.size(); ++i) {
    const uint64_t bits = splitmix64(seed * 1000003 + i);  // any bit pattern, NaNs included
    std::memcpy(&h[i], &bits, sizeof(T));
  }
  Buffer b(be, dtype_of<T>(), n);
  EXPECT_EQ(b.numel(), n);
  EXPECT_EQ(b.bytes(), n * static_cast<int64_t>(sizeof(T)));
  EXPECT_EQ(b.dtype(), dtype_of<T>());
  EXPECT_TRUE(b.device() == be->device());
  b.copy_from_host(h.data());
  expect_bitwise(down<T>(b), h, std::string("Buffer round trip of ") + dtype_name(dtype_of<T>()));
}

TEST_P(BackendConformance, Memory) {
  Backend* be = backend();
  const ExecContext& c = ctx();
  for (int64_t n : {37, 1, 0}) {
    SCOPED_TRACE("numel " + std::to_string(n));
    expect_round_trip<float>(be, n, 1);
    expect_round_trip<double>(be, n, 2);
    expect_round_trip<int32_t>(be, n, 3);
    expect_round_trip<int64_t>(be, n, 4);
    expect_round_trip<int8_t>(be, n, 5);
    expect_round_trip<uint8_t>(be, n, 6);
  }

  // Raw alloc/free (an alloc of 0 bytes may return null).
  const std::vector<float> h = randn(1001, 1.0, 7);
  void* p = be->alloc(static_cast<int64_t>(h.size() * sizeof(float)));
  ASSERT_NE(p, nullptr);
  be->copy_from_host(p, h.data(), static_cast<int64_t>(h.size() * sizeof(float)));
  std::vector<float> back(h.size());
  be->copy_to_host(back.data(), p, static_cast<int64_t>(h.size() * sizeof(float)));
  be->free(p);
  expect_bitwise(back, h, "alloc round trip");
  if (void* z = be->alloc(0)) be->free(z);

  // A move leaves the source empty and the contents with the destination.
  Buffer a = up(h);
  Buffer moved = std::move(a);
  EXPECT_EQ(a.numel(), 0);
  EXPECT_EQ(a.data(), nullptr);
  expect_bitwise(down<float>(moved), h, "moved Buffer");

  // copy: floats [3, 20) of src to [5, 22) of dst; everything else of dst untouched.
  const std::vector<float> d0 = randn(64, 1.0, 8);
  Buffer src = up(h), dst = up(d0);
  ops::copy(c, dst.as<float>() + 5, src.as<float>() + 3, 17 * sizeof(float));
  ops::copy(c, dst.as<float>(), src.as<float>(), 0);
  ops::synchronize(c);
  std::vector<float> want = d0;
  std::copy(h.begin() + 3, h.begin() + 20, want.begin() + 5);
  expect_bitwise(down<float>(dst), want, "copy");

  // fill_zero: bytes [12, 12 + 4*31) of dst; a 0-byte fill is a no-op.
  ops::fill_zero(c, dst.as<uint8_t>() + 12, 4 * 31);
  ops::fill_zero(c, dst.as<uint8_t>(), 0);
  ops::synchronize(c);
  std::fill(want.begin() + 3, want.begin() + 34, 0.0f);
  expect_bitwise(down<float>(dst), want, "fill_zero");

  // The Memory side (synchronous, no context): copy_within and zero, as DeviceArray and Tensor
  // use them; the array's elements are read back only through copies.
  DeviceArray<float> arr(be, h);
  DeviceArray<float> arr2 = arr;  // copy_within
  EXPECT_EQ(arr2.memory(), static_cast<Memory*>(be));
  expect_bitwise(arr2.to_host(), h, "DeviceArray copy");
  arr2.resize(h.size() + 5);  // keeps the values, zeros the tail
  std::vector<float> grown = h;
  grown.resize(h.size() + 5, 0.0f);
  expect_bitwise(arr2.to_host(), grown, "DeviceArray resize");
  be->zero(arr2.data() + 2, 3 * sizeof(float));
  std::fill(grown.begin() + 2, grown.begin() + 5, 0.0f);
  expect_bitwise(arr2.to_host(), grown, "Memory::zero");
  be->copy_within(arr2.data(), arr.data() + 10, 4 * sizeof(float));
  std::copy(h.begin() + 10, h.begin() + 14, grown.begin());
  expect_bitwise(arr2.to_host(), grown, "Memory::copy_within");
  Tensor t({3, 4}, 2.5f, be);  // a non-zero fill crosses over from the host
  expect_bitwise(t.data.to_host(), std::vector<float>(12, 2.5f), "Tensor fill");
}

// ---- GEMMs -----------------------------------------------------------------------------------

// out_ij = alpha sum_k a(i, k) b(k, j) + beta c0_ij over the M x N block of the ldc-strided
// c0 (beta == 0: c0 is not read); elements outside the block must stay exactly c0.
Ref matmul_ref(int64_t M, int64_t N, int64_t K, const std::function<double(int64_t, int64_t)>& a,
               const std::function<double(int64_t, int64_t)>& b, double alpha, double beta,
               const std::vector<float>& c0, int64_t ldc) {
  Ref ref;
  for (float x : c0) ref.add(x, 0.0);
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j) {
      double s = 0.0, mag = 0.0;
      for (int64_t k = 0; k < K; ++k) {
        const double p = a(i, k) * b(k, j);
        s += p;
        mag += std::fabs(p);
      }
      const double c = beta == 0.0 ? 0.0 : beta * c0[static_cast<size_t>(i * ldc + j)];
      ref.v[static_cast<size_t>(i * ldc + j)] = alpha * s + c;
      ref.tol[static_cast<size_t>(i * ldc + j)] = sum_tol(K, std::fabs(alpha) * mag + std::fabs(c));
    }
  return ref;
}

TEST_P(BackendConformance, Gemm) {
  struct Case {
    bool ta, tb;
    int64_t M, N, K, pad;  // pad: extra leading-dimension floats on A, B and C
    float alpha, beta;
  };
  const Case cases[] = {
      {false, false, 13, 11, 17, 0, 1.0f, 0.0f}, {false, true, 13, 11, 17, 0, 0.75f, 0.5f},
      {true, false, 13, 11, 17, 3, 1.0f, 1.0f},  {true, true, 9, 21, 33, 2, -1.25f, 0.0f},
      {false, true, 1, 7, 5, 0, 1.0f, 0.0f},     {false, false, 6, 5, 70, 1, 0.5f, -1.0f},
      {false, true, 0, 7, 5, 1, 1.0f, 0.5f},     {false, false, 6, 0, 5, 1, 1.0f, 0.5f},
      {false, true, 6, 7, 0, 1, 1.0f, 0.5f},     {false, false, 6, 7, 0, 1, 1.0f, 0.0f},
  };
  for (bool det : {false, true}) {
    SCOPED_TRACE(mode_name(det));
    uint64_t seed = 100;
    for (const Case& k : cases) {
      const std::string what = std::string("gemm ") + (k.ta ? "T" : "N") + (k.tb ? "T" : "N") +
                               " M=" + std::to_string(k.M) + " N=" + std::to_string(k.N) +
                               " K=" + std::to_string(k.K) + " beta=" + std::to_string(k.beta);
      const int64_t lda = (k.ta ? k.M : k.K) + k.pad, ldb = (k.tb ? k.K : k.N) + k.pad;
      const int64_t ldc = k.N + k.pad;
      const std::vector<float> A = randn((k.ta ? k.K : k.M) * lda, 1.0, ++seed);
      const std::vector<float> B = randn((k.tb ? k.N : k.K) * ldb, 1.0, ++seed);
      const std::vector<float> C0 =
          k.beta == 0.0f ? nans(k.M * ldc) : randn(k.M * ldc, 1.0, ++seed);
      Buffer a = up(A), b = up(B), cbuf = up(C0);
      ops::gemm(ctx(det), k.ta, k.tb, k.M, k.N, k.K, k.alpha, a.as<float>(), lda, b.as<float>(),
                ldb, k.beta, cbuf.as<float>(), ldc);
      const auto ea = [&](int64_t i, int64_t kk) { return A[k.ta ? kk * lda + i : i * lda + kk]; };
      const auto eb = [&](int64_t kk, int64_t j) { return B[k.tb ? j * ldb + kk : kk * ldb + j]; };
      expect_close(down<float>(cbuf), matmul_ref(k.M, k.N, k.K, ea, eb, k.alpha, k.beta, C0, ldc),
                   what);
    }
  }
}

TEST_P(BackendConformance, Linear) {
  const int64_t I = 29, O = 23;
  for (bool det : {false, true}) {
    SCOPED_TRACE(mode_name(det));
    const ExecContext& c = ctx(det);
    for (int64_t T : {13, 1, 0}) {
      const std::string at = " T=" + std::to_string(T);
      const std::vector<float> x = randn(T * I, 1.0, 200 + T), W = randn(O * I, 0.3, 201);
      const auto ex = [&](int64_t t, int64_t i) { return x[t * I + i]; };
      const auto eWt = [&](int64_t i, int64_t o) { return W[o * I + i]; };  // W^T
      const auto eW = [&](int64_t o, int64_t i) { return W[o * I + i]; };
      Buffer xb = up(x), Wb = up(W);
      for (float beta : {0.0f, 1.0f}) {
        const std::vector<float> y0 = beta == 0.0f ? nans(T * O) : randn(T * O, 1.0, 202);
        Buffer y = up(y0);
        ops::linear_forward(c, xb.as<float>(), Wb.as<float>(), y.as<float>(), T, I, O, beta);
        expect_close(down<float>(y), matmul_ref(T, O, I, ex, eWt, 1.0, beta, y0, O),
                     "linear_forward beta=" + std::to_string(beta) + at);
      }

      // dW += dy^T x; dx = dy W (+= when accumulating); either output may be null.
      const std::vector<float> dy = randn(T * O, 1.0, 203), dW0 = randn(O * I, 1.0, 204);
      const auto edy = [&](int64_t t, int64_t o) { return dy[t * O + o]; };
      const auto edyT = [&](int64_t o, int64_t t) { return dy[t * O + o]; };
      const Ref dW_ref = matmul_ref(O, I, T, edyT, ex, 1.0, 1.0, dW0, I);
      Buffer dyb = up(dy);
      for (bool acc : {false, true}) {
        const std::vector<float> dx0 = acc ? randn(T * I, 1.0, 205) : nans(T * I);
        const Ref dx_ref = matmul_ref(T, I, O, edy, eW, 1.0, acc ? 1.0 : 0.0, dx0, I);
        const std::string what = std::string(acc ? " accumulate_dx" : "") + at;
        Buffer dW = up(dW0), dx = up(dx0);
        ops::linear_backward(c, xb.as<float>(), Wb.as<float>(), dyb.as<float>(), dW.as<float>(),
                             dx.as<float>(), T, I, O, acc);
        expect_close(down<float>(dW), dW_ref, "linear_backward dW" + what);
        expect_close(down<float>(dx), dx_ref, "linear_backward dx" + what);
        Buffer dx_only = up(dx0), dW_only = up(dW0);
        ops::linear_backward(c, xb.as<float>(), Wb.as<float>(), dyb.as<float>(), nullptr,
                             dx_only.as<float>(), T, I, O, acc);
        ops::linear_backward(c, xb.as<float>(), Wb.as<float>(), dyb.as<float>(),
                             dW_only.as<float>(), nullptr, T, I, O, acc);
        expect_close(down<float>(dx_only), dx_ref, "linear_backward dx (dW null)" + what);
        expect_close(down<float>(dW_only), dW_ref, "linear_backward dW (dx null)" + what);
      }
    }
  }
}

// deq(q) from the documented format (runtime/kernels/quant.h): q * scale of its (row, group);
// int8 two's complement, int4 column 2k in the low nibble and 2k + 1 in the high one.
std::vector<float> decode_quantized(const QuantizedMatrix& q) {
  std::vector<float> w(static_cast<size_t>(q.O * q.I));
  const int64_t row_bytes = q.bits == 4 ? (q.I + 1) / 2 : q.I, groups = (q.I + q.G - 1) / q.G;
  for (int64_t o = 0; o < q.O; ++o)
    for (int64_t i = 0; i < q.I; ++i) {
      int v;
      if (q.bits == 8) {
        v = static_cast<int8_t>(q.data[static_cast<size_t>(o * row_bytes + i)]);
      } else {
        const uint8_t byte = q.data[static_cast<size_t>(o * row_bytes + i / 2)];
        const int nibble = i % 2 ? byte >> 4 : byte & 0xF;
        v = nibble >= 8 ? nibble - 16 : nibble;
      }
      w[static_cast<size_t>(o * q.I + i)] =
          static_cast<float>(v) * q.scales[static_cast<size_t>(o * groups + i / q.G)];
    }
  return w;
}

TEST_P(BackendConformance, LinearQuantized) {
  struct Shape {
    int64_t O, I, G;
  };
  // G = 5: groups start on odd columns (an int4 group opening on a high nibble); O = 133 spans
  // more than one dequantization tile of the CPU backend.
  for (const Shape s : {Shape{19, 37, 5}, Shape{133, 37, 16}}) {
    for (int bits : {8, 4}) {
      const std::string at = " int" + std::to_string(bits) + " O=" + std::to_string(s.O) +
                             " I=" + std::to_string(s.I) + " G=" + std::to_string(s.G);
      const std::vector<float> W = randn(s.O * s.I, 0.1, 300 + bits);
      const QuantizedMatrix q = quantize(W.data(), s.O, s.I, s.G, bits);
      const std::vector<float> Wq = decode_quantized(q);
      const Span spans[] = {{0, s.O}, {3, 7}, {s.O - 1, 1}};
      for (const auto& [row0, rows] : spans) {
        Buffer out = up(nans(rows * s.I));
        ops::dequantize_rows(ctx(), q, row0, rows, out.as<float>());
        expect_bitwise(
            down<float>(out), slice(Wq, row0, rows, s.I),
            "dequantize_rows [" + std::to_string(row0) + ", +" + std::to_string(rows) + ")" + at);
      }
      for (bool det : {false, true}) {
        SCOPED_TRACE(mode_name(det));
        for (int64_t T : {13, 0}) {
          for (float beta : {0.0f, 0.5f}) {
            const std::vector<float> x = randn(T * s.I, 1.0, 301);
            const std::vector<float> y0 = beta == 0.0f ? nans(T * s.O) : randn(T * s.O, 1.0, 302);
            Buffer xb = up(x), y = up(y0);
            ops::linear_forward_quantized(ctx(det), xb.as<float>(), q, y.as<float>(), T, beta);
            const auto ex = [&](int64_t t, int64_t i) { return x[t * s.I + i]; };
            const auto eWt = [&](int64_t i, int64_t o) { return Wq[o * s.I + i]; };
            expect_close(down<float>(y), matmul_ref(T, s.O, s.I, ex, eWt, 1.0, beta, y0, s.O),
                         "linear_forward_quantized T=" + std::to_string(T) +
                             " beta=" + std::to_string(beta) + at);
          }
        }
      }
    }
  }
}

// ---- grouped linear (the experts' forward) -----------------------------------------------------

// Group e of row_offsets (host, [E+1]): rows [off[e] - off[0], off[e+1] - off[0]) of x [R, I]
// times W_e^T (W_e = W + e*O*I, [O, I]) into the same rows of y; y has `tail` more floats after
// its R rows, which must stay `tail_value`.
Ref grouped_ref(const std::vector<float>& x, const std::vector<float>& W,
                const std::vector<int32_t>& off, int64_t I, int64_t O, int64_t tail,
                float tail_value) {
  Ref ref;
  const int64_t E = static_cast<int64_t>(off.size()) - 1;
  for (int64_t e = 0; e < E; ++e)
    for (int64_t r = off[e] - off[0]; r < off[e + 1] - off[0]; ++r)
      for (int64_t o = 0; o < O; ++o) {
        double s = 0.0, mag = 0.0;
        for (int64_t i = 0; i < I; ++i) {
          const double p = static_cast<double>(x[r * I + i]) * W[(e * O + o) * I + i];
          s += p;
          mag += std::fabs(p);
        }
        ref.add(s, sum_tol(I, mag));
      }
  for (int64_t i = 0; i < tail; ++i) ref.add(tail_value, 0.0);
  return ref;
}

struct GroupedCase {
  std::vector<int32_t> off;  // row offsets, [E+1]
  int64_t I, O;
};
// A first offset that is not 0 with empty groups between non-empty ones and a one-row group;
// E = 1; one row in all; a K spanning more than one tile; every group empty; E = 0. No size is
// a multiple of 8.
const GroupedCase kGroupedCases[] = {
    {{3, 7, 7, 7, 8, 17}, 13, 11},           {{0, 6}, 20, 9},         {{2, 2, 3, 3}, 5, 7},
    {{0, 9, 9, 30, 31, 31, 45, 52}, 70, 37}, {{5, 5, 5, 5, 5}, 6, 4}, {{0}, 6, 4},
};

std::string grouped_name(const GroupedCase& k, const char* op = "grouped_linear_forward") {
  std::string s = std::string(op) + " off={";
  for (size_t i = 0; i < k.off.size(); ++i) s += (i ? "," : "") + std::to_string(k.off[i]);
  return s + "} I=" + std::to_string(k.I) + " O=" + std::to_string(k.O);
}

// The one call against the exact reference (fp32 summation bound) and against one
// linear_forward per non-empty group on the same backend: bitwise in a deterministic context
// (the seam's promise) and on the backends that run the seam's default loop (cpu, devsim);
// within twice the bound elsewhere (cuda: one cublasGemmGroupedBatchedEx).
TEST_P(BackendConformance, GroupedLinear) {
  const bool default_loop = GetParam() == "cpu" || GetParam() == "devsim";
  constexpr float kTail = 7.5f;
  for (bool det : {false, true}) {
    SCOPED_TRACE(mode_name(det));
    const ExecContext& c = ctx(det);
    uint64_t seed = 1400;
    for (const GroupedCase& k : kGroupedCases) {
      const std::string what = grouped_name(k);
      const int64_t E = static_cast<int64_t>(k.off.size()) - 1, R = k.off.back() - k.off[0];
      const std::vector<float> x = randn(R * k.I, 1.0, ++seed);
      const std::vector<float> W = randn(E * k.O * k.I, 0.3, ++seed);
      std::vector<float> y0 = nans(R * k.O);
      y0.resize(static_cast<size_t>((R + 1) * k.O), kTail);  // one row past the end: untouched
      Buffer xb = up(x), Wb = up(W), y = up(y0), y_loop = up(y0);
      ops::grouped_linear_forward(c, xb.as<float>(), Wb.as<float>(), y.as<float>(), k.off.data(), E,
                                  k.I, k.O);
      for (int64_t e = 0; e < E; ++e) {
        const int64_t o = k.off[e] - k.off[0], n = k.off[e + 1] - k.off[e];
        if (n > 0)
          ops::linear_forward(c, xb.as<float>() + o * k.I, Wb.as<float>() + e * k.O * k.I,
                              y_loop.as<float>() + o * k.O, n, k.I, k.O);
      }
      const Ref ref = grouped_ref(x, W, k.off, k.I, k.O, k.O, kTail);
      const std::vector<float> got = down<float>(y), loop = down<float>(y_loop);
      expect_close(got, ref, what);
      if (det || default_loop) {
        expect_bitwise(got, loop, what + " vs one linear_forward per group");
      } else {
        Ref near_loop;
        for (size_t i = 0; i < loop.size(); ++i) near_loop.add(loop[i], 2.0 * ref.tol[i]);
        expect_close(got, near_loop, what + " vs one linear_forward per group");
      }
    }
  }
}

// ---- grouped linear backward (the experts' backward) ------------------------------------------

// Per group e (rows as in grouped_ref): dW_e = dW0_e + dy_e^T x_e, dx_e = dy_e W_e (+ dx0_e
// when acc); empty groups leave dW0_e exactly. dx has `tail` more floats after its R rows, which
// must stay `tail_value`. extra_rel widens every bound by extra_rel times the products' sum of
// magnitudes (bf16 operands, see widen_for_bf16).
struct GroupedBackwardRef {
  Ref dW, dx;
};
GroupedBackwardRef grouped_backward_ref(const std::vector<float>& x, const std::vector<float>& W,
                                        const std::vector<float>& dy, const std::vector<float>& dW0,
                                        const std::vector<float>& dx0,
                                        const std::vector<int32_t>& off, int64_t I, int64_t O,
                                        bool acc, int64_t tail, float tail_value,
                                        double extra_rel = 0.0) {
  GroupedBackwardRef ref;
  const int64_t E = static_cast<int64_t>(off.size()) - 1;
  for (int64_t e = 0; e < E; ++e) {
    const int64_t r0 = off[e] - off[0], r1 = off[e + 1] - off[0];
    for (int64_t o = 0; o < O; ++o)
      for (int64_t i = 0; i < I; ++i) {
        const double c = dW0[static_cast<size_t>((e * O + o) * I + i)];
        if (r1 == r0) {
          ref.dW.add(c, 0.0);
          continue;
        }
        double s = 0.0, mag = 0.0;
        for (int64_t r = r0; r < r1; ++r) {
          const double p = static_cast<double>(dy[r * O + o]) * x[r * I + i];
          s += p;
          mag += std::fabs(p);
        }
        ref.dW.add(c + s, sum_tol(r1 - r0, mag + std::fabs(c)) + extra_rel * mag);
      }
    for (int64_t r = r0; r < r1; ++r)
      for (int64_t i = 0; i < I; ++i) {
        const double c = acc ? dx0[static_cast<size_t>(r * I + i)] : 0.0;
        double s = 0.0, mag = 0.0;
        for (int64_t o = 0; o < O; ++o) {
          const double p = static_cast<double>(dy[r * O + o]) * W[(e * O + o) * I + i];
          s += p;
          mag += std::fabs(p);
        }
        ref.dx.add(c + s, sum_tol(O, mag + std::fabs(c)) + extra_rel * mag);
      }
  }
  for (int64_t i = 0; i < tail; ++i) ref.dx.add(tail_value, 0.0);
  return ref;
}

// The one call, with dW and dx, dW null and dx null, each with accumulate_dx false and true,
// against the exact reference (fp32 summation bound) and against one linear_backward per
// non-empty group on the same backend: bitwise in a deterministic context and on the backends
// that run the seam's default loop (cpu, devsim); within twice the bound elsewhere (cuda: a
// cublasGemmGroupedBatchedEx for dx and one for dW).
TEST_P(BackendConformance, GroupedLinearBackward) {
  const bool default_loop = GetParam() == "cpu" || GetParam() == "devsim";
  constexpr float kTail = 7.5f;
  for (bool det : {false, true}) {
    SCOPED_TRACE(mode_name(det));
    const ExecContext& c = ctx(det);
    uint64_t seed = 1450;
    for (const GroupedCase& k : kGroupedCases) {
      const std::string name = grouped_name(k, "grouped_linear_backward");
      const int64_t E = static_cast<int64_t>(k.off.size()) - 1, R = k.off.back() - k.off[0];
      const std::vector<float> x = randn(R * k.I, 1.0, ++seed);
      const std::vector<float> W = randn(E * k.O * k.I, 0.3, ++seed);
      const std::vector<float> dy = randn(R * k.O, 1.0, ++seed);
      const std::vector<float> dW0 = randn(E * k.O * k.I, 1.0, ++seed);
      Buffer xb = up(x), Wb = up(W), dyb = up(dy);
      for (bool acc : {false, true}) {
        std::vector<float> dx0 = acc ? randn(R * k.I, 1.0, ++seed) : nans(R * k.I);
        dx0.resize(static_cast<size_t>((R + 1) * k.I), kTail);  // one row past the end: untouched
        const GroupedBackwardRef ref =
            grouped_backward_ref(x, W, dy, dW0, dx0, k.off, k.I, k.O, acc, k.I, kTail);
        for (int outs = 0; outs < 3; ++outs) {  // 0: dW and dx; 1: dW null; 2: dx null
          const bool with_dW = outs != 1, with_dx = outs != 2;
          const std::string what = name + (acc ? " accumulate_dx" : "") +
                                   (with_dW ? "" : " (dW null)") + (with_dx ? "" : " (dx null)");
          Buffer dW = up(dW0), dx = up(dx0), dW_loop = up(dW0), dx_loop = up(dx0);
          ops::grouped_linear_backward(c, xb.as<float>(), Wb.as<float>(), dyb.as<float>(),
                                       with_dW ? dW.as<float>() : nullptr,
                                       with_dx ? dx.as<float>() : nullptr, k.off.data(), E, k.I,
                                       k.O, acc);
          for (int64_t e = 0; e < E; ++e) {
            const int64_t o = k.off[e] - k.off[0], n = k.off[e + 1] - k.off[e];
            if (n > 0)
              ops::linear_backward(c, xb.as<float>() + o * k.I, Wb.as<float>() + e * k.O * k.I,
                                   dyb.as<float>() + o * k.O,
                                   with_dW ? dW_loop.as<float>() + e * k.O * k.I : nullptr,
                                   with_dx ? dx_loop.as<float>() + o * k.I : nullptr, n, k.I, k.O,
                                   acc);
          }
          const std::vector<float> got_dW = down<float>(dW), got_dx = down<float>(dx);
          const std::vector<float> loop_dW = down<float>(dW_loop), loop_dx = down<float>(dx_loop);
          if (with_dW) {
            expect_close(got_dW, ref.dW, what + " dW");
          } else {
            expect_bitwise(got_dW, dW0, what + " dW untouched");
          }
          if (with_dx) {
            expect_close(got_dx, ref.dx, what + " dx");
          } else {
            expect_bitwise(got_dx, dx0, what + " dx untouched");
          }
          if (det || default_loop) {
            expect_bitwise(got_dW, loop_dW, what + " dW vs one linear_backward per group");
            expect_bitwise(got_dx, loop_dx, what + " dx vs one linear_backward per group");
          } else {
            for (const auto& [got, loop, r, which] :
                 {std::make_tuple(&got_dW, &loop_dW, &ref.dW, " dW"),
                  std::make_tuple(&got_dx, &loop_dx, &ref.dx, " dx")}) {
              Ref near_loop;
              for (size_t i = 0; i < loop->size(); ++i) near_loop.add((*loop)[i], 2.0 * r->tol[i]);
              expect_close(*got, near_loop, what + which + " vs one linear_backward per group");
            }
          }
        }
      }
    }
  }
}

// ---- bf16 GEMMs (GemmPrecision::kBf16) ---------------------------------------------------------

// f rounded to the nearest bf16 (ties to even), as a float.
float bf16_round(float f) {
  if (std::isnan(f)) return f;
  uint32_t u;
  std::memcpy(&u, &f, 4);
  u = (u + 0x7FFFu + ((u >> 16) & 1u)) & 0xFFFF0000u;
  std::memcpy(&f, &u, 4);
  return f;
}
std::vector<float> bf16_round(std::vector<float> v) {
  for (float& x : v) x = bf16_round(x);
  return v;
}
// n values j/64 with j an integer in [-127, 127]: exact in bf16 (8 significant bits), and every
// sum of up to ~1000 of their products is exact in fp32.
std::vector<float> bf16_exact(int64_t n, uint64_t seed) {
  std::vector<float> v(static_cast<size_t>(n));
  const std::vector<int32_t> j = randint(n, -127, 128, seed);
  for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<float>(j[i]) / 64.0f;
  return v;
}
// A sum_tol(K, mag) bound widened by 2^-5 mag: room for cuBLAS's down-conversion of general
// operands being other than round-to-nearest bf16 (CUBLAS_COMPUTE_32F_FAST_16BF "allows
// down-converting inputs to bfloat16 or TF32"; truncation would be within 6 * 2^-8 per
// product). Still far below the error of a wrong element, ~sqrt(K) of a typical product.
Ref widen_for_bf16(Ref r, int64_t K) {
  for (double& t : r.tol) t += std::max(0.0, (t - kTiny) / ((K + 2) * kU)) / 32.0;
  return r;
}

// Where the backend has them (else: make_context refuses kBf16, and the case skips): the fast
// (not deterministic) kBf16 context's gemm, linear_forward, linear_backward,
// grouped_linear_forward and grouped_linear_backward (1) on bf16-exact operands, against the exact
// result within the fp32 summation bound: the operands' rounding is then exact, so this checks fp32
// accumulation; (2) on general operands, against the result of their bf16-rounded values (see
// widen_for_bf16); (3) a deterministic kBf16 context computes fp32: bitwise the deterministic
// fp32 context's results.
TEST_P(BackendConformance, GemmBf16) {
  const ExecContext* fast = make_context(GetParam(), false, GemmPrecision::kBf16);
  if (!backend()->supports_bf16()) {
    EXPECT_EQ(fast, nullptr) << "make_context gave a kBf16 context of a backend without bf16";
    EXPECT_EQ(make_context(GetParam(), true, GemmPrecision::kBf16), nullptr);
    GTEST_SKIP() << GetParam()
                 << ": no bf16 GEMMs (supports_bf16() is false; make_context refuses kBf16)";
  }
  ASSERT_NE(fast, nullptr);
  const ExecContext* det = make_context(GetParam(), true, GemmPrecision::kBf16);
  ASSERT_NE(det, nullptr);
  EXPECT_EQ(fast->precision, GemmPrecision::kBf16);
  EXPECT_FALSE(fast->deterministic);
  EXPECT_TRUE(det->deterministic);
  EXPECT_NE(fast, &ctx(false));
  const ExecContext& c = *fast;

  struct Case {
    bool ta, tb;
    int64_t M, N, K, pad;
    float alpha, beta;
  };
  const Case cases[] = {
      {false, false, 13, 11, 17, 0, 1.0f, 0.0f}, {false, true, 13, 11, 17, 0, 0.75f, 0.5f},
      {true, false, 13, 11, 17, 3, 1.0f, 1.0f},  {true, true, 9, 21, 33, 2, -1.25f, 0.0f},
      {false, true, 1, 7, 5, 0, 1.0f, 0.0f},     {false, false, 6, 5, 70, 1, 0.5f, -1.0f},
  };
  for (bool exact : {true, false}) {
    SCOPED_TRACE(exact ? "bf16-exact operands" : "general operands");
    const auto data = [&](int64_t n, double scale, uint64_t seed) {
      return exact ? bf16_exact(n, seed) : randn(n, scale, seed);
    };
    // The reference sees the operands as the bf16 GEMM should: rounded (a no-op when exact).
    const auto check = [&](const std::vector<float>& got, const Ref& ref, int64_t K,
                           const std::string& what) {
      expect_close(got, exact ? ref : widen_for_bf16(ref, K), what);
    };
    uint64_t seed = 1500;
    for (const Case& k : cases) {
      const std::string what = std::string("bf16 gemm ") + (k.ta ? "T" : "N") + (k.tb ? "T" : "N") +
                               " M=" + std::to_string(k.M) + " N=" + std::to_string(k.N) +
                               " K=" + std::to_string(k.K);
      const int64_t lda = (k.ta ? k.M : k.K) + k.pad, ldb = (k.tb ? k.K : k.N) + k.pad;
      const int64_t ldc = k.N + k.pad;
      const std::vector<float> A = data((k.ta ? k.K : k.M) * lda, 1.0, ++seed);
      const std::vector<float> B = data((k.tb ? k.N : k.K) * ldb, 1.0, ++seed);
      const std::vector<float> C0 = k.beta == 0.0f ? nans(k.M * ldc) : data(k.M * ldc, 1.0, ++seed);
      const std::vector<float> Ar = bf16_round(A), Br = bf16_round(B);
      Buffer a = up(A), b = up(B), cbuf = up(C0);
      ops::gemm(c, k.ta, k.tb, k.M, k.N, k.K, k.alpha, a.as<float>(), lda, b.as<float>(), ldb,
                k.beta, cbuf.as<float>(), ldc);
      const auto ea = [&](int64_t i, int64_t kk) { return Ar[k.ta ? kk * lda + i : i * lda + kk]; };
      const auto eb = [&](int64_t kk, int64_t j) { return Br[k.tb ? j * ldb + kk : kk * ldb + j]; };
      check(down<float>(cbuf), matmul_ref(k.M, k.N, k.K, ea, eb, k.alpha, k.beta, C0, ldc), k.K,
            what);
    }

    const int64_t T = 13, I = 29, O = 23;
    const std::vector<float> x = data(T * I, 1.0, 1600), W = data(O * I, 0.3, 1601);
    const std::vector<float> dy = data(T * O, 1.0, 1602), dW0 = data(O * I, 1.0, 1603);
    const std::vector<float> xr = bf16_round(x), Wr = bf16_round(W), dyr = bf16_round(dy);
    Buffer xb = up(x), Wb = up(W), dyb = up(dy), y = up(nans(T * O));
    ops::linear_forward(c, xb.as<float>(), Wb.as<float>(), y.as<float>(), T, I, O);
    check(down<float>(y),
          matmul_ref(
              T, O, I, [&](int64_t t, int64_t i) { return xr[t * I + i]; },
              [&](int64_t i, int64_t o) { return Wr[o * I + i]; }, 1.0, 0.0, nans(T * O), O),
          I, "bf16 linear_forward");
    if (!exact) {
      // Not asserted (cuBLAS may pick any conversion it allows, fp32 included): how many
      // outputs fall outside the fp32 bound of the unrounded operands, i.e. whether the fast
      // mode took effect.
      const std::vector<float> got = down<float>(y);
      const Ref fp32 = matmul_ref(
          T, O, I, [&](int64_t t, int64_t i) { return x[t * I + i]; },
          [&](int64_t i, int64_t o) { return W[o * I + i]; }, 1.0, 0.0, nans(T * O), O);
      int64_t outside = 0;
      for (size_t i = 0; i < got.size(); ++i)
        outside += std::fabs(got[i] - fp32.v[i]) > fp32.tol[i];
      RecordProperty("bf16_outside_fp32_bound", static_cast<int>(outside));
      std::printf(
          "[   NOTE   ] %s bf16 linear_forward: %lld of %zu outputs outside the fp32 bound\n",
          GetParam().c_str(), static_cast<long long>(outside), got.size());
    }
    Buffer dW = up(dW0), dx = up(nans(T * I));
    ops::linear_backward(c, xb.as<float>(), Wb.as<float>(), dyb.as<float>(), dW.as<float>(),
                         dx.as<float>(), T, I, O, false);
    check(down<float>(dW),
          matmul_ref(
              O, I, T, [&](int64_t o, int64_t t) { return dyr[t * O + o]; },
              [&](int64_t t, int64_t i) { return xr[t * I + i]; }, 1.0, 1.0, dW0, I),
          T, "bf16 linear_backward dW");
    check(down<float>(dx),
          matmul_ref(
              T, I, O, [&](int64_t t, int64_t o) { return dyr[t * O + o]; },
              [&](int64_t o, int64_t i) { return Wr[o * I + i]; }, 1.0, 0.0, nans(T * I), I),
          O, "bf16 linear_backward dx");

    for (const GroupedCase& k : kGroupedCases) {
      const int64_t E = static_cast<int64_t>(k.off.size()) - 1, R = k.off.back() - k.off[0];
      const std::vector<float> gx = data(R * k.I, 1.0, ++seed),
                               gW = data(E * k.O * k.I, 0.3, ++seed);
      std::vector<float> y0 = nans(R * k.O);
      y0.resize(static_cast<size_t>((R + 1) * k.O), 7.5f);
      Buffer gxb = up(gx), gWb = up(gW), gy = up(y0);
      ops::grouped_linear_forward(c, gxb.as<float>(), gWb.as<float>(), gy.as<float>(), k.off.data(),
                                  E, k.I, k.O);
      check(down<float>(gy),
            grouped_ref(bf16_round(gx), bf16_round(gW), k.off, k.I, k.O, k.O, 7.5f), k.I,
            "bf16 " + grouped_name(k));
      // The backward: dW += dy^T x and dx += dy W per group, each a sum over the group's rows
      // (dW) or O (dx): the widening of widen_for_bf16 per element, as extra_rel.
      const std::vector<float> gdy = data(R * k.O, 1.0, ++seed),
                               gdW0 = randn(E * k.O * k.I, 1.0, ++seed);
      std::vector<float> gdx0 = randn(R * k.I, 1.0, ++seed);
      gdx0.resize(static_cast<size_t>((R + 1) * k.I), 7.5f);
      Buffer gdyb = up(gdy), gdW = up(gdW0), gdx = up(gdx0);
      ops::grouped_linear_backward(c, gxb.as<float>(), gWb.as<float>(), gdyb.as<float>(),
                                   gdW.as<float>(), gdx.as<float>(), k.off.data(), E, k.I, k.O,
                                   /*accumulate_dx=*/true);
      const GroupedBackwardRef gref =
          grouped_backward_ref(bf16_round(gx), bf16_round(gW), bf16_round(gdy), gdW0, gdx0, k.off,
                               k.I, k.O, true, k.I, 7.5f, exact ? 0.0 : 1.0 / 32.0);
      const std::string bwd = "bf16 " + grouped_name(k, "grouped_linear_backward");
      expect_close(down<float>(gdW), gref.dW, bwd + " dW");
      expect_close(down<float>(gdx), gref.dx, bwd + " dx");
    }
  }

  // (3) The deterministic kBf16 context is the deterministic fp32 one, bit for bit.
  const ExecContext& det32 = ctx(true);
  const int64_t T = 19, I = 37, O = 23;
  const std::vector<float> x = randn(T * I, 1.0, 1700), W = randn(O * I, 0.3, 1701);
  const std::vector<float> dy = randn(T * O, 1.0, 1702), dW0 = randn(O * I, 1.0, 1703);
  Buffer xb = up(x), Wb = up(W), dyb = up(dy);
  std::vector<float> outs[2];
  int i = 0;
  for (const ExecContext* dc : {det, &det32}) {
    Buffer y = up(nans(T * O)), dW = up(dW0), dx = up(nans(T * I)), gy = up(nans(T * O));
    ops::gemm(*dc, false, true, T, O, I, 1.0f, xb.as<float>(), I, Wb.as<float>(), I, 0.0f,
              y.as<float>(), O);
    ops::linear_backward(*dc, xb.as<float>(), Wb.as<float>(), dyb.as<float>(), dW.as<float>(),
                         dx.as<float>(), T, I, O, false);
    const std::vector<int32_t> off = {0, 7, 7, 19};
    const std::vector<float> W3 = randn(3 * O * I, 0.3, 1704);
    Buffer W3b = up(W3);
    ops::grouped_linear_forward(*dc, xb.as<float>(), W3b.as<float>(), gy.as<float>(), off.data(), 3,
                                I, O);
    Buffer gdW = up(randn(3 * O * I, 1.0, 1705)), gdx = up(nans(T * I));
    ops::grouped_linear_backward(*dc, xb.as<float>(), W3b.as<float>(), dyb.as<float>(),
                                 gdW.as<float>(), gdx.as<float>(), off.data(), 3, I, O, false);
    for (const Buffer* b : {&y, &dW, &dx, &gy, &gdW, &gdx}) {
      const std::vector<float> h = down<float>(*b);
      outs[i].insert(outs[i].end(), h.begin(), h.end());
    }
    ++i;
  }
  expect_bitwise(outs[0], outs[1],
                 "deterministic kBf16 context vs deterministic fp32 context (gemm NT, "
                 "linear_backward dW and dx, grouped_linear_forward, grouped_linear_backward)");
}

// The deterministic context's promise: a token row's bits do not depend on the rest of its
// batch. Every GEMM whose rows are tokens is computed for all T rows, then for sub-batches.
TEST_P(BackendConformance, DeterministicRowsDoNotDependOnTheBatch) {
  const ExecContext& c = ctx(/*deterministic=*/true);
  const int64_t T = 19, I = 37, O = 23;
  const std::vector<float> x = randn(T * I, 1.0, 400), W_OI = randn(O * I, 0.3, 401);
  const std::vector<float> W_IO = randn(I * O, 0.3, 402), dy = randn(T * O, 1.0, 403);
  const QuantizedMatrix q = quantize(randn(133 * I, 0.1, 404).data(), 133, I, 16, 4);
  Buffer Wb = up(W_OI), Wnn = up(W_IO);
  // run(rows of the input, their count) -> [count, width] output rows.
  using Run = std::function<std::vector<float>(const std::vector<float>&, int64_t)>;
  const auto check = [&](const std::string& what, const std::vector<float>& in, int64_t in_w,
                         int64_t out_w, const Run& run) {
    const std::vector<float> all = run(in, T);
    for (const auto& [r0, n] : {Span{5, 7}, Span{18, 1}, Span{0, 1}})
      expect_bitwise(run(slice(in, r0, n, in_w), n), slice(all, r0, n, out_w),
                     what + ": rows [" + std::to_string(r0) + ", +" + std::to_string(n) + ")");
  };
  check("gemm NT", x, I, O, [&](const std::vector<float>& in, int64_t n) {
    Buffer a = up(in), y = up(nans(n * O));
    ops::gemm(c, false, true, n, O, I, 1.0f, a.as<float>(), I, Wb.as<float>(), I, 0.0f,
              y.as<float>(), O);
    return down<float>(y);
  });
  check("gemm NN", x, I, O, [&](const std::vector<float>& in, int64_t n) {
    Buffer a = up(in), y = up(nans(n * O));
    ops::gemm(c, false, false, n, O, I, 0.5f, a.as<float>(), I, Wnn.as<float>(), O, 0.0f,
              y.as<float>(), O);
    return down<float>(y);
  });
  check("linear_forward", x, I, O, [&](const std::vector<float>& in, int64_t n) {
    Buffer a = up(in), y = up(nans(n * O));
    ops::linear_forward(c, a.as<float>(), Wb.as<float>(), y.as<float>(), n, I, O);
    return down<float>(y);
  });
  check("linear_backward dx", dy, O, I, [&](const std::vector<float>& in, int64_t n) {
    Buffer d = up(in), xb = up(x), dx = up(nans(n * I));  // x only feeds dW, which is off
    ops::linear_backward(c, xb.as<float>(), Wb.as<float>(), d.as<float>(), nullptr, dx.as<float>(),
                         n, I, O, false);
    return down<float>(dx);
  });
  check("linear_forward_quantized", x, I, q.O, [&](const std::vector<float>& in, int64_t n) {
    Buffer a = up(in), y = up(nans(n * q.O));
    ops::linear_forward_quantized(c, a.as<float>(), q, y.as<float>(), n);
    return down<float>(y);
  });
}

// ---- per-row ops -----------------------------------------------------------------------------

// Rows of n scores: random ones, then -inf mixed with numbers, all -inf, and huge tied values.
std::vector<float> score_rows(int64_t random_rows, int64_t n, uint64_t seed) {
  std::vector<float> s = randn(random_rows * n, 2.0, seed);
  for (int64_t i = 0; i < n; ++i) s.push_back(i % 3 == 0 ? -kInf : static_cast<float>(i) - 4.0f);
  for (int64_t i = 0; i < n; ++i) s.push_back(-kInf);
  for (int64_t i = 0; i < n; ++i) s.push_back(i % 2 ? 1e4f : -1e4f);
  return s;
}

TEST_P(BackendConformance, Softmax) {
  const ExecContext& c = ctx();
  const int64_t n = 13;
  const std::vector<float> s = score_rows(7, n, 500);
  const int64_t rows = static_cast<int64_t>(s.size()) / n;
  Ref p_ref, lse_ref;
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = s.data() + r * n;
    const double m = *std::max_element(row, row + n);
    double z = 0.0;
    for (int64_t i = 0; i < n; ++i) z += m == -kInf ? 0.0 : std::exp(row[i] - m);
    for (int64_t i = 0; i < n; ++i) {
      if (m == -kInf) {  // every entry -inf: uniform
        p_ref.add(1.0 / n, elem_tol(1.0 / n));
        continue;
      }
      const double p = std::exp(row[i] - m) / z;
      p_ref.add(p, elem_tol(p * (1.0 + std::fabs(row[i] - m))));
    }
    lse_ref.add(m == -kInf ? m : m + std::log(z), elem_tol(std::fabs(m) + 1.0) + sum_tol(n, 1.0));
  }
  Buffer sb = up(s), p = up(nans(rows * n)), lse = up(nans(rows));
  ops::softmax_rows(c, sb.as<float>(), p.as<float>(), rows, n);
  ops::logsumexp_rows(c, sb.as<float>(), lse.as<float>(), rows, n);
  expect_close(down<float>(p), p_ref, "softmax_rows");
  expect_close(down<float>(lse), lse_ref, "logsumexp_rows");
  ops::softmax_rows(c, nullptr, nullptr, 0, n);
  ops::logsumexp_rows(c, nullptr, nullptr, 0, n);

  // ds = p (dp - sum p dp) (+ ds0).
  const std::vector<float> pf = down<float>(p), dp = randn(rows * n, 1.0, 501);
  for (bool acc : {false, true}) {
    const std::vector<float> ds0 = acc ? randn(rows * n, 1.0, 502) : nans(rows * n);
    Ref ref;
    for (int64_t r = 0; r < rows; ++r) {
      double dot = 0.0, dot_mag = 0.0;
      for (int64_t i = r * n; i < (r + 1) * n; ++i) {
        dot += static_cast<double>(pf[i]) * dp[i];
        dot_mag += std::fabs(static_cast<double>(pf[i]) * dp[i]);
      }
      for (int64_t i = r * n; i < (r + 1) * n; ++i) {
        const double base = acc ? ds0[i] : 0.0;
        ref.add(base + pf[i] * (dp[i] - dot),
                sum_tol(n, pf[i] * (std::fabs(dp[i]) + dot_mag) + std::fabs(base)));
      }
    }
    Buffer pb = up(pf), dpb = up(dp), ds = up(ds0);
    ops::softmax_backward_rows(c, pb.as<float>(), dpb.as<float>(), ds.as<float>(), rows, n, acc);
    expect_close(down<float>(ds), ref,
                 acc ? "softmax_backward_rows accumulate" : "softmax_backward_rows");
  }
}

TEST_P(BackendConformance, TopK) {
  const ExecContext& c = ctx();
  const int64_t n = 13;
  std::vector<float> v;  // small integers (many ties), then the hostile rows
  for (int32_t x : randint(6 * n, -2, 3, 600)) v.push_back(static_cast<float>(x));
  const std::vector<float> hostile = {
      kNaN, -kInf, 1.0f, kNaN,  2.0f, 1.0f, -kInf, kInf, 0.0f, -0.0f, kNaN, 3.0f, kInf,
      kNaN, kNaN,  kNaN, kNaN,  kNaN, kNaN, kNaN,  kNaN, kNaN, kNaN,  kNaN, kNaN, kNaN,
      kNaN, -kInf, kNaN, -kInf, kNaN, kNaN, kNaN,  kNaN, kNaN, kNaN,  kNaN, kNaN, kNaN};
  v.insert(v.end(), hostile.begin(), hostile.end());
  const std::vector<float> normal = randn(n, 1.0, 601);
  v.insert(v.end(), normal.begin(), normal.end());
  const int64_t rows = static_cast<int64_t>(v.size()) / n;
  Buffer vb = up(v);
  for (int64_t k : {int64_t{1}, int64_t{3}, n}) {
    // Reference: a stable sort by value, descending, NaN ranked as -inf.
    std::vector<int32_t> ids_ref;
    std::vector<float> vals_ref;
    for (int64_t r = 0; r < rows; ++r) {
      const float* row = v.data() + r * n;
      std::vector<int32_t> idx(static_cast<size_t>(n));
      std::iota(idx.begin(), idx.end(), 0);
      const auto key = [&](int32_t i) { return std::isnan(row[i]) ? -kInf : row[i]; };
      std::stable_sort(idx.begin(), idx.end(),
                       [&](int32_t a, int32_t b) { return key(a) > key(b); });
      for (int64_t j = 0; j < k; ++j) {
        ids_ref.push_back(idx[j]);
        vals_ref.push_back(row[idx[j]]);
      }
    }
    Buffer ids = up(std::vector<int32_t>(static_cast<size_t>(rows * k), -7)),
           vals = up(nans(rows * k));
    ops::topk_rows(c, vb.as<float>(), rows, n, k, ids.as<int32_t>(), vals.as<float>());
    expect_bitwise(down<int32_t>(ids), ids_ref, "topk_rows ids k=" + std::to_string(k));
    expect_bitwise(down<float>(vals), vals_ref, "topk_rows vals k=" + std::to_string(k));
  }
  ops::topk_rows(c, nullptr, 0, n, 2, nullptr, nullptr);
}

// ---- elementwise -----------------------------------------------------------------------------

TEST_P(BackendConformance, Activations) {
  const ExecContext& c = ctx();
  std::vector<float> x = {0.0f, -0.0f, -30.0f, 30.0f, -1.2785f, 1e-3f, -9.0f, 6.0f};
  const std::vector<float> rest = randn(1001 - static_cast<int64_t>(x.size()), 3.0, 700);
  x.insert(x.end(), rest.begin(), rest.end());
  const int64_t n = static_cast<int64_t>(x.size());
  const std::vector<float> dy = randn(n, 1.0, 701), u = randn(n, 1.0, 702);
  Ref silu, gelu, dsilu, dgelu, swiglu, du, dg;
  for (int64_t i = 0; i < n; ++i) {
    const double xi = x[i], s = sigmoid(xi), e = std::erf(xi / std::sqrt(2.0));
    const double pdf = std::exp(-0.5 * xi * xi) / std::sqrt(2.0 * kPi);
    const double sg = s * (1.0 + xi * (1.0 - s)), sg_mag = s * (1.0 + std::fabs(xi) * (1.0 - s));
    silu.add(xi * s, elem_tol(std::fabs(xi) * s));
    gelu.add(0.5 * xi * (1.0 + e), elem_tol(0.5 * std::fabs(xi) * (1.0 + std::fabs(e))));
    dsilu.add(dy[i] * sg, elem_tol(std::fabs(dy[i]) * sg_mag));
    dgelu.add(dy[i] * (0.5 * (1.0 + e) + xi * pdf),
              elem_tol(std::fabs(dy[i]) * (0.5 * (1.0 + std::fabs(e)) + std::fabs(xi) * pdf)));
    swiglu.add(xi * s * u[i], elem_tol(std::fabs(xi * s * u[i])));
    du.add(dy[i] * xi * s, elem_tol(std::fabs(dy[i] * xi * s)));  // da = dy
    dg.add(dy[i] * u[i] * sg, elem_tol(std::fabs(dy[i] * u[i]) * sg_mag));
  }
  Buffer xb = up(x), dyb = up(dy), ub = up(u);
  Buffer a = up(x), b = up(x), out = up(nans(n)), out2 = up(nans(n));
  ops::silu_inplace(c, a.as<float>(), n);
  ops::gelu_inplace(c, b.as<float>(), n);
  expect_close(down<float>(a), silu, "silu_inplace");
  expect_close(down<float>(b), gelu, "gelu_inplace");
  ops::silu_backward(c, xb.as<float>(), dyb.as<float>(), out.as<float>(), n);
  ops::gelu_backward(c, xb.as<float>(), dyb.as<float>(), out2.as<float>(), n);
  expect_close(down<float>(out), dsilu, "silu_backward");
  expect_close(down<float>(out2), dgelu, "gelu_backward");
  ops::swiglu(c, xb.as<float>(), ub.as<float>(), out.as<float>(), n);
  expect_close(down<float>(out), swiglu, "swiglu");
  Buffer dgb = up(nans(n)), dub = up(nans(n)), da_in_place = up(dy), du2 = up(nans(n));
  ops::swiglu_backward(c, xb.as<float>(), ub.as<float>(), dyb.as<float>(), dgb.as<float>(),
                       dub.as<float>(), n);
  expect_close(down<float>(dgb), dg, "swiglu_backward dg");
  expect_close(down<float>(dub), du, "swiglu_backward du");
  ops::swiglu_backward(c, xb.as<float>(), ub.as<float>(), da_in_place.as<float>(),
                       da_in_place.as<float>(), du2.as<float>(), n);  // dg aliases da
  expect_close(down<float>(da_in_place), dg, "swiglu_backward dg in place");
  expect_close(down<float>(du2), du, "swiglu_backward du (dg in place)");
  for (auto op : {ops::silu_inplace, ops::gelu_inplace}) op(c, nullptr, 0);
}

TEST_P(BackendConformance, AddAndBias) {
  const ExecContext& c = ctx();
  const int64_t R = 7, N = 29;
  const std::vector<float> y0 = randn(R * N, 1.0, 800), x = randn(R * N, 1.0, 801);
  const std::vector<float> bias = randn(N, 1.0, 802);
  std::vector<float> sum(y0.size()), biased(y0.size()), broadcast(y0.size());
  for (int64_t i = 0; i < R * N; ++i) {
    sum[i] = y0[i] + x[i];
    biased[i] = y0[i] + bias[i % N];
    broadcast[i] = bias[i % N];
  }
  Buffer y = up(y0), xb = up(x), bb = up(bias), yb = up(y0), bc = up(nans(R * N));
  ops::add_inplace(c, y.as<float>(), xb.as<float>(), R * N);
  ops::add_bias_rows(c, bb.as<float>(), R, N, yb.as<float>());
  ops::bias_broadcast_rows(c, bb.as<float>(), R, N, bc.as<float>());
  expect_bitwise(down<float>(y), sum, "add_inplace");
  expect_bitwise(down<float>(yb), biased, "add_bias_rows");
  expect_bitwise(down<float>(bc), broadcast, "bias_broadcast_rows");
  ops::bias_broadcast_rows(c, nullptr, R, N, bc.as<float>());
  expect_bitwise(down<float>(bc), std::vector<float>(static_cast<size_t>(R * N), 0.0f),
                 "bias_broadcast_rows without a bias");

  // db += sum over rows of dy.
  const std::vector<float> db0 = randn(N, 1.0, 803);
  Ref db_ref;
  for (int64_t j = 0; j < N; ++j) {
    double s = db0[j], mag = std::fabs(db0[j]);
    for (int64_t r = 0; r < R; ++r) {
      s += x[r * N + j];
      mag += std::fabs(x[r * N + j]);
    }
    db_ref.add(s, sum_tol(R, mag));
  }
  Buffer db = up(db0);
  ops::bias_backward_rows(c, xb.as<float>(), R, N, db.as<float>());
  expect_close(down<float>(db), db_ref, "bias_backward_rows");

  // scatter_add_rows: dst[index[t]] += src[t]. Distinct rows (one fp32 add each): bitwise;
  // repeated rows: a sum, within tolerance.
  const int64_t V = 23, D = 19, T = 13;
  const std::vector<float> dst0 = randn(V * D, 1.0, 804), src = randn(T * D, 1.0, 805);
  std::vector<int32_t> distinct(static_cast<size_t>(V));
  std::iota(distinct.begin(), distinct.end(), 0);
  std::reverse(distinct.begin(), distinct.end());
  std::rotate(distinct.begin(), distinct.begin() + 5, distinct.end());
  distinct.resize(static_cast<size_t>(T));
  std::vector<float> single = dst0;
  for (int64_t t = 0; t < T; ++t)
    for (int64_t d = 0; d < D; ++d) single[distinct[t] * D + d] += src[t * D + d];
  Buffer dst = up(dst0), sb = up(src), ib = up(distinct);
  ops::scatter_add_rows(c, sb.as<float>(), ib.as<int32_t>(), T, D, dst.as<float>());
  expect_bitwise(down<float>(dst), single, "scatter_add_rows, one contributor per row");

  const std::vector<int32_t> repeated = randint(T, 0, 5, 806);
  std::vector<double> acc(dst0.begin(), dst0.end()), mag(dst0.size()), count(dst0.size(), 0.0);
  for (size_t i = 0; i < dst0.size(); ++i) mag[i] = std::fabs(dst0[i]);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t d = 0; d < D; ++d) {
      const size_t i = static_cast<size_t>(repeated[t] * D + d);
      acc[i] += src[t * D + d];
      mag[i] += std::fabs(src[t * D + d]);
      count[i] += 1.0;
    }
  Ref rep_ref;
  for (size_t i = 0; i < acc.size(); ++i)
    rep_ref.add(acc[i], sum_tol(static_cast<int64_t>(count[i]), mag[i]));
  Buffer dst2 = up(dst0), ib2 = up(repeated);
  ops::scatter_add_rows(c, sb.as<float>(), ib2.as<int32_t>(), T, D, dst2.as<float>());
  ops::scatter_add_rows(c, nullptr, nullptr, 0, D, dst2.as<float>());
  expect_close(down<float>(dst2), rep_ref, "scatter_add_rows, repeated rows");
}

// ---- norms -----------------------------------------------------------------------------------

TEST_P(BackendConformance, Norms) {
  const ExecContext& c = ctx();
  const int64_t T = 7, D = 67;
  const float eps = 1e-6f;
  const std::vector<float> x = randn(T * D, 1.0, 900, 0.5), r = randn(T * D, 1.0, 901);
  const std::vector<float> w = randn(D, 0.2, 902, 1.0), b = randn(D, 0.1, 903);

  // RMSNorm: y = x rstd w, rstd = 1 / sqrt(mean x^2 + eps).
  Ref y_ref, rstd_ref;
  std::vector<float> rstd_f(static_cast<size_t>(T));
  for (int64_t t = 0; t < T; ++t) {
    double ss = 0.0;
    for (int64_t i = 0; i < D; ++i) ss += static_cast<double>(x[t * D + i]) * x[t * D + i];
    const double rstd = 1.0 / std::sqrt(ss / D + eps);
    rstd_f[t] = static_cast<float>(rstd);
    rstd_ref.add(rstd, sum_tol(D + 4, rstd));
    for (int64_t i = 0; i < D; ++i)
      y_ref.add(x[t * D + i] * rstd * w[i], sum_tol(D + 8, std::fabs(x[t * D + i] * rstd * w[i])));
  }
  Buffer xb = up(x), wb = up(w), bb = up(b), y = up(nans(T * D)), rstd = up(nans(T));
  ops::rmsnorm_forward(c, xb.as<float>(), wb.as<float>(), y.as<float>(), rstd.as<float>(), T, D,
                       eps);
  expect_close(down<float>(y), y_ref, "rmsnorm_forward y");
  expect_close(down<float>(rstd), rstd_ref, "rmsnorm_forward rstd");
  Buffer y2 = up(nans(T * D));
  ops::rmsnorm_forward(c, xb.as<float>(), wb.as<float>(), y2.as<float>(), nullptr, T, D, eps);
  expect_close(down<float>(y2), y_ref, "rmsnorm_forward without rstd");

  // Backward from the given rstd r: dx_j += r w_j dy_j - r^3 / D x_j sum_i dy_i w_i x_i;
  // dw_i += sum_t dy_ti x_ti r_t.
  const std::vector<float> dy = randn(T * D, 1.0, 904), dx0 = randn(T * D, 1.0, 905);
  const std::vector<float> dw0 = randn(D, 1.0, 906);
  Ref dx_ref, dw_ref;
  std::vector<double> dw(dw0.begin(), dw0.end()), dw_mag(dw.size());
  for (int64_t i = 0; i < D; ++i) dw_mag[i] = std::fabs(dw0[i]);
  for (int64_t t = 0; t < T; ++t) {
    const double rt = rstd_f[t];
    double dot = 0.0, dot_mag = 0.0;
    for (int64_t i = 0; i < D; ++i) {
      const double p = static_cast<double>(dy[t * D + i]) * w[i] * x[t * D + i];
      dot += p;
      dot_mag += std::fabs(p);
    }
    for (int64_t i = 0; i < D; ++i) {
      const double xi = x[t * D + i], gi = dy[t * D + i];
      const double k = rt * rt * rt / D;
      dx_ref.add(dx0[t * D + i] + rt * w[i] * gi - k * xi * dot,
                 sum_tol(D + 8, std::fabs(dx0[t * D + i]) + std::fabs(rt * w[i] * gi) +
                                    k * std::fabs(xi) * dot_mag));
      dw[i] += gi * xi * rt;
      dw_mag[i] += std::fabs(gi * xi * rt);
    }
  }
  for (int64_t i = 0; i < D; ++i) dw_ref.add(dw[i], sum_tol(T + 4, dw_mag[i]));
  Buffer rb = up(rstd_f), dyb = up(dy), dxb = up(dx0), dwb = up(dw0);
  ops::rmsnorm_backward(c, xb.as<float>(), wb.as<float>(), rb.as<float>(), dyb.as<float>(),
                        dxb.as<float>(), dwb.as<float>(), T, D);
  expect_close(down<float>(dxb), dx_ref, "rmsnorm_backward dx");
  expect_close(down<float>(dwb), dw_ref, "rmsnorm_backward dw");
  Buffer dx_only = up(dx0), dw_only = up(dw0);
  ops::rmsnorm_backward(c, xb.as<float>(), wb.as<float>(), rb.as<float>(), dyb.as<float>(),
                        dx_only.as<float>(), nullptr, T, D);
  ops::rmsnorm_backward(c, xb.as<float>(), wb.as<float>(), rb.as<float>(), dyb.as<float>(), nullptr,
                        dw_only.as<float>(), T, D);
  expect_close(down<float>(dx_only), dx_ref, "rmsnorm_backward dx (dw null)");
  expect_close(down<float>(dw_only), dw_ref, "rmsnorm_backward dw (dx null)");

  // LayerNorm with the biased variance; add_layernorm normalizes the fp32 sum a + r.
  const auto layernorm_ref = [&](const std::vector<float>& s) {
    Ref ref;
    for (int64_t t = 0; t < T; ++t) {
      double mean = 0.0, var = 0.0;
      for (int64_t i = 0; i < D; ++i) mean += s[t * D + i];
      mean /= D;
      for (int64_t i = 0; i < D; ++i) var += (s[t * D + i] - mean) * (s[t * D + i] - mean);
      const double rs = 1.0 / std::sqrt(var / D + eps);
      for (int64_t i = 0; i < D; ++i) {
        const double si = s[t * D + i];
        ref.add(
            (si - mean) * rs * w[i] + b[i],
            elem_tol((std::fabs(si) + std::fabs(mean)) * rs * std::fabs(w[i]) + std::fabs(b[i])));
      }
    }
    return ref;
  };
  std::vector<float> a_plus_r(x.size());
  for (size_t i = 0; i < x.size(); ++i) a_plus_r[i] = x[i] + r[i];
  const Ref ln_ref = layernorm_ref(x), add_ln_ref = layernorm_ref(a_plus_r);
  Buffer ln = up(nans(T * D)), ln_in_place = up(x);
  ops::layernorm_forward(c, xb.as<float>(), wb.as<float>(), bb.as<float>(), ln.as<float>(), T, D,
                         eps);
  ops::layernorm_forward(c, ln_in_place.as<float>(), wb.as<float>(), bb.as<float>(),
                         ln_in_place.as<float>(), T, D, eps);
  expect_close(down<float>(ln), ln_ref, "layernorm_forward");
  expect_close(down<float>(ln_in_place), ln_ref, "layernorm_forward in place");
  for (int alias : {0, 1, 2}) {  // y separate, y aliases a, y aliases r
    Buffer ab = up(x), rb2 = up(r), out = up(nans(T * D));
    float* yp = alias == 0 ? out.as<float>() : alias == 1 ? ab.as<float>() : rb2.as<float>();
    ops::add_layernorm_forward(c, ab.as<float>(), rb2.as<float>(), wb.as<float>(), bb.as<float>(),
                               yp, T, D, eps);
    const Buffer& yb = alias == 0 ? out : alias == 1 ? ab : rb2;
    expect_close(down<float>(yb), add_ln_ref,
                 std::string("add_layernorm_forward") + (alias == 0   ? ""
                                                         : alias == 1 ? " (y aliases a)"
                                                                      : " (y aliases r)"));
  }

  // LayerNorm backward from the input x (statistics recomputed): with xhat = (x - mean) rstd and
  // g = dy w, dx += rstd (g - mean(g) - xhat mean(g xhat)), dw += sum_t dy xhat, db += sum_t dy.
  {
    const std::vector<float> ln_dy = randn(T * D, 1.0, 907), ln_dx0 = randn(T * D, 1.0, 908);
    const std::vector<float> dw0 = randn(D, 1.0, 909), db0 = randn(D, 1.0, 910);
    Ref dx_r, dw_r, db_r;
    std::vector<double> dwv(dw0.begin(), dw0.end()), dbv(db0.begin(), db0.end());
    std::vector<double> dw_m(D), db_m(D);
    for (int64_t i = 0; i < D; ++i) {
      dw_m[i] = std::fabs(dw0[i]);
      db_m[i] = std::fabs(db0[i]);
    }
    for (int64_t t = 0; t < T; ++t) {
      double mean = 0.0, var = 0.0;
      for (int64_t i = 0; i < D; ++i) mean += x[t * D + i];
      mean /= D;
      for (int64_t i = 0; i < D; ++i) var += (x[t * D + i] - mean) * (x[t * D + i] - mean);
      const double rs = 1.0 / std::sqrt(var / D + eps);
      double mg = 0.0, mgx = 0.0, mag = 0.0;
      for (int64_t i = 0; i < D; ++i) {
        const double xh = (x[t * D + i] - mean) * rs, g = double{ln_dy[t * D + i]} * w[i];
        mg += g / D;
        mgx += g * xh / D;
        mag += std::fabs(g) * (1.0 + std::fabs(xh)) / D;
        dwv[i] += ln_dy[t * D + i] * xh;
        dw_m[i] += std::fabs(ln_dy[t * D + i] * xh);
        dbv[i] += ln_dy[t * D + i];
        db_m[i] += std::fabs(ln_dy[t * D + i]);
      }
      for (int64_t i = 0; i < D; ++i) {
        const double xh = (x[t * D + i] - mean) * rs, g = double{ln_dy[t * D + i]} * w[i];
        dx_r.add(ln_dx0[t * D + i] + rs * (g - mg - xh * mgx),
                 sum_tol(D + 8, std::fabs(ln_dx0[t * D + i]) +
                                    rs * (std::fabs(g) + mag * (1.0 + std::fabs(xh)))));
      }
    }
    for (int64_t i = 0; i < D; ++i) {
      dw_r.add(dwv[i], sum_tol(T + D + 8, dw_m[i]));
      db_r.add(dbv[i], sum_tol(T + 4, db_m[i]));
    }
    Buffer dyb2 = up(ln_dy), dxb2 = up(ln_dx0), dwb2 = up(dw0), dbb2 = up(db0);
    ops::layernorm_backward(c, xb.as<float>(), wb.as<float>(), dyb2.as<float>(), dxb2.as<float>(),
                            dwb2.as<float>(), dbb2.as<float>(), T, D, eps);
    expect_close(down<float>(dxb2), dx_r, "layernorm_backward dx");
    expect_close(down<float>(dwb2), dw_r, "layernorm_backward dw");
    expect_close(down<float>(dbb2), db_r, "layernorm_backward db");
    Buffer dx_only = up(ln_dx0), dw_only = up(dw0), db_only = up(db0);
    ops::layernorm_backward(c, xb.as<float>(), wb.as<float>(), dyb2.as<float>(),
                            dx_only.as<float>(), nullptr, nullptr, T, D, eps);
    ops::layernorm_backward(c, xb.as<float>(), wb.as<float>(), dyb2.as<float>(), nullptr,
                            dw_only.as<float>(), db_only.as<float>(), T, D, eps);
    expect_close(down<float>(dx_only), dx_r, "layernorm_backward dx (dw, db null)");
    expect_close(down<float>(dw_only), dw_r, "layernorm_backward dw (dx null)");
    expect_close(down<float>(db_only), db_r, "layernorm_backward db (dx null)");
  }
}

// ---- attention -------------------------------------------------------------------------------

TEST_P(BackendConformance, Rope) {
  const ExecContext& c = ctx();
  const int64_t T = 7, heads = 3, hd = 8, ld = 3 * heads * hd + 5, pos0 = 5;
  std::vector<float> inv_freq(static_cast<size_t>(hd / 2));  // theta^(-2i/hd), theta = 1e4
  for (int64_t i = 0; i < hd / 2; ++i)
    inv_freq[i] = static_cast<float>(std::pow(1e4, -2.0 * static_cast<double>(i) / hd));
  const std::vector<float> x = randn(T * ld, 1.0, 1000);
  for (bool inverse : {false, true}) {
    // Pairs (i, i + hd/2) of each head turn by (pos * inv_freq[i]), the angle taken in fp32 as
    // Hugging Face does; the rest of the ld-wide row (here: k, v and padding) is untouched.
    Ref ref;
    for (float v : x) ref.add(v, 0.0);
    for (int64_t t = 0; t < T; ++t)
      for (int64_t h = 0; h < heads; ++h)
        for (int64_t i = 0; i < hd / 2; ++i) {
          const double ang = static_cast<float>(pos0 + t) * inv_freq[i];
          const double cs = std::cos(ang), sn = inverse ? -std::sin(ang) : std::sin(ang);
          const size_t lo = static_cast<size_t>(t * ld + h * hd + i), hi = lo + hd / 2;
          const double a = x[lo], b = x[hi], tol = elem_tol(std::fabs(a) + std::fabs(b));
          ref.v[lo] = a * cs - b * sn;
          ref.v[hi] = b * cs + a * sn;
          ref.tol[lo] = ref.tol[hi] = tol;
        }
    Buffer xb = up(x);
    ops::rope_apply(c, xb.as<float>(), T, heads, hd, ld, pos0, inv_freq, inverse);
    ops::rope_apply(c, nullptr, 0, heads, hd, ld, pos0, inv_freq, inverse);
    expect_close(down<float>(xb), ref, inverse ? "rope_apply inverse" : "rope_apply");
  }
}

struct AttentionCase {
  std::string name;
  int64_t T, Tk, pos0;
  AttentionShape s;
  std::vector<uint8_t> key_mask;  // empty: null
};

struct AttentionRef {
  std::vector<double> out, dq, dk, dv;
};

// Plain attention (runtime/kernels/attention.h): s_tj = scale q_t,h . k_j,g over visible keys
// (causal: j <= pos0 + t; key_mask[j] != 0); a row with none visible gives 0. Backward with
// the same visibility: dq written, dk and dv added to dk0, dv0.
AttentionRef attention_ref(const AttentionCase& a, const std::vector<float>& q,
                           const std::vector<float>& k, const std::vector<float>& v,
                           const std::vector<float>& dout, const std::vector<float>& dk0,
                           const std::vector<float>& dv0) {
  const int64_t nH = a.s.num_heads, nKV = a.s.num_kv_heads, hd = a.s.head_dim;
  const int64_t ldq = nH * hd, ldk = nKV * hd;
  AttentionRef r;
  r.out.assign(static_cast<size_t>(a.T * ldq), 0.0);
  r.dq.assign(r.out.size(), 0.0);
  r.dk.assign(dk0.begin(), dk0.end());
  r.dv.assign(dv0.begin(), dv0.end());
  for (int64_t h = 0; h < nH; ++h) {
    const int64_t g = h / (nH / nKV);
    for (int64_t t = 0; t < a.T; ++t) {
      std::vector<double> p(static_cast<size_t>(a.Tk), 0.0), dp(p.size(), 0.0);
      double mx = -INFINITY;
      for (int64_t j = 0; j < a.Tk; ++j) {
        const bool visible =
            (!a.s.causal || j <= a.pos0 + t) && (a.key_mask.empty() || a.key_mask[j]);
        if (!visible) {
          p[j] = -INFINITY;
          continue;
        }
        double sc = 0.0;
        for (int64_t d = 0; d < hd; ++d)
          sc += static_cast<double>(q[t * ldq + h * hd + d]) * k[j * ldk + g * hd + d];
        p[j] = a.s.scale * sc;
        mx = std::max(mx, p[j]);
      }
      if (mx == -INFINITY) continue;  // nothing visible: out and dq stay 0
      double z = 0.0;
      for (double& pj : p) {
        pj = pj == -INFINITY ? 0.0 : std::exp(pj - mx);
        z += pj;
      }
      double dot = 0.0;
      for (int64_t j = 0; j < a.Tk; ++j) {
        p[j] /= z;
        for (int64_t d = 0; d < hd; ++d) {
          const double vj = v[j * ldk + g * hd + d], go = dout[t * ldq + h * hd + d];
          r.out[t * ldq + h * hd + d] += p[j] * vj;
          dp[j] += go * vj;
          r.dv[j * ldk + g * hd + d] += p[j] * go;
        }
        dot += p[j] * dp[j];
      }
      for (int64_t j = 0; j < a.Tk; ++j) {
        const double ds = p[j] * (dp[j] - dot) * a.s.scale;
        for (int64_t d = 0; d < hd; ++d) {
          r.dq[t * ldq + h * hd + d] += ds * k[j * ldk + g * hd + d];
          r.dk[j * ldk + g * hd + d] += ds * q[t * ldq + h * hd + d];
        }
      }
    }
  }
  return r;
}

// Attention outputs: within kAttnRel of the largest |ref| of that output.
void expect_attention_close(const std::vector<float>& got, const std::vector<double>& want,
                            const std::string& what) {
  double scale = 0.0;
  for (double x : want) scale = std::max(scale, std::fabs(x));
  Ref ref;
  for (double x : want) ref.add(x, kAttnRel * scale + kTiny);
  expect_close(got, ref, what);
}

TEST_P(BackendConformance, Attention) {
  const ExecContext& c = ctx();
  const auto shape = [](int64_t nH, int64_t nKV, int64_t hd, bool causal) {
    AttentionShape s;
    s.num_heads = nH;
    s.num_kv_heads = nKV;
    s.head_dim = hd;
    s.causal = causal;
    s.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(hd)));
    return s;
  };
  const AttentionCase cases[] = {
      {"causal grouped-query, KV cache", 5, 11, 6, shape(4, 2, 8, true), {}},
      {"bidirectional, masked keys", 9, 9, 0, shape(2, 2, 7, false), {1, 0, 1, 1, 0, 1, 1, 1, 0}},
      {"causal, first row sees nothing", 6, 6, 0, shape(2, 1, 4, true), {0, 1, 1, 0, 1, 1}},
      {"no keys", 3, 0, 0, shape(2, 1, 4, false), {}},
      {"no queries", 0, 4, 0, shape(2, 1, 4, false), {}},
  };
  uint64_t seed = 1100;
  for (const AttentionCase& a : cases) {
    const int64_t ldq = a.s.num_heads * a.s.head_dim, ldk = a.s.num_kv_heads * a.s.head_dim;
    const std::vector<float> q = randn(a.T * ldq, 1.0, ++seed), k = randn(a.Tk * ldk, 1.0, ++seed);
    const std::vector<float> v = randn(a.Tk * ldk, 1.0, ++seed),
                             dout = randn(a.T * ldq, 1.0, ++seed);
    const std::vector<float> dk0 = randn(a.Tk * ldk, 1.0, ++seed),
                             dv0 = randn(a.Tk * ldk, 1.0, ++seed);
    const AttentionRef ref = attention_ref(a, q, k, v, dout, dk0, dv0);
    Buffer qb = up(q), kb = up(k), vb = up(v), dob = up(dout), mask = up(a.key_mask);
    const uint8_t* mp = a.key_mask.empty() ? nullptr : mask.as<uint8_t>();
    Buffer out = up(nans(a.T * ldq)), dq = up(nans(a.T * ldq)), dk = up(dk0), dv = up(dv0);
    ops::attention_forward(c, qb.as<float>(), kb.as<float>(), vb.as<float>(), out.as<float>(), a.T,
                           a.Tk, a.pos0, a.s, mp);
    ops::attention_backward(c, qb.as<float>(), kb.as<float>(), vb.as<float>(), dob.as<float>(),
                            dq.as<float>(), dk.as<float>(), dv.as<float>(), a.T, a.Tk, a.pos0, a.s,
                            mp);
    expect_attention_close(down<float>(out), ref.out, "attention_forward: " + a.name);
    expect_attention_close(down<float>(dq), ref.dq, "attention_backward dq: " + a.name);
    expect_attention_close(down<float>(dk), ref.dk, "attention_backward dk: " + a.name);
    expect_attention_close(down<float>(dv), ref.dv, "attention_backward dv: " + a.name);
  }
}

// ---- loss ------------------------------------------------------------------------------------

TEST_P(BackendConformance, CrossEntropy) {
  const ExecContext& c = ctx();
  const int64_t T = 11, V = 29;
  std::vector<float> logits = randn(T * V, 3.0, 1200);
  for (int64_t j = 0; j < V; ++j) logits[2 * V + j] += 1e3f;  // a row far from 0
  std::vector<int32_t> target = randint(T, 0, static_cast<int32_t>(V), 1201);
  target[1] = target[7] = -1;  // ignored rows
  const float scale = 1.0f / 9.0f;
  double sum = 0.0, sum_mag = 0.0;
  int64_t count = 0;
  Ref grad;
  for (int64_t t = 0; t < T; ++t) {
    const float* row = logits.data() + t * V;
    const double m = *std::max_element(row, row + V);
    double z = 0.0;
    for (int64_t j = 0; j < V; ++j) z += std::exp(row[j] - m);
    for (int64_t j = 0; j < V; ++j) {
      const double p = std::exp(row[j] - m) / z, onehot = j == target[t] ? 1.0 : 0.0;
      if (target[t] < 0)
        grad.add(0.0, 0.0);
      else
        grad.add((p - onehot) * scale,
                 elem_tol((p * (1.0 + std::fabs(row[j] - m)) + onehot) * scale));
    }
    if (target[t] < 0) continue;
    sum += m + std::log(z) - row[target[t]];
    sum_mag += std::fabs(m + std::log(z)) + std::fabs(row[target[t]]);
    ++count;
  }
  Buffer lb = up(logits), tb = up(target), dl = up(nans(T * V));
  int64_t got_count = -1;
  const double got = ops::cross_entropy_sum(c, lb.as<float>(), tb.as<int32_t>(), T, V, &got_count);
  EXPECT_EQ(got_count, count);
  EXPECT_NEAR(got, sum, kDoubleRel * sum_mag) << "cross_entropy_sum";
  ops::cross_entropy_backward(c, lb.as<float>(), tb.as<int32_t>(), T, V, scale, dl.as<float>());
  expect_close(down<float>(dl), grad, "cross_entropy_backward");
  int64_t empty_count = -1;
  EXPECT_EQ(ops::cross_entropy_sum(c, nullptr, nullptr, 0, V, &empty_count), 0.0);
  EXPECT_EQ(empty_count, 0);
}

std::string param_name(const ::testing::TestParamInfo<std::string>& info) {
  return info.param;
}
// GemmPrecision on the CPU: fp32 only, so make_context refuses kBf16 (either determinism), and
// the names round-trip.
TEST(BackendPrecision, CpuRefusesBf16) {
  EXPECT_FALSE(find_backend("cpu")->supports_bf16());
  EXPECT_EQ(make_context("cpu", false, GemmPrecision::kBf16), nullptr);
  EXPECT_EQ(make_context("cpu", true, GemmPrecision::kBf16), nullptr);
  const ExecContext* c = make_context("cpu", false, GemmPrecision::kFp32);
  ASSERT_NE(c, nullptr);
  EXPECT_EQ(c->precision, GemmPrecision::kFp32);
  EXPECT_EQ(c, make_context("cpu", false));
  for (GemmPrecision p : {GemmPrecision::kFp32, GemmPrecision::kBf16}) {
    auto parsed = parse_gemm_precision(gemm_precision_name(p));
    ASSERT_TRUE(parsed.ok());
    EXPECT_TRUE(parsed.value() == p) << gemm_precision_name(p);
  }
  EXPECT_FALSE(parse_gemm_precision("fp16").ok());
}

INSTANTIATE_TEST_SUITE_P(AllBackends, BackendConformance, ::testing::ValuesIn(backend_names()),
                         param_name);

}  // namespace
}  // namespace conformance
}  // namespace sy
