// Records a rank's routing trace (trace_format.h) while a run goes: after each forward, the
// caller hands over the MoE layers and, for each of the T rows they routed on this rank, the
// token's global index and id; write() puts the shard on disk at the end.
//
// Reads only what a MoeLayer exposes about its last forward: router_output() (ids, weights,
// probabilities, copied to the host with to_host(): they may live in backend memory) and plan()
// (kept_TK, on the host). Not collective; each rank records and writes its own shard.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "runtime/moe/moe_layer.h"
#include "runtime/trace/trace_format.h"

namespace sy {

// The settings every trace of these layers shares, from the first layer's config: E, K, the
// router's name, capacity factor, capacity group; model_layer 0 .. L-1; rank, world size and
// this host. The caller sets source, model, synthetic_routing, probs (and model_layer when the
// model has dense layers).
TraceMeta trace_meta_from_layers(const std::vector<MoeLayer*>& layers, int rank, int world_size);

class TraceRecorder {
 public:
  // meta: the run's settings (experts, top_k, model_layer, probs, rank, ...); first_step and
  // steps are kept up to date by add().
  explicit TraceRecorder(TraceMeta meta);

  // The last forward of `layers` (meta.layers() of them, in order; each routed the same T
  // rows): row t is token index_T[t] with id ids_T[t], at `step`.
  void add(int64_t step, const std::vector<MoeLayer*>& layers, const int64_t* index_T,
           const int32_t* ids_T, int64_t T);
  // Contiguous global indices: row t is token first_index + t.
  void add_range(int64_t step, const std::vector<MoeLayer*>& layers, int64_t first_index,
                 const int32_t* ids_T, int64_t T);

  const TraceShard& shard() const { return shard_; }
  // dir/rank-<r>.safetensors (atomic), creating dir.
  Status write(const std::string& dir) const { return write_trace_shard_to_dir(dir, shard_); }

 private:
  TraceShard shard_;
  bool any_ = false;
  std::vector<int64_t> index_;
};

}  // namespace sy
