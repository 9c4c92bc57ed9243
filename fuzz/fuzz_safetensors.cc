// libFuzzer target for the safetensors reader (untrusted weight files): any bytes give a
// Status, never a crash, leak or UB. Built only with clang (fuzz/CMakeLists.txt).
//
// Run (CI runs a fixed number of executions; tests/launch/fuzz_smoke.sh builds the target in
// its clang folder with ASan + UBSan), e.g. a million executions:
//   bash tests/launch/fuzz_smoke.sh . /tmp/fz safetensors 1000000
// A crash writes crash-<sha1> (in /tmp/fz/fuzz-safetensors/); copy it into
// fuzz/corpus/safetensors/ as invalid_<name> (or valid_<name> if it should open) and
// safetensors_test replays it as a regression test.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "runtime/io/safetensors.h"

namespace {

const std::string& TmpPath() {
  static const std::string p = "/tmp/fuzz_safetensors_" + std::to_string(::getpid());
  return p;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::vector<sy::SafetensorsEntry> entries;
  const bool mem_ok = sy::safetensors_validate_image(data, size, "fuzz", &entries).ok();

  // The file path too: pread, size re-checks, row reads and conversion.
  ::unlink(TmpPath().c_str());  // a fresh file: rewriting a truncated one flushes it on ext4
  FILE* f = std::fopen(TmpPath().c_str(), "wb");
  if (!f) return 0;
  if (size > 0) std::fwrite(data, 1, size, f);
  std::fclose(f);
  auto r = sy::SafetensorsReader::Open(TmpPath());
  if (r.ok() != mem_ok) __builtin_trap();  // the two entry points must agree
  if (!r.ok()) return 0;
  if (r->tensors().size() != entries.size()) __builtin_trap();
  for (const auto& e : r->tensors()) {
    auto bytes = r->ReadBytes(e.name);
    if (!bytes.ok() || bytes->size() != e.nbytes()) __builtin_trap();
    (void)r->ReadF32(e.name, /*allow_non_finite=*/true);
    if (!e.shape.empty() && e.shape[0] > 0) {
      (void)r->ReadRowsF32(e.name, e.shape[0] - 1, 1, /*allow_non_finite=*/false);
    }
  }
  (void)r->CheckSchema({{"a", sy::SafeDtype::kF32, {1}}}, /*allow_extra=*/false);
  return 0;
}
