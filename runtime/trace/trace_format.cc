// Routing traces: the shard writer and the defensive reader (format in trace_format.h).
#include "runtime/trace/trace_format.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <utility>

#include "runtime/io/safetensors.h"

namespace sy {
namespace {
using json = nlohmann::json;

std::string layer_name(int64_t l, const char* what) {
  return "layer." + std::to_string(l) + "." + what;
}

// ---- metadata: writing ----

std::string fmt_double(double v) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.17g", v);
  return buf;
}

std::map<std::string, std::string> meta_to_strings(const TraceMeta& m, int64_t tokens) {
  return {{"format", kTraceFormat},
          {"version", std::to_string(kTraceVersion)},
          {"source", m.source},
          {"model", m.model},
          {"router", m.router},
          {"synthetic_routing", m.synthetic_routing ? "1" : "0"},
          {"experts", std::to_string(m.experts)},
          {"top_k", std::to_string(m.top_k)},
          {"layers", json(m.model_layer).dump()},
          {"capacity_factor", fmt_double(m.capacity_factor)},
          {"group_tokens", std::to_string(m.group_tokens)},
          {"probs", m.probs ? "1" : "0"},
          {"rank", std::to_string(m.rank)},
          {"world_size", std::to_string(m.world_size)},
          {"host", m.host},
          {"first_step", std::to_string(m.first_step)},
          {"steps", std::to_string(m.steps)},
          {"tokens", std::to_string(tokens)}};
}

// ---- metadata: reading, each field named in the error ----

class MetaReader {
 public:
  MetaReader(const std::string& path, const std::map<std::string, std::string>& kv)
      : path_(path), kv_(kv) {}

  Status str(const char* key, std::string* out) const {
    auto it = kv_.find(key);
    if (it == kv_.end()) return BadInput(path_ + ": metadata '" + key + "' missing");
    *out = it->second;
    return Status::Ok();
  }
  Status int64(const char* key, int64_t lo, int64_t hi, int64_t* out) const {
    std::string s;
    SY_RETURN_IF_ERROR(str(key, &s));
    errno = 0;
    char* end = nullptr;
    const long long v = s.empty() ? 0 : std::strtoll(s.c_str(), &end, 10);
    if (s.empty() || errno != 0 || *end != '\0' || v < lo || v > hi)
      return BadInput(path_ + ": metadata '" + key + "' = '" + s + "': want an integer in [" +
                      std::to_string(lo) + ", " + std::to_string(hi) + "]");
    *out = v;
    return Status::Ok();
  }
  Status flag(const char* key, bool* out) const {
    int64_t v = 0;
    SY_RETURN_IF_ERROR(int64(key, 0, 1, &v));
    *out = v != 0;
    return Status::Ok();
  }
  Status real(const char* key, double* out) const {
    std::string s;
    SY_RETURN_IF_ERROR(str(key, &s));
    char* end = nullptr;
    const double v = s.empty() ? 0 : std::strtod(s.c_str(), &end);
    if (s.empty() || *end != '\0' || !std::isfinite(v))
      return BadInput(path_ + ": metadata '" + key + "' = '" + s + "': want a finite number");
    *out = v;
    return Status::Ok();
  }
  // A JSON list of non-negative, strictly increasing integers (model layer indices).
  Status layers(const char* key, std::vector<int64_t>* out) const {
    std::string s;
    SY_RETURN_IF_ERROR(str(key, &s));
    const json j = json::parse(s, nullptr, /*allow_exceptions=*/false);
    const std::string bad = path_ + ": metadata '" + key + "' = '" + s.substr(0, 80) + "': ";
    if (!j.is_array() || j.empty() || static_cast<int64_t>(j.size()) > kTraceMaxLayers)
      return BadInput(bad + "want a JSON list of 1 to " + std::to_string(kTraceMaxLayers) +
                      " layer indices");
    out->clear();
    for (const json& v : j) {
      if (!v.is_number_unsigned() || v.get<uint64_t>() > (1u << 20) ||
          (!out->empty() && static_cast<int64_t>(v.get<uint64_t>()) <= out->back()))
        return BadInput(bad + "want increasing non-negative integers");
      out->push_back(static_cast<int64_t>(v.get<uint64_t>()));
    }
    return Status::Ok();
  }

