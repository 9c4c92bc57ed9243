#include "runtime/data/unicode_nfc.h"

#include <algorithm>
#include <iterator>
#include <unordered_map>
#include <vector>

#include "runtime/data/utf8.h"

namespace sy {
namespace {

struct CccRange {
  uint32_t lo, hi;  // inclusive
  uint8_t ccc;
};

#include "runtime/data/unicode_nfc_tables.inc"

constexpr uint32_t kComposes = 0x80000000u;
// Hangul syllables (UAX #15 section 3.12): S = SBase + (L * VCount + V) * TCount + T.
constexpr uint32_t kSBase = 0xAC00, kLBase = 0x1100, kVBase = 0x1161, kTBase = 0x11A7;
constexpr uint32_t kLCount = 19, kVCount = 21, kTCount = 28, kNCount = kVCount * kTCount;
constexpr uint32_t kSCount = kLCount * kNCount;
constexpr uint32_t kMaxCodePoint = 0x10FFFF;

struct Decomp {
  uint32_t cp, first, second;  // second == 0: a singleton
};

uint64_t pair_key(uint32_t a, uint32_t b) {
  return (static_cast<uint64_t>(a) << 21) | b;
}

struct NfcTables {
  std::vector<Decomp> decomp;  // sorted by cp
  std::unordered_map<uint64_t, uint32_t> compose;
  std::vector<uint64_t> unsafe;  // one bit per code point

