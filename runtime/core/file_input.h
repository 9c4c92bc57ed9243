// Reading untrusted input files whole, bounded before anything is read: configs, corpora,
// tokenizers, JSON. Only regular files are read (a FIFO, a device such as /dev/zero, a folder
// or a socket is refused without blocking on it), and the size is checked against the caller's
// cap from the open file itself (fstat), so a file that grows while it is read is cut at the
// cap and refused, never read into unbounded memory.
#pragma once

#include <cstdint>
#include <string>

#include "runtime/core/status.h"

namespace sy {

// The whole file at `path`, at most `max_bytes` bytes. `what` names the file's role in every
// message ("config", "corpus", "tokenizer", ...). Errors: NotFound (kExitBadInput) when the path
// does not exist; BadInput for a folder or another non-regular file, a symbolic-link loop, no
// permission, more than max_bytes (the size and the cap are named), or a short read.
StatusOr<std::string> read_file_bounded(const std::string& path, int64_t max_bytes,
                                        const std::string& what);

}  // namespace sy
