// `switchyard infer --model DIR`: a Hugging Face checkpoint folder (Qwen2-MoE, or a BERT /
// BERT-MoE encoder, upcycled on load when asked) run expert-parallel over the MPI ranks: logits of
// given tokens (--token-ids,
// --prompt through the checkpoint's tokenizer, --token-file), optionally dumped as .npy
// [T, V] on rank 0, and text generation with a KV cache (--max-new-tokens, greedy or sampled
// with a seed). Prints the per-rank memory (replicated weights, this rank's experts, KV
// cache, peak RSS) and the forward time.
#pragma once

#include <cstdint>
#include <string>

#include "comm/communicator.h"
#include "proto/commands.pb.h"
#include "runtime/train/distill.h"

namespace sy::launch {

// The settings as the run reads them, filled from a validated ModelInferConfig (the `model`
// section of an infer config, validate_model_infer_config) by FromConfig: the defaults live in
// proto/commands.proto alone.
struct ModelInferArgs {
  std::string model;       // checkpoint folder
  std::string token_ids;   // "1,5,9"
  std::string prompt;      // text, through the tokenizer
  std::string token_file;  // binary token file (switchyard tokenize); max_tokens limits it
  int64_t max_tokens = 0;  // <= 0: all
  // With token_file: cut it into sequences of seq_len tokens, each rank running its own
  // (rank r: sequences r, r+P, ...), for throughput and routing over a whole corpus.
  int64_t seq_len = 0;
  // With seq_len and no token_file: this corpus (load_corpus name or text file, from data_dir)
  // through the model's tokenizer, cut into sequences the same way.
  std::string corpus;
  std::string data_dir;
  bool loss = false;      // with seq_len: next-token loss over the sequences (decoders)
  std::string tokenizer;  // default: the model folder
  std::string dump;       // .npy of the logits [T, V] (rank 0)
  std::string out;        // per-rank load reports of the forward (switchyard report merges them)
  std::string quantize;   // none | int8 | int4 (routed experts)
  int64_t quant_group = 0;
  std::string router;  // empty: the checkpoint's (linear)
  // --router of another kind than the checkpoint's gate: distill each new router from the
  // gate on this rank's input first (Qwen2-MoE; other models refuse unless distill is off).
  bool distill = true;
  DistillConfig distill_cfg;
  // Set at load: --router named another kind than the checkpoint's, it has parameters and
  // distill was off, so every gate was replaced by a freshly initialised router (synthetic
  // routing in traces).
  bool fresh_routers = false;
  double capacity_factor = 0.0;  // <= 0: dropless (Hugging Face semantics)
  int64_t max_new_tokens = 0;
  double temperature = 0.0;  // 0: greedy
  int64_t top_k = 0;         // sampling: keep the k most likely (0 = all)
  uint64_t seed = 0;
  int64_t repeat = 0;  // forward the same tokens this many times (timing)
  // BERT: a dense checkpoint is upcycled to this many experts per MoE layer (0 = keep it
  // dense, or the bert_moe checkpoint's), every moe_every-th layer, top-k experts per token.
  int64_t upcycle_experts = 0;
  int64_t moe_every = 0;
  int64_t experts_top_k = 0;
  double upcycle_noise = 0.0;
  // Row-stable GEMMs in the token-sharded parts (MoE, LM head): P ranks give the logits of
  // 1 rank bitwise. Off: OpenBLAS, faster, P ranks agree with 1 rank to fp32 rounding.
  bool deterministic = false;
  std::string backend = "cpu";     // a registered backend (--backend)
  std::string comm = "auto";       // --comm
  std::string precision = "fp32";  // --precision
  switchyard::TraceConfig trace;   // --trace DIR [--trace-probs]: routing trace shards
  // --set moe.placement=FILE (the run config's moe section, not FromConfig's): which rank holds
  // which experts (comm/placement.h); empty: contiguous.
  std::string placement;

  static ModelInferArgs FromConfig(const switchyard::ModelInferConfig& c);
};

// Collective over comm. Returns the process exit code (the same on every rank).
int run_model_infer(const ModelInferArgs& a, Communicator& comm);

}  // namespace sy::launch
