#include "runtime/core/file_input.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

namespace sy {
namespace {

const char* file_kind(mode_t mode) {
  if (S_ISDIR(mode)) return "a folder";
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISSOCK(mode)) return "a socket";
  return "not a regular file";
}

}  // namespace

StatusOr<std::string> read_file_bounded(const std::string& path, int64_t max_bytes,
                                        const std::string& what) {
  const std::string name = what + " " + path;
  if (path.empty()) return InvalidArgument(what + ": no file name given");
  // O_NONBLOCK: opening a FIFO without a writer must not wait; nothing but a regular file is
  // read, so the flag changes nothing else.
  const int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    if (err == ENOENT) return NotFound(name + ": no such file");
    return BadInput(name + ": cannot open: " + ErrnoText(err));
  }
  struct stat sb {};
  if (::fstat(fd, &sb) != 0) {
    const int err = errno;
    ::close(fd);
    return BadInput(name + ": cannot read its size: " + ErrnoText(err));
  }
  if (!S_ISREG(sb.st_mode)) {
    ::close(fd);
    return BadInput(name + ": " + file_kind(sb.st_mode) + ", not a regular file");
  }
  if (sb.st_size > max_bytes) {
    ::close(fd);
    return BadInput(name + ": " + std::to_string(sb.st_size) + " bytes, over the limit of " +
                    std::to_string(max_bytes) + " bytes for a " + what + " file");
  }
  std::string data(static_cast<size_t>(sb.st_size), '\0');
  size_t got = 0;
  while (got < data.size()) {
    const ssize_t n = ::read(fd, &data[got], data.size() - got);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int err = errno;
      ::close(fd);
      return BadInput(name + ": read failed after " + std::to_string(got) +
                      " bytes: " + ErrnoText(err));
    }
    if (n == 0) break;
    got += static_cast<size_t>(n);
  }
  char extra = 0;
  const ssize_t more = got == data.size() ? ::read(fd, &extra, 1) : 0;
  ::close(fd);
  if (got != data.size())
    return BadInput(name + ": read " + std::to_string(got) + " of " + std::to_string(data.size()) +
                    " bytes (the file shrank while it was read)");
  if (more > 0)
    return BadInput(name + ": the file grew while it was read (more than its " +
                    std::to_string(data.size()) + " bytes)");
  return data;
}

}  // namespace sy
