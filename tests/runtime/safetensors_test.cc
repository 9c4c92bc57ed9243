// safetensors reader/writer: round trip, row slices, and hostile files.
#include "runtime/io/safetensors.h"

#include <dirent.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <random>
#include <string>
#include <vector>

namespace sy {
namespace {

std::string TmpPath(const std::string& name) {
  return ::testing::TempDir() + "/st_" + std::to_string(::getpid()) + "_" + name;
}

// Unlink first: rewriting a truncated file makes ext4 flush it on close (auto_da_alloc).
void WriteFile(const std::string& path, const std::string& bytes) {
  ::unlink(path.c_str());
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::string ReadFile(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

std::string Le64(uint64_t v) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = static_cast<char>(v >> (8 * i));
  return s;
}

// A file with this header text and `data_len` zero bytes of data.
std::string Image(const std::string& header, size_t data_len) {
  return Le64(header.size()) + header + std::string(data_len, '\0');
}

std::string Entry(const std::string& name, const std::string& dtype, const std::string& shape,
                  const std::string& offsets) {
  return "\"" + name + "\":{\"dtype\":\"" + dtype + "\",\"shape\":" + shape +
         ",\"data_offsets\":" + offsets + "}";
}

TEST(Safetensors, RoundTrip) {
  const std::string path = TmpPath("roundtrip.safetensors");
  std::vector<float> w = {1.0f, -2.5f, 3.25f, 0.0f, 1e-3f, 7.0f};
  std::vector<uint16_t> bf(w.size());
  for (size_t i = 0; i < w.size(); ++i) bf[i] = f32_to_bf16(w[i]);
  std::vector<int8_t> q = {-128, -1, 0, 1, 127};
  std::vector<SafetensorsWriteTensor> ts = {
      {"model.layers.0.mlp.gate.weight", SafeDtype::kF32, {2, 3}, w.data(), w.size() * 4},
      {"model.layers.0.mlp.experts.0.up_proj.weight",
       SafeDtype::kBF16,
       {3, 2},
       bf.data(),
       bf.size() * 2},
      {"q", SafeDtype::kI8, {5}, q.data(), q.size()},
      {"empty", SafeDtype::kF32, {0, 4}, nullptr, 0},
  };
  ASSERT_TRUE(safetensors_write(path, ts, {{"format", "pt"}}).ok());

  auto r = SafetensorsReader::Open(path);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ((r->data_start() - 8) % 8, 0u);
  ASSERT_EQ(r->tensors().size(), 4u);
  EXPECT_EQ(r->tensors()[0].name, "empty");  // sorted by name
  EXPECT_EQ(r->metadata().at("format"), "pt");
  const SafetensorsEntry* g = r->Find("model.layers.0.mlp.gate.weight");
  ASSERT_NE(g, nullptr);
  EXPECT_EQ(g->dtype, SafeDtype::kF32);
  EXPECT_EQ(g->shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(g->nbytes(), 24u);
  auto t = r->ReadF32("model.layers.0.mlp.gate.weight");
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->data, w);
  auto b = r->ReadF32("model.layers.0.mlp.experts.0.up_proj.weight");
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->shape, (std::vector<int64_t>{3, 2}));
  for (size_t i = 0; i < w.size(); ++i) EXPECT_NEAR(b->data[i], w[i], std::fabs(w[i]) / 128);
  auto qb = r->ReadBytes("q");
  ASSERT_TRUE(qb.ok());
  EXPECT_EQ(std::memcmp(qb->data(), q.data(), q.size()), 0);
  EXPECT_FALSE(r->ReadF32("q").ok());  // I8 is not converted
  auto e = r->ReadF32("empty");
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e->shape, (std::vector<int64_t>{0, 4}));
  EXPECT_EQ(r->ReadBytes("nope").status().code(), StatusCode::kNotFound);

  EXPECT_TRUE(r->CheckSchema({{"q", SafeDtype::kI8, {5}}}, /*allow_extra=*/true).ok());
  Status s = r->CheckSchema({{"q", SafeDtype::kI8, {6}}, {"missing.w", SafeDtype::kF32, {1}}},
                            /*allow_extra=*/false);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("missing.w"), std::string::npos);
  EXPECT_NE(s.message().find("q(I8 [5]"), std::string::npos);
  EXPECT_NE(s.message().find("unexpected: empty"), std::string::npos);

