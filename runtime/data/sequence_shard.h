// How tokens are dealt to the ranks and the steps, in one place for the commands and the tests:
//
//   shard_tokens     the synthetic stack (switchyard infer): the first T tokens form
//                    n = ceil(T / G) groups of G tokens (the last may be shorter); rank r holds
//                    groups [r*n/P, (r+1)*n/P), a contiguous range of tokens, and runs
//                    batch_groups of them per step; ranks that ran out take part with zero
//                    tokens. Capacity is per group and each group lives on one rank, so drops
//                    and outputs do not depend on P.
//   deal_sequences   a token list cut into sequences of L tokens, sequence g to rank g % P (as
//                    read_token_shard deals a token file, runtime/data/token_file.h);
//                    frame_sequences first wraps each in [CLS] ... [SEP] for an encoder.
//   DataOrder        training: epoch e visits the n training sequences in a permutation drawn
//                    from (seed, e) by the counter-based RNG, so the data position (sequences
//                    consumed) is all a resume needs.
#pragma once

#include <cstdint>
#include <vector>

#include "runtime/data/token_file.h"

namespace sy {

struct TokenShard {
  int64_t group_begin = 0, group_end = 0;  // this rank's groups
  int64_t token_begin = 0, token_end = 0;  // their tokens (global indices)
  int64_t steps = 0;                       // the same on every rank
};
// Pure: the shard of `rank` of P for T tokens in groups of G, batch_groups groups per step.
TokenShard shard_tokens(int64_t T, int64_t G, int64_t batch_groups, int rank, int P);

// Pure: rank's sequences of L tokens from ids (whole sequences only; the tail is dropped).
SequenceShard deal_sequences(const std::vector<int32_t>& ids, int64_t L, int rank, int P);

// Pure: rank's share of the held-out tail: n_seqs >= 1 sequences of L tokens starting at token
// `first` of ids (the last may be shorter where ids ends), sequence g to rank g % P; a rank with
// one fewer than the others gets an empty sequence in its place, so every rank holds
// ceil(n_seqs / P).
std::vector<std::vector<int32_t>> deal_held_out(const std::vector<int32_t>& ids, int64_t first,
                                                int64_t L, int64_t n_seqs, int rank, int P);

// Pure: an encoder's (BERT's) sequences of L >= 3 tokens from a token stream: each is cls, the
// next L - 2 tokens of ids, sep, so deal_sequences(frame_sequences(ids, L, ..), L, ..) deals
// framed sequences; the tail that fills no sequence is dropped.
std::vector<int32_t> frame_sequences(const std::vector<int32_t>& ids, int64_t L, int32_t cls,
                                     int32_t sep);

class DataOrder {
 public:
  DataOrder(int64_t n, uint64_t seed) : n_(n), seed_(seed) {}
  // The training sequence at data position `position` (epoch position / n).
  int64_t at(int64_t position);

 private:
  int64_t n_;
  uint64_t seed_;
  int64_t epoch_ = -1;
  std::vector<int64_t> perm_;  // the current epoch's permutation
};

}  // namespace sy
