#include "runtime/io/safetensors.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <nlohmann/json.hpp>
#include <set>

namespace sy {
namespace {

using json = nlohmann::json;

struct DtypeInfo {
  SafeDtype d;
  const char* name;
  size_t size;
};
constexpr DtypeInfo kDtypes[] = {
    {SafeDtype::kBool, "BOOL", 1},      {SafeDtype::kU8, "U8", 1},
    {SafeDtype::kI8, "I8", 1},          {SafeDtype::kF8E5M2, "F8_E5M2", 1},
    {SafeDtype::kF8E4M3, "F8_E4M3", 1}, {SafeDtype::kI16, "I16", 2},
    {SafeDtype::kU16, "U16", 2},        {SafeDtype::kF16, "F16", 2},
    {SafeDtype::kBF16, "BF16", 2},      {SafeDtype::kI32, "I32", 4},
    {SafeDtype::kU32, "U32", 4},        {SafeDtype::kF32, "F32", 4},
    {SafeDtype::kF64, "F64", 8},        {SafeDtype::kI64, "I64", 8},
    {SafeDtype::kU64, "U64", 8},
};

// Rejects duplicate keys (nlohmann's DOM keeps the last one silently) and deep nesting
// before the DOM is built.
class GuardSax : public json::json_sax_t {
 public:
  std::string error;
  bool null() override { return true; }
  bool boolean(bool) override { return true; }
  bool number_integer(number_integer_t) override { return true; }
  bool number_unsigned(number_unsigned_t) override { return true; }
  bool number_float(number_float_t, const string_t&) override { return true; }
  bool string(string_t&) override { return true; }
  bool binary(binary_t&) override { return true; }
  bool start_object(std::size_t) override { return Push(true); }
  bool end_object() override { return Pop(); }
  bool start_array(std::size_t) override { return Push(false); }
  bool end_array() override { return Pop(); }
  bool key(string_t& k) override {
    if (!keys_.back().insert(k).second) {
      error = "duplicate key '" + k + "'";
      return false;
    }
    return true;
  }
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception& e) override {
    error = std::string("invalid JSON: ") + e.what();
    return false;
  }

