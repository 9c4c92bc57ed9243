// Test data for the communicator tests, nccl-tests style: every value is a function of
// (source rank, destination rank, index), so each rank can check what it received on its own,
// and counts come from seeded generators so runs are reproducible (the seed is in the test
// name or the failure message).
#pragma once

#include <cstdint>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "comm/communicator.h"

namespace sy {
namespace testutil {

// A payload element that names where it came from: src, dst < 2^12, idx < 2^40.
inline int64_t encode(int src, int dst, int64_t idx) {
  return (static_cast<int64_t>(src) << 52) | (static_cast<int64_t>(dst) << 40) | idx;
}

// How many rows rank `src` sends to each of P peers at `seed`: uniform in [0, max_rows], with
// about a quarter forced to 0 (empty peers are the edge case that hangs naive code). Two
// special seeds: 0 = everything empty, 1 = all rows go to rank 0.
inline std::vector<int64_t> send_rows(int P, int src, uint64_t seed, int64_t max_rows) {
  std::vector<int64_t> rows(P, 0);
  if (seed == 0) return rows;
  if (seed == 1) {
    rows[0] = max_rows;
    return rows;
  }
  std::mt19937_64 rng(seed * 1000003ULL + static_cast<uint64_t>(src));
  for (int p = 0; p < P; ++p) {
    rows[p] = (rng() % 4 == 0) ? 0 : static_cast<int64_t>(rng() % (max_rows + 1));
  }
  return rows;
}

// Displacements for `counts` with `gap` unused elements before each block, blocks in reverse
// peer order (so a backend that ignores displacements is caught). Returns the capacity.
inline int64_t reversed_displs(const std::vector<int64_t>& counts, int64_t gap,
                               std::vector<int64_t>* displs) {
  const int P = static_cast<int>(counts.size());
  displs->assign(P, 0);
  int64_t off = 0;
  for (int p = P - 1; p >= 0; --p) {
    off += gap;
    (*displs)[p] = off;
    off += counts[p];
  }
  return off + gap;
}

constexpr int64_t kSentinel = -7;

// What one dispatch-like exchange left on this rank: the receive buffer (rows of W int64, gaps
// hold kSentinel), the counts from the count exchange and the displacements used.
struct Exchange {
  Status status;  // of the alltoallv
  std::vector<int64_t> recv, recv_rows, recv_displs;
};

// The dispatcher's protocol: counts first (alltoall), then rows (alltoallv), both sides laid
// out in reverse peer order with gaps. Row j to peer p holds encode(r, p, j * W + w).
inline Exchange exchange_rows(Communicator& c, uint64_t seed, int64_t max_rows, int64_t W,
                              const CollectiveTag& tag) {
  const int P = c.size(), r = c.rank();
  const std::vector<int64_t> send_rows_P = send_rows(P, r, seed, max_rows);
  std::vector<int64_t> send_displs;
  const int64_t send_cap = reversed_displs(send_rows_P, 1, &send_displs);
  std::vector<int64_t> send(send_cap * W, kSentinel);
  for (int p = 0; p < P; ++p) {
    for (int64_t j = 0; j < send_rows_P[p] * W; ++j) send[send_displs[p] * W + j] = encode(r, p, j);
  }
  Exchange ex;
  ex.recv_rows.assign(P, -1);
  c.alltoall(send_rows_P.data(), ex.recv_rows.data(), 1, {"test.counts", tag.layer, tag.step});
  const int64_t recv_cap = reversed_displs(ex.recv_rows, 2, &ex.recv_displs);
  ex.recv.assign(recv_cap * W, kSentinel);
  ex.status =
      c.alltoallv(send.data(), {send_rows_P.data(), send_displs.data(), send_cap}, ex.recv.data(),
                  {ex.recv_rows.data(), ex.recv_displs.data(), recv_cap}, W, tag);
  return ex;
}

// Checks an Exchange on rank r against what every sender must have sent. Returns "" when
// right, else the first few problems.
inline std::string check_exchange(const Exchange& ex, int P, int r, uint64_t seed, int64_t max_rows,
                                  int64_t W) {
  std::ostringstream err;
  int64_t bad = 0;
  if (!ex.status.ok()) return ex.status.ToString();
  std::vector<bool> covered(ex.recv.size(), false);
  for (int q = 0; q < P; ++q) {
    const int64_t expect_rows = send_rows(P, q, seed, max_rows)[r];
    if (ex.recv_rows[q] != expect_rows) {
      err << "rank " << r << " seed " << seed << ": count from " << q << " is " << ex.recv_rows[q]
          << ", expected " << expect_rows << "; ";
      ++bad;
      continue;
    }
    for (int64_t j = 0; j < expect_rows * W; ++j) {
      const size_t at = static_cast<size_t>(ex.recv_displs[q] * W + j);
      covered[at] = true;
      if (ex.recv[at] != encode(q, r, j) && bad++ < 4) {
        err << "rank " << r << " seed " << seed << ": element " << j << " from rank " << q << " is "
            << ex.recv[at] << ", expected " << encode(q, r, j) << "; ";
      }
    }
  }
  for (size_t i = 0; i < ex.recv.size(); ++i) {
    if (!covered[i] && ex.recv[i] != kSentinel && bad++ < 4) {
      err << "rank " << r << " seed " << seed << ": gap element " << i << " written; ";
    }
  }
  return err.str();
}

// The blocked exchange (alltoallv_blocks): rank r sends B blocks to each peer p; block b to p
// has send_rows(P, r, seed * 31 + b, max_rows)[p] rows holding encode(r, p, b * 2^20 + j * W +
// w). Send blocks are laid out in reverse order, receive blocks in reverse peer order with
// reversed blocks inside and gaps of kSentinel, so a backend that mixes up blocks or peers, or
// writes a gap, is caught.
struct BlockExchange {
  Status status;
  std::vector<int64_t> recv, recv_counts, recv_displs;  // counts/displs [P, B], in rows
  std::vector<int64_t> send, send_counts, send_displs;
  int64_t send_cap = 0, recv_cap = 0;
};

inline std::vector<int64_t> block_rows(int P, int src, uint64_t seed, int64_t B, int64_t max_rows) {
  std::vector<int64_t> rows(static_cast<size_t>(P * B));
  for (int64_t b = 0; b < B; ++b) {
    const std::vector<int64_t> r =
        send_rows(P, src, seed * 31 + static_cast<uint64_t>(b) + 2, max_rows);
    for (int p = 0; p < P; ++p) rows[p * B + b] = r[p];
  }
  return rows;
}

// The buffers and layouts of one blocked exchange, not yet run.
inline BlockExchange prepare_blocks(Communicator& c, uint64_t seed, int64_t max_rows, int64_t W,
                                    int64_t B) {
  const int P = c.size(), r = c.rank();
  BlockExchange ex;
  ex.send_counts = block_rows(P, r, seed, B, max_rows);
  const std::vector<int64_t>& sc = ex.send_counts;
  ex.send_cap = reversed_displs(sc, 1, &ex.send_displs);
  ex.send.assign(ex.send_cap * W, kSentinel);
  for (int p = 0; p < P; ++p) {
    for (int64_t b = 0; b < B; ++b) {
      for (int64_t j = 0; j < sc[p * B + b] * W; ++j) {
        ex.send[ex.send_displs[p * B + b] * W + j] = encode(r, p, (b << 20) + j);
      }
    }
  }
  ex.recv_counts.assign(P * B, 0);
  for (int q = 0; q < P; ++q) {
    const std::vector<int64_t> from_q = block_rows(P, q, seed, B, max_rows);
    for (int64_t b = 0; b < B; ++b) ex.recv_counts[q * B + b] = from_q[r * B + b];
  }
  ex.recv_cap = reversed_displs(ex.recv_counts, 2, &ex.recv_displs);
  ex.recv.assign(ex.recv_cap * W, kSentinel);
  return ex;
}

inline BlockExchange exchange_blocks(Communicator& c, uint64_t seed, int64_t max_rows, int64_t W,
                                     int64_t B, const CollectiveTag& tag) {
  BlockExchange ex = prepare_blocks(c, seed, max_rows, W, B);
  ex.status = c.alltoallv_blocks(
      ex.send.data(), {B, ex.send_counts.data(), ex.send_displs.data(), ex.send_cap},
      ex.recv.data(), {B, ex.recv_counts.data(), ex.recv_displs.data(), ex.recv_cap}, W, tag);
  return ex;
}

inline std::string check_blocks(const BlockExchange& ex, int P, int r, int64_t B, int64_t W) {
  if (!ex.status.ok()) return ex.status.ToString();
  std::ostringstream err;
  int64_t bad = 0;
  std::vector<bool> covered(ex.recv.size(), false);
  for (int q = 0; q < P; ++q) {
    for (int64_t b = 0; b < B; ++b) {
      for (int64_t j = 0; j < ex.recv_counts[q * B + b] * W; ++j) {
        const size_t at = static_cast<size_t>(ex.recv_displs[q * B + b] * W + j);
        covered[at] = true;
        if (ex.recv[at] != encode(q, r, (b << 20) + j) && bad++ < 4) {
          err << "rank " << r << ": from " << q << " block " << b << " element " << j << " is "
              << ex.recv[at] << "; ";
        }
      }
    }
  }
  for (size_t i = 0; i < ex.recv.size(); ++i) {
    if (!covered[i] && ex.recv[i] != kSentinel && bad++ < 4)
      err << "gap element " << i << " written; ";
  }
  return err.str();
}

}  // namespace testutil
}  // namespace sy
