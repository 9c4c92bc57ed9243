// A one-line progress meter for long work: items done, rate, ETA; redrawn in place on a
// terminal, printed every few seconds otherwise (logs stay readable).
#pragma once

#include <unistd.h>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>

#include "runtime/core/timing.h"

namespace sy::launch {

class Progress {
 public:
  Progress(std::string label, int64_t total, const char* unit = "tok")
      : label_(std::move(label)),
        unit_(unit),
        total_(total),
        tty_(isatty(fileno(stderr)) != 0),
        start_(Clock::now()),
        last_(start_) {}

  void update(int64_t done, bool final = false) {
    const auto now = Clock::now();
    const double since_last = std::chrono::duration<double>(now - last_).count();
    if (!final && since_last < (tty_ ? 0.2 : 5.0)) return;
    last_ = now;
    const double el = std::chrono::duration<double>(now - start_).count();
    const double rate = el > 0 ? static_cast<double>(done) / el : 0.0;
    const double eta = rate > 0 ? static_cast<double>(total_ - done) / rate : 0.0;
    std::fprintf(stderr, "%s[%s] %lld/%lld %s  %.1fk %s/s  ETA %.0fs%s", tty_ ? "\r\033[K" : "",
                 label_.c_str(), static_cast<long long>(done), static_cast<long long>(total_),
                 unit_, rate / 1e3, unit_, eta, (tty_ && !final) ? "" : "\n");
    std::fflush(stderr);
  }
  double elapsed_s() const { return seconds_since(start_); }

 private:
  using Clock = SteadyClock;
  std::string label_;
  const char* unit_;
  int64_t total_;
  bool tty_;
  Clock::time_point start_, last_;
};

}  // namespace sy::launch