 private:
  const std::string& path_;
  const std::map<std::string, std::string>& kv_;
};

Status parse_meta(const std::string& path, const std::map<std::string, std::string>& kv,
                  TraceMeta* m, int64_t* tokens) {
  const MetaReader r(path, kv);
  std::string format;
  SY_RETURN_IF_ERROR(r.str("format", &format));
  if (format != kTraceFormat)
    return BadInput(path + ": metadata 'format' = '" + format.substr(0, 80) + "', want '" +
                    kTraceFormat + "' (not a routing trace)");
  int64_t version = 0;
  SY_RETURN_IF_ERROR(r.int64("version", 0, INT32_MAX, &version));
  if (version != kTraceVersion)
    return BadInput(path + ": metadata 'version' = " + std::to_string(version) +
                    ": this build reads version " + std::to_string(kTraceVersion));
  SY_RETURN_IF_ERROR(r.str("source", &m->source));
  if (m->source != "infer" && m->source != "train")
    return BadInput(path + ": metadata 'source' = '" + m->source.substr(0, 80) +
                    "', want infer | train");
  SY_RETURN_IF_ERROR(r.str("model", &m->model));
  SY_RETURN_IF_ERROR(r.str("router", &m->router));
  SY_RETURN_IF_ERROR(r.flag("synthetic_routing", &m->synthetic_routing));
  SY_RETURN_IF_ERROR(r.int64("experts", 1, kTraceMaxExperts, &m->experts));
  SY_RETURN_IF_ERROR(r.int64("top_k", 1, m->experts, &m->top_k));
  SY_RETURN_IF_ERROR(r.layers("layers", &m->model_layer));
  SY_RETURN_IF_ERROR(r.real("capacity_factor", &m->capacity_factor));
  SY_RETURN_IF_ERROR(r.int64("group_tokens", 0, INT64_MAX, &m->group_tokens));
  SY_RETURN_IF_ERROR(r.flag("probs", &m->probs));
  int64_t world = 0, rank = 0;
  SY_RETURN_IF_ERROR(r.int64("world_size", 1, 1 << 20, &world));
  SY_RETURN_IF_ERROR(r.int64("rank", 0, world - 1, &rank));
  m->world_size = static_cast<int>(world);
  m->rank = static_cast<int>(rank);
  SY_RETURN_IF_ERROR(r.str("host", &m->host));
  SY_RETURN_IF_ERROR(r.int64("first_step", 0, INT64_MAX / 2, &m->first_step));
  SY_RETURN_IF_ERROR(r.int64("steps", 0, INT64_MAX / 2, &m->steps));
  return r.int64("tokens", 0, INT64_MAX, tokens);
}

// Little-endian bytes into a typed vector (the build targets little-endian hosts, as the
// safetensors writer does).
template <typename T>
Status read_array(const SafetensorsReader& st, const std::string& name, std::vector<T>* out) {
  SY_ASSIGN_OR_RETURN(std::vector<uint8_t> bytes, st.ReadBytes(name));
  if (bytes.size() % sizeof(T) != 0) return BadInput(st.path() + ": " + name + ": bad size");
  out->resize(bytes.size() / sizeof(T));
  if (!bytes.empty()) std::memcpy(out->data(), bytes.data(), bytes.size());
  return Status::Ok();
}

// The value checks of one shard (sizes were checked by the schema).
Status check_values(const std::string& path, const TraceShard& s) {
  const TraceMeta& m = s.meta;
  const int64_t N = s.tokens(), K = m.top_k, E = m.experts;
  const std::string where = path + ": ";
  std::vector<std::pair<int64_t, int64_t>> keys(static_cast<size_t>(N));
  for (int64_t i = 0; i < N; ++i) {
    const int64_t step = s.step_N[i], tok = s.token_index_N[i];
    if (step < m.first_step || step >= m.first_step + m.steps)
      return BadInput(where + "step[" + std::to_string(i) + "] = " + std::to_string(step) +
                      " outside the recorded steps [" + std::to_string(m.first_step) + ", " +
                      std::to_string(m.first_step + m.steps) + ")");
    if (tok < 0)
      return BadInput(where + "token_index[" + std::to_string(i) + "] = " + std::to_string(tok));
    if (s.token_id_N[i] < 0)
      return BadInput(where + "token_id[" + std::to_string(i) +
                      "] = " + std::to_string(s.token_id_N[i]));
    keys[static_cast<size_t>(i)] = {step, tok};
  }
  std::sort(keys.begin(), keys.end());
  const auto dup = std::adjacent_find(keys.begin(), keys.end());
  if (dup != keys.end())
    return BadInput(where + "token_index " + std::to_string(dup->second) +
                    " recorded twice in step " + std::to_string(dup->first));
  for (int64_t l = 0; l < m.layers(); ++l) {
    const TraceLayer& L = s.layers[static_cast<size_t>(l)];
    for (int64_t i = 0; i < N; ++i) {
      const int32_t* ids = &L.topk_ids_NK[static_cast<size_t>(i * K)];
      for (int64_t k = 0; k < K; ++k) {
        if (ids[k] < 0 || ids[k] >= E)
          return BadInput(where + layer_name(l, "topk_ids") + "[" + std::to_string(i) + ", " +
                          std::to_string(k) + "] = " + std::to_string(ids[k]) +
                          ": expert ids must be < E = " + std::to_string(E));
        for (int64_t j = 0; j < k; ++j)
          if (ids[j] == ids[k])
            return BadInput(where + layer_name(l, "topk_ids") + "[" + std::to_string(i) +
                            "]: expert " + std::to_string(ids[k]) + " chosen twice");
        if (L.kept_NK[static_cast<size_t>(i * K + k)] > 1)
          return BadInput(
              where + layer_name(l, "kept") + "[" + std::to_string(i) + ", " + std::to_string(k) +
              "] = " + std::to_string(L.kept_NK[static_cast<size_t>(i * K + k)]) + ": want 0 or 1");
      }
    }
  }
  return Status::Ok();
}

}  // namespace