  // The writer's output passes the in-memory validator too.
  const std::string img = ReadFile(path);
  EXPECT_TRUE(
      safetensors_validate_image(reinterpret_cast<const uint8_t*>(img.data()), img.size(), "img")
          .ok());
}

TEST(Safetensors, WriterRejectsBadInput) {
  float x = 1;
  const std::string path = TmpPath("bad_write.safetensors");
  EXPECT_FALSE(safetensors_write(
                   path, {{"a", SafeDtype::kF32, {1}, &x, 4}, {"a", SafeDtype::kF32, {1}, &x, 4}})
                   .ok());
  EXPECT_FALSE(safetensors_write(path, {{"a", SafeDtype::kF32, {2}, &x, 4}}).ok());
  EXPECT_FALSE(safetensors_write(path, {{"__metadata__", SafeDtype::kF32, {1}, &x, 4}}).ok());
}

TEST(Safetensors, F16AndBf16Conversion) {
  const uint8_t h[] = {0x00, 0x3C, 0x00, 0xC0, 0xFF, 0x7B, 0x01, 0x00, 0x00, 0x7C, 0x00, 0x80};
  float out[6];
  ASSERT_TRUE(safetensors_to_f32(SafeDtype::kF16, h, 6, out).ok());
  EXPECT_EQ(out[0], 1.0f);
  EXPECT_EQ(out[1], -2.0f);
  EXPECT_EQ(out[2], 65504.0f);
  EXPECT_EQ(out[3], std::ldexp(1.0f, -24));
  EXPECT_TRUE(std::isinf(out[4]));
  EXPECT_TRUE(std::signbit(out[5]) && out[5] == 0.0f);
  EXPECT_EQ(f32_to_bf16(1.0f), 0x3F80);
  EXPECT_EQ(f32_to_bf16(1.00390625f), 0x3F80);  // tie rounds to even
  EXPECT_EQ(f32_to_bf16(1.01171875f), 0x3F82);  // tie rounds to even (up)
  const uint16_t nan_bits = f32_to_bf16(std::nanf(""));
  EXPECT_TRUE((nan_bits & 0x7F80) == 0x7F80 && (nan_bits & 0x7F) != 0);
}

TEST(Safetensors, RowSlices) {
  const std::string path = TmpPath("rows.safetensors");
  std::vector<float> w(4 * 3 * 2);
  for (size_t i = 0; i < w.size(); ++i) w[i] = static_cast<float>(i);
  std::vector<uint16_t> bf(8);
  for (size_t i = 0; i < bf.size(); ++i) bf[i] = f32_to_bf16(static_cast<float>(i));
  ASSERT_TRUE(safetensors_write(path, {{"experts.w", SafeDtype::kF32, {4, 3, 2}, w.data(), 96},
                                       {"b", SafeDtype::kBF16, {4, 2}, bf.data(), 16},
                                       {"s", SafeDtype::kF32, {}, w.data(), 4}})
                  .ok());
  auto r = SafetensorsReader::Open(path);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  auto t = r->ReadRowsF32("experts.w", 1, 2);
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  EXPECT_EQ(t->shape, (std::vector<int64_t>{2, 3, 2}));
  ASSERT_EQ(t->data.size(), 12u);
  for (size_t i = 0; i < 12; ++i) EXPECT_EQ(t->data[i], static_cast<float>(6 + i));
  auto bb = r->ReadRowsF32("b", 3, 1);
  ASSERT_TRUE(bb.ok());
  EXPECT_EQ(bb->data, (std::vector<float>{6.0f, 7.0f}));
  EXPECT_TRUE(r->ReadRowsF32("experts.w", 4, 0).ok());
  EXPECT_FALSE(r->ReadRowsF32("experts.w", 3, 2).ok());
  EXPECT_FALSE(r->ReadRowsF32("experts.w", -1, 1).ok());
  EXPECT_FALSE(r->ReadRowsF32("experts.w", 1, std::numeric_limits<int64_t>::max()).ok());
  EXPECT_FALSE(r->ReadRowsBytes("s", 0, 1).ok());  // scalar has no rows
  auto s = r->ReadF32("s");
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->data, (std::vector<float>{0.0f}));
}

