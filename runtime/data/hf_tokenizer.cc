#include "runtime/data/hf_tokenizer.h"

#include <sys/stat.h>

#include <algorithm>
#include <nlohmann/json.hpp>
#include <unordered_map>

#include "runtime/core/json_input.h"
#include "runtime/data/corpus.h"
#include "runtime/data/unicode_classes.h"
#include "runtime/data/unicode_nfc.h"
#include "runtime/data/utf8.h"

namespace sy {
namespace {

using Json = nlohmann::json;

// The one Split pattern implemented (qwen_pretokenize), as tokenizer.json writes it.
constexpr std::string_view kQwen2Pattern =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}|"
    " ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

enum CharClass : uint8_t { kLetter, kNumber, kNewline, kSpace, kOther };  // kNewline: \r \n

uint8_t classify(uint32_t cp) {
  if (cp == '\r' || cp == '\n') return kNewline;
  if (cp == kInvalidCodePoint) return kOther;
  if (unicode_is_letter(cp)) return kLetter;
  if (unicode_is_number(cp)) return kNumber;
  // White_Space: JavaScript's \s has U+FEFF and lacks U+0085.
  if (cp == 0x85 || (cp != 0xFEFF && unicode_is_space(cp))) return kSpace;
  return kOther;
}

// Characters after the apostrophe of (?i:'s|'t|'re|'ve|'m|'ll|'d) at rest, or 0. Case folding
// maps U+017F (long s, UTF-8 C5 BF) to s as well.
size_t contraction_chars(std::string_view rest) {
  const auto lower = [&](size_t k) {
    return k < rest.size() ? static_cast<char>(rest[k] | 0x20) : '\0';  // ASCII letters only
  };
  const char c = lower(0);
  if (c == 's' || c == 't' || c == 'm' || c == 'd') return 1;
  if (rest.substr(0, 2) == "\xC5\xBF") return 1;
  const char d = lower(1);
  if ((c == 'r' && d == 'e') || (c == 'v' && d == 'e') || (c == 'l' && d == 'l')) return 2;
  return 0;
}

Status bad(const std::string& path, const std::string& what) {
  return BadInput(path + ": " + what);
}

// obj[key] when present and not null, else nullptr.
const Json* member(const Json& obj, const char* key) {
  const auto it = obj.find(key);
  return it == obj.end() || it->is_null() ? nullptr : &*it;
}

std::string short_dump(const Json& j) {
  std::string s = j.dump(-1, ' ', false, Json::error_handler_t::replace);
  return s.size() > 200 ? s.substr(0, 200) + "..." : s;
}

// A boolean option that must be `want` (or absent / null).
Status expect_flag(const std::string& path, const Json& obj, const char* key, bool want,
                   const std::string& where) {
  const Json* v = member(obj, key);
  if (v == nullptr) return Status::Ok();
  if (!v->is_boolean()) return bad(path, where + "." + key + " is not a boolean");
  if (v->get<bool>() != want)
    return bad(path, where + "." + key + " = " + (want ? "false" : "true") + " is not supported");
  return Status::Ok();
}

Status check_pre_tokenizer(const std::string& path, const Json* pre) {
  const std::string expected =
      "pre_tokenizer: only Qwen2's Sequence [Split (its regex, Isolated), ByteLevel "
      "(add_prefix_space false, use_regex false)] is supported";
  if (pre == nullptr || !pre->is_object()) return bad(path, expected + "; it is absent");
  const Json* list = member(*pre, "pretokenizers");
  if (pre->value("type", Json()) != "Sequence" || list == nullptr || !list->is_array() ||
      list->size() != 2 || !(*list)[0].is_object() || !(*list)[1].is_object())
    return bad(path, expected + "; got " + short_dump(*pre));
  const Json& split = (*list)[0];
  const Json& byte_level = (*list)[1];
  const Json* pattern = member(split, "pattern");
  const Json* regex =
      pattern != nullptr && pattern->is_object() ? member(*pattern, "Regex") : nullptr;
  if (split.value("type", Json()) != "Split" || regex == nullptr || !regex->is_string() ||
      regex->get<std::string>() != kQwen2Pattern || split.value("behavior", Json()) != "Isolated")
    return bad(path, expected + "; the Split is " + short_dump(split));
  SY_RETURN_IF_ERROR(expect_flag(path, split, "invert", false, "pre_tokenizer Split"));
  if (byte_level.value("type", Json()) != "ByteLevel")
    return bad(path, expected + "; the second is " + short_dump(byte_level));
  SY_RETURN_IF_ERROR(
      expect_flag(path, byte_level, "add_prefix_space", false, "pre_tokenizer ByteLevel"));
  return expect_flag(path, byte_level, "use_regex", false, "pre_tokenizer ByteLevel");
}

Status check_model_options(const std::string& path, const Json& model) {
  const Json* type = member(model, "type");
  if (type != nullptr && *type != "BPE")
    return bad(path, "model.type " + short_dump(*type) + " is not supported (only BPE)");
  if (member(model, "dropout") != nullptr)
    return bad(path, "model.dropout is not supported (it must be null)");
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    const Json* v = member(model, key);
    if (v != nullptr && (!v->is_string() || !v->get<std::string>().empty()))
      return bad(path, std::string("model.") + key + " is not supported (it must be empty)");
  }
  return expect_flag(path, model, "byte_fallback", false, "model");
}

