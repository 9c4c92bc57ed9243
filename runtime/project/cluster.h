// The cluster a projection times: ranks in nodes of gpus_per_node, two link tiers (same-node,
// other-node), each a latency-bandwidth model (a message of b bytes costs latency + b /
// bandwidth), and the expert compute rate. From a preset ("preset, from published figures";
// docs/ARCHITECTURE.md and the README cite the figures) or a cluster file:
//   {"format": "switchyard.cluster", "version": 1,           (both optional)
//    "name": "my-cluster",                                   (optional)
//    "gpus_per_node": 8,                                      (optional, default 8)
//    "flops": 9.89e14,                                        FLOP/s of one rank's expert GEMMs
//    "same_node":  {"latency_us": 3, "bandwidth_GBps": 450},  one direction, per rank
//    "other_node": {"latency_us": 6, "bandwidth_GBps": 50},
//    "same_rank":  {"bandwidth_GBps": 1675}}                 (optional: absent = free)
// parsed defensively: a missing field, a wrong type, a negative, zero or non-finite bandwidth,
// flops or latency (latency may be 0) is BadInput (exit 22) naming the file and the field.
// same_rank is the copy of a rank's rows to its own experts (and back): bytes / bandwidth, no
// message; a file without it (and the presets before it was measured) charge nothing for it.
#pragma once

#include <cmath>
#include <string>
#include <vector>

#include "runtime/core/status.h"

namespace sy {

struct LinkTier {
  double latency_s = 0;      // per message
  double bandwidth_Bps = 0;  // bytes/s, one direction, per rank
};

struct ClusterModel {
  std::string name;
  std::string label;  // "preset, from published figures" or "file <path>"
  int gpus_per_node = 8;
  LinkTier same_node, other_node;
  LinkTier same_rank{0, HUGE_VAL};  // the self copy: bandwidth only; HUGE_VAL: free
  double flops = 0;                 // FLOP/s per rank for the expert GEMMs

  // Seconds to move `bytes` in `messages` messages over a tier.
  static double seconds(const LinkTier& t, double bytes, double messages) {
    return (messages > 0 ? t.latency_s * messages : 0.0) + bytes / t.bandwidth_Bps;
  }
};

std::vector<std::string> cluster_preset_names();
// A preset by name; InvalidArgument (exit 21) listing the presets otherwise.
StatusOr<ClusterModel> cluster_preset(const std::string& name);
// A cluster file (format above).
StatusOr<ClusterModel> read_cluster_file(const std::string& path);
// A preset name, else a file path.
StatusOr<ClusterModel> resolve_cluster(const std::string& preset_or_file);

}  // namespace sy
