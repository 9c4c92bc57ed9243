#include "runtime/core/file_output.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <filesystem>
#include <system_error>

namespace sy {
namespace {

namespace fs = std::filesystem;

// "<dir>/.<name>.tmp.<pid>.<n>": hidden, unique per process and call.
std::string temp_name(const std::string& path) {
  static std::atomic<int> counter{0};
  const fs::path target(path);
  const fs::path dir = target.parent_path().empty() ? fs::path(".") : target.parent_path();
  return (dir / ("." + target.filename().string() + ".tmp." + std::to_string(::getpid()) + "." +
                 std::to_string(counter++)))
      .string();
}

Status io_error(const std::string& what, const std::string& path, int err) {
  return Status(StatusCode::kIo, what + " " + path + ": " + ErrnoText(err));
}

}  // namespace

Status write_file_atomic(const std::string& path,
                         const std::vector<std::pair<const void*, size_t>>& pieces,
                         const AtomicWriteOptions& opt) {
  const std::string tmp = temp_name(path);
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return io_error("cannot write", path, errno);
  auto fail = [&](int err) {
    ::close(fd);
    ::unlink(tmp.c_str());
    return io_error("cannot write", path, err);
  };
  size_t written = 0;
  for (const auto& [data, size] : pieces) {
    if (opt.on_bytes) opt.on_bytes(data, size);
    const uint8_t* c = static_cast<const uint8_t*>(data);
    size_t n = size;
    while (n > 0) {
      if (opt.fail_errno != 0 && written >= opt.fail_after) return fail(opt.fail_errno);
      size_t chunk = std::min<size_t>(n, size_t{1} << 30);
      if (opt.fail_errno != 0) chunk = std::min(chunk, opt.fail_after - written);
      const ssize_t w = ::write(fd, c, chunk);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) return fail(w < 0 ? errno : EIO);
      c += w;
      n -= static_cast<size_t>(w);
      written += static_cast<size_t>(w);
    }
  }
  if (opt.fail_errno != 0 && written >= opt.fail_after) return fail(opt.fail_errno);
  // Durable before visible: rename only a file whose bytes reached the disk.
  if (::fsync(fd) != 0) return fail(errno);
  if (::close(fd) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    return io_error("cannot write", path, err);
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    return io_error("cannot rename a temporary file onto", path, err);
  }
  return Status::Ok();
}

Status write_file_atomic(const std::string& path, const std::string& data,
                         const AtomicWriteOptions& opt) {
  return write_file_atomic(path, {{data.data(), data.size()}}, opt);
}

Status check_writable_dir(const std::string& dir, const std::string& what) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return Status(StatusCode::kIo, what + " " + dir + ": cannot create: " + ec.message());
  const std::string probe = temp_name((fs::path(dir) / "write-check").string());
  const int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) return io_error(what + " cannot be written:", dir, errno);
  ::close(fd);
  ::unlink(probe.c_str());
  return Status::Ok();
}

}  // namespace sy
