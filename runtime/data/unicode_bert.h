// The Unicode character data of BERT's BasicTokenizer (wordpiece_tokenizer.h): general
// categories as Python's unicodedata.category() gives them to BERT's _is_control,
// _is_whitespace, _is_punctuation and _run_strip_accents, and full lower-casing as str.lower()
// does it, and NFD. Tables are generated from node (gen_unicode_bert.js; the Unicode version is
// stated in unicode_bert_tables.inc), so the node reference of the tests sees the same data.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace sy {

bool unicode_is_other(uint32_t cp);            // C*: Cc Cf Cs Co Cn (unassigned included)
bool unicode_is_punctuation(uint32_t cp);      // P*
bool unicode_is_space_separator(uint32_t cp);  // Zs
bool unicode_is_nonspacing_mark(uint32_t cp);  // Mn

// Appends the full lower-case mapping of cps[0, n) (U+0130 gives two code points), with
// Final_Sigma: U+03A3 lowers to final U+03C2 when a cased letter precedes it and none follows
// it within the span (case-ignorable characters skipped both ways), else to U+03C3.
void unicode_to_lower(const uint32_t* cps, size_t n, std::vector<uint32_t>* out);

// Sets *out to NFD of cps[0, n): each code point's full canonical decomposition (node's, Hangul
// syllables algorithmically), then canonical ordering by combining class (unicode_nfc.h's
// classes, from the UCD of unicode_nfc_tables.inc).
void unicode_to_nfd(const uint32_t* cps, size_t n, std::vector<uint32_t>* out);

}  // namespace sy
