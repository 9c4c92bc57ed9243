#include "launch/train_progress.h"

#include <algorithm>
#include <cstdio>

#include "launch/infer_run.h"
#include "routers/metrics.h"
#include "runtime/moe/moe_layer.h"

namespace sy::launch {

StepRouting GlobalRouting(const std::vector<MoeLayer*>& layers, Communicator& comm, int64_t step) {
  // One all-reduce: every MoE layer's routed-per-expert counts, then its dropped-per-expert.
  std::vector<int64_t> v;
  for (MoeLayer* l : layers) {
    const MoeLayerCounters& c = l->counters();
    v.insert(v.end(), c.routed_E.begin(), c.routed_E.end());
    v.insert(v.end(), c.dropped_E.begin(), c.dropped_E.end());
  }
  comm.allreduce(v.data(), static_cast<int64_t>(v.size()), ReduceOp::kSum,
                 {"train.routing", -1, step});
  StepRouting r;
  int64_t routed = 0, dropped = 0;
  const int64_t* row = v.data();
  int index = 0;
  for (MoeLayer* l : layers) {
    const int64_t E = l->config().num_experts;
    const RoutingMetrics m =
        routing_metrics_from_counts(nullptr, nullptr, 0, E, l->config().top_k, row, row + E);
    row += 2 * E;
    routed += m.routed;
    dropped += m.dropped;
    r.imbalance = std::max(r.imbalance, m.imbalance);
    if (m.collapsed) r.collapsed.push_back(index);
    ++index;
    if (r.collapse_threshold == 0) r.collapse_threshold = m.collapse_threshold;
  }
  r.drop_fraction = routed > 0 ? static_cast<double>(dropped) / static_cast<double>(routed) : 0;
  return r;
}

DistillProgress distill_progress_printer(int rank, std::string prefix) {
  return [rank, prefix](const DistillLayerReport& l, size_t done, size_t total, double secs) {
    if (rank != 0) return;
    std::printf("%sdistilled layer %d (%zu/%zu): KL %.4f -> %.4f, %.1f s, ETA %.0f s\n",
                prefix.c_str(), l.layer, done, total, l.before.kl, l.after.kl, secs,
                secs / static_cast<double>(done) * static_cast<double>(total - done));
    std::fflush(stdout);
  };
}

bool has_balance_bias(Model& model) {
  for (MoeLayer* l : model.sparse_layers())
    if (l->router().updates_after_step()) return true;
  return false;
}

int balance_calibration(Trainer& trainer, Model& model, Communicator& comm, int64_t n,
                        const std::function<std::vector<std::vector<int32_t>>(int64_t)>& batch,
                        double* first, double* last,
                        const std::function<void(int64_t, double)>& on_pass) {
  *first = *last = 0;
  if (n <= 0 || !has_balance_bias(model)) return 0;
  for (int64_t i = 0; i < n; ++i) {
    auto worst = trainer.balance_pass(batch(i));
    if (int code = agree_status(comm, worst.status(), "balance calibration")) return code;
    if (i == 0) *first = *worst;
    *last = *worst;
    if (on_pass) on_pass(i, *worst);
  }
  return 0;
}

}  // namespace sy::launch