  NfcTables() : unsafe((kMaxCodePoint + 64) / 64, 0) {
    constexpr size_t n = std::size(kDecomp) / 3;
    decomp.reserve(n);
    for (size_t k = 0; k < n; ++k) {
      const uint32_t cp = kDecomp[3 * k] & ~kComposes;
      decomp.push_back({cp, kDecomp[3 * k + 1], kDecomp[3 * k + 2]});
      if (kDecomp[3 * k] & kComposes) {
        compose.emplace(pair_key(kDecomp[3 * k + 1], kDecomp[3 * k + 2]), cp);
        mark(kDecomp[3 * k + 2]);
      } else {
        mark(cp);  // excluded: NFC never gives it back
      }
    }
    std::sort(decomp.begin(), decomp.end(),
              [](const Decomp& a, const Decomp& b) { return a.cp < b.cp; });
    for (const CccRange& r : kCcc)
      for (uint32_t cp = r.lo; cp <= r.hi; ++cp) mark(cp);
    for (uint32_t k = 1; k < kVCount; ++k) mark(kVBase + k);  // V and T jamo are seconds
    mark(kVBase);
    for (uint32_t k = 1; k < kTCount; ++k) mark(kTBase + k);
  }
  void mark(uint32_t cp) { unsafe[cp >> 6] |= uint64_t{1} << (cp & 63); }
  bool is_unsafe(uint32_t cp) const { return (unsafe[cp >> 6] >> (cp & 63)) & 1; }
  const Decomp* find(uint32_t cp) const {
    const auto it = std::lower_bound(decomp.begin(), decomp.end(), cp,
                                     [](const Decomp& d, uint32_t c) { return d.cp < c; });
    return it != decomp.end() && it->cp == cp ? &*it : nullptr;
  }
};

const NfcTables& tables() {
  static const NfcTables t;
  return t;
}

void decompose(const NfcTables& t, uint32_t cp, std::vector<uint32_t>* out) {
  if (cp >= kSBase && cp < kSBase + kSCount) {
    const uint32_t s = cp - kSBase;
    out->push_back(kLBase + s / kNCount);
    out->push_back(kVBase + (s % kNCount) / kTCount);
    if (s % kTCount != 0) out->push_back(kTBase + s % kTCount);
    return;
  }
  const Decomp* d = t.find(cp);
  if (d == nullptr) {
    out->push_back(cp);
    return;
  }
  decompose(t, d->first, out);  // depth is bounded by the table (at most 4 levels)
  if (d->second != 0) decompose(t, d->second, out);
}

// The primary composite of (a, b), or 0.
uint32_t compose_pair(const NfcTables& t, uint32_t a, uint32_t b) {
  if (a >= kLBase && a < kLBase + kLCount && b >= kVBase && b < kVBase + kVCount)
    return kSBase + ((a - kLBase) * kVCount + (b - kVBase)) * kTCount;
  if (a >= kSBase && a < kSBase + kSCount && (a - kSBase) % kTCount == 0 && b > kTBase &&
      b < kTBase + kTCount)
    return a + (b - kTBase);
  const auto it = t.compose.find(pair_key(a, b));
  return it == t.compose.end() ? 0 : it->second;
}

// Full NFC of valid code points: decompose, order marks canonically, recompose.
void normalize_span(const NfcTables& t, std::string_view span, std::vector<uint32_t>* buf,
                    std::string* out) {
  buf->clear();
  for (size_t i = 0; i < span.size();) {
    uint32_t cp;
    i += utf8_next(span, i, &cp);
    decompose(t, cp, buf);
  }
  std::vector<uint32_t>& c = *buf;
  unicode_canonical_order(&c);
  // Canonical composition (UAX #15 reference): a mark composes with the last starter unless
  // something between them has a class >= its own (or is a starter).
  size_t starter = 0, len = 0;
  int last_class = c.empty() ? 0 : (unicode_combining_class(c[0]) == 0 ? 0 : 256);
  if (!c.empty()) len = 1;
  for (size_t i = 1; i < c.size(); ++i) {
    const int cc = unicode_combining_class(c[i]);
    const uint32_t composite = last_class == 256 ? 0 : compose_pair(t, c[starter], c[i]);
    if (composite != 0 && (last_class < cc || last_class == 0)) {
      c[starter] = composite;
      continue;
    }
    if (cc == 0) starter = len;
    last_class = cc;
    c[len++] = c[i];
  }
  for (size_t i = 0; i < len; ++i) utf8_append(c[i], out);
}

}  // namespace

uint8_t unicode_combining_class(uint32_t cp) {
  if (cp < 0x300) return 0;
  const auto it = std::upper_bound(std::begin(kCcc), std::end(kCcc), cp,
                                   [](uint32_t c, const CccRange& r) { return c < r.lo; });
  return it != std::begin(kCcc) && cp <= std::prev(it)->hi ? std::prev(it)->ccc : 0;
}

void unicode_decompose(uint32_t cp, std::vector<uint32_t>* out) {
  decompose(tables(), cp, out);
}

void unicode_canonical_order(std::vector<uint32_t>* cps) {
  std::vector<uint32_t>& c = *cps;
  // A stable insertion sort by class within each run of non-starters.
  for (size_t i = 1; i < c.size(); ++i) {
    const uint8_t cc = unicode_combining_class(c[i]);
    if (cc == 0) continue;
    for (size_t j = i; j > 0; --j) {
      const uint8_t prev = unicode_combining_class(c[j - 1]);
      if (prev <= cc) break;
      std::swap(c[j - 1], c[j]);
    }
  }
}

void nfc_normalize(std::string_view text, std::string* out) {
  const NfcTables& t = tables();
  out->reserve(out->size() + text.size());
  std::vector<uint32_t> buf;
  constexpr size_t kNone = std::string_view::npos;
  size_t copied = 0;       // text[0, copied) is in *out
  size_t safe_at = kNone;  // start of the previous character when it is a valid safe one
  for (size_t i = 0; i < text.size();) {
    if (static_cast<uint8_t>(text[i]) < 0xCC) {  // below U+0300 (or a stray continuation byte)
      uint32_t cp;
      const size_t len = utf8_next(text, i, &cp);
      safe_at = cp == kInvalidCodePoint ? kNone : i;
      i += len;
      continue;
    }
    uint32_t cp;
    size_t len = utf8_next(text, i, &cp);
    if (cp == kInvalidCodePoint || !t.is_unsafe(cp)) {
      safe_at = cp == kInvalidCodePoint ? kNone : i;
      i += len;
      continue;
    }
    // A run of unsafe characters from i, with the safe starter before it.
    const size_t begin = safe_at == kNone ? i : safe_at;
    size_t end = i + len;
    while (end < text.size()) {
      len = utf8_next(text, end, &cp);
      if (cp == kInvalidCodePoint || !t.is_unsafe(cp)) break;
      end += len;
    }
    out->append(text.data() + copied, begin - copied);
    normalize_span(t, text.substr(begin, end - begin), &buf, out);
    copied = i = end;
    safe_at = kNone;
  }
  out->append(text.data() + copied, text.size() - copied);
}

}  // namespace sy
