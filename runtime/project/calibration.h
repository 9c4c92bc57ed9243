// `switchyard project --calibrate`: the cluster model's link tiers fitted to exchanges timed on
// the machine at hand. Each sample is one pattern of the runtime's own exchange (count exchange
// + dispatch + return, as one MoE forward does it), every rank sending the same rows to itself
// (the self copy), to each peer of one tier (same node, other node) or to all its peers; its
// features are what the time model (projection.h, "Time") charges one rank for it: per link
// tier, messages (the count exchange to every peer of the group + one per peer that gets rows,
// there and back), and per tier including the self copy, bytes (there and back). The fit is
// the least-squares solution, relative to each sample's time, with every latency and inverse
// bandwidth >= 0, so the model reproduces the samples as closely as its form allows; the
// samples' fitted times and errors go into the cluster file beside the tiers.
#pragma once

#include <string>
#include <vector>

#include "runtime/core/status.h"
#include "runtime/project/cluster.h"

namespace sy {

struct CalibrationSample {
  std::string pattern;  // "self", "same_node", "other_node" or "all"
  int64_t rows_per_peer = 0;
  double messages[2] = {0, 0};  // same node, other node (one rank, dispatch + return)
  double bytes[3] = {0, 0, 0};  // self, same node, other node (likewise)
  double measured_s = 0;        // median over iterations of the slowest rank's time
  double fitted_s = 0;          // set by fit_link_tiers
};

// The features of one rank's exchange when it has `peers[t]` peers on tier t (same node,
// other node) in its expert group and sends rows_per_peer rows of row_bytes to itself and to
// each peer of the tiers marked in `rows_to` (self, same node, other node).
CalibrationSample calibration_sample(const std::string& pattern, const int peers[2],
                                     const bool rows_to[3], int64_t rows_per_peer,
                                     double row_bytes);

struct CalibrationFit {
  LinkTier tier[3];       // self copy (bandwidth only), same node, other node
  bool measured[3] = {};  // a tier with no sample keeps the base cluster's values
  double max_error_pct = 0, median_error_pct = 0;  // |fitted - measured| / measured
};

// Fits both tiers (or the one with samples) and sets every sample's fitted_s. InvalidArgument
// when no sample has a positive time, or a tier's bandwidth cannot be told from its latency
// (every sample of it moves the same bytes).
StatusOr<CalibrationFit> fit_link_tiers(std::vector<CalibrationSample>* samples);

}  // namespace sy
