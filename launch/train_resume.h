// What `train --resume` (Qwen2-MoE and BERT-MoE) checks against the run that saved: the
// settings that define the data and what is trained must match (refused otherwise, always);
// the settings that change the optimizer's path (lr, schedule, batch, balancing, ...) must match
// for the resumed run to continue the saved one bitwise, and are refused unless
// --resume-override, which names each in a warning. --steps may change: a run can be extended
// (its learning-rate schedule then follows the new total).
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "proto/commands.pb.h"
#include "runtime/core/status.h"

namespace sy::launch {

// The settings a checkpoint records (TrainState::run): objective ("next_token" | "masked_lm"),
// router (the one trained), and the TrainConfig fields of both kinds above.
nlohmann::json resume_settings(const switchyard::TrainConfig& c, const std::string& router,
                               const std::string& objective);

// `saved` (the checkpoint's) against `want` (this run's): a key absent from `saved` (a
// checkpoint from before it was recorded) is not compared. A changed data setting, or a changed
// optimizer setting without c.resume_override(), is InvalidArgument naming every changed key
// with both values; with the override, *overridden lists them ("lr: 0.001 -> 0.002").
Status check_resume_settings(const std::string& dir, const nlohmann::json& saved,
                             const nlohmann::json& want, bool override_allowed,
                             std::string* overridden);

// Rank 0's warning line for the settings --resume-override accepted (nothing when none).
void print_resume_override(const std::string& overridden);

}  // namespace sy::launch
