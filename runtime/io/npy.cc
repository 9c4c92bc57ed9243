#include "runtime/io/npy.h"

#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

#include "runtime/core/file_output.h"

namespace sy {

Status npy_write_f32(const std::string& path, const float* data,
                     const std::vector<int64_t>& shape) {
  std::ostringstream dict;
  dict << "{'descr': '<f4', 'fortran_order': False, 'shape': (";
  int64_t n = 1;
  for (size_t i = 0; i < shape.size(); ++i) {
    dict << shape[i] << (shape.size() == 1 ? "," : (i + 1 < shape.size() ? ", " : ""));
    n *= shape[i];
  }
  dict << "), }";
  std::string header = dict.str();
  // magic(6) + version(2) + len(2) + header + '\n', padded with spaces to a multiple of 64.
  const size_t unpadded = 10 + header.size() + 1;
  header.append((64 - unpadded % 64) % 64, ' ');
  header.push_back('\n');
  const unsigned char magic[8] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0};
  const uint16_t len = static_cast<uint16_t>(header.size());
  const unsigned char len_le[2] = {static_cast<unsigned char>(len & 0xff),
                                   static_cast<unsigned char>(len >> 8)};
  // Through a temporary file: a failed write leaves no truncated .npy behind.
  return write_file_atomic(path, {{magic, 8},
                                  {len_le, 2},
                                  {header.data(), header.size()},
                                  {data, static_cast<size_t>(n) * sizeof(float)}});
}

Status npy_read_f32(const std::string& path, std::vector<float>* data,
                    std::vector<int64_t>* shape) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return NotFound("cannot open " + path);
  unsigned char pre[10];
  if (!f.read(reinterpret_cast<char*>(pre), 10) || std::memcmp(pre, "\x93NUMPY", 6) != 0 ||
      pre[6] != 1)
    return BadInput(path + ": not a version-1 .npy file");
  const size_t hlen = pre[8] | (static_cast<size_t>(pre[9]) << 8);
  std::string header(hlen, '\0');
  if (!f.read(header.data(), static_cast<std::streamsize>(hlen)))
    return BadInput(path + ": truncated header");
  if (header.find("'descr': '<f4'") == std::string::npos ||
      header.find("'fortran_order': False") == std::string::npos)
    return BadInput(path + ": only little-endian float32 C-order arrays are supported");
  const size_t lp = header.find("'shape': (");
  const size_t rp = header.find(')', lp);
  if (lp == std::string::npos || rp == std::string::npos) return BadInput(path + ": no shape");
  shape->clear();
  std::string dims = header.substr(lp + 10, rp - lp - 10);
  int64_t n = 1;
  std::istringstream ds(dims);
  std::string tok;
  while (std::getline(ds, tok, ',')) {
    if (tok.find_first_not_of(' ') == std::string::npos) continue;
    char* end = nullptr;
    const long long v = std::strtoll(tok.c_str(), &end, 10);
    if (v < 0 || v > (1ll << 40)) return BadInput(path + ": bad dimension '" + tok + "'");
    shape->push_back(v);
    n *= v;
    if (n > (1ll << 40)) return BadInput(path + ": array too large");
  }
  data->assign(static_cast<size_t>(n), 0.0f);
  if (!f.read(reinterpret_cast<char*>(data->data()),
              static_cast<std::streamsize>(n * sizeof(float))))
    return BadInput(path + ": truncated data (expected " + std::to_string(n) + " floats)");
  return Status::Ok();
}

}  // namespace sy
