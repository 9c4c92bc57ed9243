// `switchyard tokenize`: a corpus through a tokenizer (Hugging Face tokenizer.json or GPT-2
// encoder.json + vocab.bpe, runtime/data/tokenizer.h) into a binary token file
// (runtime/data/token_file.h) that training and inference read without the tokenizer.
// Single process; prints the counts and the encode throughput.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>

#include "launch/commands.h"
#include "runtime/data/corpus.h"
#include "runtime/data/token_file.h"
#include "runtime/data/tokenizer.h"
#include "runtime/io/checkpoint_dir.h"

namespace sy::launch {
namespace {

struct TokenizeArgs {
  std::string tokenizer;
  std::string corpus;
  std::string out;
  int64_t max_tokens = 0;
  std::string data_dir;
};

int fail(const Status& st) {
  std::fprintf(stderr, "switchyard tokenize: %s\n", st.ToString().c_str());
  return st.exit_code();
}

bool is_corpus_name(const std::string& s) {
  for (const std::string& name : corpus_names())
    if (name == s) return true;
  return false;
}

int run_tokenize(TokenizeArgs a) {
  if (a.data_dir.empty()) {
    a.data_dir = default_data_dir();
  }
  if (a.max_tokens < 0)
    return fail(InvalidArgument("--max-tokens " + std::to_string(a.max_tokens) + " < 0"));
  using Clock = std::chrono::steady_clock;
  const auto t_load = Clock::now();
  // A checkpoint folder (models/default): its newest published step holds the tokenizer.
  StatusOr<std::string> path = resolve_model_dir_unverified(a.tokenizer);
  if (!path.ok()) return fail(path.status());
  StatusOr<std::unique_ptr<Tokenizer>> tok = load_tokenizer(*path);
  if (!tok.ok()) return fail(tok.status());
  const double load_s = std::chrono::duration<double>(Clock::now() - t_load).count();
  StatusOr<std::string> text =
      is_corpus_name(a.corpus) ? load_corpus(a.corpus, a.data_dir) : read_file(a.corpus);
  if (!text.ok()) return fail(text.status());
  std::printf("tokenizer  %s (vocab %lld, loaded in %.2f s)\n", (*tok)->name().c_str(),
              static_cast<long long>((*tok)->vocab_size()), load_s);

  const auto t0 = Clock::now();
  std::vector<int32_t> ids = (*tok)->encode(*text);
  const double s = std::chrono::duration<double>(Clock::now() - t0).count();
  const size_t encoded = ids.size();
  if (a.max_tokens > 0 && ids.size() > static_cast<size_t>(a.max_tokens))
    ids.resize(static_cast<size_t>(a.max_tokens));
  std::printf("corpus     %s: %zu bytes -> %zu tokens (%.3f bytes/token)\n", a.corpus.c_str(),
              text->size(), encoded, encoded > 0 ? double(text->size()) / encoded : 0.0);
  std::printf("encode     %.3f s, %.0f tokens/s, %.2f MB/s\n", s, s > 0 ? encoded / s : 0.0,
              s > 0 ? text->size() / s / 1e6 : 0.0);
  Status st = write_token_file(a.out, ids, (*tok)->vocab_size());
  if (!st.ok()) return fail(st);
  std::printf("wrote      %s: %zu tokens%s, %lld bytes\n", a.out.c_str(), ids.size(),
              ids.size() < encoded ? " (--max-tokens)" : "",
              static_cast<long long>(kTokenFileHeaderBytes + 4 * ids.size()));
  return 0;
}

}  // namespace

void add_tokenize_command(CLI::App& app) {
  auto args = std::make_shared<TokenizeArgs>();
  CLI::App* cmd = app.add_subcommand(
      "tokenize", "Tokenize a corpus into a binary token file (runtime/data/token_file.h)");
  cmd->add_option("--tokenizer", args->tokenizer,
                  "tokenizer.json, a folder with tokenizer.json or encoder.json + vocab.bpe, or a "
                  "model or checkpoint folder (e.g. models/default)")
      ->required();
  cmd->add_option("--corpus", args->corpus, "moby_dick | sotu | excerpt | a text file")->required();
  cmd->add_option("--out", args->out, "token file to write (e.g. tokens.bin)")->required();
  cmd->add_option("--max-tokens", args->max_tokens, "keep the first N tokens, 0 = all")
      ->capture_default_str();
  cmd->add_option("--data-dir", args->data_dir,
                  "data folder for corpus names (default: $SY_DATA_DIR or the repo's data/)");
  cmd->callback([args] { set_exit_code(run_tokenize(*args)); });
}

}  // namespace sy::launch
