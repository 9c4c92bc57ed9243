// `switchyard project --measured DIR[,DIR]`: a real run's load reports beside the projection at
// its P (the run's world size): every count the projection makes exactly (rows and bytes per
// rank pair, routed and dropped assignments per expert, rows each expert received) compared
// number by number, and its exchange and expert times per layer against the time model.
#pragma once

#include <string>
#include <vector>

#include "runtime/core/status.h"
#include "runtime/project/projection.h"

namespace sy::launch {

// Adds a MeasuredPoint to the point, whose ranks equal the run's world size, of the projection
// of the run's router (an error naming the folder when there is none, or when the run's expert
// or layer count is not the trace's). Reports are read as `switchyard report` reads them
// (defensively; exit 22 on a bad one). Counts compare only when the projection holds the rank-pair
// matrix (P <= pairs_max_ranks) and each rank replays as many tokens as the run's ranks routed.
Status add_measured_run(const std::string& dir, int64_t row_bytes,
                        std::vector<RouterProjection>* rs);

}  // namespace sy::launch
