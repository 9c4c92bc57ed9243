// libFuzzer target for the command configs (launch/config.h): any text, parsed as the CLI parses
// a --config file, gives a Status, never a crash, leak or UB (docs/RELIABILITY.md D4). Each input
// is read twice, as a switchyard.RunConfig (infer's file: parse_run_config, validate_run_config,
// its `model` section through validate_model_infer_config, to_stack_config) and as a
// switchyard.TrainConfig (train's: parse_text_config, fill_defaults, validate_train_config,
// validate_trace_config); a parsed config prints (config_text) to a text that parses back to the
// same text. Lines "#set a.b=v" (comments to the parser) are applied as --set overrides, as
// CommandConfig::resolve does, so the fuzzer reaches the field paths and values of --set too.
// Built only with clang (fuzz/CMakeLists.txt); run longer with
//   bash tests/launch/fuzz_smoke.sh . /tmp/fz config 1000000
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "launch/config.h"
#include "launch/trace_run.h"

namespace {

namespace launch = sy::launch;

// The "#set " lines of the input, at most 4 (each --set is one field; more adds nothing).
std::vector<std::string> Overrides(const std::string& text) {
  std::vector<std::string> out;
  size_t pos = 0;
  while (pos < text.size() && out.size() < 4) {
    size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    if (text.compare(pos, 5, "#set ") == 0) out.push_back(text.substr(pos + 5, end - pos - 5));
    pos = end + 1;
  }
  return out;
}

// What the CLI prints (--print-config) must read back and print the same.
void CheckRoundTrip(const google::protobuf::Message& msg) {
  const std::string text = launch::config_text(msg);
  std::unique_ptr<google::protobuf::Message> again(msg.New());
  if (!launch::parse_text_config(text, "round trip", again.get()).ok()) __builtin_trap();
  if (launch::config_text(*again) != text) __builtin_trap();
}

void FuzzRunConfig(const std::string& text, const std::vector<std::string>& sets) {
  auto cfg = launch::parse_run_config(text, "fuzz.pbtxt");
  if (!cfg.ok()) {
    if (cfg.status().code() != sy::StatusCode::kInvalidArgument) __builtin_trap();  // exit 21
    return;
  }
  for (const std::string& s : sets)
    if (!launch::apply_override(&*cfg, s).ok()) return;
  CheckRoundTrip(*cfg);
  if (cfg->has_model()) {
    launch::fill_defaults(cfg->mutable_model());
    (void)launch::validate_model_infer_config(cfg->model());
    return;
  }
  if (!launch::validate_run_config(*cfg).ok()) return;
  (void)launch::to_stack_config(*cfg, 1000);
}

void FuzzTrainConfig(const std::string& text, const std::vector<std::string>& sets) {
  switchyard::TrainConfig cfg;
  if (!launch::parse_text_config(text, "fuzz.pbtxt", &cfg).ok()) return;
  for (const std::string& s : sets)
    if (!launch::apply_override(&cfg, s).ok()) return;
  launch::fill_defaults(&cfg);
  CheckRoundTrip(cfg);
  if (!launch::validate_train_config(cfg).ok()) return;
  (void)launch::validate_trace_config(cfg.trace(), "train");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  const std::vector<std::string> sets = Overrides(text);
  FuzzRunConfig(text, sets);
  FuzzTrainConfig(text, sets);
  return 0;
}
