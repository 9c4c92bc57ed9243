#include "runtime/data/wordpiece_tokenizer.h"

#include <nlohmann/json.hpp>

#include "runtime/core/json_input.h"
#include "runtime/data/corpus.h"
#include "runtime/data/unicode_bert.h"
#include "runtime/data/utf8.h"

namespace sy {
namespace {

constexpr uint32_t kReplacement = 0xFFFD;
constexpr size_t kMaxWordChars = 100;  // tokenization.py's max_input_chars_per_word
const char kUnk[] = "[UNK]";
const char kContinuation[] = "##";

// tokenization.py's _is_whitespace / _is_control / _is_punctuation / _is_chinese_char.
bool bert_is_whitespace(uint32_t cp) {
  return cp == ' ' || cp == '\t' || cp == '\n' || cp == '\r' || unicode_is_space_separator(cp);
}
bool bert_is_control(uint32_t cp) {
  return cp != '\t' && cp != '\n' && cp != '\r' && unicode_is_other(cp);
}
bool bert_is_punctuation(uint32_t cp) {
  return (cp >= 33 && cp <= 47) || (cp >= 58 && cp <= 64) || (cp >= 91 && cp <= 96) ||
         (cp >= 123 && cp <= 126) || unicode_is_punctuation(cp);
}
bool bert_is_cjk(uint32_t cp) {
  return (cp >= 0x4E00 && cp <= 0x9FFF) || (cp >= 0x3400 && cp <= 0x4DBF) ||
         (cp >= 0x20000 && cp <= 0x2A6DF) || (cp >= 0x2A700 && cp <= 0x2B73F) ||
         (cp >= 0x2B740 && cp <= 0x2B81F) || (cp >= 0x2B820 && cp <= 0x2CEAF) ||
         (cp >= 0xF900 && cp <= 0xFAFF) || (cp >= 0x2F800 && cp <= 0x2FA1F);
}
// Python's str.split() after clean: the other whitespace it knows is control (dropped) or Zs.
bool splits_words(uint32_t cp) {
  return cp == ' ' || cp == 0x2028 || cp == 0x2029;
}

// Steps 1 and 2: the cleaned code points, CJK ideographs spaced.
std::vector<uint32_t> clean_text(std::string_view text) {
  std::vector<uint32_t> out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size();) {
    uint32_t cp;
    i += utf8_next(text, i, &cp);
    if (cp == kInvalidCodePoint) cp = kReplacement;
    if (cp == 0 || cp == kReplacement || bert_is_control(cp)) continue;
    if (bert_is_whitespace(cp)) {
      out.push_back(' ');
    } else if (bert_is_cjk(cp)) {
      out.push_back(' ');
      out.push_back(cp);
      out.push_back(' ');
    } else {
      out.push_back(cp);
    }
  }
  return out;
}

// Steps 4 and 5 for one whitespace-separated word; appends its words to *words.
void split_word(const uint32_t* cps, size_t n, std::vector<uint32_t>* lower,
                std::vector<uint32_t>* nfd, std::vector<std::string>* words) {
  lower->clear();
  unicode_to_lower(cps, n, lower);
  unicode_to_nfd(lower->data(), lower->size(), nfd);
  std::string word;
  for (uint32_t cp : *nfd) {
    if (unicode_is_nonspacing_mark(cp)) continue;
    if (bert_is_punctuation(cp)) {
      if (!word.empty()) words->push_back(std::move(word));
      word.clear();
      utf8_append(cp, &word);
      words->push_back(std::move(word));
      word.clear();
      continue;
    }
    utf8_append(cp, &word);
  }
  if (!word.empty()) words->push_back(std::move(word));
}

Status bad(const std::string& source, const std::string& what) {
  return BadInput(source + ": " + what);
}

}  // namespace

std::vector<std::string> bert_basic_tokenize(std::string_view text) {
  const std::vector<uint32_t> cps = clean_text(text);
  std::vector<std::string> words;
  std::vector<uint32_t> lower, nfd;
  for (size_t i = 0; i < cps.size();) {
    if (splits_words(cps[i])) {
      ++i;
      continue;
    }
    size_t end = i;
    while (end < cps.size() && !splits_words(cps[end])) ++end;
    split_word(cps.data() + i, end - i, &lower, &nfd, &words);
    i = end;
  }
  return words;
}

StatusOr<WordPieceTokenizer> WordPieceTokenizer::from_tokens(std::vector<std::string> tokens,
                                                             const std::string& source) {
  WordPieceTokenizer t;
  t.source_ = source;
  if (tokens.empty()) return bad(source, "the vocabulary is empty");
  if (tokens.size() > static_cast<size_t>(INT32_MAX)) return bad(source, "too many tokens");
  t.ids_.reserve(tokens.size());
  for (size_t i = 0; i < tokens.size(); ++i) {
    const std::string& tok = tokens[i];
    if (tok.empty()) return bad(source, "token " + std::to_string(i) + " is empty");
    if (!t.ids_.emplace(tok, static_cast<int32_t>(i)).second)
      return bad(source, "token '" + tok + "' appears twice (ids " +
                             std::to_string(t.ids_.at(tok)) + " and " + std::to_string(i) + ")");
    const bool cont = tok.compare(0, 2, kContinuation) == 0;
    t.max_piece_bytes_ = std::max(t.max_piece_bytes_, tok.size() - (cont ? 2 : 0));
  }
  const auto unk = t.ids_.find(kUnk);
  if (unk == t.ids_.end()) return bad(source, "the vocabulary has no [UNK]");
  t.unk_ = unk->second;
  t.tokens_ = std::move(tokens);
  return t;
}

