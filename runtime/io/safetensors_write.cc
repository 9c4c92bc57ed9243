// safetensors: dtype conversion and the writer (the reader is in safetensors.cc).
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <nlohmann/json.hpp>

#include "runtime/io/safetensors.h"

namespace sy {
namespace {
using json = nlohmann::json;
}  // namespace

// ---- conversion ----

namespace {
float HalfToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000) << 16;
  const uint32_t exp = (h >> 10) & 0x1F, man = h & 0x3FF;
  uint32_t bits;
  if (exp == 0x1F) {
    bits = sign | 0x7F800000u | (man << 13);
  } else if (exp != 0) {
    bits = sign | ((exp + 112) << 23) | (man << 13);
  } else if (man == 0) {
    bits = sign;
  } else {  // subnormal: value = man * 2^-24
    float f = std::ldexp(static_cast<float>(man), -24);
    return sign ? -f : f;
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}
}  // namespace

Status safetensors_to_f32(SafeDtype dtype, const uint8_t* src, size_t n, float* dst) {
  for (size_t i = 0; i < n; ++i) {
    if (dtype == SafeDtype::kF32) {
      uint32_t b = uint32_t{src[4 * i]} | uint32_t{src[4 * i + 1]} << 8 |
                   uint32_t{src[4 * i + 2]} << 16 | uint32_t{src[4 * i + 3]} << 24;
      std::memcpy(&dst[i], &b, 4);
    } else if (dtype == SafeDtype::kBF16) {
      uint32_t b = (uint32_t{src[2 * i]} | uint32_t{src[2 * i + 1]} << 8) << 16;
      std::memcpy(&dst[i], &b, 4);
    } else if (dtype == SafeDtype::kF16) {
      dst[i] = HalfToFloat(static_cast<uint16_t>(src[2 * i] | src[2 * i + 1] << 8));
    } else {
      return InvalidArgument(std::string("cannot convert dtype ") + safe_dtype_name(dtype) +
                             " to float32");
    }
  }
  return Status::Ok();
}

uint16_t f32_to_bf16(float f) {
  uint32_t b;
  std::memcpy(&b, &f, 4);
  if (std::isnan(f)) return static_cast<uint16_t>((b >> 16) | 0x40);  // stay a quiet NaN
  b += 0x7FFF + ((b >> 16) & 1);
  return static_cast<uint16_t>(b >> 16);
}

// ---- writer ----

Status safetensors_write(const std::string& path, const std::vector<SafetensorsWriteTensor>& ts,
                         const std::map<std::string, std::string>& metadata,
                         const AtomicWriteOptions& opt) {
  std::vector<const SafetensorsWriteTensor*> sorted;
  for (const auto& t : ts) sorted.push_back(&t);
  std::sort(sorted.begin(), sorted.end(),
            [](const auto* a, const auto* b) { return a->name < b->name; });
  json hdr = json::object();
  uint64_t off = 0;
  for (size_t i = 0; i < sorted.size(); ++i) {
    const auto& t = *sorted[i];
    const std::string where = path + ": tensor '" + t.name + "': ";
    if (t.name.empty() || t.name == "__metadata__") return InvalidArgument(where + "bad name");
    if (i > 0 && sorted[i - 1]->name == t.name) return InvalidArgument(where + "duplicate name");
    int64_t numel = 1;
    for (int64_t s : t.shape) {
      if (s < 0) return InvalidArgument(where + "negative dimension");
      numel *= s;
    }
    if (t.nbytes != static_cast<size_t>(numel) * safe_dtype_size(t.dtype) ||
        (t.nbytes > 0 && !t.data))
      return InvalidArgument(where + std::to_string(t.nbytes) + " bytes for " +
                             safe_dtype_name(t.dtype) + " " + json(t.shape).dump());
    hdr[t.name] = {{"dtype", safe_dtype_name(t.dtype)},
                   {"shape", t.shape},
                   {"data_offsets", {off, off + t.nbytes}}};
    off += t.nbytes;
  }
  if (!metadata.empty()) hdr["__metadata__"] = metadata;
  std::string text = hdr.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  uint8_t len_le[8];
  for (int i = 0; i < 8; ++i) len_le[i] = static_cast<uint8_t>(uint64_t{text.size()} >> (8 * i));

  std::vector<std::pair<const void*, size_t>> pieces = {{len_le, 8}, {text.data(), text.size()}};
  for (const auto* t : sorted) pieces.emplace_back(t->data, t->nbytes);
  return write_file_atomic(path, pieces, opt);
}

}  // namespace sy
