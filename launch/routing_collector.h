// Routing metrics and per-rank load reports of a model's MoE layers, for `switchyard infer`
// (models) and `switchyard train`.
#pragma once

#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "comm/communicator.h"
#include "launch/infer_run.h"
#include "proto/report.pb.h"
#include "routers/metrics.h"
#include "runtime/core/check.h"
#include "runtime/core/version.h"
#include "runtime/moe/moe_layer.h"

namespace sy::launch {

// Routing metrics and load reports of a model's MoE layers over one or more forwards:
// add_step() after each forward (every rank, collective-free), finish() merges over the ranks
// (collective), prints the table on rank 0 and writes each rank's report under `out`.
class RoutingCollector {
 public:
  // moe: the model's MoE layers (no nulls); config_text goes into each report.
  RoutingCollector(std::vector<MoeLayer*> moe, const std::string& config_text, Communicator& comm,
                   std::string out)
      : moe_(std::move(moe)), comm_(comm), out_(std::move(out)) {
    if (moe_.empty()) return;
    const MoeLayerConfig& lc = moe_[0]->config();
    report_.set_rank(comm.rank());
    report_.set_world_size(comm.size());
    report_.set_host(host_name());
    report_.set_router(moe_[0]->router().name());
    report_.set_num_experts(static_cast<int32_t>(lc.num_experts));
    report_.set_top_k(static_cast<int32_t>(lc.top_k));
    report_.set_d_model(static_cast<int32_t>(lc.d_model));
    report_.set_local_expert_begin(static_cast<int32_t>(moe_[0]->first_local_expert()));
    report_.set_local_expert_count(static_cast<int32_t>(moe_[0]->num_local_experts()));
    report_.set_num_layers(static_cast<int32_t>(moe_.size()));
    report_.set_config_text(config_text);
    report_.set_switchyard_version(kVersion);
    mine_.resize(moe_.size());
  }

  // The last forward of every MoE layer: this rank's tokens (a slice, or its own sequence).
  void add_step(int64_t step) {
    for (size_t l = 0; l < moe_.size(); ++l) {
      MoeLayer& layer = *moe_[l];
      const MoeLayerConfig& lc = layer.config();
      const RouterOutput& ro = layer.router_output();
      if (ro.T == 0) continue;
      RoutingMetrics part =
          routing_metrics_compute(ro.probs_TE.ptr(), ro.topk_ids_TK.data(),
                                  layer.plan().kept_TK.data(), ro.T, lc.num_experts, lc.top_k);
      routing_metrics_merge(part, &mine_[l]);
      if (!out_.empty())
        fill_layer_step(layer, static_cast<int>(l), step, ro.T, part, report_.add_entries());
    }
  }

  // Collective. tokens: over all ranks; seconds: the wall time they took.
  void finish(int64_t tokens, double seconds, const char* title) {
    if (moe_.empty()) return;
    InferResult res;
    res.router = moe_[0]->router().name();
    res.tokens = tokens;
    res.seconds = seconds;
    for (size_t l = 0; l < moe_.size(); ++l) {
      const MoeLayerConfig& lc = moe_[l]->config();
      res.per_layer.push_back(
          merge_routing_metrics(&comm_, mine_[l], static_cast<int>(l), lc.num_experts, lc.top_k));
    }
    if (comm_.rank() == 0) {
      std::printf("%s", title);
      print_routing_table({res}, comm_.size());
    }
    if (!out_.empty()) {
      report_.set_wall_s(seconds);
      std::error_code ec;
      std::filesystem::create_directories(out_, ec);
      write_report_or_warn(out_, report_, comm_.rank());
      if (comm_.rank() == 0)
        std::printf("load reports: %s/rank-<r>.{json,pb}; merge with: switchyard report %s\n",
                    out_.c_str(), out_.c_str());
    }
    std::fflush(stdout);
  }

 private:
  std::vector<MoeLayer*> moe_;
  Communicator& comm_;
  std::string out_;
  switchyard::RankReport report_;
  std::vector<RoutingMetrics> mine_;
};

}  // namespace sy::launch
