#include "runtime/trace/trace_recorder.h"

#include <algorithm>
#include <utility>

namespace sy {

TraceMeta trace_meta_from_layers(const std::vector<MoeLayer*>& layers, int rank, int world_size) {
  SY_CHECK(!layers.empty());
  const MoeLayerConfig& c = layers.front()->config();
  TraceMeta m;
  m.router = layers.front()->router().config().name;
  m.experts = c.num_experts;
  m.top_k = layers.front()->router().slots_per_token();  // E for expert choice (kept_NK marks
                                                         // the slots the experts took)
  for (size_t l = 0; l < layers.size(); ++l) m.model_layer.push_back(static_cast<int64_t>(l));
  m.capacity_factor = c.capacity_factor;
  m.group_tokens = c.group_tokens;
  m.rank = rank;
  m.world_size = world_size;
  m.host = host_name();
  return m;
}

TraceRecorder::TraceRecorder(TraceMeta meta) {
  shard_.meta = std::move(meta);
  shard_.meta.first_step = 0;
  shard_.meta.steps = 0;
  shard_.layers.resize(static_cast<size_t>(shard_.meta.layers()));
}

void TraceRecorder::add(int64_t step, const std::vector<MoeLayer*>& layers, const int64_t* index_T,
                        const int32_t* ids_T, int64_t T) {
  TraceMeta& m = shard_.meta;
  SY_CHECK_EQ(static_cast<int64_t>(layers.size()), m.layers());
  SY_CHECK_GE(step, 0);
  // Every rank calls add() for every step, also with T = 0, so all shards name the same steps.
  const int64_t last = any_ ? m.first_step + m.steps : step + 1;
  m.first_step = any_ ? std::min(m.first_step, step) : step;
  m.steps = std::max(last, step + 1) - m.first_step;
  any_ = true;
  if (T == 0) return;
  const int64_t K = m.top_k, E = m.experts;
  shard_.step_N.insert(shard_.step_N.end(), static_cast<size_t>(T), step);
  shard_.token_index_N.insert(shard_.token_index_N.end(), index_T, index_T + T);
  shard_.token_id_N.insert(shard_.token_id_N.end(), ids_T, ids_T + T);
  for (size_t l = 0; l < layers.size(); ++l) {
    const RouterOutput& r = layers[l]->router_output();
    const CapacityPlan& plan = layers[l]->plan();
    SY_CHECK(r.T == T && r.K == K && r.E == E && plan.T == T)
        << "trace: layer " << l << " routed " << r.T << " rows of E " << r.E << " K " << r.K
        << ", the trace wants " << T << " of E " << E << " K " << K;
    TraceLayer& L = shard_.layers[l];
    const std::vector<int32_t> ids = r.topk_ids_TK.to_host();
    const std::vector<float> w = r.topk_weights_TK.data.to_host();
    SY_CHECK(static_cast<int64_t>(ids.size()) >= T * K && static_cast<int64_t>(w.size()) >= T * K &&
             static_cast<int64_t>(plan.kept_TK.size()) >= T * K);
    L.topk_ids_NK.insert(L.topk_ids_NK.end(), ids.begin(), ids.begin() + T * K);
    L.topk_weights_NK.insert(L.topk_weights_NK.end(), w.begin(), w.begin() + T * K);
    L.kept_NK.insert(L.kept_NK.end(), plan.kept_TK.begin(), plan.kept_TK.begin() + T * K);
    if (m.probs) {
      const std::vector<float> p = r.probs_TE.data.to_host();
      SY_CHECK_GE(static_cast<int64_t>(p.size()), T * E);
      L.probs_NE.insert(L.probs_NE.end(), p.begin(), p.begin() + T * E);
    }
  }
}

void TraceRecorder::add_range(int64_t step, const std::vector<MoeLayer*>& layers,
                              int64_t first_index, const int32_t* ids_T, int64_t T) {
  index_.resize(static_cast<size_t>(T));
  for (int64_t t = 0; t < T; ++t) index_[static_cast<size_t>(t)] = first_index + t;
  add(step, layers, index_.data(), ids_T, T);
}

}  // namespace sy
