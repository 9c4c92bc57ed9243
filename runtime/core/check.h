// One family of fatal checks for bugs and broken invariants (abseil's CHECK, llm.c's
// wrappers). Every message carries rank, host, file:line, the failing statement and the
// library's own error text; then the whole job is torn down (the abort hook, which the MPI
// layer points at MPI_Abort, else std::abort). Errors a caller can handle use Status.
//
//   SY_CHECK(cond) << "extra context";
//   SY_CHECK_EQ(a, b); SY_CHECK_LT(a, b); ...
//   SY_CHECK_OK(status_expr);
// SY_MPI_CHECK / SY_CUDA_CHECK / SY_NCCL_CHECK / SY_CUBLAS_CHECK are defined next to their
// libraries from SY_CHECK_LIB below, so none of those headers leak into this one.
#pragma once

#include <cstdint>
#include <sstream>
#include <string>

namespace sy {

// Process-wide identity for messages; set once by the launcher (rank -1 = not yet known).
void set_log_rank(int rank);
int log_rank();
std::string host_name();

// Called after the message is printed. Default: std::abort(). The MPI layer installs one that
// calls MPI_Abort so every rank goes down together.
using AbortHook = void (*)(int exit_code);
void set_abort_hook(AbortHook hook);
[[noreturn]] void fatal_abort(int exit_code);
// An allocation of `bytes` failed: prints "[switchyard] rank r on host: out of memory: ..." with
// the size and what was being allocated, then fatal_abort(kExitOutOfMemory). Nothing is
// half-published: every output is written through a temporary file (file_output.h).
[[noreturn]] void out_of_memory(int64_t bytes, const char* what);

// Exit codes name the failure class, so a job's status says what went wrong. Used by checks,
// Status and main.
enum ExitCode : int {
  kExitOk = 0,
  kExitBug = 1,    // failed SY_CHECK: a bug, not bad input
  kExitUsage = 2,  // command-line usage error (CLI11)
  kExitCollectiveTimeout = 20,
  kExitConfig = 21,      // invalid or mismatched configuration
  kExitBadInput = 22,    // malformed input file or data
  kExitCheckpoint = 23,  // checkpoint integrity, or an output that could not be written
                         // (out of space, I/O error; StatusCode::kIo)
  kExitNonFinite = 24,
  kExitCapacity = 25,
  kExitOutOfMemory = 26,  // an allocation failed (out_of_memory, std::bad_alloc)
};

namespace detail {
class CheckFailure {
 public:
  CheckFailure(const char* file, int line, const char* expr, int exit_code = kExitBug);
  [[noreturn]] ~CheckFailure() noexcept(false);
  std::ostream& stream() { return os_; }

 private:
  std::ostringstream os_;
  int exit_code_;
};
// Lets `SY_CHECK(x) << ...` compile to a void expression in both branches.
struct Voidify {
  void operator&(std::ostream&) {}
};
}  // namespace detail
}  // namespace sy

#define SY_CHECK(cond) \
  (cond)               \
      ? (void)0        \
      : ::sy::detail::Voidify() & ::sy::detail::CheckFailure(__FILE__, __LINE__, #cond).stream()

#define SY_CHECK_OP_(a, b, op)                                                                \
  ((a)op(b)) ? (void)0                                                                        \
             : ::sy::detail::Voidify() &                                                      \
                   ::sy::detail::CheckFailure(__FILE__, __LINE__, #a " " #op " " #b).stream() \
                       << "(" << (a) << " vs " << (b) << ") "

#define SY_CHECK_EQ(a, b) SY_CHECK_OP_(a, b, ==)
#define SY_CHECK_NE(a, b) SY_CHECK_OP_(a, b, !=)
#define SY_CHECK_LT(a, b) SY_CHECK_OP_(a, b, <)
#define SY_CHECK_LE(a, b) SY_CHECK_OP_(a, b, <=)
#define SY_CHECK_GT(a, b) SY_CHECK_OP_(a, b, >)
#define SY_CHECK_GE(a, b) SY_CHECK_OP_(a, b, >=)

// Generator for library checks: `ok_expr` tests the returned code `rc_`, `err_text` turns it
// into the library's message. Example (comm/mpi_check.h):
//   #define SY_MPI_CHECK(call) SY_CHECK_LIB(call, rc_ == MPI_SUCCESS, ::sy::mpi_error_text(rc_))
#define SY_CHECK_LIB(call, ok_expr, err_text)                                       \
  do {                                                                              \
    auto rc_ = (call);                                                              \
    if (!(ok_expr)) {                                                               \
      ::sy::detail::CheckFailure(__FILE__, __LINE__, #call).stream() << (err_text); \
    }                                                                               \
  } while (0)
