// GPT-2 byte-level BPE tokenizer (OpenAI's encoder.py; the ids match the gpt-3-encoder npm
// package, which the golden test checks). Three steps:
//   1. pre-tokenize with GPT-2's regex
//        's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//      implemented by hand over UTF-8 (gpt2_pretokenize below);
//   2. map each piece's bytes to symbols (the byte-to-unicode table of encoder.json's keys
//      is inverted once at load, so BPE runs on token ids of raw byte strings);
//   3. apply the merges of vocab.bpe, lowest rank first, every occurrence left to right,
//      exactly like encoder.py's bpe() (a min-heap, so a long piece costs O(n log n), not
//      O(n^2)); results are cached per piece.
//
// Unicode: \p{L}, \p{N} and \s are JavaScript's (unicode_classes.h), exact for every code
// point of the Unicode version the tables were generated from. Bytes that are not valid UTF-8
// (stray continuation bytes, overlong forms, surrogates, > U+10FFFF, truncated sequences) are
// each taken as one character of the class [^\s\p{L}\p{N}], so any byte string encodes and
// decode(encode(s)) == s for every s.
//
// Files are untrusted: load() returns NotFound / BadInput with the path and what is wrong,
// never aborts. A loaded tokenizer is immutable apart from its cache (mutex-guarded), so
// encode() may be called from several threads.
//
// The byte-level BPE model (steps 2 and 3) is public for other file formats: HfTokenizer
// (hf_tokenizer.h) builds one from a tokenizer.json with from_vocab() + add_merge() and runs
// its own pre-tokenizer in front of encode_pretoken().
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "runtime/core/status.h"

namespace sy {

// Splits text into GPT-2 pre-tokens (views into text, in order, covering it exactly).
void gpt2_pretokenize(std::string_view text, std::vector<std::string_view>* pieces);

class BpeTokenizer {
 public:
  // How merges of equal rank are applied: one pass over the piece per rank (encoder.py), or
  // strictly the lowest-ranked, then leftmost, pair first (Hugging Face tokenizers).
  enum class MergeOrder { kPassPerRank, kLowestFirst };

  // encoder_json: {"<token>": id, ...} with ids 0..n-1 each used once; keys are byte strings
  // written through GPT-2's byte-to-unicode table. vocab_bpe: an optional "#version" line,
  // then one merge "a b" per line. Every merge's parts and result must be in the vocabulary,
  // and so must all 256 single bytes (then encode() can never produce an unknown symbol).
  static StatusOr<BpeTokenizer> load(const std::string& encoder_json, const std::string& vocab_bpe);
  // The model from raw-byte tokens (id = index): each non-empty and distinct, all 256 single
  // bytes among them. `source` names the file in errors. No merges yet.
  static StatusOr<BpeTokenizer> from_vocab(std::vector<std::string> id_to_bytes,
                                           const std::string& source, MergeOrder order);
  // Adds the merge (a, b) -> merged with the next rank (ids in range; the caller checks that
  // merged is the token a+b). A pair added twice keeps its last rank, like encoder.py's dict
  // and Hugging Face's HashMap. Loading only: not thread-safe, and it does not clear the cache.
  void add_merge(int32_t a, int32_t b, int32_t merged);
  int32_t num_merges() const { return num_merges_; }
  // Appends the BPE ids of one pre-token given as raw bytes (step 3).
  void encode_pretoken(std::string_view piece, std::vector<int32_t>* out) const;

  std::vector<int32_t> encode(std::string_view text) const;
  // Ids outside [0, vocab_size) decode to U+FFFD (a sampled id from a padded vocabulary
  // should not abort a run); the result may be invalid UTF-8 when the ids split a character.
  std::string decode(const std::vector<int32_t>& ids) const;
  int64_t vocab_size() const { return static_cast<int64_t>(id_to_bytes_.size()); }
  // The raw bytes of token `id` (empty when out of range).
  std::string_view token_bytes(int32_t id) const;
  // Id of a token given as raw bytes, or -1 (e.g. token_id("<|endoftext|>") == 50256).
  int32_t token_id(std::string_view bytes) const;

  // The 256-entry GPT-2 table: byte -> a printable code point (bytes that are printable in
  // Latin-1 map to themselves, the rest to U+0100 and up, in order).
  static uint32_t byte_to_unicode(uint8_t b);
  // Inverse for a whole symbol as encoder.json / tokenizer.json write it: its raw bytes, or
  // false when it is empty or has a character outside the table.
  static bool symbol_to_bytes(std::string_view symbol, std::string* raw);

 private:
  struct Merge {
    int32_t rank;
    int32_t result;  // id of the merged symbol
  };
  struct Cache;

  BpeTokenizer();

  std::vector<std::string> id_to_bytes_;
  std::unordered_map<std::string, int32_t> bytes_to_id_;
  int32_t byte_id_[256] = {};
  std::unordered_map<uint64_t, Merge> merges_;  // key: (left id << 32) | right id
  int32_t num_merges_ = 0;
  MergeOrder order_ = MergeOrder::kPassPerRank;
  std::shared_ptr<Cache> cache_;  // piece -> ids; shared by copies
};

}  // namespace sy
