#include "runtime/data/bpe_tokenizer.h"

#include <algorithm>
#include <array>
#include <functional>
#include <limits>
#include <mutex>
#include <nlohmann/json.hpp>

#include "runtime/core/json_input.h"
#include "runtime/data/corpus.h"
#include "runtime/data/unicode_classes.h"
#include "runtime/data/utf8.h"

namespace sy {
namespace {

enum CharClass : uint8_t { kLetter, kNumber, kSpace, kOther };

uint8_t classify(uint32_t cp) {
  if (cp == kInvalidCodePoint) return kOther;
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

uint64_t pair_key(int32_t a, int32_t b) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
}

constexpr size_t kMaxCachedPieceBytes = 64;
constexpr size_t kMaxCacheEntries = size_t{1} << 18;  // then the cache starts over

}  // namespace

void gpt2_pretokenize(std::string_view text, std::vector<std::string_view>* pieces) {
  pieces->clear();
  const Utf8Chars chars(text, classify);
  const std::vector<size_t>& off = chars.off;
  const std::vector<uint8_t>& cls = chars.cls;
  const size_t n = chars.size();
  const auto run_end = [&](size_t i, uint8_t c) { return chars.run_end(i, c); };
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

bool BpeTokenizer::symbol_to_bytes(std::string_view sym, std::string* raw) {
  raw->clear();
  for (size_t i = 0; i < sym.size();) {
    uint32_t cp;
    i += utf8_next(sym, i, &cp);
    if (cp >= byte_tables().to_byte.size() || byte_tables().to_byte[cp] < 0) return false;
    raw->push_back(static_cast<char>(byte_tables().to_byte[cp]));
  }
  return !raw->empty();
}

StatusOr<BpeTokenizer> BpeTokenizer::from_vocab(std::vector<std::string> id_to_bytes,
                                                const std::string& source, MergeOrder order) {
  if (id_to_bytes.size() > static_cast<size_t>(std::numeric_limits<int32_t>::max()))
    return BadInput(source + ": too many tokens");
  BpeTokenizer tok;
  tok.order_ = order;
  tok.id_to_bytes_ = std::move(id_to_bytes);
  tok.bytes_to_id_.reserve(tok.id_to_bytes_.size());
  for (size_t id = 0; id < tok.id_to_bytes_.size(); ++id) {
    const std::string& t = tok.id_to_bytes_[id];
    if (t.empty()) return BadInput(source + ": token " + std::to_string(id) + " is empty");
    if (!tok.bytes_to_id_.emplace(t, static_cast<int32_t>(id)).second)
      return BadInput(source + ": tokens " + std::to_string(tok.token_id(t)) + " and " +
                      std::to_string(id) + " are the same bytes");
  }
  for (int b = 0; b < 256; ++b) {
    const int32_t id = tok.token_id(std::string(1, static_cast<char>(b)));
    if (id < 0)
      return BadInput(source + ": no token for the single byte " + std::to_string(b) +
                      " (a byte-level vocabulary has all 256)");
    tok.byte_id_[b] = id;
  }
  return tok;
}

void BpeTokenizer::add_merge(int32_t a, int32_t b, int32_t merged) {
  SY_CHECK_LT(num_merges_, std::numeric_limits<int32_t>::max());
  merges_[pair_key(a, b)] = Merge{num_merges_++, merged};
}

StatusOr<BpeTokenizer> BpeTokenizer::load(const std::string& encoder_json,
                                          const std::string& vocab_bpe) {
  SY_ASSIGN_OR_RETURN(std::string json_text, read_file(encoder_json, "tokenizer"));
  SY_ASSIGN_OR_RETURN(nlohmann::json j, parse_json_bounded(json_text, encoder_json));
  if (!j.is_object() || j.empty())
    return BadInput(encoder_json + ": expected a non-empty object {\"token\": id, ...}");
  const size_t n = j.size();
  if (n > static_cast<size_t>(std::numeric_limits<int32_t>::max()))
    return BadInput(encoder_json + ": too many tokens");
  std::vector<std::string> id_to_bytes(n);
  std::vector<bool> seen(n, false);
  std::string raw;
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& key = it.key();
    if (!it.value().is_number_integer())
      return BadInput(encoder_json + ": the id of token " + json_brief(key) + " is not an integer");
    const int64_t id = it.value().get<int64_t>();
    if (id < 0 || static_cast<size_t>(id) >= n)
      return BadInput(encoder_json + ": id " + std::to_string(id) + " of token " + json_brief(key) +
                      " is outside [0, " + std::to_string(n) + ")");
    if (seen[static_cast<size_t>(id)])
      return BadInput(encoder_json + ": id " + std::to_string(id) + " is used twice");
    if (!symbol_to_bytes(key, &raw))
      return BadInput(encoder_json + ": token " + json_brief(key) +
                      " is empty or has a character outside GPT-2's byte-to-unicode table");
    seen[static_cast<size_t>(id)] = true;
    id_to_bytes[static_cast<size_t>(id)] = raw;
  }
  // n distinct ids in [0, n) cover it.
  SY_ASSIGN_OR_RETURN(BpeTokenizer tok,
                      from_vocab(std::move(id_to_bytes), encoder_json, MergeOrder::kPassPerRank));

  SY_ASSIGN_OR_RETURN(std::string bpe_text, read_file(vocab_bpe, "tokenizer"));
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
    if (!symbol_to_bytes(line.substr(0, sp), &a_raw) ||
        !symbol_to_bytes(line.substr(sp + 1), &b_raw))
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
    if (tok.num_merges() == std::numeric_limits<int32_t>::max())
      return BadInput(where + "too many merges");
    tok.add_merge(a, b, ab);
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
// MergeOrder::kLowestFirst pops one entry at a time instead (Hugging Face's Word::merge_all):
// the two differ only when a merge creates a pair ranked below the batch it belongs to.
void BpeTokenizer::encode_pretoken(std::string_view piece, std::vector<int32_t>* out) const {
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
    while (!heap.empty() && heap.front().first == rank &&
           (batch.empty() || order_ == MergeOrder::kPassPerRank)) {
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
  for (std::string_view p : pieces) encode_pretoken(p, &ids);
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