struct HostileCase {
  const char* label;
  std::string bytes;
  const char* want;  // substring of the error message
};

std::vector<HostileCase> HostileCases() {
  const std::string ok_entry = Entry("a", "F32", "[1]", "[0,4]");
  auto one = [](const std::string& e, size_t data) { return Image("{" + e + "}", data); };
  return {
      // header length
      {"empty file", "", "HeaderTooSmall"},
      {"7 bytes", std::string(7, '\0'), "HeaderTooSmall"},
      {"len past end", Le64(1000) + "{}", "InvalidHeaderLength"},
      {"len > 100 MiB", Le64(200ull << 20) + "{}", "HeaderTooLarge"},
      {"8+N overflows", Le64(~0ull - 3) + "{}", "HeaderTooLarge"},
      {"len zero", Le64(0) + "{}", "InvalidHeaderLength"},
      // header text
      {"not utf8", Image("{\"a\xff\":1}", 0), "UTF-8"},
      {"overlong utf8", Image("{\"\xc0\xaf\":1}", 0), "UTF-8"},
      {"surrogate utf8", Image("{\"\xed\xa0\x80\":1}", 0), "UTF-8"},
      {"nul byte", Image(std::string("{}\0x", 4), 0), "NUL"},
      {"not json", Image("{abc", 0), "invalid JSON"},
      {"trailing garbage", Image("{} x", 0), "invalid JSON"},
      {"array", Image("[1,2]", 0), "not a JSON object"},
      {"string", Image("\"x\"", 0), "not a JSON object"},
      {"duplicate key", Image("{" + ok_entry + "," + ok_entry + "}", 4), "duplicate key 'a'"},
      {"duplicate metadata key", Image("{\"__metadata__\":{\"k\":\"1\",\"k\":\"2\"}}", 0),
       "duplicate key 'k'"},
      {"deep nesting",
       Image("{\"__metadata__\":" + std::string(64, '[') + std::string(64, ']') + "}", 0),
       "nested deeper"},
      // entries
      {"entry not object", Image("{\"a\":1}", 0), "tensor 'a': entry is not an object"},
      {"missing dtype", one("\"a\":{\"shape\":[1],\"data_offsets\":[0,4]}", 4), "missing field"},
      {"missing offsets", one("\"a\":{\"dtype\":\"F32\",\"shape\":[1]}", 4), "missing field"},
      {"unknown field",
       one("\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],"
           "\"x\":1}",
           4),
       "unknown field 'x'"},
      {"dtype not string", one("\"a\":{\"dtype\":4,\"shape\":[1],\"data_offsets\":[0,4]}", 4),
       "dtype is not a string"},
      {"unknown dtype", one(Entry("a", "F33", "[1]", "[0,4]"), 4), "unknown dtype 'F33'"},
      {"shape not array", one(Entry("a", "F32", "1", "[0,4]"), 4), "shape is not an array"},
      {"shape float", one(Entry("a", "F32", "[1.5]", "[0,4]"), 4), "not an integer"},
      {"shape string", one(Entry("a", "F32", "[\"1\"]", "[0,4]"), 4), "not an integer"},
      {"negative dim", one(Entry("a", "F32", "[-1]", "[0,4]"), 4), "negative dimension"},
      {"rank too big", one(Entry("a", "F32", "[1,1,1,1,1,1,1,1,1]", "[0,4]"), 4), "rank 9"},
      {"offsets not pair", one(Entry("a", "F32", "[1]", "[0]"), 4), "data_offsets"},
      {"offsets negative", one(Entry("a", "F32", "[1]", "[-4,0]"), 4), "data_offsets"},
      {"offsets huge float", one(Entry("a", "F32", "[1]", "[0,1e30]"), 4), "data_offsets"},
      {"metadata not object", Image("{\"__metadata__\":[]}", 0), "__metadata__"},
      {"metadata value int", Image("{\"__metadata__\":{\"k\":1}}", 0), "__metadata__ value 'k'"},
      // overflow and byte counts
      {"shape 2^32 x 2^32", one(Entry("a", "F32", "[4294967296,4294967296]", "[0,4]"), 4),
       "overflows the element count"},
      {"dim > int64", one(Entry("a", "U8", "[9223372036854775808]", "[0,4]"), 4),
       "overflows the element count"},
      {"bytes overflow", one(Entry("a", "F32", "[4611686018427387904]", "[0,4]"), 4),
       "overflows the byte count"},
      {"bytes != end-begin", one(Entry("a", "F32", "[2]", "[0,4]"), 4), "!= end - begin"},
      // offsets
      {"end < begin", one(Entry("a", "F32", "[1]", "[8,4]"), 8), "end < begin"},
      {"out of range", one(Entry("a", "F32", "[2]", "[0,8]"), 4), "out of range"},
      {"huge offsets",
       one(Entry("a", "F32", "[0]", "[18446744073709551615,18446744073709551615]"), 0),
       "out of range"},
      {"overlap",
       Image(
           "{" + Entry("a", "F32", "[2]", "[0,8]") + "," + Entry("b", "F32", "[2]", "[4,12]") + "}",
           12),
       "overlaps"},
      {"gap",
       Image(
           "{" + Entry("a", "F32", "[1]", "[0,4]") + "," + Entry("b", "F32", "[1]", "[8,12]") + "}",
           12),
       "gap of 4 bytes"},
      {"not from zero", one(Entry("a", "F32", "[1]", "[4,8]"), 8), "gap"},
      {"trailing bytes", one(ok_entry, 8), "MetadataIncompleteBuffer"},
      {"missing data", one(ok_entry, 2), "out of range"},
  };
}

