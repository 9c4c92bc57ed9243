// The readers the fuzz targets exercise take a path: the input bytes go to a file of this
// process under /tmp first.
#pragma once

#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <string>

namespace sy::fuzz {

// "/tmp/fuzz_<target>_<pid><suffix>": one per process, so parallel fuzzers never share a file.
inline std::string TmpPath(const char* target, const char* suffix) {
  return std::string("/tmp/fuzz_") + target + "_" + std::to_string(::getpid()) + suffix;
}

// Writes size bytes to a fresh file at path; false when it cannot.
inline bool WriteFile(const std::string& path, const void* data, size_t size) {
  ::unlink(path.c_str());  // a fresh file: rewriting a truncated one flushes it on ext4
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) return false;
  const bool ok = size == 0 || std::fwrite(data, 1, size, f) == size;
  return std::fclose(f) == 0 && ok;
}

}  // namespace sy::fuzz
