// `switchyard project --calibrate --out DIR` under mpirun: times the runtime's own exchange
// (comm/dispatcher.h: count exchange + dispatch + return, as an MoE forward runs it) between the
// ranks of the job, on the tiers the job spans (ranks on the same host: shared memory; on other
// hosts: the network), and one rank's expert FFN (runtime/moe/experts.h, SwiGLU of D x F);
// fits the cluster model (runtime/project/calibration.h) and writes DIR/cluster.json, a cluster
// file `--cluster` reads, with the samples, their fitted times and the fit's error. A tier the
// job does not span (one host: no other-node pairs) keeps the --cluster base's values, and the
// file says so. Hosts are gethostname() (network-namespace hosts name themselves); every host
// must hold the same number of ranks (its gpus_per_node).
#pragma once

#include "launch/config.h"

namespace sy::launch {

int run_calibrate(const switchyard::ProjectConfig& cfg);

}  // namespace sy::launch
