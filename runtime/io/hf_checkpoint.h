// Hugging Face checkpoint folders: config.json plus either model.safetensors or the sharded
// model.safetensors.index.json ({"metadata": {...}, "weight_map": {tensor: file}}) with its
// model-0000i-of-0000N.safetensors files. Read side and write side of exactly that layout.
//
// Everything in the folder is untrusted: config.json is parsed with nlohmann::json and every
// value read through the typed getters below (type and range checked, the key and the file in
// the message); the index may only name plain file names inside the folder; each shard is
// opened with the hostile-file SafetensorsReader (safetensors.h), and every tensor read is checked
// against the dtype class and shape the model expects. Errors are kBadInput (exit 22) naming
// the file and the tensor; a missing folder or file is kNotFound.
//
// Reading is lazy: Open parses config.json, the index and the safetensors HEADERS only. A rank
// then reads just the tensors it needs (its experts), so no rank holds the whole model.
//
//   SY_ASSIGN_OR_RETURN(HfCheckpoint ck, HfCheckpoint::Open(dir));
//   SY_ASSIGN_OR_RETURN(int64_t D, ck.config_int("hidden_size", 1, 1 << 20));
//   SY_ASSIGN_OR_RETURN(Tensor w, ck.read("model.embed_tokens.weight", {V, D}));
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "runtime/core/status.h"
#include "runtime/core/tensor.h"
#include "runtime/io/safetensors.h"

namespace sy {

// A JSON object from a file of at most 64 MiB (kBadInput when not valid JSON / not an object).
StatusOr<nlohmann::json> read_json_object_file(const std::string& path);
// A plain file name inside a folder: no '/', '\\', "..", and not hidden.
bool is_plain_file_name(const std::string& s);

// Typed, range-checked reads from a config.json object. `where` names the file in messages.
class JsonConfigReader {
 public:
  JsonConfigReader(const nlohmann::json& j, std::string where) : j_(j), where_(std::move(where)) {}
  // Missing key -> the default when one is given, else an error; wrong type or outside
  // [lo, hi] -> kBadInput naming the file and the key.
  StatusOr<int64_t> get_int(const std::string& key, int64_t lo, int64_t hi) const;
  StatusOr<int64_t> get_int(const std::string& key, int64_t lo, int64_t hi, int64_t def) const;
  StatusOr<double> get_float(const std::string& key, double lo, double hi) const;
  StatusOr<double> get_float(const std::string& key, double lo, double hi, double def) const;
  StatusOr<bool> get_bool(const std::string& key, bool def) const;
  StatusOr<std::string> get_string(const std::string& key, const std::string& def) const;
  const nlohmann::json& json() const { return j_; }
  const std::string& where() const { return where_; }

 private:
  const nlohmann::json& j_;
  std::string where_;
};

class HfCheckpoint {
 public:
  // dir: a folder with config.json and model.safetensors or model.safetensors.index.json, or
  // a training checkpoint root (runtime/io/checkpoint_dir.h): its latest complete checkpoint,
  // verified against its manifest; dir() is then that step folder.
  static StatusOr<HfCheckpoint> Open(const std::string& dir);

  const std::string& dir() const { return dir_; }
  const nlohmann::json& config() const { return *config_; }
  // Number of safetensors files (1 unless sharded).
  size_t num_files() const { return readers_.size(); }

  // ---- config.json values (JsonConfigReader semantics) ----
  JsonConfigReader config_reader() const { return {*config_, dir_ + "/config.json"}; }
  StatusOr<int64_t> config_int(const std::string& key, int64_t lo, int64_t hi) const {
    return config_reader().get_int(key, lo, hi);
  }
  StatusOr<int64_t> config_int(const std::string& key, int64_t lo, int64_t hi, int64_t def) const {
    return config_reader().get_int(key, lo, hi, def);
  }
  StatusOr<double> config_float(const std::string& key, double lo, double hi) const {
    return config_reader().get_float(key, lo, hi);
  }
  StatusOr<double> config_float(const std::string& key, double lo, double hi, double def) const {
    return config_reader().get_float(key, lo, hi, def);
  }
  StatusOr<bool> config_bool(const std::string& key, bool def) const {
    return config_reader().get_bool(key, def);
  }
  StatusOr<std::string> config_string(const std::string& key, const std::string& def) const {
    return config_reader().get_string(key, def);
  }

