// `switchyard train` on a BERT / BERT-MoE checkpoint: the masked-language-model objective
// (runtime/train/mlm.h) through the same Trainer, data + expert parallel like Qwen2-MoE, with
// --what all | routers, checkpoints that resume bitwise, held-out MLM loss. cmd_train.cc hands
// a run here when the source checkpoint's model_type is bert or bert_moe.
//
// Data: a token file (--token-file, ids in the checkpoint's vocabulary), or the corpus through
// the tokenizer the checkpoint folder has (refused, with the reason, when it has none). The
// tokens are cut into --seq-len sequences visited in the counter-based order of --data-seed
// (as for Qwen2-MoE); step s masks sequence b * P + r of its batch from (--data-seed, s, that
// global index, position), so P ranks and a resumed run mask exactly as one uninterrupted rank.
// [MASK] is id 103 and [PAD] / [CLS] / [SEP] (0, 101, 102) are never chosen: bert-base-uncased's
// vocabulary, which `switchyard init --arch bert_moe` models share.
// --router replaces a bert_moe checkpoint's routers by fresh ones (BertMoeModel::replace_routers;
// no distillation warm start yet). Not for BERT (a clear exit 21): --trace, and --what routers
// on a dense BERT (it has no routers).
#pragma once

#include "comm/communicator.h"
#include "proto/commands.pb.h"
#include "runtime/train/mlm.h"

namespace sy::launch {

// The masked-LM objective of BERT training over bert-base-uncased's vocabulary (the vocabulary
// of `init --arch bert_moe` models): [MASK] is 103; [PAD], [CLS] and [SEP] are never chosen.
// Masks drawn from `seed` (the data seed). Shared by train and study.
MlmConfig bert_masked_lm(uint64_t seed);

// Whether the run's source checkpoint (the latest in --checkpoint-dir when it holds one, else
// --model, else the default model) is a BERT model. False when it cannot be read: the Qwen2-MoE
// path then reports why.
bool train_source_is_bert(const switchyard::TrainConfig& cfg);

// The whole BERT run after the config was validated and agreed; returns the exit code.
// COLLECTIVE over comm.
int run_train_bert(const switchyard::TrainConfig& cfg, Communicator& comm);

}  // namespace sy::launch