int64_t Trace::tokens() const {
  int64_t n = 0;
  for (const TraceShard& s : shards) n += s.tokens();
  return n;
}

std::string trace_shard_name(int rank) {
  return "rank-" + std::to_string(rank) + ".safetensors";
}

Status write_trace_shard(const std::string& path, const TraceShard& s) {
  const TraceMeta& m = s.meta;
  const size_t N = static_cast<size_t>(s.tokens()), K = static_cast<size_t>(m.top_k),
               E = static_cast<size_t>(m.experts);
  if (s.token_index_N.size() != N || s.token_id_N.size() != N ||
      static_cast<int64_t>(s.layers.size()) != m.layers())
    return InvalidArgument(path + ": trace rows or layers do not match");
  std::vector<SafetensorsWriteTensor> ts;
  auto add = [&ts](std::string name, SafeDtype dt, std::vector<int64_t> shape, const void* data,
                   size_t bytes) {
    ts.push_back({std::move(name), dt, std::move(shape), data, bytes});
  };
  const int64_t n = s.tokens();
  add("step", SafeDtype::kI64, {n}, s.step_N.data(), N * 8);
  add("token_index", SafeDtype::kI64, {n}, s.token_index_N.data(), N * 8);
  add("token_id", SafeDtype::kI32, {n}, s.token_id_N.data(), N * 4);
  for (int64_t l = 0; l < m.layers(); ++l) {
    const TraceLayer& L = s.layers[static_cast<size_t>(l)];
    if (L.topk_ids_NK.size() != N * K || L.topk_weights_NK.size() != N * K ||
        L.kept_NK.size() != N * K || L.probs_NE.size() != (m.probs ? N * E : 0))
      return InvalidArgument(path + ": " + layer_name(l, "") + " sizes do not match the rows");
    add(layer_name(l, "topk_ids"), SafeDtype::kI32, {n, m.top_k}, L.topk_ids_NK.data(), N * K * 4);
    add(layer_name(l, "topk_weights"), SafeDtype::kF32, {n, m.top_k}, L.topk_weights_NK.data(),
        N * K * 4);
    add(layer_name(l, "kept"), SafeDtype::kU8, {n, m.top_k}, L.kept_NK.data(), N * K);
    if (m.probs)
      add(layer_name(l, "probs"), SafeDtype::kF32, {n, m.experts}, L.probs_NE.data(), N * E * 4);
  }
  return safetensors_write(path, ts, meta_to_strings(m, n));
}

Status write_trace_shard_to_dir(const std::string& dir, const TraceShard& shard) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return InvalidArgument("--trace: cannot create " + dir + ": " + ec.message());
  return write_trace_shard(
      (std::filesystem::path(dir) / trace_shard_name(shard.meta.rank)).string(), shard);
}

StatusOr<TraceShard> read_trace_shard(const std::string& path) {
  SY_ASSIGN_OR_RETURN(SafetensorsReader st, SafetensorsReader::Open(path));
  TraceShard s;
  int64_t N = 0;
  SY_RETURN_IF_ERROR(parse_meta(path, st.metadata(), &s.meta, &N));
  const TraceMeta& m = s.meta;
  std::vector<SafetensorsReader::Expect> want = {{"step", SafeDtype::kI64, {N}},
                                                 {"token_index", SafeDtype::kI64, {N}},
                                                 {"token_id", SafeDtype::kI32, {N}}};
  for (int64_t l = 0; l < m.layers(); ++l) {
    want.push_back({layer_name(l, "topk_ids"), SafeDtype::kI32, {N, m.top_k}});
    want.push_back({layer_name(l, "topk_weights"), SafeDtype::kF32, {N, m.top_k}});
    want.push_back({layer_name(l, "kept"), SafeDtype::kU8, {N, m.top_k}});
    if (m.probs) want.push_back({layer_name(l, "probs"), SafeDtype::kF32, {N, m.experts}});
  }
  // The schema ties every size to the metadata, and the safetensors reader ties the sizes to
  // the file's bytes: nothing below allocates more than the file holds.
  SY_RETURN_IF_ERROR(st.CheckSchema(want, /*allow_extra=*/false));
  SY_RETURN_IF_ERROR(read_array(st, "step", &s.step_N));
  SY_RETURN_IF_ERROR(read_array(st, "token_index", &s.token_index_N));
  SY_RETURN_IF_ERROR(read_array(st, "token_id", &s.token_id_N));
  s.layers.resize(static_cast<size_t>(m.layers()));
  for (int64_t l = 0; l < m.layers(); ++l) {
    TraceLayer& L = s.layers[static_cast<size_t>(l)];
    SY_RETURN_IF_ERROR(read_array(st, layer_name(l, "topk_ids"), &L.topk_ids_NK));
    SY_RETURN_IF_ERROR(read_array(st, layer_name(l, "topk_weights"), &L.topk_weights_NK));
    SY_RETURN_IF_ERROR(read_array(st, layer_name(l, "kept"), &L.kept_NK));
    if (m.probs) SY_RETURN_IF_ERROR(read_array(st, layer_name(l, "probs"), &L.probs_NE));
  }
  SY_RETURN_IF_ERROR(check_values(path, s));
  return s;
}