// model.vocab -> raw-byte tokens, id = index.
StatusOr<std::vector<std::string>> parse_vocab(const std::string& path, const Json& model) {
  const Json* vocab = member(model, "vocab");
  if (vocab == nullptr || !vocab->is_object() || vocab->empty())
    return bad(path, "model.vocab is not a non-empty object {\"token\": id, ...}");
  const size_t n = vocab->size();
  if (static_cast<int64_t>(n) > HfTokenizer::kMaxTokens)
    return bad(path, "model.vocab has " + std::to_string(n) + " tokens, more than " +
                         std::to_string(HfTokenizer::kMaxTokens));
  std::vector<std::string> id_to_bytes(n);
  std::string raw;
  for (auto it = vocab->begin(); it != vocab->end(); ++it) {
    const std::string& key = it.key();
    const std::string where = "model.vocab[\"" + key.substr(0, 100) + "\"]";
    if (!it->is_number_integer()) return bad(path, where + " is not an integer id");
    const int64_t id = it->get<int64_t>();
    if (id < 0 || static_cast<size_t>(id) >= n)
      return bad(path, where + " = " + std::to_string(id) + " is outside [0, " + std::to_string(n) +
                           ") (ids must be dense)");
    if (!id_to_bytes[static_cast<size_t>(id)].empty())
      return bad(path, "model.vocab: id " + std::to_string(id) + " is used twice");
    if (static_cast<int64_t>(key.size()) > HfTokenizer::kMaxTokenBytes)
      return bad(path, where + " is longer than " + std::to_string(HfTokenizer::kMaxTokenBytes));
    if (!BpeTokenizer::symbol_to_bytes(key, &raw))
      return bad(path, where + " is empty or has a character outside the byte-level alphabet");
    id_to_bytes[static_cast<size_t>(id)] = raw;
  }
  return id_to_bytes;
}

// One merge: "a b" (older files) or ["a", "b"].
bool merge_parts(const Json& m, std::string* a, std::string* b) {
  if (m.is_string()) {
    const std::string& s = m.get_ref<const std::string&>();
    const size_t sp = s.find(' ');
    if (sp == std::string::npos || sp == 0 || sp + 1 == s.size() ||
        s.find(' ', sp + 1) != std::string::npos)
      return false;
    *a = s.substr(0, sp);
    *b = s.substr(sp + 1);
    return true;
  }
  if (!m.is_array() || m.size() != 2 || !m[0].is_string() || !m[1].is_string()) return false;
  *a = m[0].get<std::string>();
  *b = m[1].get<std::string>();
  return !a->empty() && !b->empty();
}

Status add_merges(const std::string& path, const Json& model, BpeTokenizer* bpe) {
  const Json* merges = member(model, "merges");
  if (merges == nullptr || !merges->is_array()) return bad(path, "model.merges is not an array");
  if (static_cast<int64_t>(merges->size()) > HfTokenizer::kMaxMerges)
    return bad(path, "model.merges has more than " + std::to_string(HfTokenizer::kMaxMerges));
  std::string a, b, a_raw, b_raw;
  for (size_t i = 0; i < merges->size(); ++i) {
    const std::string where = "model.merges[" + std::to_string(i) + "]";
    if (!merge_parts((*merges)[i], &a, &b))
      return bad(path, where + " is not \"a b\" or [\"a\", \"b\"]: " + short_dump((*merges)[i]));
    const bool a_ok = BpeTokenizer::symbol_to_bytes(a, &a_raw);
    const bool b_ok = BpeTokenizer::symbol_to_bytes(b, &b_raw);
    const int32_t ia = a_ok ? bpe->token_id(a_raw) : -1;
    const int32_t ib = b_ok ? bpe->token_id(b_raw) : -1;
    if (ia < 0 || ib < 0)
      return bad(path, where + ": \"" + (ia < 0 ? a : b).substr(0, 100) +
                           "\" is not a token of model.vocab");
    const int32_t merged = bpe->token_id(a_raw + b_raw);
    if (merged < 0)
      return bad(path, where + ": \"" + a.substr(0, 100) + b.substr(0, 100) +
                           "\" (the merged token) is not in model.vocab");
    bpe->add_merge(ia, ib, merged);
  }
  return Status::Ok();
}

}  // namespace

