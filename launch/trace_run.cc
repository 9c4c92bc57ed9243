#include "launch/trace_run.h"

#include <cstdio>

#include "launch/infer_run.h"
#include "runtime/io/checkpoint_dir.h"

namespace sy::launch {

std::unique_ptr<TraceRecorder> make_model_trace(const switchyard::TraceConfig& cfg, Model& model,
                                                const char* source, const std::string& model_dir,
                                                bool synthetic_routing, const Communicator& comm) {
  if (cfg.dir().empty()) return nullptr;
  TraceMeta m = trace_meta_from_layers(model.sparse_layers(), comm.rank(), comm.size());
  m.model_layer.clear();
  for (int64_t i = 0; i < model.num_layers(); ++i)
    if (model.moe_layer(i)) m.model_layer.push_back(i);
  m.source = source;
  // The folder the weights came from: a checkpoint root's step folder, whose config.json
  // `switchyard project` reads for D and F (the root has none). Opened already, so no checksums.
  StatusOr<std::string> dir = resolve_model_dir_unverified(model_dir);
  m.model = dir.ok() ? *dir : model_dir;
  // A router without learned parameters (hash) routes as it always will: a replaced one is
  // that router, not an untrained stand-in, so its trace is not labelled synthetic.
  m.synthetic_routing =
      synthetic_routing && model.sparse_layers().front()->router().num_params() > 0;
  m.probs = cfg.probs();
  return std::make_unique<TraceRecorder>(std::move(m));
}

int finish_trace(const TraceRecorder* rec, const switchyard::TraceConfig& cfg, Communicator& comm) {
  if (!rec) return 0;
  if (int code = agree_status(comm, rec->write(cfg.dir()), "--trace")) return code;
  if (comm.rank() == 0) {
    std::printf(
        "routing trace: %s/rank-<r>.safetensors (%d shard%s); summary: switchyard trace "
        "stats %s\n",
        cfg.dir().c_str(), comm.size(), comm.size() == 1 ? "" : "s", cfg.dir().c_str());
    std::fflush(stdout);
  }
  return 0;
}

Status validate_trace_config(const switchyard::TraceConfig& cfg, const char* command) {
  if (cfg.probs() && cfg.dir().empty())
    return InvalidArgument(std::string(command) +
                           ": --trace-probs (trace.probs) needs --trace DIR (trace.dir)");
  return Status::Ok();
}

}  // namespace sy::launch
