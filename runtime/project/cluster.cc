#include "runtime/project/cluster.h"

#include <cmath>
#include <nlohmann/json.hpp>

#include "runtime/core/file_input.h"
#include "runtime/core/json_input.h"

namespace sy {
namespace {

// A cluster file is a few hundred bytes; the cap is checked before it is read.
constexpr int64_t kMaxClusterFileBytes = int64_t{1} << 20;
using json = nlohmann::json;

// Published figures (README "Projecting to 1,024 ranks" cites the sources): NVLink and NIC
// bandwidth per GPU and direction, dense BF16 tensor throughput. Latencies are per message and
// are assumptions of the order NCCL and DeepEP report for small all-to-all messages: the
// datasheets publish none.
ClusterModel preset(const char* name, double nvlink_GBps, double nic_GBps, double hbm_GBps,
                    double tflops) {
  ClusterModel c;
  c.name = name;
  c.label = "preset, from published figures";
  c.gpus_per_node = 8;
  c.same_node = {3e-6, nvlink_GBps * 1e9};
  c.other_node = {6e-6, nic_GBps * 1e9};
  c.same_rank = {0, hbm_GBps / 2 * 1e9};  // a copy reads and writes each byte
  c.flops = tflops * 1e12;
  return c;
}

std::vector<ClusterModel> presets() {
  // DGX H100: NVLink 4, 900 GB/s per GPU both directions; 8 x ConnectX-7 400 Gb/s (InfiniBand
  // NDR or 400 GbE RoCE), one per GPU; H100 SXM 3.35 TB/s HBM3, 989 TFLOPS dense BF16.
  // DGX A100: NVLink 3, 600 GB/s per GPU both directions; 8 x ConnectX-6 200 Gb/s HDR; A100
  // 80GB SXM 2.039 TB/s HBM2e, 312 TFLOPS dense BF16.
  return {preset("dgx-h100", 450, 50, 3350, 989), preset("dgx-a100", 300, 25, 2039, 312)};
}

Status field_error(const std::string& path, const std::string& field, const std::string& why) {
  return BadInput("cluster file " + path + ": field " + field + ": " + why);
}

// A finite number; > 0, or >= 0 when allow_zero.
Status read_number(const json& obj, const std::string& path, const std::string& field,
                   const char* key, bool allow_zero, double* out) {
  if (!obj.contains(key)) return field_error(path, field, "missing");
  const json& v = obj.at(key);
  if (!v.is_number())
    return field_error(path, field, "must be a number (got " + json_brief(v) + ")");
  const double x = v.get<double>();
  if (!std::isfinite(x) || x < 0 || (!allow_zero && x == 0))
    return field_error(path, field,
                       std::string("must be a finite number ") + (allow_zero ? ">= 0" : "> 0") +
                           " (got " + json_brief(v) + ")");
  *out = x;
  return Status::Ok();
}

Status read_tier(const json& root, const std::string& path, const char* key, LinkTier* t) {
  if (!root.contains(key)) return field_error(path, key, "missing");
  const json& o = root.at(key);
  if (!o.is_object()) return field_error(path, key, "must be an object");
  const std::string k = key;
  double lat_us = 0, gbps = 0;
  SY_RETURN_IF_ERROR(read_number(o, path, k + ".latency_us", "latency_us", true, &lat_us));
  SY_RETURN_IF_ERROR(read_number(o, path, k + ".bandwidth_GBps", "bandwidth_GBps", false, &gbps));
  t->latency_s = lat_us * 1e-6;
  t->bandwidth_Bps = gbps * 1e9;
  return Status::Ok();
}

}  // namespace

std::vector<std::string> cluster_preset_names() {
  std::vector<std::string> names;
  for (const ClusterModel& c : presets()) names.push_back(c.name);
  return names;
}

StatusOr<ClusterModel> cluster_preset(const std::string& name) {
  std::string known;
  for (const ClusterModel& c : presets()) {
    if (c.name == name) return c;
    known += (known.empty() ? "" : ", ") + c.name;
  }
  return InvalidArgument("cluster preset '" + name + "' unknown (presets: " + known +
                         "; or a cluster file)");
}

StatusOr<ClusterModel> read_cluster_file(const std::string& path) {
  SY_ASSIGN_OR_RETURN(std::string text, read_file_bounded(path, kMaxClusterFileBytes, "cluster"));
  SY_ASSIGN_OR_RETURN(json root, parse_json_object_bounded(text, "cluster file " + path));
  if (root.contains("format") &&
      (!root["format"].is_string() || root["format"].get<std::string>() != "switchyard.cluster"))
    return field_error(path, "format", "must be \"switchyard.cluster\"");
  if (root.contains("version") && (!root["version"].is_number_integer() || root["version"] != 1))
    return field_error(path, "version", "must be 1 (got " + json_brief(root["version"]) + ")");
  ClusterModel c;
  c.name = path;
  if (root.contains("name")) {
    if (!root["name"].is_string()) return field_error(path, "name", "must be a string");
    c.name = root["name"].get<std::string>();
  }
  c.label = "file " + path;
  if (root.contains("gpus_per_node")) {
    const json& g = root["gpus_per_node"];
    if (!g.is_number_integer() || g.get<int64_t>() < 1 || g.get<int64_t>() > (1 << 20))
      return field_error(path, "gpus_per_node",
                         "must be an integer in [1, 2^20] (got " + json_brief(g) + ")");
    c.gpus_per_node = g.get<int>();
  }
  SY_RETURN_IF_ERROR(read_number(root, path, "flops", "flops", false, &c.flops));
  SY_RETURN_IF_ERROR(read_tier(root, path, "same_node", &c.same_node));
  SY_RETURN_IF_ERROR(read_tier(root, path, "other_node", &c.other_node));
  if (root.contains("same_rank")) {
    const json& o = root.at("same_rank");
    if (!o.is_object()) return field_error(path, "same_rank", "must be an object");
    double gbps = 0;
    SY_RETURN_IF_ERROR(
        read_number(o, path, "same_rank.bandwidth_GBps", "bandwidth_GBps", false, &gbps));
    c.same_rank.bandwidth_Bps = gbps * 1e9;
  }
  return c;
}

StatusOr<ClusterModel> resolve_cluster(const std::string& preset_or_file) {
  for (const std::string& n : cluster_preset_names())
    if (n == preset_or_file) return cluster_preset(n);
  if (preset_or_file.find('/') == std::string::npos &&
      preset_or_file.find('.') == std::string::npos)
    return cluster_preset(preset_or_file);  // not a path: the unknown-preset message
  return read_cluster_file(preset_or_file);
}

}  // namespace sy
