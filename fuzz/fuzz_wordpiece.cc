// libFuzzer target for BERT WordPiece (runtime/data/wordpiece_tokenizer.h): any bytes encode,
// never a crash, leak or UB; ids are in range; invalid UTF-8 acts as absent (each invalid byte
// is U+FFFD, which cleaning drops); every word of the BasicTokenizer is valid UTF-8 and free of
// whitespace; decode of the ids does not fail. The vocabulary is a small one written here, with
// multi-byte pieces, so most inputs reach WordPiece's matching and its [UNK] paths. Built only
// with clang (fuzz/CMakeLists.txt); tests/launch/fuzz_smoke.sh runs it as fuzz_wordpiece_smoke,
// or longer:
//   bash tests/launch/fuzz_smoke.sh . /tmp/fz wordpiece 1000000
#include <cstdint>
#include <string>
#include <vector>

#include "runtime/data/utf8.h"
#include "runtime/data/wordpiece_tokenizer.h"

namespace {

const sy::WordPieceTokenizer& Tokenizer() {
  static const sy::WordPieceTokenizer t = [] {
    auto r = sy::WordPieceTokenizer::from_tokens(
        {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "a", "##a", "ab", "##b", "caf", "##e", "σ", "##ς",
         "日", "##本", "!", ",", "##\xE2\x80\x94", "\xC3\xB8", "##\xC3\xB8"},
        "fuzz");
    if (!r.ok()) __builtin_trap();
    return std::move(r).value();
  }();
  return t;
}

std::string ValidPart(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size();) {
    uint32_t cp;
    const size_t len = sy::utf8_next(s, i, &cp);
    if (cp != sy::kInvalidCodePoint) out.append(s, i, len);
    i += len;
  }
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  const sy::WordPieceTokenizer& t = Tokenizer();
  const std::vector<int32_t> ids = t.encode(text);
  for (int32_t id : ids)
    if (id < 0 || id >= t.vocab_size()) __builtin_trap();
  if (t.encode(ValidPart(text)) != ids) __builtin_trap();
  for (const std::string& w : sy::bert_basic_tokenize(text)) {
    if (w.empty() || ValidPart(w) != w) __builtin_trap();
    for (char c : w)
      if (c == ' ') __builtin_trap();
  }
  (void)t.decode(ids);
  return 0;
}
