#include "runtime/core/status.h"

#include <cstring>

namespace sy {

std::string ErrnoText(int err) {
  return std::strerror(err);
}

std::string Status::ToString() const {
  const char* name = "OK";
  switch (code_) {
    case StatusCode::kOk:
      return "OK";
    case StatusCode::kInvalidArgument:
      name = "INVALID_ARGUMENT";
      break;
    case StatusCode::kBadInput:
      name = "BAD_INPUT";
      break;
    case StatusCode::kNotFound:
      name = "NOT_FOUND";
      break;
    case StatusCode::kTimeout:
      name = "TIMEOUT";
      break;
    case StatusCode::kNonFinite:
      name = "NON_FINITE";
      break;
    case StatusCode::kCapacity:
      name = "CAPACITY";
      break;
    case StatusCode::kIo:
      name = "IO_ERROR";
      break;
    case StatusCode::kCorruptCheckpoint:
      name = "CORRUPT_CHECKPOINT";
      break;
    case StatusCode::kInternal:
      name = "INTERNAL";
      break;
  }
  return std::string(name) + ": " + message_;
}

int Status::exit_code() const {
  switch (code_) {
    case StatusCode::kOk:
      return kExitOk;
    case StatusCode::kInvalidArgument:
      return kExitConfig;
    case StatusCode::kBadInput:
    case StatusCode::kNotFound:
      return kExitBadInput;
    case StatusCode::kTimeout:
      return kExitCollectiveTimeout;
    case StatusCode::kNonFinite:
      return kExitNonFinite;
    case StatusCode::kCapacity:
      return kExitCapacity;
    case StatusCode::kIo:
    case StatusCode::kCorruptCheckpoint:
      return kExitCheckpoint;
    case StatusCode::kInternal:
      return kExitBug;
  }
  return kExitBug;
}

}  // namespace sy