TEST(Safetensors, HostileFilesAreRejected) {
  int i = 0;
  for (const auto& c : HostileCases()) {
    const std::string path = TmpPath("hostile_" + std::to_string(i++));
    WriteFile(path, c.bytes);
    auto r = SafetensorsReader::Open(path);
    ASSERT_FALSE(r.ok()) << c.label;
    EXPECT_EQ(r.status().code(), StatusCode::kBadInput) << c.label;
    EXPECT_EQ(r.status().exit_code(), kExitBadInput) << c.label;
    EXPECT_NE(r.status().message().find(c.want), std::string::npos)
        << c.label << ": " << r.status().message();
    EXPECT_NE(r.status().message().find(path), std::string::npos) << c.label;
    const auto* p = reinterpret_cast<const uint8_t*>(c.bytes.data());
    EXPECT_FALSE(safetensors_validate_image(p, c.bytes.size(), "img").ok()) << c.label;
    ::unlink(path.c_str());
  }
}

// A known dtype that is wrong for a weight (docs/RELIABILITY.md F5): refused naming the tensor, the
// dtype and what a weight may be, for a matrix and a scalar alike.
TEST(Safetensors, WeightsOfANonFloatDtypeAreRefused) {
  const std::string path = TmpPath("int_weights.safetensors");
  const int64_t w[4] = {1, 2, 3, 4};
  const uint8_t u = 7;
  ASSERT_TRUE(safetensors_write(path, {{"w", SafeDtype::kI64, {2, 2}, w, sizeof w},
                                       {"u", SafeDtype::kU8, {}, &u, 1}})
                  .ok());
  auto r = SafetensorsReader::Open(path);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  for (const char* name : {"w", "u"}) {
    auto t = r->ReadF32(name);
    ASSERT_FALSE(t.ok()) << name;
    EXPECT_EQ(t.status().code(), StatusCode::kBadInput) << name;
    EXPECT_NE(t.status().message().find(std::string("tensor '") + name + "' has dtype " +
                                        (name[0] == 'w' ? "I64" : "U8") + ", not F32/F16/BF16"),
              std::string::npos)
        << t.status().message();
  }
}

TEST(Safetensors, NonFiniteIsAnErrorByDefault) {
  const std::string path = TmpPath("nan.safetensors");
  const float v[3] = {1.0f, std::nanf(""), 2.0f};
  ASSERT_TRUE(safetensors_write(path, {{"w", SafeDtype::kF32, {3}, v, 12}}).ok());
  auto r = SafetensorsReader::Open(path);
  ASSERT_TRUE(r.ok());
  auto t = r->ReadF32("w");
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), StatusCode::kNonFinite);
  EXPECT_NE(t.status().message().find("'w'"), std::string::npos);
  EXPECT_TRUE(r->ReadF32("w", /*allow_non_finite=*/true).ok());
}