void qwen_pretokenize(std::string_view text, std::vector<std::string_view>* pieces) {
  const Utf8Chars chars(text, classify);
  const std::vector<uint8_t>& cls = chars.cls;
  const size_t n = chars.size();
  const auto run_end = [&](size_t i, uint8_t c) { return chars.run_end(i, c); };
  const auto is_ws = [&](size_t i) { return cls[i] == kSpace || cls[i] == kNewline; };
  pieces->clear();
  // The regex's alternatives in order (the first that matches wins), each greedy.
  for (size_t i = 0, j = 0; i < n; i = j) {
    const char c0 = text[chars.off[i]];
    size_t clen = 0;
    if (c0 == '\'' && (clen = contraction_chars(text.substr(chars.off[i] + 1))) > 0) {
      j = i + 1 + clen;  // (?i:'s|'t|'re|'ve|'m|'ll|'d)
    } else if (cls[i] == kLetter) {
      j = run_end(i, kLetter);  // [^\r\n\p{L}\p{N}]?\p{L}+ without the prefix
    } else if ((cls[i] == kSpace || cls[i] == kOther) && i + 1 < n && cls[i + 1] == kLetter) {
      j = run_end(i + 1, kLetter);  // ... with it: any one space (not \r \n) or other character
    } else if (cls[i] == kNumber) {
      j = i + 1;  // \p{N}: digits one by one
    } else if (cls[i] == kOther || (c0 == ' ' && i + 1 < n && cls[i + 1] == kOther)) {
      j = run_end(run_end(cls[i] == kOther ? i : i + 1, kOther), kNewline);  // ' ?[^\s..]+[\r\n]*'
    } else {
      size_t k = i, last_newline = n;
      for (; k < n && is_ws(k); ++k)
        if (cls[k] == kNewline) last_newline = k;
      if (last_newline < n) {
        j = last_newline + 1;  // \s*[\r\n]+: up to the run's last \r or \n
      } else if (k == n || k - 1 == i) {
        j = k;  // \s+(?!\S) at the end of the text; \s+ for one space before \S
      } else {
        j = k - 1;  // \s+(?!\S): the last space then leads the next piece
      }
    }
    pieces->push_back(text.substr(chars.off[i], chars.off[j] - chars.off[i]));
  }
}

