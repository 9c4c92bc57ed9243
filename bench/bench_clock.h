// The benchmarks' clock. Wall clock by default; SY_BENCH_CLOCK=cpu times with the process CPU
// clock instead: with OPENBLAS_NUM_THREADS=1 that is the work done, unaffected by other
// processes on a shared machine (time spent descheduled is not counted).
#pragma once

#include <time.h>

#include <cstdlib>
#include <string>

#include "runtime/core/timing.h"

namespace sy {

inline bool bench_use_cpu_clock() {
  static const bool cpu = [] {
    const char* c = std::getenv("SY_BENCH_CLOCK");
    return c != nullptr && std::string(c) == "cpu";
  }();
  return cpu;
}

// Seconds on the chosen clock; only differences mean anything.
inline double bench_now_s() {
  if (bench_use_cpu_clock()) {
    timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
  }
  return now_seconds();
}

}  // namespace sy
