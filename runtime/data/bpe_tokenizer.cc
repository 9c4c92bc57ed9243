#include "runtime/data/bpe_tokenizer.h"

#include <algorithm>
#include <array>
#include <functional>
#include <limits>
#include <mutex>
#include <nlohmann/json.hpp>

#include "runtime/data/corpus.h"
#include "runtime/data/unicode_classes.h"

namespace sy {
namespace {

enum CharClass : uint8_t { kLetter, kNumber, kSpace, kOther };

constexpr uint32_t kInvalid = 0xFFFFFFFFu;

// Decodes the UTF-8 character at s[i] strictly (no overlong forms, surrogates or code points
// above U+10FFFF). Returns its length; an invalid byte is one character with *cp = kInvalid.
size_t utf8_next(std::string_view s, size_t i, uint32_t* cp) {
  const auto at = [&](size_t k) { return static_cast<uint8_t>(s[k]); };
  const uint8_t b0 = at(i);
  *cp = kInvalid;
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

uint8_t classify(uint32_t cp) {
  if (cp == kInvalid) return kOther;
  if (unicode_is_letter(cp)) return kLetter;
  if (unicode_is_number(cp)) return kNumber;
  if (unicode_is_space(cp)) return kSpace;
  return kOther;
}

// Length after the apostrophe of 's 't 're 've 'm 'll 'd (case-sensitive, as in GPT-2), or 0.
size_t contraction_len(std::string_view rest) {
  if (rest.empty()) return 0;
  const char c = rest[0];
  if (c == 's' || c == 't' || c == 'm' || c == 'd') return 1;
  if (rest.size() >= 2 && ((c == 'r' && rest[1] == 'e') || (c == 'v' && rest[1] == 'e') ||
                           (c == 'l' && rest[1] == 'l')))
    return 2;
  return 0;
}

// GPT-2's table (encoder.py bytes_to_unicode) and its inverse over code points < 0x144.
struct ByteTables {
  std::array<uint32_t, 256> to_unicode{};
  std::array<int16_t, 0x144> to_byte{};
  ByteTables() {
    to_byte.fill(-1);
    uint32_t n = 0;
    for (uint32_t b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
      to_unicode[b] = printable ? b : 256 + n++;
      to_byte[to_unicode[b]] = static_cast<int16_t>(b);
    }
  }
};
const ByteTables& byte_tables() {
  static const ByteTables t;
  return t;
}

// encoder.json / vocab.bpe symbol (UTF-8 of mapped code points) -> raw bytes; false if any
// character is not one of the 256 mapped code points.
bool unmap_symbol(std::string_view sym, std::string* raw) {
  raw->clear();
  for (size_t i = 0; i < sym.size();) {
    uint32_t cp;
    i += utf8_next(sym, i, &cp);
    if (cp >= byte_tables().to_byte.size() || byte_tables().to_byte[cp] < 0) return false;
    raw->push_back(static_cast<char>(byte_tables().to_byte[cp]));
  }
  return !raw->empty();
}

uint64_t pair_key(int32_t a, int32_t b) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
}

constexpr size_t kMaxCachedPieceBytes = 64;
constexpr size_t kMaxCacheEntries = size_t{1} << 18;  // then the cache starts over

}  // namespace

void gpt2_pretokenize(std::string_view text, std::vector<std::string_view>* pieces) {
  pieces->clear();
  std::vector<size_t> off;  // byte offset of each character, then text.size()
  std::vector<uint8_t> cls;
  for (size_t i = 0; i < text.size();) {
    uint32_t cp;
    const size_t len = utf8_next(text, i, &cp);
    off.push_back(i);
    cls.push_back(classify(cp));
    i += len;
  }
  const size_t n = cls.size();
  off.push_back(text.size());
  const auto run_end = [&](size_t i, uint8_t c) {
    while (i < n && cls[i] == c) ++i;
    return i;
  };
  // At each position the first alternative of the regex that matches wins, each one greedy.
  for (size_t i = 0, j = 0; i < n; i = j) {
    const char c0 = text[off[i]];
    size_t clen = 0;
    if (c0 == '\'' && (clen = contraction_len(text.substr(off[i] + 1))) > 0) {
      j = i + 1 + clen;  // 's 't 're 've 'm 'll 'd: ASCII, one byte per character
    } else if (c0 == ' ' && i + 1 < n && cls[i + 1] != kSpace) {
      j = run_end(i + 1, cls[i + 1]);  // ' ?\p{L}+', ' ?\p{N}+', ' ?[^\s\p{L}\p{N}]+'
    } else if (cls[i] != kSpace) {
      j = run_end(i, cls[i]);  // the same three without the leading space
    } else {
      // '\s+(?!\S)': the whole run at the end of the text, else the run less its last
      // character (which then leads the next piece, e.g. " word"); '\s+' for a single one.
      j = run_end(i, kSpace);
      if (j < n && j - 1 > i) --j;
    }
    pieces->push_back(text.substr(off[i], off[j] - off[i]));
  }
}

struct BpeTokenizer::Cache {
  std::mutex mu;
  std::unordered_map<std::string, std::vector<int32_t>> map;
};

BpeTokenizer::BpeTokenizer() : cache_(std::make_shared<Cache>()) {}

uint32_t BpeTokenizer::byte_to_unicode(uint8_t b) {
  return byte_tables().to_unicode[b];
}

StatusOr<BpeTokenizer> BpeTokenizer::load(const std::string& encoder_json,
                                          const std::string& vocab_bpe) {
  BpeTokenizer tok;
  SY_ASSIGN_OR_RETURN(std::string json_text, read_file(encoder_json));
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(json_text);
  } catch (const nlohmann::json::exception& e) {
    return BadInput(encoder_json + ": not valid JSON: " + e.what());
  }
  if (!j.is_object() || j.empty())
    return BadInput(encoder_json + ": expected a non-empty object {\"token\": id, ...}");
  const size_t n = j.size();
  if (n > static_cast<size_t>(std::numeric_limits<int32_t>::max()))
    return BadInput(encoder_json + ": too many tokens");
  tok.id_to_bytes_.resize(n);
  std::vector<bool> seen(n, false);
  std::string raw;
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& key = it.key();
    if (!it.value().is_number_integer())
      return BadInput(encoder_json + ": the id of token \"" + key + "\" is not an integer");
    const int64_t id = it.value().get<int64_t>();
    if (id < 0 || static_cast<size_t>(id) >= n)
      return BadInput(encoder_json + ": id " + std::to_string(id) + " of token \"" + key +
                      "\" is outside [0, " + std::to_string(n) + ")");
    if (seen[static_cast<size_t>(id)])
      return BadInput(encoder_json + ": id " + std::to_string(id) + " is used twice");
    if (!unmap_symbol(key, &raw))
      return BadInput(encoder_json + ": token \"" + key +
                      "\" is empty or has a character outside GPT-2's byte-to-unicode table");
    seen[static_cast<size_t>(id)] = true;
    tok.id_to_bytes_[static_cast<size_t>(id)] = raw;
    tok.bytes_to_id_.emplace(raw, static_cast<int32_t>(id));
  }
  // n distinct ids in [0, n) cover it. Distinct keys give distinct byte strings (the table
  // is a bijection), so bytes_to_id_ has n entries too.
  for (int b = 0; b < 256; ++b) {
    const int32_t id = tok.token_id(std::string(1, static_cast<char>(b)));
    if (id < 0)
      return BadInput(encoder_json + ": no token for the single byte " + std::to_string(b) +
                      " (a byte-level vocabulary has all 256)");
    tok.byte_id_[b] = id;
  }

  SY_ASSIGN_OR_RETURN(std::string bpe_text, read_file(vocab_bpe));
  int32_t rank = 0;
  size_t line_no = 0;
  std::string a_raw, b_raw;
  for (size_t pos = 0; pos < bpe_text.size();) {
    size_t eol = bpe_text.find('\n', pos);
    if (eol == std::string::npos) eol = bpe_text.size();
    std::string_view line(bpe_text.data() + pos, eol - pos);
    pos = eol + 1;
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty() || (line_no == 1 && line[0] == '#')) continue;  // "#version: 0.2"
    const std::string where = vocab_bpe + ":" + std::to_string(line_no) + ": ";
    const size_t sp = line.find(' ');
    if (sp == std::string_view::npos || sp == 0 || sp + 1 == line.size() ||
        line.find(' ', sp + 1) != std::string_view::npos)
      return BadInput(where + "expected two symbols separated by one space");
    if (!unmap_symbol(line.substr(0, sp), &a_raw) || !unmap_symbol(line.substr(sp + 1), &b_raw))
      return BadInput(where + "a symbol has a character outside GPT-2's byte-to-unicode table");
    const int32_t a = tok.token_id(a_raw), b = tok.token_id(b_raw);
    const int32_t ab = tok.token_id(a_raw + b_raw);
    if (a < 0 || b < 0 || ab < 0) {
      const std::string_view missing = a < 0   ? line.substr(0, sp)
                                       : b < 0 ? line.substr(sp + 1)
                                               : std::string_view("their concatenation");
      return BadInput(where + "merge \"" + std::string(line) + "\": " + std::string(missing) +
                      " is not a token of " + encoder_json);
    }
    if (rank == std::numeric_limits<int32_t>::max()) return BadInput(where + "too many merges");
    tok.merges_[pair_key(a, b)] = Merge{rank++, ab};  // a repeated pair keeps its last rank,
                                                      // like encoder.py's dict(zip(...))
  }
  return tok;
}

