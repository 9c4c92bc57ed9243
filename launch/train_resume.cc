#include "launch/train_resume.h"

#include <cstdio>

#include "runtime/core/json_input.h"

namespace sy::launch {
namespace {

using json = nlohmann::json;

// Changing one of these makes the resumed run another run: other data or other parameters.
constexpr const char* kDataKeys[] = {"objective",   "what",   "router",     "seq_len",
                                     "eval_tokens", "corpus", "token_file", "quantize"};

bool is_data_key(const std::string& k) {
  for (const char* d : kDataKeys)
    if (k == d) return true;
  return false;
}

}  // namespace

json resume_settings(const switchyard::TrainConfig& c, const std::string& router,
                     const std::string& objective) {
  return {// the data and what is trained
          {"objective", objective},
          {"what", c.what()},
          {"router", router},
          {"seq_len", c.seq_len()},
          {"eval_tokens", c.eval_tokens()},
          {"corpus", c.token_file().empty() ? c.corpus() : ""},
          {"token_file", c.token_file()},
          {"quantize", c.quantize()},
          // the optimizer's path: a bitwise continuation needs them unchanged. --steps may
          // change (a run extended); the learning-rate schedule then follows the new total.
          {"batch", c.batch()},
          {"lr", c.lr()},
          {"warmup", c.warmup()},
          {"weight_decay", c.weight_decay()},
          {"clip", c.clip()},
          {"aux_loss", c.aux_loss()},
          {"router_lr_scale", c.router_lr_scale()},
          {"balance_rate", c.balance_rate()},
          {"capacity_factor", c.capacity_factor()},
          {"data_seed", c.data_seed()},
          {"deterministic", c.deterministic()},
          {"backend", c.backend()},
          {"on_nonfinite", c.on_nonfinite()}};
}

Status check_resume_settings(const std::string& dir, const json& saved, const json& want,
                             bool override_allowed, std::string* overridden) {
  std::string data, optimizer;
  for (auto& [k, v] : want.items()) {
    auto it = saved.find(k);
    if (it == saved.end() || *it == v) continue;
    const std::string change = k + " " + json_brief(*it) + " -> " + json_brief(v);
    std::string& list = is_data_key(k) ? data : optimizer;
    list += (list.empty() ? "" : ", ") + change;
  }
  if (!data.empty())
    return InvalidArgument("train --resume: " + dir +
                           " was saved by a run on other data or parameters: " + data +
                           " (use another --checkpoint-dir)");
  if (!optimizer.empty() && !override_allowed)
    return InvalidArgument("train --resume: " + dir +
                           " was saved with other settings: " + optimizer +
                           "; the resumed run would not continue it bitwise (pass "
                           "--resume-override to accept them)");
  if (overridden) *overridden = optimizer;
  return Status::Ok();
}

void print_resume_override(const std::string& overridden) {
  if (overridden.empty()) return;
  std::printf(
      "warning: --resume-override: settings changed since the save (%s); this run does not "
      "continue the saved one bitwise\n",
      overridden.c_str());
}

}  // namespace sy::launch
