// Shared by the Qwen2-MoE tests: the small config the training tests train (8 experts of 16,
// top-2, a shared expert, vocabulary 64), a per-process temporary folder for a checkpoint, and
// loading a checkpoint as a test step.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <memory>
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

// The model in `dir`, on the ranks of `comm` (null: one rank); a test failure, and null, when it
// does not load.
inline std::unique_ptr<Qwen2MoeModel> LoadQwen(const std::string& dir,
                                               const Qwen2MoeOptions& opt = {},
                                               Communicator* comm = nullptr) {
  auto ck = HfCheckpoint::Open(dir);
  EXPECT_TRUE(ck.ok()) << ck.status().ToString();
  if (!ck.ok()) return nullptr;
  auto m = Qwen2MoeModel::load(*ck, opt, comm);
  EXPECT_TRUE(m.ok()) << m.status().ToString();
  return m.ok() ? std::move(m).value() : nullptr;
}
inline std::unique_ptr<Qwen2MoeModel> LoadQwen(const std::string& dir, Qwen2MoeTrain train,
                                               Communicator* comm = nullptr) {
  Qwen2MoeOptions opt;
  opt.train = train;
  return LoadQwen(dir, opt, comm);
}

}  // namespace sy
