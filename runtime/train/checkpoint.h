// Saving and resuming a training run (Qwen2-MoE, BERT-MoE) across ranks (issue 5). The layout
// on disk, the manifest and the atomic publish are runtime/io/checkpoint_dir.h; this file
// decides what goes in:
//
//   config.json                  model.config_json() (rank 0), router kind included
//   model-replicated.safetensors every non-expert parameter, fp32 (rank 0)
//   model-experts-0000r-of-0000P.safetensors
//                                rank r's routed experts under their GLOBAL Hugging Face names
//                                (Model::expert_tensor_kinds: Qwen2-MoE's
//                                model.layers.{i}.mlp.experts.{j}.{gate,up,down}_proj.weight);
//                                frozen experts the rank does not hold in fp32 (quantized)
//                                are copied from the source checkpoint
//   model.safetensors.index.json every tensor -> its file (rank 0): the folder is a model
//   router.safetensors           the routers alone, the ".gate." parameters (model.layers.{i}.
//                                mlp.gate.*, bert.encoder.layer.{i}.moe.gate.*; rank 0), to
//                                put back into a Hugging Face checkpoint
//   optimizer-replicated.safetensors, optimizer-experts-0000r-of-0000P.safetensors
//                                AdamW moments exp_avg.<name> / exp_avg_sq.<name>, experts by
//                                global id like the weights
//   trainer_state.json           TrainState (rank 0)
//   tokenizer files              copied from the source model (rank 0)
//
// Each rank writes only what it owns; every file's SHA-256 is taken from the bytes as they
// are handed to write(), so a bit flipped on the way to the disk is caught at load. Because
// experts and their moments are stored by global id, a run saved with P ranks resumes with any
// P' that divides E (the data position is counted in global sequences).
#pragma once

#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "comm/communicator.h"
#include "runtime/core/status.h"
#include "runtime/io/hf_checkpoint.h"
#include "runtime/model/model.h"
#include "runtime/train/adamw.h"

namespace sy {

// What resuming needs besides the weights and the moments.
struct TrainState {
  int64_t step = 0;           // loop steps done: the next step to run
  int64_t data_position = 0;  // global training sequences consumed so far
  uint64_t data_seed = 0;     // the data order's RNG stream (counter-based: seed + position)
  int world_size = 1;         // ranks of the run that saved
  nlohmann::json run;         // the settings a resume must match (what, router, batch, ...)
  nlohmann::json to_json(int64_t optimizer_step) const;
};

struct SaveRequest {
  std::string root;        // the checkpoint root (--checkpoint-dir)
  Model* model = nullptr;  // COLLECTIVE: the same model on every rank
  const AdamW* optimizer = nullptr;
  TrainState state;                      // state.step names the folder
  const HfCheckpoint* source = nullptr;  // frozen experts and tokenizer files come from here
  int keep_last = 0;  // after publishing, delete all but the newest N (0: keep all)
};

// COLLECTIVE over comm (null: one rank). Every rank returns the same status: any rank's write
// failure removes the temporary folder and fails the save everywhere.
Status save_checkpoint(const SaveRequest& req, Communicator* comm);

// trainer_state.json of a checkpoint folder (a step folder, already verified), and the
// optimizer step count saved with it.
StatusOr<TrainState> read_train_state(const std::string& dir, int64_t* optimizer_step);

// Restores the AdamW moments of every trained parameter this rank holds (replicated ones by
// name, this rank's experts from their global ids) and the step count. kBadInput when a moment
// is missing or has the wrong size.
Status load_optimizer_state(const std::string& dir, Model& model, int64_t optimizer_step,
                            AdamW* opt);

}  // namespace sy
