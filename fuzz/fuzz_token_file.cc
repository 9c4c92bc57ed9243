// libFuzzer target for binary token files (runtime/data/token_file.h): any bytes, written to a
// file of this process, give a Status from every reader, never a crash, leak or UB. The readers
// must agree: the header reads when the whole file does; a file that reads is the writer's own
// bytes (the format has one encoding); and then every shard of it reads, for several sequence
// lengths and rank counts, the ranks' sequences cover each sequence once and hold exactly the
// whole file's ids. Built only with clang (fuzz/CMakeLists.txt); run longer with
//   bash tests/launch/fuzz_smoke.sh . /tmp/fz token_file 1000000
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "fuzz/fuzz_file.h"
#include "runtime/data/token_file.h"

namespace {

std::string ReadFile(const std::string& path) {
  std::string out;
  FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) return out;
  char buf[4096];
  for (size_t n; (n = std::fread(buf, 1, sizeof(buf), f)) > 0;) out.append(buf, n);
  std::fclose(f);
  return out;
}

// Every rank's shard of the file for (seq_len, P): each reads, and together they are the whole
// file's sequences, each once, in order within a rank.
void CheckShards(const std::string& path, const std::vector<int32_t>& ids, int64_t seq_len, int P) {
  const int64_t S = static_cast<int64_t>(ids.size()) / seq_len;
  std::vector<int> seen(static_cast<size_t>(S), 0);
  for (int rank = 0; rank < P; ++rank) {
    auto shard = sy::read_token_shard(path, seq_len, rank, P);
    if (!shard.ok() || shard->total_sequences != S ||
        shard->ids_NL.size() != shard->sequences.size() * static_cast<size_t>(seq_len))
      __builtin_trap();
    for (size_t k = 0; k < shard->sequences.size(); ++k) {
      const int64_t s = shard->sequences[k];
      if (s < 0 || s >= S || s % P != rank || seen[static_cast<size_t>(s)]++) __builtin_trap();
      for (int64_t i = 0; i < seq_len; ++i)
        if (shard->ids_NL[k * seq_len + i] != ids[s * seq_len + i]) __builtin_trap();
    }
  }
  for (int n : seen)
    if (n != 1) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string in = sy::fuzz::TmpPath("token_file", ".tok"),
                    out = sy::fuzz::TmpPath("token_file", ".out.tok");
  if (!sy::fuzz::WriteFile(in, data, size)) return 0;
  auto header = sy::read_token_file_header(in);
  sy::TokenFileHeader h;
  auto ids = sy::read_token_file(in, &h);
  // Bad arguments are refused whatever the file holds.
  if (sy::read_token_shard(in, 0, 0, 1).ok() || sy::read_token_shard(in, 4, 2, 2).ok())
    __builtin_trap();
  if (!ids.ok()) {
    // One rank's shard of sequences of 1 id is every id: it fails as the whole file does.
    if (sy::read_token_shard(in, 1, 0, 1).ok()) __builtin_trap();
    return 0;
  }
  if (!header.ok() || header->count != ids->size() || h.count != ids->size() ||
      h.vocab_size != header->vocab_size)
    __builtin_trap();
  // A file that reads is exactly what the writer makes of its ids.
  if (!sy::write_token_file(out, *ids, h.vocab_size).ok()) __builtin_trap();
  if (ReadFile(out) != std::string(reinterpret_cast<const char*>(data), size)) __builtin_trap();
  ::unlink(out.c_str());
  for (int64_t seq_len : {1, 3, 8})
    for (int P : {1, 2, 3}) CheckShards(in, *ids, seq_len, P);
  return 0;
}
