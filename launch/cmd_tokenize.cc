// `switchyard tokenize`: a corpus through a tokenizer (Hugging Face tokenizer.json, GPT-2
// encoder.json + vocab.bpe or BERT WordPiece, runtime/data/tokenizer.h) into a binary token file
// (runtime/data/token_file.h) that training and inference read without the tokenizer.
// Single process; prints the counts and the encode throughput.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>

#include "launch/commands.h"
#include "launch/config.h"
#include "launch/config_cli.h"
#include "runtime/data/corpus.h"
#include "runtime/data/token_file.h"
#include "runtime/data/tokenizer.h"
#include "runtime/io/checkpoint_dir.h"

namespace sy::launch {
namespace {

// The settings as the run reads them, filled from a validated TokenizeConfig (the defaults
// live in proto/commands.proto).
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

int run_tokenize(const CommandConfig& cc) {
  switchyard::TokenizeConfig cfg;
  Status checked = cc.resolve(&cfg);
  if (checked.ok()) checked = validate_tokenize_config(cfg);
  if (!checked.ok()) return fail(checked);
  if (cc.print_config()) {
    std::printf("%s", config_text(cfg).c_str());
    return 0;
  }
  TokenizeArgs a{cfg.tokenizer(), cfg.corpus(), cfg.out(), cfg.max_tokens(), cfg.data_dir()};
  if (a.data_dir.empty()) a.data_dir = default_data_dir();
  using Clock = std::chrono::steady_clock;
  const auto t_load = Clock::now();
  // A checkpoint folder (models/default): its newest published step holds the tokenizer.
  StatusOr<std::string> path = resolve_model_dir_unverified(a.tokenizer);
  if (!path.ok()) return fail(path.status());
  StatusOr<std::unique_ptr<Tokenizer>> tok = load_tokenizer(*path);
  if (!tok.ok()) return fail(tok.status());
  const double load_s = std::chrono::duration<double>(Clock::now() - t_load).count();
  StatusOr<std::string> text = load_corpus(a.corpus, a.data_dir);
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
  CLI::App* cmd = app.add_subcommand(
      "tokenize", "Tokenize a corpus into a binary token file (runtime/data/token_file.h)");
  auto c = std::make_shared<CommandConfig>(cmd, switchyard::TokenizeConfig::default_instance());
  c->add_config_options();
  c->option("--tokenizer", "tokenizer",
            "tokenizer.json, a folder with tokenizer.json, encoder.json + vocab.bpe or BERT's "
            "vocab.txt / vocab.json, or a model or checkpoint folder (e.g. models/default); "
            "required");
  c->option("--corpus", "corpus", "moby_dick | sotu | excerpt | a text file; required");
  c->option("--out", "out", "token file to write (e.g. tokens.bin); required");
  c->option("--max-tokens", "max_tokens", "keep the first N tokens, 0 = all");
  c->option("--data-dir", "data_dir",
            "data folder for corpus names (default: $SY_DATA_DIR or the repo's data/)");
  cmd->callback([c] { set_exit_code(run_tokenize(*c)); });
}

}  // namespace sy::launch
