// Wall-clock timing on the monotonic clock, for phase times in reports, progress lines and
// benchmarks. One clock for the whole tree, so every phase time is comparable with the others.
//
//   SteadyClock::time_point clk = SteadyClock::now();
//   route_s = seconds_since(&clk);     // lap: seconds since clk, and clk moves to now
//   total_s = seconds_since(start);    // seconds since start, start unchanged
#pragma once

#include <chrono>

namespace sy {

using SteadyClock = std::chrono::steady_clock;

// Seconds since t0.
inline double seconds_since(SteadyClock::time_point t0) {
  return std::chrono::duration<double>(SteadyClock::now() - t0).count();
}

// Seconds since *t, then *t = now: times consecutive phases with one clock variable.
inline double seconds_since(SteadyClock::time_point* t) {
  const SteadyClock::time_point now = SteadyClock::now();
  const double s = std::chrono::duration<double>(now - *t).count();
  *t = now;
  return s;
}

// Seconds since an arbitrary fixed point of this process; only differences mean anything.
inline double now_seconds() {
  return std::chrono::duration<double>(SteadyClock::now().time_since_epoch()).count();
}

}  // namespace sy
