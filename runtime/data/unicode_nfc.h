// Unicode Normalization Form C (UAX #15), for tokenizers whose tokenizer.json asks for the
// "NFC" normalizer (Qwen2). Tables come from the Unicode Character Database
// (unicode_nfc_tables.inc, written by gen_unicode_nfc.js; the version is named there), checked
// against node's String.prototype.normalize('NFC'). Hangul is composed algorithmically.
//
// Only stretches that can change are normalized: a character is "unsafe" when it is a
// non-starter, decomposes to something it does not recompose to, or is the second half of a
// composition; each run of unsafe characters is normalized together with the starter right
// before it, everything else is copied. Plain ASCII / Latin-1 text costs one scan.
//
// Invalid UTF-8 (utf8.h) is left out of normalization: each invalid byte is copied unchanged
// and acts as a boundary, so nothing reorders or composes across it. NFC is idempotent on the
// valid stretches, and the output has exactly the invalid bytes of the input, in order.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace sy {

// Appends NFC(text) to *out.
void nfc_normalize(std::string_view text, std::string* out);
inline std::string nfc_normalize(std::string_view text) {
  std::string s;
  nfc_normalize(text, &s);
  return s;
}

// Canonical combining class of a code point (0 for starters and unassigned ones).
uint8_t unicode_combining_class(uint32_t cp);

// NFD in two steps over code points (unicode_bert.h's, for BERT): append the full canonical
// decomposition of one code point (Hangul included), then put each run of non-starters of the
// whole sequence in canonical order.
void unicode_decompose(uint32_t cp, std::vector<uint32_t>* out);
void unicode_canonical_order(std::vector<uint32_t>* cps);

}  // namespace sy