  // A fingerprint of what was opened, the same on every host holding the same files:
  // config.json's content, every tensor's name, dtype, shape and byte range, and, for a
  // training checkpoint, its manifest (the SHA-256 of every file). 16 hex digits. It does not
  // read the weights' bytes, so an edit of a Hugging Face model's weights alone keeps it.
  std::string identity() const;

  // ---- tensors ----
  bool has(const std::string& name) const;
  // All tensor names, sorted.
  std::vector<std::string> names() const;
  // The header entry of `name` (dtype, shape) or null when absent.
  const SafetensorsEntry* entry(const std::string& name) const;
  // The file holding `name` (for messages), or "" when absent.
  std::string file_of(const std::string& name) const;
  // A float tensor (F32 / F16 / BF16 on disk) converted to fp32; its shape must equal `shape`
  // exactly. NaN/Inf is an error (the format does not check it) unless allow_non_finite.
  StatusOr<Tensor> read(const std::string& name, const std::vector<int64_t>& shape,
                        bool allow_non_finite = false) const;
  // Same, into caller memory of numel(shape) floats (e.g. one expert's slot of a stacked
  // buffer), without an intermediate Tensor copy beyond one tensor's bytes.
  Status read_into(const std::string& name, const std::vector<int64_t>& shape, float* dst,
                   bool allow_non_finite = false) const;
  // Same, into dst (its shape), wherever dst's memory is (through a host copy when the host
  // cannot write it); the second form into dst_in_mem, a pointer into memory mem (a slot of a
  // stacked tensor).
  Status read_into(const std::string& name, Tensor* dst, bool allow_non_finite = false) const;
  Status read_into(const std::string& name, const std::vector<int64_t>& shape, Memory* mem,
                   float* dst_in_mem, bool allow_non_finite = false) const;
  // Schema check over all files: every `required` name present; names outside required that
  // match none of the `allowed_prefixes` are an error when !allow_extra. The message lists
  // every missing or unexpected name (up to a cap) and the file.
  Status check_names(const std::vector<std::string>& required, bool allow_extra) const;

 private:
  HfCheckpoint() = default;
  std::string dir_;
  std::shared_ptr<nlohmann::json> config_;
  std::vector<std::unique_ptr<SafetensorsReader>> readers_;
  std::map<std::string, size_t> where_;  // tensor -> index into readers_
};

// Collects named fp32 tensors and writes a checkpoint folder: config.json (pretty-printed),
// then model.safetensors, or, when the tensors exceed max_shard_bytes, shards
// model-0000i-of-0000N.safetensors in name order plus model.safetensors.index.json. dtype is
// F32 or BF16 (converted on write, round to nearest even). Files are written atomically; the
// folder is created.
class HfCheckpointWriter {
 public:
  explicit HfCheckpointWriter(SafeDtype dtype = SafeDtype::kF32) : dtype_(dtype) {}
  // Takes the tensor by value (move in to avoid a copy). A repeated name is an error on write.
  void add(const std::string& name, Tensor t);
  // A tensor made only when its shard is written: fill(dst) writes numel(shape) floats. The
  // writer then holds one shard's tensors at a time, so a model of any size can be written.
  using Fill = std::function<void(float* dst)>;
  void add_lazy(const std::string& name, std::vector<int64_t> shape, Fill fill);
  int64_t total_bytes() const;  // on disk, tensor data only
  Status write(const std::string& dir, const nlohmann::json& config,
               int64_t max_shard_bytes = int64_t{5} << 30) const;

 private:
  struct Entry {
    std::string name;
    std::vector<int64_t> shape;
    Tensor value;  // eager tensors
    Fill fill;     // lazy ones
  };
  SafeDtype dtype_;
  std::vector<Entry> tensors_;
};

}  // namespace sy
