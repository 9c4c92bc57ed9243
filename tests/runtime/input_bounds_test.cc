// Bounded input and atomic output (runtime/core/file_input.h, json_input.h, size_check.h,
// file_output.h): what every reader and writer of untrusted files goes through.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

#include "runtime/core/file_input.h"
#include "runtime/core/file_output.h"
#include "runtime/core/json_input.h"
#include "runtime/core/size_check.h"
#include "runtime/io/checkpoint_dir.h"

namespace sy {
namespace {

namespace fs = std::filesystem;

class InputBoundsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("sy_input_bounds_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  void write(const std::string& name, const std::string& text) const {
    std::ofstream(path(name), std::ios::binary) << text;
  }
  fs::path dir_;
};

TEST_F(InputBoundsTest, ReadsRegularFilesUpToTheCap) {
  write("a.txt", "hello");
  StatusOr<std::string> r = read_file_bounded(path("a.txt"), 5, "config");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(*r, "hello");
  write("empty.txt", "");
  EXPECT_EQ(*read_file_bounded(path("empty.txt"), 5, "config"), "");
  StatusOr<std::string> big = read_file_bounded(path("a.txt"), 4, "config");
  ASSERT_FALSE(big.ok());
  EXPECT_EQ(big.status().code(), StatusCode::kBadInput);
  EXPECT_NE(big.status().message().find("5 bytes, over the limit of 4 bytes for a config file"),
            std::string::npos)
      << big.status().message();
}

TEST_F(InputBoundsTest, RefusesWhatIsNotARegularFileWithoutReadingIt) {
  StatusOr<std::string> missing = read_file_bounded(path("nope"), 1 << 20, "corpus");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find("corpus " + path("nope") + ": no such file"),
            std::string::npos);

  StatusOr<std::string> folder = read_file_bounded(dir_.string(), 1 << 20, "config");
  ASSERT_FALSE(folder.ok());
  EXPECT_NE(folder.status().message().find("a folder, not a regular file"), std::string::npos);

  // /dev/zero would never end; a FIFO without a writer would block forever.
  StatusOr<std::string> dev = read_file_bounded("/dev/zero", 1 << 20, "config");
  ASSERT_FALSE(dev.ok());
  EXPECT_NE(dev.status().message().find("a character device"), std::string::npos);
  ASSERT_EQ(::mkfifo(path("fifo").c_str(), 0600), 0);
  const auto t0 = std::chrono::steady_clock::now();
  StatusOr<std::string> fifo = read_file_bounded(path("fifo"), 1 << 20, "config");
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(2));
  ASSERT_FALSE(fifo.ok());
  EXPECT_NE(fifo.status().message().find("a FIFO, not a regular file"), std::string::npos);

  fs::create_symlink("loop_b", path("loop_a"));
  fs::create_symlink("loop_a", path("loop_b"));
  StatusOr<std::string> loop = read_file_bounded(path("loop_a"), 1 << 20, "config");
  ASSERT_FALSE(loop.ok());
  EXPECT_EQ(loop.status().code(), StatusCode::kBadInput);
  EXPECT_NE(loop.status().message().find("symbolic links"), std::string::npos)
      << loop.status().message();
}

TEST(JsonInput, LimitsTheNestingDepthBeforeParsing) {
  const std::string ok = std::string(64, '[') + std::string(64, ']');
  EXPECT_TRUE(parse_json_bounded(ok, "x").ok());
  const std::string deep = std::string(100000, '[') + std::string(100000, ']');
  StatusOr<nlohmann::json> r = parse_json_bounded(deep, "config.json");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kBadInput);
  EXPECT_EQ(r.status().message(), "config.json: JSON nested deeper than 64 levels (at byte 64)");
  // Brackets inside strings (escaped quotes included) do not count.
  const std::string in_string = "{\"a\": \"" + std::string(1000, '[') + "\\\"[[[\", \"b\": [[1]]}";
  EXPECT_EQ(json_nesting_exceeds(in_string, 3), -1);
  EXPECT_EQ(json_nesting_exceeds("{\"a\": [[[1]]]}", 3), 8);
  StatusOr<nlohmann::json> parsed = parse_json_bounded(in_string, "x");
  ASSERT_TRUE(parsed.ok());
  EXPECT_EQ((*parsed)["b"][0][0], 1);
}

TEST(JsonInput, ErrorsStayShort) {
  StatusOr<nlohmann::json> bad =
      parse_json_bounded("{\"a\": " + std::string(100000, '1') + "x}", "config.json");
  ASSERT_FALSE(bad.ok());
  EXPECT_LT(bad.status().message().size(), 300u) << bad.status().message();
  StatusOr<nlohmann::json> arr = parse_json_object_bounded("[1, 2, 3]", "f");
  ASSERT_FALSE(arr.ok());
  EXPECT_EQ(arr.status().message(), "f: not a JSON object (an array of 3 values)");
  EXPECT_EQ(json_brief(nlohmann::json(std::string(1000, 'a'))),
            "\"" + std::string(60, 'a') + "...\" (1000 bytes)");
  EXPECT_EQ(json_brief(nlohmann::json::parse("{\"a\": 1, \"b\": [1, 2]}")),
            "an object with 2 keys");
  EXPECT_EQ(json_brief(nlohmann::json(2.5)), "2.5");
}

