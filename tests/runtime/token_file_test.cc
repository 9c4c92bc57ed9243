// Binary token files (runtime/data/token_file.h): round trip, shards that cover every
// sequence exactly once, and hostile files (truncated, garbage, bad ids) rejected as BadInput
// naming the file.
#include <gtest/gtest.h>

#include <fstream>
#include <set>

#include "runtime/core/rng.h"
#include "runtime/data/corpus.h"
#include "runtime/data/token_file.h"

namespace sy {
namespace {

std::string temp_path(const std::string& name) {
  return ::testing::TempDir() + "/sy_tokfile_" + name;
}

std::vector<int32_t> random_ids(size_t n, int32_t vocab, uint64_t seed) {
  Rng rng(seed);
  std::vector<int32_t> ids(n);
  for (int32_t& id : ids) id = static_cast<int32_t>(rng.below(static_cast<uint64_t>(vocab)));
  return ids;
}

TEST(TokenFile, RoundTripAndLayout) {
  const std::string path = temp_path("rt.bin");
  const std::vector<int32_t> ids = random_ids(1001, 151669, 1);
  ASSERT_TRUE(write_token_file(path, ids, 151669).ok());
  TokenFileHeader h;
  auto back = read_token_file(path, &h);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(*back, ids);
  EXPECT_EQ(h.version, 1u);
  EXPECT_EQ(h.vocab_size, 151669u);
  EXPECT_EQ(h.count, 1001u);
  auto bytes = read_file(path);
  ASSERT_TRUE(bytes.ok());
  ASSERT_EQ(bytes->size(), 32u + 4u * 1001u);
  EXPECT_EQ(bytes->substr(0, 8), std::string("SYTOK1\0\0", 8));
  EXPECT_EQ(static_cast<uint8_t>((*bytes)[12]), 151669 & 0xFF);  // little-endian
  EXPECT_EQ(static_cast<uint8_t>((*bytes)[32]), static_cast<uint32_t>(ids[0]) & 0xFF);

  // Empty files are fine too (input_bounds_test checks that no temporary is left behind).
  ASSERT_TRUE(write_token_file(path, {}, 5).ok());
  auto empty = read_token_file(path);
  ASSERT_TRUE(empty.ok());
  EXPECT_TRUE(empty->empty());
}

TEST(TokenFile, WriterRejectsBadArguments) {
  EXPECT_EQ(write_token_file(temp_path("w.bin"), {1, 2, 9}, 9).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(write_token_file(temp_path("w.bin"), {-1}, 9).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(write_token_file(temp_path("w.bin"), {0}, 0).code(), StatusCode::kInvalidArgument);
  const Status st = write_token_file("/nonexistent/dir/x.bin", {0}, 2);
  EXPECT_EQ(st.code(), StatusCode::kIo);  // an output that cannot be written: exit 23
  EXPECT_NE(st.message().find("/nonexistent/dir/x.bin"), std::string::npos);
}

TEST(TokenFile, ShardsCoverEverySequenceOnce) {
  const std::string path = temp_path("shard.bin");
  const std::vector<int32_t> ids = random_ids(1000, 777, 2);
  ASSERT_TRUE(write_token_file(path, ids, 777).ok());
  for (int64_t seq_len : {1, 7, 64, 1000, 1001}) {
    const int64_t S = 1000 / seq_len;
    for (int P : {1, 2, 3}) {
      std::set<int64_t> seen;
      for (int r = 0; r < P; ++r) {
        auto shard = read_token_shard(path, seq_len, r, P);
        ASSERT_TRUE(shard.ok()) << shard.status().ToString();
        EXPECT_EQ(shard->total_sequences, S);
        ASSERT_EQ(shard->ids_NL.size(), shard->sequences.size() * static_cast<size_t>(seq_len));
        for (size_t k = 0; k < shard->sequences.size(); ++k) {
          const int64_t s = shard->sequences[k];
          EXPECT_EQ(s % P, r);
          EXPECT_TRUE(seen.insert(s).second) << "sequence " << s << " twice";
          EXPECT_TRUE(std::equal(ids.begin() + s * seq_len, ids.begin() + (s + 1) * seq_len,
                                 shard->ids_NL.begin() + static_cast<int64_t>(k) * seq_len));
        }
      }
      EXPECT_EQ(static_cast<int64_t>(seen.size()), S) << "seq_len " << seq_len << " P " << P;
    }
  }
  EXPECT_EQ(read_token_shard(path, 0, 0, 1).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(read_token_shard(path, 8, 2, 2).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(read_token_shard(path, 8, -1, 2).status().code(), StatusCode::kInvalidArgument);
}

TEST(TokenFile, HostileFilesAreBadInputNamingTheFile) {
  const std::string good_path = temp_path("good.bin");
  ASSERT_TRUE(write_token_file(good_path, random_ids(100, 50, 3), 50).ok());
  const std::string good = read_file(good_path).value();
  const auto expect_bad = [](const std::string& name, const std::string& bytes, const char* what) {
    const std::string path = temp_path(name);
    std::ofstream(path, std::ios::binary) << bytes;
    for (const Status& st : {read_token_file(path).status(), read_token_file_header(path).status(),
                             read_token_shard(path, 10, 0, 1).status()}) {
      EXPECT_EQ(st.code(), StatusCode::kBadInput) << name << ": " << st.ToString();
      EXPECT_NE(st.message().find(path), std::string::npos) << st.ToString();
      EXPECT_NE(st.message().find(what), std::string::npos) << st.ToString();
    }
  };
  expect_bad("empty.bin", "", "too short");
  expect_bad("short.bin", good.substr(0, 20), "too short");
  expect_bad("truncated.bin", good.substr(0, good.size() - 2), "truncated or corrupt");
  expect_bad("longer.bin", good + "xxxx", "truncated or corrupt");
  expect_bad("garbage.bin", std::string(200, 'g'), "not a token file");
  std::string s = good;
  s[8] = 2;
  expect_bad("version.bin", s, "version 2");
  s = good;
  s[24] = 1;
  expect_bad("reserved.bin", s, "reserved");
  s = good;
  s[12] = s[13] = s[14] = s[15] = 0;
  expect_bad("vocab0.bin", s, "vocab_size is 0");
  s = good;
  s[23] = '\x7F';  // count near 2^63: size arithmetic must not overflow
  expect_bad("count.bin", s, "truncated or corrupt");
  // An id >= vocab_size in the first sequence (read by every reader here).
  s = good;
  s[32] = '\x33';  // 51 >= 50
  s[33] = s[34] = s[35] = 0;
  const std::string path = temp_path("badid.bin");
  std::ofstream(path, std::ios::binary) << s;
  const Status st = read_token_file(path).status();
  EXPECT_EQ(st.code(), StatusCode::kBadInput);
  EXPECT_NE(st.message().find("id 51 at position 0 is outside [0, 50)"), std::string::npos)
      << st.ToString();
  EXPECT_EQ(read_token_shard(path, 10, 0, 1).status().code(), StatusCode::kBadInput);
  EXPECT_TRUE(read_token_shard(path, 10, 1, 2).ok());  // rank 1 never reads sequence 0
  EXPECT_EQ(read_token_file(temp_path("absent.bin")).status().code(), StatusCode::kNotFound);
}

}  // namespace
}  // namespace sy
