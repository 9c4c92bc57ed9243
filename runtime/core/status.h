// Status / StatusOr for errors a caller can handle: bad configuration, bad files, timeouts.
// Bugs use SY_CHECK (check.h). A Status carries the exit code of its failure class, so the
// launcher can end every rank with the code that names what went wrong.
#pragma once

#include <cerrno>
#include <optional>
#include <string>
#include <utility>

#include "runtime/core/check.h"

namespace sy {

enum class StatusCode {
  kOk = 0,
  kInvalidArgument,  // bad configuration or arguments -> kExitConfig
  kBadInput,         // malformed file or data -> kExitBadInput
  kNotFound,
  kTimeout,  // collective deadline -> kExitCollectiveTimeout
  kNonFinite,
  kCapacity,
  kIo,  // an output could not be written (disk full, I/O error) -> kExitCheckpoint
  // a checkpoint that fails its integrity check (a shard missing, cut or changed against its
  // manifest) -> kExitCheckpoint
  kCorruptCheckpoint,
  kInternal,
};

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}
  static Status Ok() { return Status(); }

  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }
  std::string ToString() const;
  // The process exit code for this failure class (check.h ExitCode).
  int exit_code() const;

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

inline Status InvalidArgument(std::string m) {
  return {StatusCode::kInvalidArgument, std::move(m)};
}
inline Status BadInput(std::string m) {
  return {StatusCode::kBadInput, std::move(m)};
}
inline Status CorruptCheckpoint(std::string m) {
  return {StatusCode::kCorruptCheckpoint, std::move(m)};
}
inline Status NotFound(std::string m) {
  return {StatusCode::kNotFound, std::move(m)};
}
inline Status Internal(std::string m) {
  return {StatusCode::kInternal, std::move(m)};
}

// strerror(err) as a string, for the message of a Status about a failed system call. Read
// errno before anything else can change it (the default argument does so at the call).
std::string ErrnoText(int err = errno);

template <typename T>
class [[nodiscard]] StatusOr {
 public:
  StatusOr(Status s) : status_(std::move(s)) {  // NOLINT: implicit like absl::StatusOr
    SY_CHECK(!status_.ok()) << "StatusOr built from an OK status without a value";
  }
  StatusOr(T value) : value_(std::move(value)) {}  // NOLINT

  bool ok() const { return status_.ok(); }
  const Status& status() const { return status_; }
  T& value() & {
    SY_CHECK(ok()) << status_.ToString();
    return *value_;
  }
  T&& value() && {
    SY_CHECK(ok()) << status_.ToString();
    return std::move(*value_);
  }
  T* operator->() { return &value(); }
  T& operator*() { return value(); }

 private:
  Status status_;
  std::optional<T> value_;
};

}  // namespace sy

#define SY_CONCAT_INNER_(a, b) a##b
#define SY_CONCAT_(a, b) SY_CONCAT_INNER_(a, b)

// Returns the Status from the enclosing function when `expr` is not OK.
#define SY_RETURN_IF_ERROR(expr)     \
  do {                               \
    ::sy::Status sy_st_ = (expr);    \
    if (!sy_st_.ok()) return sy_st_; \
  } while (0)

// SY_ASSIGN_OR_RETURN(auto x, MakeX()); declares x or returns the error.
#define SY_ASSIGN_OR_RETURN(lhs, expr)                                                    \
  auto SY_CONCAT_(sy_sor_, __LINE__) = (expr);                                            \
  if (!SY_CONCAT_(sy_sor_, __LINE__).ok()) return SY_CONCAT_(sy_sor_, __LINE__).status(); \
  lhs = std::move(SY_CONCAT_(sy_sor_, __LINE__)).value()

// Fatal when not OK: for call sites where failure is a bug.
#define SY_CHECK_OK(expr)                       \
  do {                                          \
    ::sy::Status sy_st_ = (expr);               \
    SY_CHECK(sy_st_.ok()) << sy_st_.ToString(); \
  } while (0)