TEST(SizeCheck, NamesTheFieldAndNeverWraps) {
  EXPECT_TRUE(check_size("moe.d_model", 256, 1, 65536).ok());
  const Status s = check_size("moe.d_model", int64_t{1000000000000}, 1, 65536);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(), "moe.d_model must be in [1, 65536] (got 1000000000000)");
  EXPECT_EQ(*checked_product({{"a", 3}, {"b", 4}}, 12, "x"), 12);
  const StatusOr<int64_t> over = checked_product({{"a", 3}, {"b", 5}}, 12, "values");
  ASSERT_FALSE(over.ok());
  EXPECT_EQ(over.status().message(), "values: a 3 x b 5 = 15, over the limit of 12");
  // 2^57 x 2^7 wraps an int64 to 0: refused, not 0.
  const StatusOr<int64_t> wrap =
      checked_product({{"data.batch_groups", int64_t{1} << 57}, {"data.group_tokens", 128}},
                      int64_t{1} << 26, "tokens per rank per step");
  ASSERT_FALSE(wrap.ok());
  EXPECT_NE(wrap.status().message().find("more than 2^63"), std::string::npos);
}

TEST_F(InputBoundsTest, AtomicWritesLeaveTheOldFileWhenTheyFail) {
  const std::string p = path("out.npy");
  ASSERT_TRUE(write_file_atomic(p, std::string("old")).ok());
  // Every writer (checkpoint shards, token files, reports, .npy) goes through this one: a
  // finished write leaves only its file, no temporary.
  EXPECT_EQ(std::distance(fs::directory_iterator(dir_), fs::directory_iterator()), 1);
  AtomicWriteOptions full;
  full.fail_errno = ENOSPC;
  full.fail_after = 2;
  const Status s = write_file_atomic(p, std::string("new contents"), full);
  EXPECT_EQ(s.code(), StatusCode::kIo);
  EXPECT_EQ(s.exit_code(), 23);
  EXPECT_NE(s.message().find("No space left on device"), std::string::npos) << s.message();
  std::ifstream in(p);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(text, "old");
  EXPECT_EQ(std::distance(fs::directory_iterator(dir_), fs::directory_iterator()), 1)
      << "the temporary file was left behind";
  const Status missing = write_file_atomic(path("no/such/dir/f"), std::string("x"));
  EXPECT_EQ(missing.code(), StatusCode::kIo);
  EXPECT_NE(missing.message().find("cannot write " + path("no/such/dir/f")), std::string::npos);
}

// docs/RELIABILITY.md E3: a checkpoint whose shard is changed, cut or missing against its
// manifest is the checkpoint-integrity class (exit 23), naming the file; a manifest that is
// not one stays malformed input (22).
TEST_F(InputBoundsTest, CorruptCheckpointsAreTheCheckpointClass) {
  const std::string text(4096, 'w');
  auto rec = write_file_hashed(dir_.string(), "model.safetensors", text);
  ASSERT_TRUE(rec.ok()) << rec.status().ToString();
  Manifest m;
  m.step = 2;
  m.files["model.safetensors"] = *rec;
  ASSERT_TRUE(write_manifest(dir_.string(), m).ok());
  ASSERT_TRUE(verify_checkpoint(dir_.string()).ok());
  auto expect_corrupt = [&](const std::string& what) {
    const auto v = verify_checkpoint(dir_.string());
    ASSERT_FALSE(v.ok());
    EXPECT_EQ(v.status().code(), StatusCode::kCorruptCheckpoint);
    EXPECT_EQ(v.status().exit_code(), 23);
    EXPECT_NE(v.status().message().find(what + ": model.safetensors"), std::string::npos)
        << v.status().message();
  };
  std::string flipped = text;
  flipped[1000] ^= 1;
  write("model.safetensors", flipped);
  expect_corrupt("is corrupted");
  write("model.safetensors", text.substr(0, 4000));
  expect_corrupt("is corrupted");
  fs::remove(path("model.safetensors"));
  expect_corrupt("is incomplete");
  write("manifest.json", "{\"format\": \"something else\"}");
  const auto v = verify_checkpoint(dir_.string());
  ASSERT_FALSE(v.ok());
  EXPECT_EQ(v.status().exit_code(), 22) << v.status().ToString();
}

TEST_F(InputBoundsTest, WritableDirsAreCheckedUpFront) {
  EXPECT_TRUE(check_writable_dir(path("a/b"), "--checkpoint-dir").ok());
  EXPECT_TRUE(fs::is_directory(path("a/b")));
  EXPECT_TRUE(fs::is_empty(path("a/b")));
  write("file", "x");
  const Status s = check_writable_dir(path("file/ck"), "--checkpoint-dir");
  EXPECT_EQ(s.code(), StatusCode::kIo);
  EXPECT_NE(s.message().find("--checkpoint-dir " + path("file/ck") + ": cannot create"),
            std::string::npos)
      << s.message();
}

}  // namespace
}  // namespace sy