std::string_view BpeTokenizer::token_bytes(int32_t id) const {
  if (id < 0 || id >= vocab_size()) return {};
  return id_to_bytes_[static_cast<size_t>(id)];
}

int32_t BpeTokenizer::token_id(std::string_view bytes) const {
  const auto it = bytes_to_id_.find(std::string(bytes));
  return it == bytes_to_id_.end() ? -1 : it->second;
}

// encoder.py's bpe(): while some adjacent pair has a rank, take the lowest-ranked pair and
// merge all its occurrences left to right. Here the candidates sit in a min-heap keyed by
// (rank, position); all entries of the lowest rank are popped together and applied in
// position order, skipping stale ones. A merge never creates a pair of the same rank (a+b
// differs from both a and b), so each batch is exactly one pass of encoder.py's loop.
void BpeTokenizer::bpe(std::string_view piece, std::vector<int32_t>* out) const {
  SY_CHECK_LE(piece.size(), static_cast<size_t>(std::numeric_limits<int32_t>::max()))
      << "a single pre-token of over 2 GiB";
  const int32_t n = static_cast<int32_t>(piece.size());
  if (n == 1) {
    out->push_back(byte_id_[static_cast<uint8_t>(piece[0])]);
    return;
  }
  const bool cacheable = piece.size() <= kMaxCachedPieceBytes;
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_->mu);
    const auto it = cache_->map.find(std::string(piece));
    if (it != cache_->map.end()) {
      out->insert(out->end(), it->second.begin(), it->second.end());
      return;
    }
  }
  // Symbol i starts at byte i; a merge keeps the left symbol and unlinks the right one.
  std::vector<int32_t> id(n), prev(n), next(n);
  std::vector<uint8_t> alive(n, 1);
  for (int32_t i = 0; i < n; ++i) {
    id[i] = byte_id_[static_cast<uint8_t>(piece[i])];
    prev[i] = i - 1;
    next[i] = i + 1 < n ? i + 1 : -1;
  }
  using Cand = std::pair<int32_t, int32_t>;  // (rank, left symbol)
  std::vector<Cand> heap, batch;
  const auto rank_at = [&](int32_t l) -> const Merge* {
    if (l < 0 || next[l] < 0) return nullptr;
    const auto it = merges_.find(pair_key(id[l], id[next[l]]));
    return it == merges_.end() ? nullptr : &it->second;
  };
  const auto push = [&](int32_t l) {
    if (const Merge* m = rank_at(l)) {
      heap.emplace_back(m->rank, l);
      std::push_heap(heap.begin(), heap.end(), std::greater<Cand>());
    }
  };
  for (int32_t i = 0; i + 1 < n; ++i) push(i);
  while (!heap.empty()) {
    const int32_t rank = heap.front().first;
    batch.clear();
    while (!heap.empty() && heap.front().first == rank) {
      std::pop_heap(heap.begin(), heap.end(), std::greater<Cand>());
      batch.push_back(heap.back());
      heap.pop_back();
    }
    for (const Cand& c : batch) {
      const int32_t l = c.second;
      const Merge* m = alive[l] ? rank_at(l) : nullptr;
      if (m == nullptr || m->rank != rank) continue;  // stale: overlapped or already merged
      const int32_t r = next[l];
      id[l] = m->result;
      alive[r] = 0;
      next[l] = next[r];
      if (next[r] >= 0) prev[next[r]] = l;
      push(prev[l]);
      push(l);
    }
  }
  const size_t first = out->size();
  for (int32_t i = 0; i >= 0; i = next[i]) out->push_back(id[i]);
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_->mu);
    if (cache_->map.size() >= kMaxCacheEntries) cache_->map.clear();
    cache_->map.emplace(std::string(piece), std::vector<int32_t>(out->begin() + first, out->end()));
  }
}

std::vector<int32_t> BpeTokenizer::encode(std::string_view text) const {
  std::vector<std::string_view> pieces;
  gpt2_pretokenize(text, &pieces);
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3);
  for (std::string_view p : pieces) bpe(p, &ids);
  return ids;
}

std::string BpeTokenizer::decode(const std::vector<int32_t>& ids) const {
  std::string s;
  for (int32_t id : ids) {
    if (id >= 0 && id < vocab_size())
      s += id_to_bytes_[static_cast<size_t>(id)];
    else
      s += "\xEF\xBF\xBD";  // U+FFFD
  }
  return s;
}

}  // namespace sy
