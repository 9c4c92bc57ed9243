// Hugging Face .safetensors files: a reader that treats every byte as hostile (header length,
// JSON, offsets, overflow, dtypes, truncation while reading; fuzzed by fuzz/) and a writer for
// the same layout.
//
// Format: u64 little-endian header length N, N bytes of UTF-8 JSON
//   {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...,
//    "__metadata__": {"key": "value"}}
// then the data buffer; offsets are relative to its start. Tensors must tile the buffer
// exactly (no gaps, no overlap, no trailing bytes).
//
// The reader parses and validates only the header on Open; tensor bytes are read on demand
// with pread (never mmap, so a file truncated under us is an error, not SIGBUS), and the file
// size is re-checked before every read. A rank can read just the leading-dimension rows it
// owns (e.g. its experts of a stacked [E, F, D] tensor) with ReadRows.
//
//   SY_ASSIGN_OR_RETURN(auto st, SafetensorsReader::Open(path));
//   SY_ASSIGN_OR_RETURN(Tensor w, st.ReadF32("model.layers.0.mlp.gate.weight"));
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "runtime/core/file_output.h"
#include "runtime/core/status.h"
#include "runtime/core/tensor.h"

namespace sy {

enum class SafeDtype {
  kBool,
  kU8,
  kI8,
  kF8E5M2,
  kF8E4M3,
  kI16,
  kU16,
  kF16,
  kBF16,
  kI32,
  kU32,
  kF32,
  kF64,
  kI64,
  kU64,
};

// "F32" etc.; false for an unknown name.
bool safe_dtype_from_string(const std::string& s, SafeDtype* out);
const char* safe_dtype_name(SafeDtype d);
size_t safe_dtype_size(SafeDtype d);

struct SafetensorsEntry {
  std::string name;
  SafeDtype dtype = SafeDtype::kF32;
  std::vector<int64_t> shape;
  uint64_t begin = 0;  // byte range in the data buffer: [begin, end)
  uint64_t end = 0;
  uint64_t nbytes() const { return end - begin; }
  int64_t numel() const;
};

// Hard limits on what the reader accepts.
constexpr uint64_t kSafetensorsMaxHeaderBytes = 100ull << 20;  // as huggingface/safetensors
constexpr int kSafetensorsMaxJsonDepth = 8;
constexpr size_t kSafetensorsMaxRank = 8;

class SafetensorsReader {
 public:
  // Reads and validates the header only. BadInput (exit 22) for any malformed file, with the
  // path (and tensor name where there is one) in the message; NotFound if it cannot be opened.
  static StatusOr<SafetensorsReader> Open(const std::string& path);

  SafetensorsReader(SafetensorsReader&& o) noexcept;
  SafetensorsReader& operator=(SafetensorsReader&& o) noexcept;
  SafetensorsReader(const SafetensorsReader&) = delete;
  SafetensorsReader& operator=(const SafetensorsReader&) = delete;
  ~SafetensorsReader();

  const std::string& path() const { return path_; }
  // Sorted by name.
  const std::vector<SafetensorsEntry>& tensors() const { return entries_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  uint64_t data_start() const { return data_start_; }  // 8 + N
  uint64_t file_size() const { return file_size_; }

  // nullptr when absent.
  const SafetensorsEntry* Find(const std::string& name) const;

  // Raw little-endian bytes of a whole tensor, or of rows [row_begin, row_begin + rows) of its
  // leading dimension (shape[0]); the result has shape {rows, shape[1:]...}.
  StatusOr<std::vector<uint8_t>> ReadBytes(const std::string& name) const;
  StatusOr<std::vector<uint8_t>> ReadRowsBytes(const std::string& name, int64_t row_begin,
                                               int64_t rows) const;
  // The same bytes into caller memory of `capacity` bytes (no allocation).
  Status ReadRowsInto(const std::string& name, int64_t row_begin, int64_t rows, uint8_t* dst,
                      size_t capacity) const;
  // F32 / F16 / BF16 converted to float32. NaN or Inf is a kNonFinite error unless
  // allow_non_finite (the format does not check this, the loader does).
  StatusOr<Tensor> ReadF32(const std::string& name, bool allow_non_finite = false) const;
  StatusOr<Tensor> ReadRowsF32(const std::string& name, int64_t row_begin, int64_t rows,
                               bool allow_non_finite = false) const;

  // Schema check: every expected tensor present with this dtype and shape;
  // with !allow_extra, no other tensors. The error lists every offending name.
  struct Expect {
    std::string name;
    SafeDtype dtype;
    std::vector<int64_t> shape;
  };
  Status CheckSchema(const std::vector<Expect>& expected, bool allow_extra) const;

 private:
  SafetensorsReader() = default;
  Status ReadAt(uint64_t offset, uint64_t n, uint8_t* dst, const std::string& what) const;
  // Byte offset (in the tensor) and size of rows [row_begin, row_begin + rows), checked.
  Status RowRange(const SafetensorsEntry& e, int64_t row_begin, int64_t rows, uint64_t* offset,
                  uint64_t* nbytes) const;
  StatusOr<const SafetensorsEntry*> Lookup(const std::string& name) const;

  std::string path_;
  int fd_ = -1;
  uint64_t file_size_ = 0;
  int64_t mtime_ns_ = 0;
  uint64_t data_start_ = 0;
  std::vector<SafetensorsEntry> entries_;
  std::map<std::string, std::string> metadata_;
};

// Validates a whole in-memory file image with the reader's rules (fuzzing, tests).
Status safetensors_validate_image(const uint8_t* data, size_t size, const std::string& name,
                                  std::vector<SafetensorsEntry>* entries = nullptr);

// Converts `n` elements of an F32/F16/BF16 little-endian buffer to float32.
Status safetensors_to_f32(SafeDtype dtype, const uint8_t* src, size_t n, float* dst);
// Round-to-nearest-even float32 -> bfloat16 bits.
uint16_t f32_to_bf16(float f);

struct SafetensorsWriteTensor {
  std::string name;
  SafeDtype dtype = SafeDtype::kF32;
  std::vector<int64_t> shape;
  const void* data = nullptr;  // numel * dtype size bytes, little-endian
  size_t nbytes = 0;
};

// Writes tensors (sorted by name, laid out in that order) and string metadata. The header is
// padded with spaces to a multiple of 8 bytes, like huggingface/safetensors. Atomic
// (write_file_atomic, runtime/core/file_output.h: a temporary file renamed over path); opt's
// on_bytes sees every byte of the file in order just before it is written (checksums of what
// was meant to be written), its fail_errno injects a failed write.
Status safetensors_write(const std::string& path, const std::vector<SafetensorsWriteTensor>& ts,
                         const std::map<std::string, std::string>& metadata = {},
                         const AtomicWriteOptions& opt = {});

}  // namespace sy
