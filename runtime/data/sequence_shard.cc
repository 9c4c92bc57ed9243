#include "runtime/data/sequence_shard.h"

#include <algorithm>
#include <utility>

#include "runtime/core/check.h"
#include "runtime/core/rng.h"

namespace sy {

TokenShard shard_tokens(int64_t T, int64_t G, int64_t batch_groups, int rank, int P) {
  SY_CHECK(G >= 1 && batch_groups >= 1 && P >= 1 && rank >= 0 && rank < P);
  TokenShard s;
  const int64_t n = (T + G - 1) / G;
  s.group_begin = rank * n / P;
  s.group_end = (rank + 1) * n / P;
  s.token_begin = std::min(T, s.group_begin * G);
  s.token_end = std::min(T, s.group_end * G);
  const int64_t most = (n + P - 1) / P;  // the largest shard (r*n/P splits differ by <= 1)
  s.steps = (most + batch_groups - 1) / batch_groups;
  return s;
}

std::vector<std::vector<int32_t>> deal_held_out(const std::vector<int32_t>& ids, int64_t first,
                                                int64_t L, int64_t n_seqs, int rank, int P) {
  std::vector<std::vector<int32_t>> out;
  for (int64_t k = 0; k < (n_seqs + P - 1) / P; ++k) {
    const int64_t g = k * P + rank;
    if (g >= n_seqs) {
      out.emplace_back();
      continue;
    }
    const int64_t b = first + g * L;
    const int64_t e = std::min<int64_t>(static_cast<int64_t>(ids.size()), b + L);
    out.emplace_back(ids.begin() + b, ids.begin() + e);
  }
  return out;
}

SequenceShard deal_sequences(const std::vector<int32_t>& ids, int64_t L, int rank, int P) {
  SY_CHECK(L >= 1 && P >= 1 && rank >= 0 && rank < P);
  SequenceShard shard;
  shard.total_sequences = static_cast<int64_t>(ids.size()) / L;
  for (int64_t g = rank; g < shard.total_sequences; g += P) {
    shard.sequences.push_back(g);
    shard.ids_NL.insert(shard.ids_NL.end(), ids.begin() + g * L, ids.begin() + (g + 1) * L);
  }
  return shard;
}

std::vector<int32_t> frame_sequences(const std::vector<int32_t>& ids, int64_t L, int32_t cls,
                                     int32_t sep) {
  SY_CHECK(L >= 3);
  const size_t body = static_cast<size_t>(L - 2), n = ids.size() / body;
  std::vector<int32_t> out;
  out.reserve(n * static_cast<size_t>(L));
  for (size_t g = 0; g < n; ++g) {
    out.push_back(cls);
    out.insert(out.end(), ids.begin() + g * body, ids.begin() + (g + 1) * body);
    out.push_back(sep);
  }
  return out;
}

int64_t DataOrder::at(int64_t position) {
  const int64_t epoch = position / n_;
  if (epoch != epoch_) {
    perm_.resize(static_cast<size_t>(n_));
    for (int64_t i = 0; i < n_; ++i) perm_[static_cast<size_t>(i)] = i;
    for (int64_t i = n_ - 1; i > 0; --i) {  // Fisher-Yates
      const auto j = static_cast<int64_t>(
          uniform_at(seed_, static_cast<uint64_t>(epoch), static_cast<uint64_t>(i)) *
          static_cast<double>(i + 1));
      std::swap(perm_[static_cast<size_t>(i)], perm_[static_cast<size_t>(std::min(j, i))]);
    }
    epoch_ = epoch;
  }
  return perm_[static_cast<size_t>(position % n_)];
}

}  // namespace sy
