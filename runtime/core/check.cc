#include "runtime/core/check.h"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>

namespace sy {
namespace {
int g_rank = -1;
AbortHook g_abort_hook = nullptr;
}  // namespace

void set_log_rank(int rank) {
  g_rank = rank;
}
int log_rank() {
  return g_rank;
}

std::string host_name() {
  char buf[256] = {0};
  if (gethostname(buf, sizeof(buf) - 1) != 0) return "?";
  return buf;
}

void set_abort_hook(AbortHook hook) {
  g_abort_hook = hook;
}

void fatal_abort(int exit_code) {
  std::fflush(stdout);
  std::fflush(stderr);
  if (g_abort_hook) g_abort_hook(exit_code);
  std::abort();
}

void out_of_memory(int64_t bytes, const char* what) {
  std::fprintf(stderr,
               "[switchyard] rank %d on %s: out of memory: allocating %lld bytes (%s) failed\n",
               g_rank, host_name().c_str(), static_cast<long long>(bytes), what);
  fatal_abort(kExitOutOfMemory);
}

namespace detail {
CheckFailure::CheckFailure(const char* file, int line, const char* expr, int exit_code)
    : exit_code_(exit_code) {
  os_ << "[switchyard] rank " << g_rank << " on " << host_name() << ": " << file << ":" << line
      << ": check failed: " << expr << " ";
}

CheckFailure::~CheckFailure() noexcept(false) {
  std::fprintf(stderr, "%s\n", os_.str().c_str());
  fatal_abort(exit_code_);
}
}  // namespace detail
}  // namespace sy
