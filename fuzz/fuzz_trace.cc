// libFuzzer target for the routing trace reader (runtime/trace/trace_format.h): any bytes give a
// Status, never a crash, leak or UB; a shard that reads also survives statistics, and writing it
// again reads back the same. Built only with clang (fuzz/CMakeLists.txt).
//
// Run longer than CI does (tests/launch/fuzz_smoke.sh builds it with ASan + UBSan):
//   bash tests/launch/fuzz_smoke.sh . /tmp/fz trace 1000000
// A crash writes crash-<sha1>; copy it into fuzz/corpus/trace/ to keep it as a regression case
// (tests/launch/fuzz_smoke.sh replays the folder).
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <string>

#include "runtime/trace/trace_format.h"
#include "runtime/trace/trace_stats.h"

namespace {

std::string TmpPath(const char* what) {
  return "/tmp/fuzz_trace_" + std::to_string(::getpid()) + what;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string in = TmpPath(".in"), out = TmpPath(".out");
  ::unlink(in.c_str());  // a fresh file: rewriting a truncated one flushes it on ext4
  FILE* f = std::fopen(in.c_str(), "wb");
  if (!f) return 0;
  if (size > 0) std::fwrite(data, 1, size, f);
  std::fclose(f);
  auto s = sy::read_trace_shard(in);
  if (!s.ok()) {
    if (s.status().exit_code() != sy::kExitBadInput) __builtin_trap();  // always exit 22
    return 0;
  }
  sy::Trace t;
  t.dir = "fuzz";
  t.shards.push_back(*s);
  if (!sy::trace_stats(t, 1, 5).ok()) __builtin_trap();
  if (!sy::write_trace_shard(out, *s).ok()) __builtin_trap();
  auto again = sy::read_trace_shard(out);
  if (!again.ok() || again->step_N != s->step_N || again->token_index_N != s->token_index_N ||
      again->layers.size() != s->layers.size())
    __builtin_trap();
  for (size_t l = 0; l < s->layers.size(); ++l)
    if (again->layers[l].topk_ids_NK != s->layers[l].topk_ids_NK ||
        again->layers[l].kept_NK != s->layers[l].kept_NK)
      __builtin_trap();
  ::unlink(out.c_str());
  return 0;
}
