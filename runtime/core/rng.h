// Deterministic random numbers. Counter-based (splitmix64 over (seed, stream, index)), so
// any element can be drawn independently of how work is split across ranks or threads:
// the same seed gives the same weights with 1 rank or P ranks.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>

#include "runtime/kernels/math.h"

namespace sy {

SY_HD inline uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

SY_HD inline uint64_t hash_combine(uint64_t a, uint64_t b) {
  return splitmix64(a ^ (splitmix64(b) + 0x9E3779B97F4A7C15ull + (a << 6) + (a >> 2)));
}

// FNV-1a of bytes: a stable stream id for a parameter name (std::hash is not stable), or a
// fingerprint of binary data (zero bytes included).
inline uint64_t fnv1a64(const void* data, size_t n) {
  const unsigned char* c = static_cast<const unsigned char*>(data);
  uint64_t h = 0xcbf29ce484222325ull;
  for (size_t i = 0; i < n; ++i) h = (h ^ c[i]) * 0x100000001b3ull;
  return h;
}
inline uint64_t fnv1a64(const std::string& s) {
  return fnv1a64(s.data(), s.size());
}
inline uint64_t fnv1a64(const char* s) {
  return fnv1a64(std::string(s));
}

// Uniform in [0, 1) from 53 bits.
SY_HD inline double uniform_at(uint64_t seed, uint64_t stream, uint64_t index) {
  return static_cast<double>(hash_combine(hash_combine(seed, stream), index) >> 11) *
         (1.0 / 9007199254740992.0);
}

// Standard normal by Box-Muller on two independent uniforms.
SY_HD inline double normal_at(uint64_t seed, uint64_t stream, uint64_t index) {
  double u1 = uniform_at(seed, stream, 2 * index);
  double u2 = uniform_at(seed, stream, 2 * index + 1);
  if (u1 < 1e-300) u1 = 1e-300;
  return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

// Sequential generator for tests and data shuffles.
class Rng {
 public:
  explicit Rng(uint64_t seed, uint64_t stream = 0) : seed_(seed), stream_(stream) {}
  double uniform() { return uniform_at(seed_, stream_, i_++); }
  double normal() { return normal_at(seed_, stream_, i_++); }
  // Uniform integer in [0, n).
  uint64_t below(uint64_t n) { return static_cast<uint64_t>(uniform() * static_cast<double>(n)); }

 private:
  uint64_t seed_, stream_, i_ = 0;
};

// Fills n floats with N(0, std^2), element i drawn at (seed, stream, i).
void fill_normal(float* out, int64_t n, float std, uint64_t seed, uint64_t stream);
void fill_uniform(float* out, int64_t n, float lo, float hi, uint64_t seed, uint64_t stream);

}  // namespace sy