StatusOr<Trace> read_trace(const std::string& dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return NotFound(dir + ": not a trace folder");
  // Every rank-<r>.safetensors, by r; anything else in the folder is left alone.
  std::map<int, std::string> files;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    const std::string pre = "rank-", suf = ".safetensors";
    if (name.size() <= pre.size() + suf.size() || name.compare(0, pre.size(), pre) != 0 ||
        name.compare(name.size() - suf.size(), suf.size(), suf) != 0)
      continue;
    const std::string digits = name.substr(pre.size(), name.size() - pre.size() - suf.size());
    if (digits.size() > 7 || digits.find_first_not_of("0123456789") != std::string::npos)
      return BadInput(dir + "/" + name + ": not a rank-<r>.safetensors shard name");
    const int r = std::atoi(digits.c_str());
    if (trace_shard_name(r) != name) return BadInput(dir + "/" + name + ": bad shard name");
    files[r] = e.path().string();
  }
  if (ec) return BadInput(dir + ": " + ec.message());
  if (files.empty()) return NotFound(dir + ": no trace shards (rank-<r>.safetensors)");
  Trace t;
  t.dir = dir;
  for (const auto& [r, path] : files) {
    SY_ASSIGN_OR_RETURN(TraceShard s, read_trace_shard(path));
    if (s.meta.rank != r)
      return BadInput(path + ": metadata 'rank' = " + std::to_string(s.meta.rank) +
                      " but the file is rank " + std::to_string(r) + "'s");
    if (!t.shards.empty()) {
      const TraceMeta& a = t.shards.front().meta;
      const TraceMeta& b = s.meta;
      const std::pair<const char*, bool> same[] = {
          {"source", a.source == b.source},
          {"model", a.model == b.model},
          {"router", a.router == b.router},
          {"synthetic_routing", a.synthetic_routing == b.synthetic_routing},
          {"experts", a.experts == b.experts},
          {"top_k", a.top_k == b.top_k},
          {"layers", a.model_layer == b.model_layer},
          {"capacity_factor", a.capacity_factor == b.capacity_factor},
          {"group_tokens", a.group_tokens == b.group_tokens},
          {"probs", a.probs == b.probs},
          {"world_size", a.world_size == b.world_size},
          {"first_step", a.first_step == b.first_step},
          {"steps", a.steps == b.steps}};
      for (const auto& [field, equal] : same)
        if (!equal)
          return BadInput(path + ": metadata '" + field + "' differs from " + t.dir + "/" +
                          trace_shard_name(t.shards.front().meta.rank) + "'s (not one run)");
    }
    t.shards.push_back(std::move(s));
  }
  const int P = t.meta().world_size;
  for (int r = 0; r < P; ++r)
    if (!files.count(r))
      return NotFound((fs::path(dir) / trace_shard_name(r)).string() + " missing (world size " +
                      std::to_string(P) + ")");
  if (static_cast<int>(files.size()) != P)
    return BadInput(files.rbegin()->second + ": rank beyond the world size " + std::to_string(P));
  // A token belongs to one rank per step.
  std::vector<std::pair<int64_t, int64_t>> keys;
  keys.reserve(static_cast<size_t>(t.tokens()));
  for (const TraceShard& s : t.shards)
    for (int64_t i = 0; i < s.tokens(); ++i) keys.emplace_back(s.step_N[i], s.token_index_N[i]);
  std::sort(keys.begin(), keys.end());
  const auto dup = std::adjacent_find(keys.begin(), keys.end());
  if (dup != keys.end())
    return BadInput(dir + ": token_index " + std::to_string(dup->second) + " of step " +
                    std::to_string(dup->first) + " recorded by two ranks");
  return t;
}

}  // namespace sy
