// Configuration of every command: protobuf text format (proto/config.proto for the synthetic
// `infer` stack, proto/commands.proto for the others) -> --set overrides -> checks -> the plain
// structs the runtime takes. Unknown fields, malformed text and invalid values are Status
// errors (InvalidArgument -> exit 21) with the file, line and column or the field path. The
// parsing, overriding and printing work on any message; the checks are one per message.
#pragma once

#include <google/protobuf/message.h>

#include <string>
#include <vector>

#include "proto/commands.pb.h"
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

// Any message: parses text format into *msg (cleared first; absent fields keep the .proto's
// defaults), or the file at `path`.
Status parse_text_config(const std::string& text, const std::string& origin,
                         google::protobuf::Message* msg);
Status load_text_config(const std::string& path, google::protobuf::Message* msg);

// Applies "a.b.c=value" (value in text-format syntax; strings may be bare).
Status apply_override(google::protobuf::Message* cfg, const std::string& assignment);
// The same for one field; `what` names the source in messages ("--set a.b", "--steps"). A
// `literal` string value is taken as it is (a flag's text); otherwise it may be quoted.
Status set_config_field(google::protobuf::Message* cfg, const std::string& path,
                        const std::string& value, const std::string& what, bool literal = true);
// The value of a scalar field as a user would write it (strings bare), for --help.
std::string config_field_text(const google::protobuf::Message& cfg, const std::string& path);
// Its kind for --help: INT, FLOAT, BOOL or TEXT.
std::string config_field_kind(const google::protobuf::Message& cfg, const std::string& path);

// Writes every absent proto2 field with its default (recursively, sub-messages included), so
// the printed config shows each effective value and reads back to the same message.
void fill_defaults(google::protobuf::Message* msg);

// Checks every field once (validate at the boundary, then trust).
Status validate_run_config(const switchyard::RunConfig& cfg);

// The runtime structs for a validated config.
MoeStackConfig to_stack_config(const switchyard::RunConfig& cfg, int64_t vocab_size);

// Canonical text (for reports, --print-config and the config hash all ranks compare).
std::string config_text(const google::protobuf::Message& cfg);

// The checks of the other commands' configs, naming the field (and its flag).
Status validate_model_infer_config(const switchyard::ModelInferConfig& m);
Status validate_train_config(const switchyard::TrainConfig& t);
Status validate_study_config(const switchyard::StudyConfig& s);
Status validate_tokenize_config(const switchyard::TokenizeConfig& t);
Status validate_routers_config(const switchyard::RoutersConfig& r);
Status validate_compare_config(const switchyard::CompareConfig& c);
Status validate_report_config(const switchyard::ReportConfig& r);

}  // namespace sy::launch
