// `--trace DIR [--trace-probs]` of `infer --model` and `train`: a routing trace recorder for a
// model's MoE layers (runtime/trace/trace_recorder.h), and the shard written at the end. The
// synthetic `infer` stack records in launch/infer_run.cc with the same recorder.
#pragma once

#include <memory>
#include <string>

#include "comm/communicator.h"
#include "proto/commands.pb.h"
#include "runtime/model/model.h"
#include "runtime/trace/trace_recorder.h"

namespace sy::launch {

// Null when cfg.dir() is empty. model_dir names the model in the trace (a checkpoint root: the
// step folder its weights came from); synthetic_routing: the
// routers were initialised at random (a replaced router at inference); ignored for routers
// without learned parameters (hash), which are never trained.
std::unique_ptr<TraceRecorder> make_model_trace(const switchyard::TraceConfig& cfg, Model& model,
                                                const char* source, const std::string& model_dir,
                                                bool synthetic_routing, const Communicator& comm);

// Writes this rank's shard under cfg.dir() (nothing when rec is null) and agrees the outcome
// over the ranks; rank 0 names the folder. COLLECTIVE. Returns the exit code (0: written).
int finish_trace(const TraceRecorder* rec, const switchyard::TraceConfig& cfg, Communicator& comm);

// --trace-probs needs --trace: InvalidArgument naming the command otherwise.
Status validate_trace_config(const switchyard::TraceConfig& cfg, const char* command);

}  // namespace sy::launch