StatusOr<std::vector<std::string>> WordPieceTokenizer::tokens_from_marked_json(
    const std::string& path) {
  SY_ASSIGN_OR_RETURN(std::string text, read_file(path, "tokenizer"));
  SY_ASSIGN_OR_RETURN(const nlohmann::json j, parse_json_bounded(text, path));
  if (!j.is_array()) return bad(path, "not a JSON list of tokens");
  const std::string marker = "\u2581";  // ▁: a word-initial piece
  std::vector<std::string> tokens;
  tokens.reserve(j.size());
  for (const nlohmann::json& e : j) {
    if (!e.is_string())
      return bad(path, "entry " + std::to_string(tokens.size()) + " is not a string");
    const std::string s = e.get<std::string>();
    if (s == marker) {
      tokens.push_back("[unused0]");  // no text: bert-base-uncased's name for this id
    } else if (s.compare(0, marker.size(), marker) == 0) {
      tokens.push_back(s.substr(marker.size()));
    } else if (s.size() > 2 && s.front() == '[' && s.back() == ']') {
      tokens.push_back(s);
    } else {
      tokens.push_back(kContinuation + s);
    }
  }
  return tokens;
}

StatusOr<WordPieceTokenizer> WordPieceTokenizer::load(const std::string& path) {
  const bool json = path.size() >= 5 && path.compare(path.size() - 5, 5, ".json") == 0;
  std::vector<std::string> tokens;
  if (json) {
    SY_ASSIGN_OR_RETURN(tokens, tokens_from_marked_json(path));
  } else {
    SY_ASSIGN_OR_RETURN(std::string text, read_file(path, "tokenizer"));
    size_t begin = 0;
    while (begin < text.size()) {
      size_t end = text.find('\n', begin);
      if (end == std::string::npos) end = text.size();
      size_t stop = end;
      if (stop > begin && text[stop - 1] == '\r') --stop;
      tokens.push_back(text.substr(begin, stop - begin));
      begin = end + 1;
    }
  }
  return from_tokens(std::move(tokens), path);
}

int32_t WordPieceTokenizer::token_id(std::string_view token) const {
  const auto it = ids_.find(std::string(token));
  return it == ids_.end() ? -1 : it->second;
}

void WordPieceTokenizer::encode_word(std::string_view word, std::vector<int32_t>* out) const {
  std::vector<size_t> starts;  // byte offset of each code point, and word.size()
  for (size_t i = 0; i < word.size();) {
    uint32_t cp;
    starts.push_back(i);
    i += utf8_next(word, i, &cp);
  }
  if (starts.size() > kMaxWordChars) {
    out->push_back(unk_);
    return;
  }
  starts.push_back(word.size());
  const size_t first = out->size();
  std::string piece;
  for (size_t s = 0; s + 1 < starts.size();) {
    int32_t id = -1;
    size_t e = starts.size() - 1;
    while (e > s && starts[e] - starts[s] > max_piece_bytes_) --e;
    for (; e > s; --e) {
      piece.assign(s == 0 ? "" : kContinuation);
      piece.append(word.substr(starts[s], starts[e] - starts[s]));
      const auto it = ids_.find(piece);
      if (it != ids_.end()) {
        id = it->second;
        break;
      }
    }
    if (id < 0) {  // no piece matches here: the whole word is unknown
      out->resize(first);
      out->push_back(unk_);
      return;
    }
    out->push_back(id);
    s = e;
  }
}

std::vector<int32_t> WordPieceTokenizer::encode(std::string_view text) const {
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 4);
  for (const std::string& word : bert_basic_tokenize(text)) encode_word(word, &ids);
  return ids;
}

std::string WordPieceTokenizer::decode(const std::vector<int32_t>& ids) const {
  std::string s;
  for (int32_t id : ids) {
    if (id < 0 || static_cast<size_t>(id) >= tokens_.size()) {
      if (!s.empty()) s.push_back(' ');
      utf8_append(kReplacement, &s);
      continue;
    }
    const std::string& tok = tokens_[static_cast<size_t>(id)];
    if (tok.compare(0, 2, kContinuation) == 0 && tok.size() > 2) {
      s.append(tok, 2, std::string::npos);
      continue;
    }
    if (!s.empty()) s.push_back(' ');
    s.append(tok);
  }
  return s;
}

std::string WordPieceTokenizer::vocab_txt() const {
  std::string s;
  for (const std::string& tok : tokens_) s.append(tok).push_back('\n');
  return s;
}

}  // namespace sy