 private:
  bool Push(bool object) {
    if (keys_.size() >= static_cast<size_t>(kSafetensorsMaxJsonDepth)) {
      error = "JSON nested deeper than " + std::to_string(kSafetensorsMaxJsonDepth);
      return false;
    }
    keys_.emplace_back();  // arrays get an unused set: one stack for both
    (void)object;
    return true;
  }
  bool Pop() {
    keys_.pop_back();
    return true;
  }
  std::vector<std::set<std::string>> keys_;
};

bool ValidUtf8(const uint8_t* s, size_t n) {
  size_t i = 0;
  while (i < n) {
    const uint8_t c = s[i];
    size_t len;
    uint32_t cp;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xE0) == 0xC0) {
      len = 2, cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      len = 3, cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      len = 4, cp = c & 0x07;
    } else {
      return false;
    }
    if (n - i < len) return false;
    for (size_t k = 1; k < len; ++k) {
      if ((s[i + k] & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (s[i + k] & 0x3F);
    }
    if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
        cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
      return false;
    i += len;
  }
  return true;
}

uint64_t LoadLe64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

// The header length against the file size, before anything is allocated.
Status CheckHeaderLength(uint64_t n, uint64_t file_size, const std::string& file) {
  if (file_size < 8)
    return BadInput(file + ": HeaderTooSmall: file has " + std::to_string(file_size) +
                    " bytes, fewer than the 8-byte header length");
  if (n > kSafetensorsMaxHeaderBytes)
    return BadInput(file + ": HeaderTooLarge: header length " + std::to_string(n) +
                    " exceeds the cap of " + std::to_string(kSafetensorsMaxHeaderBytes));
  if (n > file_size - 8)
    return BadInput(file + ": InvalidHeaderLength: header length " + std::to_string(n) +
                    " runs past the end of the " + std::to_string(file_size) + "-byte file");
  if (n < 2) return BadInput(file + ": InvalidHeaderLength: header length " + std::to_string(n));
  return Status::Ok();
}

// The header text: JSON object, entries, dtypes, shapes, byte counts; data_len = file size - 8 - N.
Status ParseHeader(const uint8_t* hdr, size_t n, uint64_t data_len, const std::string& file,
                   std::vector<SafetensorsEntry>* entries,
                   std::map<std::string, std::string>* metadata) {
  if (!ValidUtf8(hdr, n)) return BadInput(file + ": header is not valid UTF-8");
  if (std::memchr(hdr, 0, n)) return BadInput(file + ": header contains a NUL byte");
  const char* b = reinterpret_cast<const char*>(hdr);
  GuardSax guard;
  if (!json::sax_parse(b, b + n, &guard)) return BadInput(file + ": header: " + guard.error);
  json j = json::parse(b, b + n, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return BadInput(file + ": header is not valid JSON");
  if (!j.is_object()) return BadInput(file + ": header is not a JSON object");

  entries->clear();
  metadata->clear();
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& name = it.key();
    const json& v = it.value();
    if (name == "__metadata__") {
      if (!v.is_object()) return BadInput(file + ": __metadata__ is not an object");
      for (auto m = v.begin(); m != v.end(); ++m) {
        if (!m.value().is_string())
          return BadInput(file + ": __metadata__ value '" + m.key() + "' is not a string");
        (*metadata)[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    const std::string where = file + ": tensor '" + name + "': ";
    if (!v.is_object()) return BadInput(where + "entry is not an object");
    for (auto f = v.begin(); f != v.end(); ++f) {
      if (f.key() != "dtype" && f.key() != "shape" && f.key() != "data_offsets")
        return BadInput(where + "unknown field '" + f.key() + "'");
    }
    auto dt = v.find("dtype"), sh = v.find("shape"), off = v.find("data_offsets");
    if (dt == v.end() || sh == v.end() || off == v.end())
      return BadInput(where + "missing field (needs dtype, shape, data_offsets)");
    if (!dt->is_string()) return BadInput(where + "dtype is not a string");
    SafetensorsEntry e;
    e.name = name;
    if (!safe_dtype_from_string(dt->get<std::string>(), &e.dtype))
      return BadInput(where + "unknown dtype '" + dt->get<std::string>() + "'");
    if (!sh->is_array()) return BadInput(where + "shape is not an array");
    if (sh->size() > kSafetensorsMaxRank)
      return BadInput(where + "rank " + std::to_string(sh->size()) + " exceeds " +
                      std::to_string(kSafetensorsMaxRank));
    uint64_t numel = 1;
    for (const json& d : *sh) {
      if (d.is_number_integer() && !d.is_number_unsigned())
        return BadInput(where + "negative dimension in shape " + sh->dump());
      if (!d.is_number_unsigned()) return BadInput(where + "shape entry is not an integer");
      const uint64_t dim = d.get<uint64_t>();
      if (dim > static_cast<uint64_t>(INT64_MAX) || __builtin_mul_overflow(numel, dim, &numel))
        return BadInput(where + "shape " + sh->dump() + " overflows the element count");
      e.shape.push_back(static_cast<int64_t>(dim));
    }
    uint64_t nbytes;
    if (numel > static_cast<uint64_t>(INT64_MAX) ||
        __builtin_mul_overflow(numel, safe_dtype_size(e.dtype), &nbytes))
      return BadInput(where + "shape " + sh->dump() + " overflows the byte count");
    if (!off->is_array() || off->size() != 2 || !(*off)[0].is_number_unsigned() ||
        !(*off)[1].is_number_unsigned())
      return BadInput(where + "data_offsets is not [begin, end] of non-negative integers");
    e.begin = (*off)[0].get<uint64_t>();
    e.end = (*off)[1].get<uint64_t>();
    const std::string range = "[" + std::to_string(e.begin) + ", " + std::to_string(e.end) + "]";
    if (e.end < e.begin) return BadInput(where + "InvalidOffset: end < begin in " + range);
    if (e.end > data_len)
      return BadInput(where + "InvalidOffset: " + range + " out of range of the " +
                      std::to_string(data_len) + "-byte data buffer");
    if (e.end - e.begin != nbytes)
      return BadInput(where + "byte count " + std::to_string(nbytes) + " of " +
                      safe_dtype_name(e.dtype) + " " + sh->dump() + " != end - begin of " + range);
    entries->push_back(std::move(e));
  }
  // The tensors must tile the data buffer exactly: no overlap, no gap, no trailing bytes.
  std::vector<const SafetensorsEntry*> by_off;
  for (const auto& e : *entries) by_off.push_back(&e);
  std::sort(by_off.begin(), by_off.end(), [](const auto* a, const auto* b) {
    return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
  });
  uint64_t pos = 0;
  for (const auto* e : by_off) {
    if (e->begin < pos)
      return BadInput(file + ": tensor '" + e->name + "': InvalidOffset: overlaps the previous " +
                      "tensor (begins at " + std::to_string(e->begin) + " < " +
                      std::to_string(pos) + ")");
    if (e->begin > pos)
      return BadInput(file + ": tensor '" + e->name + "': InvalidOffset: gap of " +
                      std::to_string(e->begin - pos) + " bytes before it");
    pos = e->end;
  }
  if (pos != data_len)
    return BadInput(file + ": MetadataIncompleteBuffer: tensors cover " + std::to_string(pos) +
                    " of " + std::to_string(data_len) + " data bytes (trailing bytes)");
  std::sort(entries->begin(), entries->end(),
            [](const auto& a, const auto& b) { return a.name < b.name; });
  return Status::Ok();
}

}  // namespace

bool safe_dtype_from_string(const std::string& s, SafeDtype* out) {
  for (const auto& d : kDtypes) {
    if (s == d.name) {
      *out = d.d;
      return true;
    }
  }
  return false;
}
const char* safe_dtype_name(SafeDtype d) {
  for (const auto& x : kDtypes)
    if (x.d == d) return x.name;
  return "?";
}
size_t safe_dtype_size(SafeDtype d) {
  for (const auto& x : kDtypes)
    if (x.d == d) return x.size;
  return 0;
}

int64_t SafetensorsEntry::numel() const {
  int64_t n = 1;
  for (int64_t s : shape) n *= s;  // validated against overflow when parsed
  return n;
}

Status safetensors_validate_image(const uint8_t* data, size_t size, const std::string& name,
                                  std::vector<SafetensorsEntry>* entries) {
  const uint64_t n = size >= 8 ? LoadLe64(data) : 0;
  SY_RETURN_IF_ERROR(CheckHeaderLength(n, size, name));
  std::vector<SafetensorsEntry> local;
  std::map<std::string, std::string> meta;
  return ParseHeader(data + 8, n, size - 8 - n, name, entries ? entries : &local, &meta);
}

// ---- reader ----

SafetensorsReader::SafetensorsReader(SafetensorsReader&& o) noexcept {
  *this = std::move(o);
}
SafetensorsReader& SafetensorsReader::operator=(SafetensorsReader&& o) noexcept {
  if (this != &o) {
    if (fd_ >= 0) ::close(fd_);
    path_ = std::move(o.path_);
    fd_ = o.fd_;
    o.fd_ = -1;
    file_size_ = o.file_size_;
    mtime_ns_ = o.mtime_ns_;
    data_start_ = o.data_start_;
    entries_ = std::move(o.entries_);
    metadata_ = std::move(o.metadata_);
  }
  return *this;
}
SafetensorsReader::~SafetensorsReader() {
  if (fd_ >= 0) ::close(fd_);
}

StatusOr<SafetensorsReader> SafetensorsReader::Open(const std::string& path) {
  SafetensorsReader r;
  r.path_ = path;
  r.fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (r.fd_ < 0) return NotFound("cannot open " + path + ": " + ErrnoText());
  struct stat st;
  if (::fstat(r.fd_, &st) != 0) return BadInput(path + ": fstat failed: " + ErrnoText());
  if (!S_ISREG(st.st_mode)) return BadInput(path + ": not a regular file");
  r.file_size_ = static_cast<uint64_t>(st.st_size);
  r.mtime_ns_ = static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
  uint8_t len_le[8] = {};
  if (r.file_size_ >= 8) SY_RETURN_IF_ERROR(r.ReadAt(0, 8, len_le, "header length"));
  const uint64_t n = LoadLe64(len_le);
  SY_RETURN_IF_ERROR(CheckHeaderLength(n, r.file_size_, path));
  std::vector<uint8_t> hdr(n);  // n <= min(file size - 8, 100 MiB): checked above
  SY_RETURN_IF_ERROR(r.ReadAt(8, n, hdr.data(), "header"));
  r.data_start_ = 8 + n;
  SY_RETURN_IF_ERROR(
      ParseHeader(hdr.data(), n, r.file_size_ - r.data_start_, path, &r.entries_, &r.metadata_));
  return r;
}

// The file must still be the one whose header we validated (not truncated or replaced while
// loading); reads never run short.
Status SafetensorsReader::ReadAt(uint64_t offset, uint64_t n, uint8_t* dst,
                                 const std::string& what) const {
  struct stat st;
  if (::fstat(fd_, &st) != 0) return BadInput(path_ + ": fstat failed: " + ErrnoText());
  const int64_t mtime = static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
  if (static_cast<uint64_t>(st.st_size) != file_size_ || mtime != mtime_ns_)
    return BadInput(path_ + ": file changed while loading (" + what + "): size " +
                    std::to_string(file_size_) + " -> " + std::to_string(st.st_size));
  if (offset > file_size_ || n > file_size_ - offset)
    return BadInput(path_ + ": read of " + what + " past the end of the file");
  uint64_t done = 0;
  while (done < n) {
    const size_t chunk = static_cast<size_t>(std::min<uint64_t>(n - done, 1u << 30));
    const ssize_t got = ::pread(fd_, dst + done, chunk, static_cast<off_t>(offset + done));
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) return BadInput(path_ + ": read of " + what + " failed: " + ErrnoText());
    if (got == 0)
      return BadInput(path_ + ": file truncated while reading " + what + " (got " +
                      std::to_string(done) + " of " + std::to_string(n) + " bytes)");
    done += static_cast<uint64_t>(got);
  }
  return Status::Ok();
}

const SafetensorsEntry* SafetensorsReader::Find(const std::string& name) const {
  auto it =
      std::lower_bound(entries_.begin(), entries_.end(), name,
                       [](const SafetensorsEntry& e, const std::string& n) { return e.name < n; });
  return it != entries_.end() && it->name == name ? &*it : nullptr;
}

StatusOr<const SafetensorsEntry*> SafetensorsReader::Lookup(const std::string& name) const {
  const SafetensorsEntry* e = Find(name);
  if (!e) return NotFound(path_ + ": no tensor '" + name + "'");
  return e;
}

StatusOr<std::vector<uint8_t>> SafetensorsReader::ReadBytes(const std::string& name) const {
  SY_ASSIGN_OR_RETURN(const SafetensorsEntry* e, Lookup(name));
  std::vector<uint8_t> out(e->nbytes());  // bounded by the file size (validated)
  SY_RETURN_IF_ERROR(
      ReadAt(data_start_ + e->begin, e->nbytes(), out.data(), "tensor '" + name + "'"));
  return out;
}

StatusOr<std::vector<uint8_t>> SafetensorsReader::ReadRowsBytes(const std::string& name,
                                                                int64_t row_begin,
                                                                int64_t rows) const {
  SY_ASSIGN_OR_RETURN(const SafetensorsEntry* e, Lookup(name));
  uint64_t off = 0, n = 0;
  SY_RETURN_IF_ERROR(RowRange(*e, row_begin, rows, &off, &n));
  std::vector<uint8_t> out(n);
  SY_RETURN_IF_ERROR(ReadAt(data_start_ + e->begin + off, n, out.data(), "tensor '" + name + "'"));
  return out;
}

Status SafetensorsReader::RowRange(const SafetensorsEntry& e, int64_t row_begin, int64_t rows,
                                   uint64_t* offset, uint64_t* nbytes) const {
  const std::string what = "tensor '" + e.name + "'";
  if (e.shape.empty()) return InvalidArgument(path_ + ": " + what + " is a scalar: no rows");
  const int64_t lead = e.shape[0];
  if (row_begin < 0 || rows < 0 || row_begin > lead || rows > lead - row_begin)
    return InvalidArgument(path_ + ": " + what + ": rows [" + std::to_string(row_begin) + ", +" +
                           std::to_string(rows) + ") outside its " + std::to_string(lead) +
                           " rows");
  const uint64_t row_bytes = lead == 0 ? 0 : e.nbytes() / static_cast<uint64_t>(lead);
  *offset = static_cast<uint64_t>(row_begin) * row_bytes;
  *nbytes = static_cast<uint64_t>(rows) * row_bytes;
  return Status::Ok();
}

Status SafetensorsReader::ReadRowsInto(const std::string& name, int64_t row_begin, int64_t rows,
                                       uint8_t* dst, size_t capacity) const {
  SY_ASSIGN_OR_RETURN(const SafetensorsEntry* e, Lookup(name));
  uint64_t off = 0, n = 0;
  SY_RETURN_IF_ERROR(RowRange(*e, row_begin, rows, &off, &n));
  if (n > capacity)
    return InvalidArgument(path_ + ": tensor '" + name + "': " + std::to_string(n) +
                           " bytes do not fit " + std::to_string(capacity));
  return ReadAt(data_start_ + e->begin + off, n, dst, "tensor '" + name + "'");
}

StatusOr<Tensor> SafetensorsReader::ReadF32(const std::string& name, bool allow_non_finite) const {
  SY_ASSIGN_OR_RETURN(const SafetensorsEntry* e, Lookup(name));
  if (e->shape.empty()) {
    if (e->dtype != SafeDtype::kF32 && e->dtype != SafeDtype::kF16 && e->dtype != SafeDtype::kBF16)
      return BadInput(path_ + ": tensor '" + name + "' has dtype " + safe_dtype_name(e->dtype) +
                      ", not F32/F16/BF16");
    SY_ASSIGN_OR_RETURN(std::vector<uint8_t> raw, ReadBytes(name));
    Tensor t;
    t.data.resize(1);
    SY_RETURN_IF_ERROR(safetensors_to_f32(e->dtype, raw.data(), 1, t.data.data()));
    if (!allow_non_finite && !std::isfinite(t.data[0]))
      return Status(StatusCode::kNonFinite, path_ + ": tensor '" + name + "' is NaN/Inf");
    return t;
  }
  return ReadRowsF32(name, 0, e->shape[0], allow_non_finite);
}

StatusOr<Tensor> SafetensorsReader::ReadRowsF32(const std::string& name, int64_t row_begin,
                                                int64_t rows, bool allow_non_finite) const {
  SY_ASSIGN_OR_RETURN(const SafetensorsEntry* e, Lookup(name));
  if (e->dtype != SafeDtype::kF32 && e->dtype != SafeDtype::kF16 && e->dtype != SafeDtype::kBF16)
    return BadInput(path_ + ": tensor '" + name + "' has dtype " + safe_dtype_name(e->dtype) +
                    ", not F32/F16/BF16");
  SY_ASSIGN_OR_RETURN(std::vector<uint8_t> raw, ReadRowsBytes(name, row_begin, rows));
  Tensor t;
  t.shape = e->shape;
  t.shape[0] = rows;
  const size_t n = raw.size() / safe_dtype_size(e->dtype);
  t.data.resize(n);
  SY_RETURN_IF_ERROR(safetensors_to_f32(e->dtype, raw.data(), n, t.data.data()));
  if (!allow_non_finite) {
    const float* v = t.ptr();
    for (size_t i = 0; i < n; ++i) {
      if (!std::isfinite(v[i]))
        return Status(StatusCode::kNonFinite, path_ + ": tensor '" + name +
                                                  "' has a NaN/Inf at element " +
                                                  std::to_string(i) + " of the rows read");
    }
  }
  return t;
}

Status SafetensorsReader::CheckSchema(const std::vector<Expect>& expected, bool allow_extra) const {
  std::string missing, wrong, extra;
  std::set<std::string> want;
  for (const auto& x : expected) {
    want.insert(x.name);
    const SafetensorsEntry* e = Find(x.name);
    if (!e) {
      missing += " " + x.name;
    } else if (e->dtype != x.dtype || e->shape != x.shape) {
      wrong += " " + x.name + "(" + safe_dtype_name(e->dtype) + " " + json(e->shape).dump() +
               ", want " + safe_dtype_name(x.dtype) + " " + json(x.shape).dump() + ")";
    }
  }
  if (!allow_extra)
    for (const auto& e : entries_)
      if (!want.count(e.name)) extra += " " + e.name;
  if (missing.empty() && wrong.empty() && extra.empty()) return Status::Ok();
  std::string msg = path_ + ": schema mismatch:";
  if (!missing.empty()) msg += " missing:" + missing + ";";
  if (!wrong.empty()) msg += " wrong dtype/shape:" + wrong + ";";
  if (!extra.empty()) msg += " unexpected:" + extra + ";";
  return BadInput(msg);
}

}  // namespace sy
