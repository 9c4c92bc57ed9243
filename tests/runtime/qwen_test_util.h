// Shared by the training tests: the small Qwen2-MoE config they train (8 experts of 16, top-2,
// a shared expert, vocabulary 64) and a per-process temporary folder for its checkpoint.
#pragma once

#include <unistd.h>

#include <filesystem>
#include <string>

#include <nlohmann/json.hpp>

#include "runtime/model/qwen2_moe.h"

namespace sy {

inline nlohmann::json SmallTrainConfig() {
  return {{"vocab_size", 64},
          {"hidden_size", 32},
          {"num_hidden_layers", 2},
          {"num_attention_heads", 4},
          {"num_key_value_heads", 2},
          {"intermediate_size", 24},
          {"moe_intermediate_size", 16},
          {"shared_expert_intermediate_size", 16},
          {"num_experts", 8},
          {"num_experts_per_tok", 2},
          {"initializer_range", 0.1}};
}

// A fresh (removed) path under the temporary folder, unique per process and tag.
inline std::string TempModelDir(const std::string& tag) {
  const std::string dir =
      (std::filesystem::temp_directory_path() / ("sy_" + tag + "_" + std::to_string(::getpid())))
          .string();
  std::filesystem::remove_all(dir);
  return dir;
}

}  // namespace sy
