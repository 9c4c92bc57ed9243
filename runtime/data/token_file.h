// Binary token files: a corpus tokenized once (`switchyard tokenize`) and read back by any
// number of ranks without the tokenizer. Little-endian, fixed 32-byte header:
//
//   offset  size        field
//        0     8        magic "SYTOK1\0\0"
//        8     4  u32   version (1)
//       12     4  u32   vocab_size: every id is in [0, vocab_size)
//       16     8  u64   count: number of ids
//       24     8  u64   reserved, 0
//       32  4*count i32 ids, in corpus order
//
// The file size is exactly 32 + 4*count. Files are untrusted: readers check the magic,
// version, reserved field, size and every id they return, and answer NotFound / BadInput
// naming the file, never abort. The writer is atomic (a temporary file in the same folder,
// then rename), so a reader never sees a half-written file.
//
// Sharding (read_token_shard): the ids are cut into S = floor(count / seq_len) sequences of
// seq_len consecutive ids (the tail of count % seq_len ids is unused), and rank r of P gets
// sequences r, r + P, r + 2P, ... (so ranks differ by at most one sequence, and P shards cover
// every sequence exactly once). Each rank reads only its own sequences, with pread.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "runtime/core/status.h"

namespace sy {

constexpr char kTokenFileMagic[8] = {'S', 'Y', 'T', 'O', 'K', '1', '\0', '\0'};
constexpr uint32_t kTokenFileVersion = 1;
constexpr int64_t kTokenFileHeaderBytes = 32;

struct TokenFileHeader {
  uint32_t version = kTokenFileVersion;
  uint32_t vocab_size = 0;
  uint64_t count = 0;
};

// InvalidArgument when vocab_size is not in [1, 2^32) or an id is outside [0, vocab_size);
// BadInput when the file cannot be written (the path is named).
Status write_token_file(const std::string& path, const std::vector<int32_t>& ids,
                        int64_t vocab_size);

// The header alone, checked against the file size.
StatusOr<TokenFileHeader> read_token_file_header(const std::string& path);
// The whole file.
StatusOr<std::vector<int32_t>> read_token_file(const std::string& path,
                                               TokenFileHeader* header = nullptr);

struct SequenceShard {
  TokenFileHeader header;
  int64_t total_sequences = 0;     // S, over all ranks
  std::vector<int64_t> sequences;  // global index of each of this rank's sequences, ascending
  std::vector<int32_t> ids_NL;     // (sequences.size(), seq_len): sequence k at k * seq_len
};
// Rank `rank` of P's sequences (see the header). InvalidArgument for seq_len < 1, P < 1 or a
// rank outside [0, P).
StatusOr<SequenceShard> read_token_shard(const std::string& path, int64_t seq_len, int rank, int P);

}  // namespace sy
