#include "launch/config_cli.h"

#include "launch/config.h"

namespace sy::launch {

const char kConfigPrecedence[] =
    "Settings: the defaults shown here < --config FILE < these flags < --set a.b=v. "
    "--print-config prints the result, ready for --config.";

CommandConfig::CommandConfig(CLI::App* cmd, const google::protobuf::Message& defaults,
                             std::string prefix)
    : cmd_(cmd), defaults_(defaults), prefix_(std::move(prefix)) {}

void CommandConfig::add_config_options() {
  cmd_->add_option("--config", config_,
                   "settings in protobuf text format (" + defaults_.GetDescriptor()->full_name() +
                       ", proto/commands.proto); absent fields keep their defaults");
  cmd_->add_option("--set", sets_, "override one setting: --set field=value (repeatable)")
      ->default_str("");  // none: an empty list would show as "[]"
  cmd_->add_flag("--print-config", print_config_,
                 "print the effective settings (protobuf text, for --config)");
  cmd_->footer(kConfigPrecedence);
}

CLI::Option* CommandConfig::option(const std::string& flags, const std::string& field,
                                   const std::string& help) {
  Shortcut& s = shortcuts_.emplace_back();
  s.field = field;
  s.opt = cmd_->add_option(flags, s.value, help + " [config: " + prefix_ + field + "]");
  s.opt->default_str(config_field_text(defaults_, field));
  s.opt->type_name(config_field_kind(defaults_, field));
  return s.opt;
}

CLI::Option* CommandConfig::flag(const std::string& flags, const std::string& field,
                                 const std::string& help) {
  Shortcut& s = shortcuts_.emplace_back();
  s.field = field;
  s.is_flag = true;
  s.opt = cmd_->add_flag(flags, s.on, help + " [config: " + prefix_ + field + "]");
  return s.opt;
}

bool CommandConfig::given(const std::string& field) const {
  for (const Shortcut& s : shortcuts_)
    if (s.field == field && s.opt->count() > 0) return true;
  return false;
}

Status CommandConfig::apply_shortcuts(google::protobuf::Message* msg) const {
  for (const Shortcut& s : shortcuts_) {
    if (s.opt->count() == 0) continue;
    const std::string value = s.is_flag ? (s.on ? "true" : "false") : s.value;
    SY_RETURN_IF_ERROR(set_config_field(msg, prefix_ + s.field, value, s.opt->get_name()));
  }
  return Status::Ok();
}

Status CommandConfig::resolve(google::protobuf::Message* msg) const {
  msg->Clear();
  if (!config_.empty()) SY_RETURN_IF_ERROR(load_text_config(config_, msg));
  SY_RETURN_IF_ERROR(apply_shortcuts(msg));
  for (const std::string& s : sets_) SY_RETURN_IF_ERROR(apply_override(msg, s));
  fill_defaults(msg);
  return Status::Ok();
}

}  // namespace sy::launch
