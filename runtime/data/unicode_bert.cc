// Lookups over the generated tables of unicode_bert_tables.inc (gen_unicode_bert.js): ASCII
// never reaches a table where a branch answers, the rest is a binary search over sorted,
// disjoint ranges.
#include "runtime/data/unicode_bert.h"

#include <algorithm>
#include <iterator>

#include "runtime/data/unicode_nfc.h"

namespace sy {
namespace {

struct Range {
  uint32_t lo, hi;  // inclusive
};
struct LowerMap {
  uint32_t cp, first, second;  // second == 0: a one-code-point mapping
};

#include "runtime/data/unicode_bert_tables.inc"

template <size_t N>
bool in_ranges(const Range (&table)[N], uint32_t cp) {
  const Range* it = std::upper_bound(std::begin(table), std::end(table), cp,
                                     [](uint32_t c, const Range& r) { return c < r.lo; });
  return it != std::begin(table) && cp <= std::prev(it)->hi;
}

constexpr uint32_t kCapitalSigma = 0x3A3, kSmallSigma = 0x3C3, kFinalSigma = 0x3C2;

bool is_cased(uint32_t cp) {
  return in_ranges(kCased, cp);
}
bool is_case_ignorable(uint32_t cp) {
  return in_ranges(kCaseIgnorable, cp);
}

// Unicode 3.13 Final_Sigma at cps[i]: Before C: cased (case-ignorable)*; After C: not
// (case-ignorable)* cased.
bool is_final_sigma(const uint32_t* cps, size_t n, size_t i) {
  size_t b = i;
  while (b > 0 && is_case_ignorable(cps[b - 1])) --b;
  if (b == 0 || !is_cased(cps[b - 1])) return false;
  size_t a = i + 1;
  while (a < n && is_case_ignorable(cps[a])) ++a;
  return a == n || !is_cased(cps[a]);
}

}  // namespace

bool unicode_is_other(uint32_t cp) {
  if (cp < 0x80) return cp < 0x20 || cp == 0x7F;
  return in_ranges(kOther, cp);
}
bool unicode_is_punctuation(uint32_t cp) {
  return in_ranges(kPunct, cp);
}
bool unicode_is_space_separator(uint32_t cp) {
  if (cp < 0x80) return cp == ' ';
  return in_ranges(kSpaceSep, cp);
}
bool unicode_is_nonspacing_mark(uint32_t cp) {
  return cp >= 0x300 && in_ranges(kNonspacingMark, cp);
}

void unicode_to_lower(const uint32_t* cps, size_t n, std::vector<uint32_t>* out) {
  for (size_t i = 0; i < n; ++i) {
    const uint32_t cp = cps[i];
    if (cp < 0x80) {
      out->push_back(cp >= 'A' && cp <= 'Z' ? cp + ('a' - 'A') : cp);
      continue;
    }
    if (cp == kCapitalSigma) {
      out->push_back(is_final_sigma(cps, n, i) ? kFinalSigma : kSmallSigma);
      continue;
    }
    const LowerMap* it = std::lower_bound(std::begin(kLower), std::end(kLower), cp,
                                          [](const LowerMap& m, uint32_t c) { return m.cp < c; });
    if (it == std::end(kLower) || it->cp != cp) {
      out->push_back(cp);
      continue;
    }
    out->push_back(it->first);
    if (it->second != 0) out->push_back(it->second);
  }
}

void unicode_to_nfd(const uint32_t* cps, size_t n, std::vector<uint32_t>* out) {
  constexpr size_t kStride = 5;  // code point, then its decomposition padded with 0 to 4
  constexpr size_t kEntries = std::size(kNfd) / kStride;
  out->clear();
  for (size_t i = 0; i < n; ++i) {
    const uint32_t cp = cps[i];
    if (cp < 0xC0) {  // nothing below U+00C0 decomposes
      out->push_back(cp);
      continue;
    }
    size_t lo = 0, hi = kEntries;  // the first entry whose code point is >= cp
    while (lo < hi) {
      const size_t mid = (lo + hi) / 2;
      if (kNfd[mid * kStride] < cp)
        lo = mid + 1;
      else
        hi = mid;
    }
    if (lo == kEntries || kNfd[lo * kStride] != cp) {
      unicode_decompose(cp, out);  // a Hangul syllable, or cp itself
      continue;
    }
    for (size_t k = 1; k < kStride && kNfd[lo * kStride + k] != 0; ++k)
      out->push_back(kNfd[lo * kStride + k]);
  }
  unicode_canonical_order(out);
}

}  // namespace sy
