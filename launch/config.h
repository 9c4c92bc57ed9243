// Run configuration: protobuf text format (proto/config.proto) -> --set overrides -> checks ->
// the plain structs the runtime takes. Unknown fields, malformed text and invalid values are
// Status errors (InvalidArgument -> exit 21) with the file, line and column or the field path.
#pragma once

#include <string>
#include <vector>

#include "proto/config.pb.h"
#include "runtime/core/status.h"
#include "runtime/model/moe_stack.h"

namespace sy::launch {

// The embedded default (launch/configs/default.pbtxt, compiled in).
const std::string& default_config_text();

// Parses text format; `origin` names the source in messages (a path or "<default>").
StatusOr<switchyard::RunConfig> parse_run_config(const std::string& text,
                                                 const std::string& origin);
StatusOr<switchyard::RunConfig> load_run_config(const std::string& path);  // "" = default

// Applies "a.b.c=value" (value in text-format syntax; strings may be bare).
Status apply_override(switchyard::RunConfig* cfg, const std::string& assignment);

// Checks every field once (validate at the boundary, then trust).
Status validate_run_config(const switchyard::RunConfig& cfg);

// The runtime structs for a validated config.
MoeStackConfig to_stack_config(const switchyard::RunConfig& cfg, int64_t vocab_size);

// Canonical text (for reports and the config hash all ranks compare).
std::string config_text(const switchyard::RunConfig& cfg);

}  // namespace sy::launch
