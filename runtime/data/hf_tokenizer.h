// Hugging Face tokenizer.json with a byte-level BPE model: Qwen2 / Qwen1.5-MoE / Qwen3. encode()
// is tokenizers' encode(text, add_special_tokens=False) (Qwen has no post-processor tokens):
//   1. added tokens (added_tokens[], specials like <|endoftext|> or <|im_start|>) are cut out
//      of the raw text literally, leftmost match first and the longest one there;
//   2. the text between them is NFC-normalized (normalizer {"type": "NFC"}; null: none);
//   3. pre-tokenized with Qwen2's Split regex (qwen_pretokenize below; the file must carry
//      exactly that pattern, behavior Isolated), then ByteLevel (add_prefix_space false,
//      use_regex false): each piece's bytes are the BPE symbols;
//   4. BPE: the lowest-ranked adjacent pair first, then the leftmost (tokenizers' merge_all;
//      BpeTokenizer::MergeOrder::kLowestFirst). ignore_merges true is honoured (a piece that
//      is a whole token is taken as is).
// decode() concatenates token bytes (the ByteLevel decoder) and the contents of added tokens.
//
// Unicode: \p{L}, \p{N} are JavaScript's tables (unicode_classes.h); \s is Unicode White_Space
// as in tokenizers' regex engines (JavaScript's \s plus U+0085, less U+FEFF). (?i:'s|...)
// folds case: 's also matches 'S and U+017F (long s). Invalid UTF-8 bytes are each one
// character of class [^\s\p{L}\p{N}], are left out of NFC (unicode_nfc.h), and keep their
// bytes, so any byte string encodes and decode(encode(s)) == NFC(s) (s itself for invalid
// stretches); the reference is tests/reference/qwen_tokenize_ref.js (node).
//
// Not implemented, rejected at load with a message naming the field: other model types,
// normalizers, pre-tokenizers or decoders; BPE dropout, continuing_subword_prefix,
// end_of_word_suffix, byte_fallback; added tokens with lstrip, rstrip or single_word.
// Added tokens with "normalized": true are matched in the raw text like the others (tokenizers
// matches them after normalization; the same unless NFC changes the text around them).
//
// The file is untrusted: load() returns NotFound / BadInput naming the path and the problem,
// never aborts; sizes are capped (kMaxFileBytes, kMaxTokens, kMaxMerges, kMaxAddedTokens).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/core/status.h"
#include "runtime/data/bpe_tokenizer.h"
#include "runtime/data/tokenizer.h"

namespace sy {

// Splits text into pieces of Qwen2's pre-tokenizer regex
//   (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|
//   \s*[\r\n]+|\s+(?!\S)|\s+
// (views into text, in order, covering it exactly).
void qwen_pretokenize(std::string_view text, std::vector<std::string_view>* pieces);

class HfTokenizer final : public Tokenizer {
 public:
  static constexpr int64_t kMaxFileBytes = int64_t{1} << 28;  // 256 MiB
  static constexpr int64_t kMaxTokens = int64_t{1} << 22;     // model vocabulary
  static constexpr int64_t kMaxMerges = int64_t{1} << 22;
  static constexpr int64_t kMaxAddedTokens = 1 << 16;
  static constexpr int64_t kMaxTokenBytes = 1 << 16;  // one token's text

  // path: a tokenizer.json file.
  static StatusOr<std::unique_ptr<HfTokenizer>> load(const std::string& path);

  std::vector<int32_t> encode(std::string_view text) const override;
  std::string decode(const std::vector<int32_t>& ids) const override;
  int64_t vocab_size() const override { return vocab_size_; }
  std::string name() const override { return "hf-bpe " + path_; }

  // Id of an added token given by its content, or -1.
  int32_t added_token_id(std::string_view content) const;
  const BpeTokenizer& model() const { return model_; }

 private:
  struct Added {
    std::string content;
    int32_t id;
  };
  HfTokenizer(BpeTokenizer model, std::string path) : model_(std::move(model)), path_(path) {}
  void encode_text(std::string_view text, std::string* scratch, std::vector<int32_t>* ids) const;

  BpeTokenizer model_;
  std::string path_;
  bool nfc_ = false;
  bool ignore_merges_ = false;
  std::vector<Added> added_;              // longest content first
  bool added_first_byte_[256] = {};       // some added token starts with this byte
  std::vector<std::string> added_by_id_;  // id - model_.vocab_size() -> content
  int64_t vocab_size_ = 0;
};

}  // namespace sy
