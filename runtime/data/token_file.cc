#include "runtime/data/token_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <limits>

#include "runtime/core/file_output.h"

namespace sy {
namespace {

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "token files are little-endian; a big-endian host needs byte swaps here");

// Closes on scope exit.
struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

// Reads exactly n bytes at offset; a short file is BadInput.
Status pread_all(int fd, void* data, size_t n, int64_t offset, const std::string& path) {
  char* p = static_cast<char*>(data);
  while (n > 0) {
    const ssize_t r = ::pread(fd, p, n, static_cast<off_t>(offset));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return BadInput(path + ": read failed: " + ErrnoText());
    if (r == 0)
      return BadInput(path + ": unexpected end of file at byte " + std::to_string(offset));
    p += r;
    n -= static_cast<size_t>(r);
    offset += r;
  }
  return Status::Ok();
}

Status open_checked(const std::string& path, Fd* fd, TokenFileHeader* h) {
  fd->fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd->fd < 0)
    return errno == ENOENT ? NotFound(path + ": no such token file")
                           : BadInput(path + ": cannot open: " + ErrnoText());
  struct stat st;
  if (::fstat(fd->fd, &st) != 0) return BadInput(path + ": cannot stat: " + ErrnoText());
  if (!S_ISREG(st.st_mode)) return BadInput(path + ": not a regular file");
  const int64_t size = st.st_size;
  if (size < kTokenFileHeaderBytes)
    return BadInput(path + ": " + std::to_string(size) + " bytes, too short for the " +
                    std::to_string(kTokenFileHeaderBytes) + "-byte token file header");
  unsigned char raw[kTokenFileHeaderBytes];
  SY_RETURN_IF_ERROR(pread_all(fd->fd, raw, sizeof(raw), 0, path));
  if (std::memcmp(raw, kTokenFileMagic, sizeof(kTokenFileMagic)) != 0)
    return BadInput(path + ": not a token file (the magic is not \"SYTOK1\")");
  uint64_t reserved;
  std::memcpy(&h->version, raw + 8, 4);
  std::memcpy(&h->vocab_size, raw + 12, 4);
  std::memcpy(&h->count, raw + 16, 8);
  std::memcpy(&reserved, raw + 24, 8);
  if (h->version != kTokenFileVersion)
    return BadInput(path + ": token file version " + std::to_string(h->version) +
                    " (this build reads version " + std::to_string(kTokenFileVersion) + ")");
  if (reserved != 0) return BadInput(path + ": the reserved header field is not 0");
  if (h->vocab_size == 0) return BadInput(path + ": vocab_size is 0");
  const uint64_t payload = static_cast<uint64_t>(size - kTokenFileHeaderBytes);
  if (h->count > payload / 4 || payload != h->count * 4)
    return BadInput(path + ": the header says " + std::to_string(h->count) + " ids (" +
                    std::to_string(h->count * 4 + kTokenFileHeaderBytes) +
                    " bytes), the file has " + std::to_string(size) +
                    " bytes (truncated or corrupt)");
  return Status::Ok();
}

Status check_ids(const int32_t* ids, size_t n, uint32_t vocab, uint64_t first_index,
                 const std::string& path) {
  for (size_t i = 0; i < n; ++i)
    if (ids[i] < 0 || static_cast<uint32_t>(ids[i]) >= vocab)
      return BadInput(path + ": id " + std::to_string(ids[i]) + " at position " +
                      std::to_string(first_index + i) + " is outside [0, " + std::to_string(vocab) +
                      ")");
  return Status::Ok();
}

}  // namespace

Status write_token_file(const std::string& path, const std::vector<int32_t>& ids,
                        int64_t vocab_size) {
  if (vocab_size < 1 || vocab_size > std::numeric_limits<uint32_t>::max())
    return InvalidArgument("write_token_file " + path + ": vocab_size " +
                           std::to_string(vocab_size) + " is not in [1, 2^32)");
  const Status ids_ok = check_ids(ids.data(), ids.size(), static_cast<uint32_t>(vocab_size), 0,
                                  "write_token_file " + path);
  if (!ids_ok.ok()) return InvalidArgument(ids_ok.message());
  unsigned char raw[kTokenFileHeaderBytes] = {};
  const uint32_t version = kTokenFileVersion, vocab = static_cast<uint32_t>(vocab_size);
  const uint64_t count = ids.size();
  std::memcpy(raw, kTokenFileMagic, 8);
  std::memcpy(raw + 8, &version, 4);
  std::memcpy(raw + 12, &vocab, 4);
  std::memcpy(raw + 16, &count, 8);

  return write_file_atomic(path, {{raw, sizeof(raw)}, {ids.data(), ids.size() * sizeof(int32_t)}});
}

StatusOr<TokenFileHeader> read_token_file_header(const std::string& path) {
  Fd fd;
  TokenFileHeader h;
  SY_RETURN_IF_ERROR(open_checked(path, &fd, &h));
  return h;
}

StatusOr<std::vector<int32_t>> read_token_file(const std::string& path, TokenFileHeader* header) {
  Fd fd;
  TokenFileHeader h;
  SY_RETURN_IF_ERROR(open_checked(path, &fd, &h));
  std::vector<int32_t> ids(h.count);
  SY_RETURN_IF_ERROR(pread_all(fd.fd, ids.data(), ids.size() * 4, kTokenFileHeaderBytes, path));
  SY_RETURN_IF_ERROR(check_ids(ids.data(), ids.size(), h.vocab_size, 0, path));
  if (header != nullptr) *header = h;
  return ids;
}

StatusOr<SequenceShard> read_token_shard(const std::string& path, int64_t seq_len, int rank,
                                         int P) {
  if (seq_len < 1 || P < 1 || rank < 0 || rank >= P)
    return InvalidArgument("read_token_shard " + path + ": need seq_len >= 1 and 0 <= rank < P " +
                           "(seq_len " + std::to_string(seq_len) + ", rank " +
                           std::to_string(rank) + ", P " + std::to_string(P) + ")");
  Fd fd;
  SequenceShard shard;
  SY_RETURN_IF_ERROR(open_checked(path, &fd, &shard.header));
  shard.total_sequences = static_cast<int64_t>(shard.header.count / static_cast<uint64_t>(seq_len));
  for (int64_t s = rank; s < shard.total_sequences; s += P) shard.sequences.push_back(s);
  shard.ids_NL.resize(shard.sequences.size() * static_cast<size_t>(seq_len));
  for (size_t k = 0; k < shard.sequences.size(); ++k) {
    int32_t* dst = shard.ids_NL.data() + k * static_cast<size_t>(seq_len);
    const int64_t first = shard.sequences[k] * seq_len;  // < count, so no overflow
    SY_RETURN_IF_ERROR(pread_all(fd.fd, dst, static_cast<size_t>(seq_len) * 4,
                                 kTokenFileHeaderBytes + first * 4, path));
    SY_RETURN_IF_ERROR(check_ids(dst, static_cast<size_t>(seq_len), shard.header.vocab_size,
                                 static_cast<uint64_t>(first), path));
  }
  return shard;
}

}  // namespace sy
