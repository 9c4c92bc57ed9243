// SY_MPI_CHECK: the MPI member of the SY_CHECK family (runtime/core/check.h). On failure it
// prints rank, host, file:line, the call and MPI's own error text, then tears down the job
// (the abort hook MpiRuntime installs calls MPI_Abort). MPI errors only come back as codes
// when the communicator's error handler is MPI_ERRORS_RETURN, which MpiRuntime and
// MpiCommunicator set; under the default MPI_ERRORS_ARE_FATAL, MPI aborts by itself.
#pragma once

#include <mpi.h>

#include <string>

#include "runtime/core/check.h"

namespace sy {
inline std::string mpi_error_text(int rc) {
  char text[MPI_MAX_ERROR_STRING] = {0};
  int len = 0;
  if (MPI_Error_string(rc, text, &len) != MPI_SUCCESS) return "MPI error " + std::to_string(rc);
  return std::string("MPI error ") + std::to_string(rc) + ": " + std::string(text, len);
}
}  // namespace sy

#define SY_MPI_CHECK(call) SY_CHECK_LIB(call, rc_ == MPI_SUCCESS, ::sy::mpi_error_text(rc_))