TEST(Safetensors, FileTruncatedOrChangedAfterOpen) {
  const std::string path = TmpPath("trunc.safetensors");
  std::vector<float> w(64, 1.0f);
  ASSERT_TRUE(safetensors_write(path, {{"w", SafeDtype::kF32, {8, 8}, w.data(), 256}}).ok());
  auto r = SafetensorsReader::Open(path);
  ASSERT_TRUE(r.ok());
  ASSERT_TRUE(r->ReadRowsF32("w", 0, 1).ok());
  ASSERT_EQ(::truncate(path.c_str(), static_cast<off_t>(r->file_size() - 16)), 0);
  auto t = r->ReadRowsF32("w", 0, 1);  // even rows still present: the file is not the same
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), StatusCode::kBadInput);
  EXPECT_NE(t.status().message().find("changed while loading"), std::string::npos);
  ASSERT_EQ(::truncate(path.c_str(), static_cast<off_t>(r->file_size() + 100)), 0);
  EXPECT_FALSE(r->ReadF32("w").ok());
}

// Seeded mutations of a valid file: every outcome is a Status, never a crash.
TEST(Safetensors, MutatedFilesNeverCrash) {
  const std::string base_path = TmpPath("mut_base.safetensors");
  std::vector<float> w(12, 0.5f);
  std::vector<uint16_t> h(6, 0x3C00);
  ASSERT_TRUE(safetensors_write(base_path,
                                {{"a", SafeDtype::kF32, {3, 4}, w.data(), 48},
                                 {"b", SafeDtype::kF16, {2, 3}, h.data(), 12},
                                 {"c", SafeDtype::kBF16, {6}, h.data(), 12}},
                                {{"format", "pt"}})
                  .ok());
  const std::string base = ReadFile(base_path);
  std::mt19937_64 rng(1234);
  const std::string path = TmpPath("mut.safetensors");
  int opened = 0;
  for (int it = 0; it < 2000; ++it) {
    std::string m = base;
    const int kind = static_cast<int>(rng() % 4);
    if (kind == 0) {
      m.resize(rng() % m.size());
    } else if (kind == 1) {
      for (int k = 0, n = 1 + static_cast<int>(rng() % 4); k < n; ++k)
        m[rng() % m.size()] ^= static_cast<char>(1u << (rng() % 8));
    } else if (kind == 2) {
      const size_t hdr_end = 8 + ((base[0] & 0xFF) | (base[1] & 0xFF) << 8);
      m[8 + rng() % (hdr_end - 8)] = "0123456789[]{},\":-e.A"[rng() % 21];
    } else {
      m[rng() % 8] = static_cast<char>(rng());
    }
    WriteFile(path, m);
    auto r = SafetensorsReader::Open(path);
    const auto* p = reinterpret_cast<const uint8_t*>(m.data());
    EXPECT_EQ(r.ok(), safetensors_validate_image(p, m.size(), "img").ok()) << it;
    if (!r.ok()) continue;
    ++opened;
    for (const auto& e : r->tensors()) {
      EXPECT_TRUE(r->ReadBytes(e.name).ok());
      (void)r->ReadF32(e.name, true);
      if (!e.shape.empty()) (void)r->ReadRowsF32(e.name, 0, e.shape[0] > 0 ? 1 : 0, true);
    }
  }
  EXPECT_GT(opened, 0);
}

// Replays the fuzzer seed corpus (and any reproducers added to it): valid_* files must open,
// everything else must be rejected with a Status.
TEST(Safetensors, FuzzCorpusReplay) {
  const std::string dir = std::string(SY_SOURCE_DIR) + "/fuzz/corpus/safetensors";
  DIR* d = ::opendir(dir.c_str());
  ASSERT_NE(d, nullptr) << dir;
  int n = 0;
  while (dirent* ent = ::readdir(d)) {
    const std::string name = ent->d_name;
    if (name[0] == '.') continue;
    auto r = SafetensorsReader::Open(dir + "/" + name);
    EXPECT_EQ(r.ok(), name.rfind("valid", 0) == 0) << name << ": " << r.status().ToString();
    if (r.ok()) {
      for (const auto& e : r->tensors()) EXPECT_TRUE(r->ReadBytes(e.name).ok()) << name;
    }
    ++n;
  }
  ::closedir(d);
  EXPECT_GT(n, 0);
}

}  // namespace
}  // namespace sy
