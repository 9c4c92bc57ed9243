// Every output file (checkpoint shards and manifests, config.json, token files, .npy dumps,
// reports, study and projection outputs) is written through a temporary file in the same
// folder, fsync'ed and renamed onto its name: a reader never sees half a file, and a failed
// write (disk full, I/O error, no permission) leaves the previous file, if any, as it was.
#pragma once

#include <cstddef>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "runtime/core/status.h"

namespace sy {

struct AtomicWriteOptions {
  // Sees every piece before it is written (e.g. a checkpoint's SHA-256).
  std::function<void(const void*, size_t)> on_bytes;
  // Fault injection (SY_FAULT=enospc): the write fails with this errno once fail_after bytes
  // were written, as a full disk would make it; 0 = no fault.
  int fail_errno = 0;
  size_t fail_after = 0;
};

// Writes the pieces, in order, as the file `path`. A failure is StatusCode::kIo (exit 23)
// naming the path and the OS error; the temporary file is removed.
Status write_file_atomic(const std::string& path,
                         const std::vector<std::pair<const void*, size_t>>& pieces,
                         const AtomicWriteOptions& opt = {});
Status write_file_atomic(const std::string& path, const std::string& data,
                         const AtomicWriteOptions& opt = {});

// A folder that outputs will be written into, checked before any work is spent: created when
// missing, and a file created and removed in it. kIo naming `what` and the OS error otherwise.
Status check_writable_dir(const std::string& dir, const std::string& what);

}  // namespace sy
