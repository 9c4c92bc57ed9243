// Unicode character classes for the GPT-2 pre-tokenizer (bpe_tokenizer.cc): \p{L}, \p{N} and
// \s exactly as JavaScript's `u`-flag regexes define them, because the golden ids come from
// the gpt-3-encoder package running under node. Tables are generated, not hand-written
// (gen_unicode_classes.js; the Unicode version is stated in unicode_classes.cc). ASCII takes a
// fast path; everything else is a binary search over sorted, disjoint ranges.
//
// \s here is JavaScript's: U+0009-000D, U+0020, U+00A0, U+1680, U+2000-200A, U+2028-2029,
// U+202F, U+205F, U+3000, U+FEFF. (Python's `regex`, which OpenAI's encoder.py uses, differs
// only in U+0085 and U+FEFF.)
#pragma once

#include <cstdint>

namespace sy {

bool unicode_is_letter(uint32_t cp);  // \p{L}
bool unicode_is_number(uint32_t cp);  // \p{N}
bool unicode_is_space(uint32_t cp);   // \s

}  // namespace sy