StatusOr<std::unique_ptr<HfTokenizer>> HfTokenizer::load(const std::string& path) {
  SY_ASSIGN_OR_RETURN(std::string text, read_file(path, "tokenizer", kMaxFileBytes));
  SY_ASSIGN_OR_RETURN(Json root, parse_json_bounded(text, path));
  text.clear();
  text.shrink_to_fit();
  if (!root.is_object()) return bad(path, "not a tokenizer.json (the top level is not an object)");
  const Json* model = member(root, "model");
  if (model == nullptr || !model->is_object()) return bad(path, "no \"model\" object");
  SY_RETURN_IF_ERROR(check_model_options(path, *model));
  const Json* ignore = member(*model, "ignore_merges");
  if (ignore != nullptr && !ignore->is_boolean())
    return bad(path, "model.ignore_merges is not a boolean");

  const Json* normalizer = member(root, "normalizer");
  if (normalizer != nullptr &&
      (!normalizer->is_object() || normalizer->value("type", Json()) != "NFC"))
    return bad(path, "normalizer: only {\"type\": \"NFC\"} or null is supported; got " +
                         short_dump(*normalizer));
  SY_RETURN_IF_ERROR(check_pre_tokenizer(path, member(root, "pre_tokenizer")));
  const Json* decoder = member(root, "decoder");
  if (decoder != nullptr &&
      (!decoder->is_object() || decoder->value("type", Json()) != "ByteLevel"))
    return bad(path, "decoder: only ByteLevel (or null) is supported; got " + short_dump(*decoder));

  SY_ASSIGN_OR_RETURN(std::vector<std::string> id_to_bytes, parse_vocab(path, *model));
  SY_ASSIGN_OR_RETURN(BpeTokenizer bpe,
                      BpeTokenizer::from_vocab(std::move(id_to_bytes), path + ": model.vocab",
                                               BpeTokenizer::MergeOrder::kLowestFirst));
  SY_RETURN_IF_ERROR(add_merges(path, *model, &bpe));
  std::unique_ptr<HfTokenizer> tok(new HfTokenizer(std::move(bpe), path));
  tok->nfc_ = normalizer != nullptr;
  tok->ignore_merges_ = ignore != nullptr && ignore->get<bool>();

  const int64_t n = tok->model_.vocab_size();
  tok->vocab_size_ = n;
  const Json* added = member(root, "added_tokens");
  if (added != nullptr && !added->is_array()) return bad(path, "added_tokens is not an array");
  if (added != nullptr && static_cast<int64_t>(added->size()) > kMaxAddedTokens)
    return bad(path, "added_tokens has more than " + std::to_string(kMaxAddedTokens));
  std::unordered_map<std::string, int32_t> by_content;
  for (size_t i = 0; added != nullptr && i < added->size(); ++i) {
    const Json& t = (*added)[i];
    const std::string where = "added_tokens[" + std::to_string(i) + "]";
    const Json* id = t.is_object() ? member(t, "id") : nullptr;
    const Json* content = t.is_object() ? member(t, "content") : nullptr;
    if (id == nullptr || !id->is_number_integer() || content == nullptr || !content->is_string())
      return bad(path, where + " needs an integer \"id\" and a string \"content\"");
    const int64_t v = id->get<int64_t>();
    if (v < 0 || v >= n + kMaxAddedTokens)
      return bad(path, where + ": id " + std::to_string(v) + " is outside [0, " +
                           std::to_string(n + kMaxAddedTokens) + ")");
    const std::string& c = content->get_ref<const std::string&>();
    if (c.empty() || static_cast<int64_t>(c.size()) > kMaxTokenBytes)
      return bad(path, where + ": content is empty or too long");
    for (const char* key : {"lstrip", "rstrip", "single_word"})
      SY_RETURN_IF_ERROR(expect_flag(path, t, key, false, where));
    const auto [it, inserted] = by_content.emplace(c, static_cast<int32_t>(v));
    if (!inserted && it->second != v)
      return bad(path, where + ": content \"" + c.substr(0, 100) + "\" is already token " +
                           std::to_string(it->second));
    if (!inserted) continue;
    tok->added_.push_back({c, static_cast<int32_t>(v)});
    tok->added_first_byte_[static_cast<uint8_t>(c[0])] = true;
    if (v >= n) {
      if (v >= tok->vocab_size_) {
        tok->vocab_size_ = v + 1;
        tok->added_by_id_.resize(static_cast<size_t>(v - n + 1));
      }
      std::string& slot = tok->added_by_id_[static_cast<size_t>(v - n)];
      if (!slot.empty() && slot != c)
        return bad(path, where + ": id " + std::to_string(v) + " is already \"" +
                             slot.substr(0, 100) + "\"");
      slot = c;
    }
  }
  std::stable_sort(tok->added_.begin(), tok->added_.end(), [](const Added& a, const Added& b) {
    return a.content.size() > b.content.size();
  });
  return tok;
}

int32_t HfTokenizer::added_token_id(std::string_view content) const {
  for (const Added& a : added_)
    if (a.content == content) return a.id;
  return -1;
}

void HfTokenizer::encode_text(std::string_view text, std::string* scratch,
                              std::vector<int32_t>* ids) const {
  if (text.empty()) return;
  if (nfc_) {
    scratch->clear();
    nfc_normalize(text, scratch);
    text = *scratch;
  }
  std::vector<std::string_view> pieces;
  qwen_pretokenize(text, &pieces);
  for (std::string_view p : pieces) {
    if (ignore_merges_) {
      const int32_t whole = model_.token_id(p);
      if (whole >= 0) {
        ids->push_back(whole);
        continue;
      }
    }
    model_.encode_pretoken(p, ids);
  }
}

std::vector<int32_t> HfTokenizer::encode(std::string_view text) const {
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 4 + 1);
  std::string scratch;
  size_t start = 0;  // text[start, i) is plain text not yet encoded
  for (size_t i = 0; i < text.size(); ++i) {
    if (!added_first_byte_[static_cast<uint8_t>(text[i])]) continue;
    const Added* hit = nullptr;
    for (const Added& a : added_) {  // longest first
      if (text.compare(i, a.content.size(), a.content) == 0) {
        hit = &a;
        break;
      }
    }
    if (hit == nullptr) continue;
    encode_text(text.substr(start, i - start), &scratch, &ids);
    ids.push_back(hit->id);
    start = i + hit->content.size();
    i = start - 1;
  }
  encode_text(text.substr(start), &scratch, &ids);
  return ids;
}

std::string HfTokenizer::decode(const std::vector<int32_t>& ids) const {
  const int64_t n = model_.vocab_size();
  std::string s;
  for (int32_t id : ids) {
    if (id >= 0 && id < n) {
      s += model_.token_bytes(id);
    } else if (id >= n && id < vocab_size_ && !added_by_id_[static_cast<size_t>(id - n)].empty()) {
      s += added_by_id_[static_cast<size_t>(id - n)];
    } else {
      s += "\xEF\xBF\xBD";  // U+FFFD
    }
  }
  return s;
}

}  // namespace sy
