#include "runtime/io/hf_checkpoint.h"

#include "runtime/core/file_input.h"
#include "runtime/core/json_input.h"
#include "runtime/core/rng.h"
#include "runtime/io/checkpoint_dir.h"

#include <sys/stat.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>

namespace sy {
namespace {
using json = nlohmann::json;
namespace fs = std::filesystem;

constexpr int64_t kMaxJsonBytes = int64_t{64} << 20;  // config.json / index: far above any real one
constexpr size_t kMaxShards = 100000;
constexpr size_t kMaxListedNames = 12;         // names quoted in one error message
constexpr size_t kReadBlockBytes = 16u << 20;  // tensors are read in blocks of rows this big

StatusOr<json> ParseJsonObject(const std::string& path) {
  SY_ASSIGN_OR_RETURN(std::string text, read_file_bounded(path, kMaxJsonBytes, "JSON"));
  return parse_json_object_bounded(text, path);
}

// A shard name from the index must be a plain file name: no folders, no "..".
bool PlainFileName(const std::string& s) {
  return !s.empty() && s.size() < 256 && s.find('/') == std::string::npos &&
         s.find('\\') == std::string::npos && s != "." && s != ".." && s[0] != '.';
}

std::string ShapeStr(const std::vector<int64_t>& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

std::string ListNames(const std::vector<std::string>& v) {
  std::string out;
  for (size_t i = 0; i < v.size() && i < kMaxListedNames; ++i) out += (i ? ", " : "") + v[i];
  if (v.size() > kMaxListedNames) out += ", ... (" + std::to_string(v.size()) + " in all)";
  return out;
}
}  // namespace

StatusOr<nlohmann::json> read_json_object_file(const std::string& path) {
  return ParseJsonObject(path);
}
bool is_plain_file_name(const std::string& s) {
  return PlainFileName(s);
}

StatusOr<HfCheckpoint> HfCheckpoint::Open(const std::string& root) {
  // A training checkpoint folder opens its latest complete, verified checkpoint.
  SY_ASSIGN_OR_RETURN(const std::string dir, resolve_model_dir(root));
  HfCheckpoint ck;
  ck.dir_ = dir;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return NotFound(dir + ": not a checkpoint folder");
  SY_ASSIGN_OR_RETURN(json cfg, ParseJsonObject(dir + "/config.json"));
  ck.config_ = std::make_shared<json>(std::move(cfg));

  std::vector<std::string> files;
  const std::string single = dir + "/model.safetensors";
  const std::string index = dir + "/model.safetensors.index.json";
  std::map<std::string, std::string> weight_map;
  if (fs::exists(index, ec)) {
    SY_ASSIGN_OR_RETURN(json idx, ParseJsonObject(index));
    auto it = idx.find("weight_map");
    if (it == idx.end() || !it->is_object()) return BadInput(index + ": no \"weight_map\" object");
    for (auto& [name, file] : it->items()) {
      if (!file.is_string())
        return BadInput(index + ": weight_map entry '" + name + "' is not a file name");
      const std::string f = file.get<std::string>();
      if (!PlainFileName(f))
        return BadInput(index + ": weight_map entry '" + name + "' names '" + f +
                        "', not a plain file name inside the folder");
      weight_map[name] = f;
      if (std::find(files.begin(), files.end(), f) == files.end()) {
        if (files.size() >= kMaxShards) return BadInput(index + ": too many shard files");
        files.push_back(f);
      }
    }
    std::sort(files.begin(), files.end());
  } else if (fs::exists(single, ec)) {
    files.push_back("model.safetensors");
  } else {
    return NotFound(dir + ": neither model.safetensors nor model.safetensors.index.json");
  }

  for (size_t i = 0; i < files.size(); ++i) {
    SY_ASSIGN_OR_RETURN(SafetensorsReader r, SafetensorsReader::Open(dir + "/" + files[i]));
    ck.readers_.push_back(std::make_unique<SafetensorsReader>(std::move(r)));
    for (const SafetensorsEntry& e : ck.readers_.back()->tensors()) {
      if (ck.where_.count(e.name))
        return BadInput(dir + ": tensor '" + e.name + "' is in both " +
                        ck.readers_[ck.where_[e.name]]->path() + " and " + files[i]);
      if (!weight_map.empty()) {
        auto w = weight_map.find(e.name);
        if (w == weight_map.end() || w->second != files[i])
          return BadInput(index + ": tensor '" + e.name + "' found in " + files[i] +
                          (w == weight_map.end() ? " but not listed in weight_map"
                                                 : " but weight_map says " + w->second));
      }
      ck.where_[e.name] = i;
    }
  }
  for (const auto& [name, file] : weight_map)
    if (!ck.where_.count(name))
      return BadInput(index + ": weight_map lists '" + name + "' in " + file +
                      ", which does not hold it");
  return ck;
}

// ---- config ----

namespace {
template <typename T>
Status Range(const std::string& where, const std::string& key, T v, T lo, T hi) {
  if (v < lo || v > hi) {
    std::ostringstream m;
    m << where << ": \"" << key << "\" is " << v << ", outside [" << lo << ", " << hi << "]";
    return BadInput(m.str());
  }
  return Status::Ok();
}
}  // namespace

StatusOr<int64_t> JsonConfigReader::get_int(const std::string& key, int64_t lo, int64_t hi) const {
  const std::string& where = where_;
  auto it = j_.find(key);
  if (it == j_.end() || it->is_null()) return BadInput(where + ": missing \"" + key + "\"");
  int64_t v = 0;
  if (it->is_number_integer()) {
    v = it->get<int64_t>();
  } else if (it->is_number_unsigned()) {
    if (it->get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
      return BadInput(where + ": \"" + key + "\" is too large");
    v = static_cast<int64_t>(it->get<uint64_t>());
  } else {
    return BadInput(where + ": \"" + key + "\" must be an integer, got " + json_brief(*it));
  }
  SY_RETURN_IF_ERROR(Range(where, key, v, lo, hi));
  return v;
}

StatusOr<int64_t> JsonConfigReader::get_int(const std::string& key, int64_t lo, int64_t hi,
                                            int64_t def) const {
  auto it = j_.find(key);
  if (it == j_.end() || it->is_null()) return def;
  return get_int(key, lo, hi);
}

StatusOr<double> JsonConfigReader::get_float(const std::string& key, double lo, double hi) const {
  const std::string& where = where_;
  auto it = j_.find(key);
  if (it == j_.end() || it->is_null()) return BadInput(where + ": missing \"" + key + "\"");
  if (!it->is_number()) return BadInput(where + ": \"" + key + "\" must be a number");
  const double v = it->get<double>();
  if (!std::isfinite(v)) return BadInput(where + ": \"" + key + "\" is not finite");
  SY_RETURN_IF_ERROR(Range(where, key, v, lo, hi));
  return v;
}

StatusOr<double> JsonConfigReader::get_float(const std::string& key, double lo, double hi,
                                             double def) const {
  auto it = j_.find(key);
  if (it == j_.end() || it->is_null()) return def;
  return get_float(key, lo, hi);
}

StatusOr<bool> JsonConfigReader::get_bool(const std::string& key, bool def) const {
  auto it = j_.find(key);
  if (it == j_.end() || it->is_null()) return def;
  if (!it->is_boolean()) return BadInput(where_ + ": \"" + key + "\" must be true or false");
  return it->get<bool>();
}

StatusOr<std::string> JsonConfigReader::get_string(const std::string& key,
                                                   const std::string& def) const {
  auto it = j_.find(key);
  if (it == j_.end() || it->is_null()) return def;
  if (!it->is_string()) return BadInput(where_ + ": \"" + key + "\" must be a string");
  return it->get<std::string>();
}

// ---- tensors ----

std::string HfCheckpoint::identity() const {
  std::string s = config_->dump();
  for (const std::string& name : names()) {
    const SafetensorsEntry* e = entry(name);
    s += "\n" + name + " " + safe_dtype_name(e->dtype) + " " + ShapeStr(e->shape) + " " +
         std::to_string(e->begin) + " " + std::to_string(e->end);
  }
  StatusOr<std::string> manifest =
      read_file_bounded(dir_ + "/" + kManifestName, kMaxJsonBytes, "manifest");
  if (manifest.ok()) s += "\n" + *manifest;
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(fnv1a64(s)));
  return hex;
}

bool HfCheckpoint::has(const std::string& name) const {
  return where_.count(name) != 0;
}

std::vector<std::string> HfCheckpoint::names() const {
  std::vector<std::string> out;
  out.reserve(where_.size());
  for (const auto& kv : where_) out.push_back(kv.first);
  return out;
}

const SafetensorsEntry* HfCheckpoint::entry(const std::string& name) const {
  auto it = where_.find(name);
  return it == where_.end() ? nullptr : readers_[it->second]->Find(name);
}

std::string HfCheckpoint::file_of(const std::string& name) const {
  auto it = where_.find(name);
  return it == where_.end() ? "" : readers_[it->second]->path();
}

Status HfCheckpoint::read_into(const std::string& name, Tensor* dst, bool allow_non_finite) const {
  return read_into(name, dst->shape, dst->memory(), dst->ptr(), allow_non_finite);
}

Status HfCheckpoint::read_into(const std::string& name, const std::vector<int64_t>& shape,
                               Memory* mem, float* dst_in_mem, bool allow_non_finite) const {
  if (mem->host_accessible()) return read_into(name, shape, dst_in_mem, allow_non_finite);
  SY_ASSIGN_OR_RETURN(Tensor t, read(name, shape, allow_non_finite));
  mem->copy_from_host(dst_in_mem, t.ptr(), t.numel() * static_cast<int64_t>(sizeof(float)));
  return Status::Ok();
}

Status HfCheckpoint::read_into(const std::string& name, const std::vector<int64_t>& shape,
                               float* dst, bool allow_non_finite) const {
  auto it = where_.find(name);
  if (it == where_.end())
    return BadInput(dir_ + ": tensor '" + name + "' is missing from the checkpoint");
  const SafetensorsReader& r = *readers_[it->second];
  const SafetensorsEntry* e = r.Find(name);
  if (e->shape != shape)
    return BadInput(r.path() + ": tensor '" + name + "' has shape " + ShapeStr(e->shape) +
                    ", the model expects " + ShapeStr(shape));
  if (e->dtype != SafeDtype::kF32 && e->dtype != SafeDtype::kF16 && e->dtype != SafeDtype::kBF16)
    return BadInput(r.path() + ": tensor '" + name + "' has dtype " + safe_dtype_name(e->dtype) +
                    ", not F32/F16/BF16");
  // Straight from the file into dst, a block of rows at a time through one reused buffer of at
  // most kReadBlockBytes: no transient copy of the whole tensor, no fresh pages per tensor.
  const size_t esize = safe_dtype_size(e->dtype);
  const size_t n = static_cast<size_t>(e->numel());
  thread_local std::vector<uint8_t> block;
  auto finite = [&](size_t begin, size_t count) -> Status {
    if (allow_non_finite) return Status::Ok();
    for (size_t i = begin; i < begin + count; ++i)
      if (!std::isfinite(dst[i]))
        return Status(
            StatusCode::kNonFinite,
            r.path() + ": tensor '" + name + "' holds NaN/Inf at element " + std::to_string(i));
    return Status::Ok();
  };
  if (e->shape.empty() || e->shape[0] == 0 || n == 0) {  // scalars and empty tensors
    SY_ASSIGN_OR_RETURN(std::vector<uint8_t> raw, r.ReadBytes(name));
    SY_RETURN_IF_ERROR(safetensors_to_f32(e->dtype, raw.data(), n, dst));
    return finite(0, n);
  }
  const int64_t lead = e->shape[0];
  const size_t row_elems = n / static_cast<size_t>(lead), row_bytes = row_elems * esize;
  const int64_t rows_per_block =
      std::max<int64_t>(1, static_cast<int64_t>(kReadBlockBytes / std::max<size_t>(1, row_bytes)));
  block.resize(static_cast<size_t>(std::min<int64_t>(rows_per_block, lead)) * row_bytes);
  for (int64_t r0 = 0; r0 < lead; r0 += rows_per_block) {
    const int64_t rows = std::min<int64_t>(rows_per_block, lead - r0);
    SY_RETURN_IF_ERROR(r.ReadRowsInto(name, r0, rows, block.data(), block.size()));
    const size_t begin = static_cast<size_t>(r0) * row_elems,
                 count = static_cast<size_t>(rows) * row_elems;
    SY_RETURN_IF_ERROR(safetensors_to_f32(e->dtype, block.data(), count, dst + begin));
    SY_RETURN_IF_ERROR(finite(begin, count));
  }
  return Status::Ok();
}

StatusOr<Tensor> HfCheckpoint::read(const std::string& name, const std::vector<int64_t>& shape,
                                    bool allow_non_finite) const {
  Tensor t(shape);
  SY_RETURN_IF_ERROR(read_into(name, shape, t.data.data(), allow_non_finite));
  return t;
}

Status HfCheckpoint::check_names(const std::vector<std::string>& required, bool allow_extra) const {
  std::vector<std::string> missing, extra;
  for (const std::string& n : required)
    if (!where_.count(n)) missing.push_back(n);
  if (!allow_extra) {
    std::vector<std::string> req = required;
    std::sort(req.begin(), req.end());
    for (const auto& kv : where_)
      if (!std::binary_search(req.begin(), req.end(), kv.first)) extra.push_back(kv.first);
  }
  if (missing.empty() && extra.empty()) return Status::Ok();
  std::string m = dir_ + ": checkpoint does not match the model:";
  if (!missing.empty()) m += " missing " + ListNames(missing) + ";";
  if (!extra.empty()) m += " unexpected " + ListNames(extra) + ";";
  return BadInput(m);
}

// ---- writer ----

void HfCheckpointWriter::add(const std::string& name, Tensor t) {
  std::vector<int64_t> shape = t.shape;
  tensors_.push_back({name, std::move(shape), std::move(t), nullptr});
}

void HfCheckpointWriter::add_lazy(const std::string& name, std::vector<int64_t> shape, Fill fill) {
  tensors_.push_back({name, std::move(shape), Tensor(), std::move(fill)});
}

int64_t HfCheckpointWriter::total_bytes() const {
  int64_t n = 0;
  for (const Entry& e : tensors_)
    n += Tensor::numel_of(e.shape) * static_cast<int64_t>(safe_dtype_size(dtype_));
  return n;
}

Status HfCheckpointWriter::write(const std::string& dir, const json& config,
                                 int64_t max_shard_bytes) const {
  if (dtype_ != SafeDtype::kF32 && dtype_ != SafeDtype::kBF16)
    return InvalidArgument("checkpoint writer: dtype must be F32 or BF16");
  if (max_shard_bytes <= 0) return InvalidArgument("checkpoint writer: max_shard_bytes <= 0");
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return InvalidArgument(dir + ": cannot create folder: " + ec.message());

  // Sorted by name, cut into shards of at most max_shard_bytes (a bigger tensor gets its own).
  std::vector<const Entry*> order;
  for (const Entry& e : tensors_) order.push_back(&e);
  std::sort(order.begin(), order.end(),
            [](const Entry* a, const Entry* b) { return a->name < b->name; });
  for (size_t i = 1; i < order.size(); ++i)
    if (order[i]->name == order[i - 1]->name)
      return InvalidArgument("checkpoint writer: tensor '" + order[i]->name + "' added twice");
  const int64_t esize = static_cast<int64_t>(safe_dtype_size(dtype_));
  std::vector<std::vector<size_t>> shards(1);
  int64_t in_shard = 0;
  for (size_t i = 0; i < order.size(); ++i) {
    const int64_t b = Tensor::numel_of(order[i]->shape) * esize;
    if (!shards.back().empty() && in_shard + b > max_shard_bytes) {
      shards.emplace_back();
      in_shard = 0;
    }
    shards.back().push_back(i);
    in_shard += b;
  }

  const bool sharded = shards.size() > 1;
  json weight_map = json::object();
  std::set<std::string> written;
  char fname[64];
  for (size_t s = 0; s < shards.size(); ++s) {
    if (sharded)
      std::snprintf(fname, sizeof(fname), "model-%05zu-of-%05zu.safetensors", s + 1, shards.size());
    else
      std::snprintf(fname, sizeof(fname), "model.safetensors");
    std::vector<std::vector<uint16_t>> bf16(shards[s].size());
    std::vector<Tensor> made(shards[s].size());  // this shard's lazy tensors, made now
    std::vector<SafetensorsWriteTensor> ws;
    for (size_t k = 0; k < shards[s].size(); ++k) {
      const Entry& e = *order[shards[s][k]];
      const std::string& name = e.name;
      const Tensor* tp = &e.value;
      if (e.fill) {
        made[k] = Tensor(e.shape);
        e.fill(made[k].ptr());
        tp = &made[k];
      }
      const Tensor& t = *tp;
      SafetensorsWriteTensor w;
      w.name = name;
      w.dtype = dtype_;
      w.shape = e.shape;
      if (dtype_ == SafeDtype::kF32) {
        w.data = t.data.data();
        w.nbytes = t.data.size() * sizeof(float);
      } else {
        bf16[k].resize(t.data.size());
        const float* v = t.ptr();
        for (size_t i = 0; i < t.data.size(); ++i) bf16[k][i] = f32_to_bf16(v[i]);
        w.data = bf16[k].data();
        w.nbytes = bf16[k].size() * sizeof(uint16_t);
      }
      ws.push_back(std::move(w));
      weight_map[name] = fname;
    }
    SY_RETURN_IF_ERROR(safetensors_write(dir + "/" + fname, ws, {{"format", "pt"}}));
    written.insert(fname);
  }
  // Stale files of an earlier write would shadow or contradict this one.
  for (const auto& de : fs::directory_iterator(dir, ec)) {
    const std::string n = de.path().filename().string();
    if (n.rfind("model-", 0) == 0 && n.find("-of-") != std::string::npos && !written.count(n))
      fs::remove(de.path(), ec);
  }
  if (sharded) {
    fs::remove(dir + "/model.safetensors", ec);
    json idx = {{"metadata", {{"total_size", total_bytes()}}}, {"weight_map", weight_map}};
    SY_RETURN_IF_ERROR(
        write_file_atomic(dir + "/model.safetensors.index.json", idx.dump(2) + "\n"));
  } else {
    fs::remove(dir + "/model.safetensors.index.json", ec);
  }
  return write_file_atomic(dir + "/config.json", config.dump(2) + "\n");
}

}  // namespace sy
