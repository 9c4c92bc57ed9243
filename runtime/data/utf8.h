// Strict UTF-8 decoding and encoding shared by the tokenizers and NFC. Strict means no overlong
// forms, no surrogates (U+D800-DFFF) and nothing above U+10FFFF: every byte that does not start
// a well-formed character is reported as one invalid character of length 1, so a decoder loop
// over any byte string makes progress and covers every byte exactly once.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace sy {

// The code point reported for a byte that does not start a well-formed character.
constexpr uint32_t kInvalidCodePoint = 0xFFFFFFFFu;

// Decodes the character at s[i] (i < s.size()); returns its length in bytes. An invalid byte is
// one character with *cp = kInvalidCodePoint.
inline size_t utf8_next(std::string_view s, size_t i, uint32_t* cp) {
  const auto at = [&](size_t k) { return static_cast<uint8_t>(s[k]); };
  const uint8_t b0 = at(i);
  *cp = kInvalidCodePoint;
  if (b0 < 0x80) {
    *cp = b0;
    return 1;
  }
  size_t len = 0;
  uint8_t lo = 0x80, hi = 0xBF;  // allowed range of the first continuation byte
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    len = 2;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    len = 3;
    if (b0 == 0xE0) lo = 0xA0;
    if (b0 == 0xED) hi = 0x9F;
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    len = 4;
    if (b0 == 0xF0) lo = 0x90;
    if (b0 == 0xF4) hi = 0x8F;
  } else {
    return 1;
  }
  if (i + len > s.size() || at(i + 1) < lo || at(i + 1) > hi) return 1;
  uint32_t c = b0 & (0xFF >> (len + 1));
  for (size_t k = 1; k < len; ++k) {
    if (k > 1 && (at(i + k) & 0xC0) != 0x80) return 1;
    c = (c << 6) | (at(i + k) & 0x3F);
  }
  *cp = c;
  return len;
}

// Appends the UTF-8 form of a valid code point (not a surrogate, <= U+10FFFF).
inline void utf8_append(uint32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

// The characters of a text for the hand-written regex pre-tokenizers: off[k] is the byte offset
// of character k (and off[size()] == text.size()), cls[k] = classify(its code point), with
// kInvalidCodePoint for an invalid byte.
struct Utf8Chars {
  std::vector<size_t> off;
  std::vector<uint8_t> cls;

  template <typename Classify>
  Utf8Chars(std::string_view text, Classify classify) {
    off.reserve(text.size() + 1);
    cls.reserve(text.size());
    for (size_t i = 0; i < text.size();) {
      uint32_t cp;
      const size_t len = utf8_next(text, i, &cp);
      off.push_back(i);
      cls.push_back(classify(cp));
      i += len;
    }
    off.push_back(text.size());
  }
  size_t size() const { return cls.size(); }
  // The first character at or after i whose class is not c.
  size_t run_end(size_t i, uint8_t c) const {
    while (i < cls.size() && cls[i] == c) ++i;
    return i;
  }
};

}  // namespace sy
