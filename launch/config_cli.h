// One command's configuration on its command line. A command's settings are one protobuf
// message (proto/commands.proto); on the command line:
//   --config FILE    the message in protobuf text format (absent fields: the .proto defaults)
//   --set a.b=v      one field (repeatable; v in text-format syntax, strings may be bare)
//   --print-config   print the effective message, every field, to pass back with --config
//   --steps 5 ...    shortcut flags, one field each
// Precedence, lowest first: the .proto defaults < --config < shortcut flags < --set. Each
// shortcut's --help default is the field's default in the .proto (the one source).
#pragma once

#include <google/protobuf/message.h>
#include <CLI/CLI.hpp>

#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "runtime/core/status.h"

namespace sy::launch {

// Precedence line for --help footers and the README.
extern const char kConfigPrecedence[];

class CommandConfig {
 public:
  // `defaults`: the message whose values --help shows (a default instance); `prefix` is put
  // before every shortcut's field path ("model." for the section of an infer config).
  CommandConfig(CLI::App* cmd, const google::protobuf::Message& defaults, std::string prefix = "");

  // --config, --set and --print-config (a command that has its own leaves this out).
  void add_config_options();
  // A shortcut option setting `field` (relative to the prefix) to its value.
  CLI::Option* option(const std::string& flags, const std::string& field, const std::string& help);
  // A shortcut flag: `field` = true (false through a CLI11 "!--no-x" name).
  CLI::Option* flag(const std::string& flags, const std::string& field, const std::string& help);

  // defaults < --config < shortcuts < --set, into *msg (cleared first); then every default
  // written out (fill_defaults). Errors are InvalidArgument (exit 21) naming the field.
  Status resolve(google::protobuf::Message* msg) const;
  // The shortcuts that were given, applied to *msg (for a command that layers by hand).
  Status apply_shortcuts(google::protobuf::Message* msg) const;
  // Was the shortcut of `field` given?
  bool given(const std::string& field) const;

  const std::string& config_file() const { return config_; }
  const std::vector<std::string>& sets() const { return sets_; }
  bool print_config() const { return print_config_; }

 private:
  struct Shortcut {
    CLI::Option* opt = nullptr;
    std::string field;
    std::string value;  // options
    bool on = false;    // flags
    bool is_flag = false;
  };
  CLI::App* cmd_;
  const google::protobuf::Message& defaults_;
  std::string prefix_;
  std::deque<Shortcut> shortcuts_;  // stable addresses: CLI11 writes into them
  std::string config_;
  std::vector<std::string> sets_;
  bool print_config_ = false;
};

}  // namespace sy::launch
