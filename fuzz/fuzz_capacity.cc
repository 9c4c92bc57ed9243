// libFuzzer target for the capacity plan (runtime/kernels/capacity.h) and the per-peer counts
// the dispatcher derives from it (comm/dispatcher.h, exchange_counts): the sizes (tokens T,
// experts E, top-k K, hidden D, ranks P, group size, expert choice's k, the receive bound), the
// capacity factor, the drop policy, a padding mask, the expert ids (out of range and negative
// ones included) and the ranking probabilities (NaN and infinities included) all come from the
// input bytes, the sizes often at the edges of int and int64 (docs/RELIABILITY.md B6).
//
//   - Sizes: check_capacity_sizes agrees exactly with a 128-bit reference (T*K and T*K*D fit an
//     int); sizes it refuses, and legal sizes beyond what this target materializes, are refused
//     by plan_capacity_into with InvalidArgument before anything is allocated (null inputs, as
//     Capacity.OverflowRejectedWithoutAllocating), and a plan it is given is left as it was.
//   - A plan is built exactly when the inputs are valid (ids of unmasked tokens in [0, E),
//     group size >= 0, probabilities present when the drop rule needs them, expert choice with
//     K == E). Then: every unmasked assignment is kept or dropped, masked ones neither; per group
//     and expert exactly min(routed, C_g) are kept, C_g = ceil(cf * tokens_g * K / E) (the
//     header's rule); the kept ones are those the drop rule prefers; counts, offsets, totals and
//     the row <-> assignment maps agree; a fresh plan equals one built into buffers reused from
//     the previous input (drops are deterministic).
//   - Ranks holding whole capacity groups plan exactly what one rank planning every group keeps;
//     a Dispatcher per rank over an in-process exchange (the count alltoall is replayed from what
//     every rank sent) sends each peer the kept counts of the experts the placement gives it,
//     receives what its peers send, lays them out expert-major and aborts with exit 22 exactly
//     when a received count was corrupted or the rows exceed the receive bound.
// Any violation is __builtin_trap(). Built only with clang (fuzz/CMakeLists.txt); run longer with
//   bash tests/launch/fuzz_smoke.sh . /tmp/fz capacity 1000000
//
// Input: a flags byte (kFlag* below); sizes T, E, K, D, P, group_tokens, choice_k,
// max_recv_rows (Input::size()); the capacity factor (Input::factor()); then T*K expert ids
// (Input::id()), T*K probabilities unless kFlagNoProbs (Input::prob()), ceil(T/8) mask bytes
// (bit set = padding) with kFlagMask, and the exchange's extras (placement shuffle, breakage,
// corruption). Reads past the end give zero bytes.
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "comm/communicator.h"
#include "comm/dispatcher.h"
#include "comm/placement.h"
#include "runtime/core/check.h"
#include "runtime/kernels/capacity.h"

namespace {

using sy::CapacityConfig;
using sy::CapacityPlan;
using sy::DropPolicy;

// What this target materializes, so that one input stays within a few ms under ASan and the
// fuzzer's instrumentation: T*K ids, E experts (the configs' own bound on E is 2^14), and P
// ranks with P*E bounded (each rank's plan and exchange is O(E)). The overflow checks need no
// materialized input: larger sizes take the null-input refusal path.
constexpr int64_t kMaxAssignments = int64_t{1} << 12;
constexpr int64_t kMaxExperts = int64_t{1} << 14;
constexpr int64_t kMaxRanks = 64;
constexpr int64_t kMaxRankExperts = int64_t{1} << 12;  // P * E

enum : uint8_t {
  kFlagPosition = 1,     // DropPolicy::kPosition (else kProbs)
  kFlagMask = 2,         // a padding mask follows the probabilities
  kFlagNoProbs = 4,      // rank_probs = null
  kFlagShuffle = 8,      // a permuted expert placement
  kFlagSingle = 16,      // ExchangeMode::kSingle (needs the contiguous placement)
  kFlagBreak = 32,       // an invalid placement: every rank's Dispatcher::create must refuse it
  kFlagCorrupt = 64,     // one received count is changed: that rank must abort with exit 22
  kFlagSecondUse = 128,  // plan a second time into the same buffers (must not change)
};

#define FUZZ_CHECK(cond)           \
  do {                             \
    if (!(cond)) __builtin_trap(); \
  } while (0)

class Input {
 public:
  Input(const uint8_t* data, size_t size) : d_(data), n_(size) {}

  uint8_t u8() { return i_ < n_ ? d_[i_++] : 0; }
  uint64_t le(int bytes) {
    uint64_t v = 0;
    for (int b = 0; b < bytes; ++b) v |= uint64_t{u8()} << (8 * b);
    return v;
  }

  // A size: one byte < 0xC0 is itself; then the edges of the overflow checks.
  int64_t size() {
    const uint8_t tag = u8();
    if (tag < 0xC0) return tag;
    switch (tag) {
      case 0xC0:
        return -1;
      case 0xC1:
        return INT_MAX;
      case 0xC2:
        return int64_t{INT_MAX} + 1;
      case 0xC3:
        return std::numeric_limits<int64_t>::max();
      case 0xC4:
        return std::numeric_limits<int64_t>::min();
      case 0xC5:
        return int64_t{1} << 40;
      case 0xC6:
        return int64_t{UINT32_MAX};
      case 0xC7:
        return int64_t{1} << 20;
      default:
        break;
    }
    // 0xC8..0xCF: INT_MAX / n - 3 .. INT_MAX / n + 4, n = next byte + 1: both sides of T*K <=
    // INT_MAX (and of T*K*D) for K or D = n.
    if (tag < 0xD0) return INT_MAX / (int64_t{u8()} + 1) + (tag - 0xCB);
    if (tag < 0xE0) return static_cast<int16_t>(le(2));
    if (tag < 0xF0) return static_cast<int32_t>(le(4));
    return static_cast<int64_t>(le(8));
  }

  // A capacity factor: n/16 or n/64, <= 0 (dropless), NaN (dropless), the infinities, extremes.
  double factor() {
    const uint8_t tag = u8();
    if (tag < 0x80) return tag / 16.0;
    if (tag < 0xC0) return (tag - 0x80) / 64.0;
    switch (tag) {
      case 0xC0:
        return -1.0;
      case 0xC1:
        return std::numeric_limits<double>::quiet_NaN();
      case 0xC2:
        return std::numeric_limits<double>::infinity();
      case 0xC3:
        return -std::numeric_limits<double>::infinity();
      case 0xC4:
        return 1e300;
      case 0xC5:
        return 1e-300;
      case 0xC6:
        return std::numeric_limits<double>::denorm_min();
      case 0xC7:
        return -0.0;
      default: {
        const uint64_t bits = le(8);
        double v;
        std::memcpy(&v, &bits, sizeof(v));
        return v;
      }
    }
  }

  // An expert id for E experts (1 <= E <= kMaxExperts): mostly valid, sometimes just outside.
  int32_t id(int64_t E) {
    const uint8_t b = u8();
    if (b < 0xF0) return static_cast<int32_t>(b % E);
    switch (b) {
      case 0xF0:
        return static_cast<int32_t>(le(2) % static_cast<uint64_t>(E));
      case 0xF1:
        return -1;
      case 0xF2:
        return static_cast<int32_t>(E);
      case 0xF3:
        return std::numeric_limits<int32_t>::min();
      case 0xF4:
        return std::numeric_limits<int32_t>::max();
      default:
        return static_cast<int32_t>(le(4));
    }
  }

  // A ranking probability: n/16 (many ties), NaN, the infinities, -0, a denormal, raw bits.
  float prob() {
    const uint8_t b = u8();
    if (b < 0xF0) return b / 16.0f;
    switch (b) {
      case 0xF0:
        return std::numeric_limits<float>::quiet_NaN();
      case 0xF1:
        return -std::numeric_limits<float>::quiet_NaN();
      case 0xF2:
        return std::numeric_limits<float>::infinity();
      case 0xF3:
        return -std::numeric_limits<float>::infinity();
      case 0xF4:
        return -0.0f;
      case 0xF5:
        return std::numeric_limits<float>::denorm_min();
      case 0xF6:
        return -1.0f;
      default: {
        const uint32_t bits = static_cast<uint32_t>(le(4));
        float v;
        std::memcpy(&v, &bits, sizeof(v));
        return v;
      }
    }
  }

 private:
  const uint8_t* d_;
  size_t n_, i_ = 0;
};

// check_capacity_sizes' contract, computed in 128 bits.
bool SizesFit(int64_t T, int64_t E, int64_t K, int64_t D) {
  if (T < 0 || E < 1 || K < 1 || K > E || D < 0 || E > INT_MAX) return false;
  const __int128 rows = static_cast<__int128>(T) * K;
  return rows <= INT_MAX && rows * D <= INT_MAX;
}

// Nothing allocated: the state of a plan no call has filled.
bool Untouched(const CapacityPlan& p) {
  return p.T == 0 && p.E == 0 && p.K == 0 && p.kept_TK.capacity() == 0 &&
         p.row_of_TK.capacity() == 0 && p.routed_E.capacity() == 0 && p.kept_E.capacity() == 0 &&
         p.dropped_E.capacity() == 0 && p.offsets_E1.capacity() == 0 && p.order_A.capacity() == 0 &&
         p.scratch_routed_A_.capacity() == 0 && p.scratch_offsets_E1_.capacity() == 0 &&
         p.scratch_capacity_G_.capacity() == 0;
}

template <typename A, typename B>
bool SameArray(const A& a, const B& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (a[i] != b[i]) return false;
  return true;
}

bool SamePlan(const CapacityPlan& a, const CapacityPlan& b) {
  return a.T == b.T && a.E == b.E && a.K == b.K && a.capacity == b.capacity &&
         a.dropless == b.dropless && a.tokens == b.tokens && a.total_routed == b.total_routed &&
         a.total_kept == b.total_kept && a.total_dropped == b.total_dropped &&
         a.kept_TK == b.kept_TK && SameArray(a.row_of_TK, b.row_of_TK) &&
         a.routed_E == b.routed_E && a.kept_E == b.kept_E && a.dropped_E == b.dropped_E &&
         a.offsets_E1 == b.offsets_E1 && SameArray(a.order_A, b.order_A);
}

// The header's capacity rule for `n` unmasked tokens, written independently of the planner:
// dropless keeps all n*K; otherwise ceil(cf * n * Kc / E), at most n * Kc (Kc = choice_k for
// expert choice, whose dropless factor is 1).
int64_t RefCapacity(const CapacityConfig& cfg, bool choice, int64_t n, int64_t E, int64_t K) {
  const int64_t Kc = choice ? cfg.choice_k : K;
  if (!choice && cfg.dropless()) return n * K;
  const double f = cfg.dropless() ? 1.0 : cfg.capacity_factor;
  const int64_t limit = n * Kc;
  const double c = std::ceil(f * static_cast<double>(limit) / static_cast<double>(E));
  return c < static_cast<double>(limit) ? static_cast<int64_t>(c) : limit;  // NaN: the limit
}

struct Problem {
  int64_t T, E, K, D;
  CapacityConfig cfg;
  bool choice;
  std::vector<int32_t> ids;
  std::vector<float> probs;   // empty: null
  std::vector<uint8_t> mask;  // empty: null (all real)
  const float* probs_ptr() const { return probs.empty() ? nullptr : probs.data(); }
  const uint8_t* mask_ptr() const { return mask.empty() ? nullptr : mask.data(); }
  bool real(int64_t t) const { return mask.empty() || mask[static_cast<size_t>(t)] != 0; }
  bool ranks_by_probs() const { return choice || cfg.policy == DropPolicy::kProbs; }
  bool dropless() const { return !choice && cfg.dropless(); }
  // Drops ranked by probability (then probs is there whenever there are tokens).
  bool drops_by_probs() const { return ranks_by_probs() && !dropless(); }
  // Tokens per capacity group, as the planner takes them.
  int64_t group() const {
    const int64_t all = std::max<int64_t>(T, 1);
    return cfg.group_tokens > 0 ? std::min(cfg.group_tokens, all) : all;
  }
};

// The drop rule's order: higher probability first (NaN lowest), then lower flat index.
bool Better(const std::vector<float>& p, int32_t a, int32_t b) {
  const auto key = [&](int32_t i) {
    const float v = p[static_cast<size_t>(i)];
    return std::isnan(v) ? -std::numeric_limits<float>::infinity() : v;
  };
  const float ka = key(a), kb = key(b);
  return ka > kb || (ka == kb && a < b);
}

// Every invariant of a plan the planner accepted.
void CheckPlan(const Problem& pr, const CapacityPlan& p) {
  const int64_t T = pr.T, E = pr.E, K = pr.K, TK = T * K;
  FUZZ_CHECK(p.T == T && p.E == E && p.K == K && p.dropless == pr.dropless());
  FUZZ_CHECK(p.kept_TK.size() == static_cast<size_t>(TK) &&
             p.row_of_TK.size() == static_cast<size_t>(TK));
  FUZZ_CHECK(p.routed_E.size() == static_cast<size_t>(E) &&
             p.kept_E.size() == static_cast<size_t>(E) &&
             p.dropped_E.size() == static_cast<size_t>(E) &&
             p.offsets_E1.size() == static_cast<size_t>(E + 1));
  FUZZ_CHECK(p.total_kept >= 0 && p.order_A.size() == static_cast<size_t>(p.total_kept));

  // Per expert: routed (offers taken, for expert choice), kept + dropped, offsets, totals.
  std::vector<int64_t> routed(static_cast<size_t>(E), 0), kept(static_cast<size_t>(E), 0);
  int64_t tokens = 0;
  for (int64_t t = 0; t < T; ++t) {
    if (!pr.real(t)) {
      for (int64_t k = 0; k < K; ++k)
        FUZZ_CHECK(p.kept_TK[t * K + k] == 0 && p.row_of_TK[t * K + k] == -1);
      continue;
    }
    ++tokens;
    for (int64_t k = 0; k < K; ++k) {
      const int64_t a = t * K + k;
      const int32_t e = pr.ids[a];
      FUZZ_CHECK(p.kept_TK[a] == 0 || p.kept_TK[a] == 1);
      ++routed[e];
      if (p.kept_TK[a]) ++kept[e];
    }
  }
  FUZZ_CHECK(p.tokens == tokens);
  FUZZ_CHECK(p.offsets_E1[0] == 0);
  int64_t total_routed = 0, total_kept = 0, total_dropped = 0;
  for (int64_t e = 0; e < E; ++e) {
    FUZZ_CHECK(p.kept_E[e] == kept[e]);
    FUZZ_CHECK(p.routed_E[e] == (pr.choice ? kept[e] : routed[e]));
    FUZZ_CHECK(p.dropped_E[e] >= 0 && p.kept_E[e] + p.dropped_E[e] == p.routed_E[e]);
    FUZZ_CHECK(p.offsets_E1[e + 1] - p.offsets_E1[e] == p.kept_E[e]);
    total_routed += p.routed_E[e];
    total_kept += p.kept_E[e];
    total_dropped += p.dropped_E[e];
  }
  if (pr.choice) FUZZ_CHECK(total_dropped == 0);
  FUZZ_CHECK(p.total_routed == total_routed && p.total_kept == total_kept &&
             p.total_dropped == total_dropped && p.rows() == total_kept &&
             p.offsets_E1[E] == total_kept && total_kept + total_dropped == total_routed);

  // Rows: grouped by expert, ascending (token, slot) within one, and a bijection with the kept
  // assignments (row_of_TK and order_A invert each other).
  for (int64_t e = 0; e < E; ++e) {
    for (int32_t r = p.offsets_E1[e]; r < p.offsets_E1[e + 1]; ++r) {
      const int32_t a = p.order_A[r];
      FUZZ_CHECK(a >= 0 && a < TK && pr.ids[a] == e && p.kept_TK[a] == 1 && p.row_of_TK[a] == r);
      FUZZ_CHECK(p.token_of_row(r) == a / K && p.slot_of_row(r) == a % K);
      if (r > p.offsets_E1[e]) FUZZ_CHECK(p.order_A[r - 1] < a);
    }
  }
  for (int64_t a = 0; a < TK; ++a) {
    const int32_t r = p.row_of_TK[a];
    if (p.kept_TK[a])
      FUZZ_CHECK(r >= 0 && r < p.total_kept && p.order_A[r] == a);
    else
      FUZZ_CHECK(r == -1);
  }

  // Per group and expert: exactly min(routed, C_g) kept, and the kept ones are those the drop
  // rule prefers (kProbs: every kept ranks above every dropped one; kPosition: the first ones).
  const int64_t G = pr.group();
  const int64_t groups = (T + G - 1) / G;
  std::vector<int32_t> g_routed(static_cast<size_t>(E), 0), g_kept(static_cast<size_t>(E), 0),
      worst_kept(static_cast<size_t>(E), -1), best_dropped(static_cast<size_t>(E), -1);
  std::vector<int32_t> touched;
  int64_t max_capacity = 0;
  for (int64_t g = 0; g < groups; ++g) {
    const int64_t t0 = g * G, t1 = std::min(T, t0 + G);
    int64_t n = 0;
    for (int64_t t = t0; t < t1; ++t) n += pr.real(t);
    const int64_t C = RefCapacity(pr.cfg, pr.choice, n, E, K);
    max_capacity = std::max(max_capacity, C);
    for (int64_t t = t0; t < t1; ++t) {
      if (!pr.real(t)) continue;
      for (int64_t k = 0; k < K; ++k) {
        const int32_t a = static_cast<int32_t>(t * K + k), e = pr.ids[a];
        if (g_routed[e]++ == 0) touched.push_back(e);
        if (p.kept_TK[a]) {
          ++g_kept[e];
          int32_t& w = worst_kept[e];
          if (w < 0 || (pr.drops_by_probs() ? Better(pr.probs, w, a) : a > w)) w = a;
        } else {
          int32_t& b = best_dropped[e];
          if (b < 0 || (pr.drops_by_probs() ? Better(pr.probs, a, b) : a < b)) b = a;
        }
      }
    }
    for (int32_t e : touched) {
      FUZZ_CHECK(g_kept[e] == std::min<int64_t>(g_routed[e], C));
      const int32_t w = worst_kept[e], b = best_dropped[e];
      if (w >= 0 && b >= 0) FUZZ_CHECK(pr.drops_by_probs() ? Better(pr.probs, w, b) : w < b);
      g_routed[e] = g_kept[e] = 0;
      worst_kept[e] = best_dropped[e] = -1;
    }
    touched.clear();
  }
  FUZZ_CHECK(p.capacity == max_capacity);
}

// ---- the exchange: P ranks in one process --------------------------------------------------

struct Aborted {
  int exit_code;
};

// What the ranks' count alltoalls carry. First every rank sends (recorded; it receives zeros
// from its peers), then every rank runs again and receives what its peers recorded.
struct Exchange {
  int P = 1;
  bool replay = false;
  std::vector<std::vector<uint8_t>> sent;  // [P] the whole send buffer of each rank
  // One received int64 changed on rank corrupt_dest: source corrupt_src's element corrupt_at.
  bool corrupt = false;
  int corrupt_dest = 0, corrupt_src = 0;
  int64_t corrupt_at = 0, corrupt_delta = 0;
};

// Rank `rank` of Exchange::P; only the count alltoall is expected of it.
class FuzzCommunicator final : public sy::Communicator {
 public:
  FuzzCommunicator(int rank, Exchange* x) : rank_(rank), x_(x) {}
  int rank() const override { return rank_; }
  int size() const override { return x_->P; }
  const char* backend() const override { return "fuzz"; }
  [[noreturn]] void abort(int exit_code, const std::string&) override { throw Aborted{exit_code}; }

 protected:
  void do_alltoall(const void* send, void* recv, int64_t count, int64_t elem_bytes,
                   const sy::CollectiveTag&, int64_t) override {
    const size_t block = static_cast<size_t>(count * elem_bytes), P = static_cast<size_t>(x_->P);
    const auto* s = static_cast<const uint8_t*>(send);
    auto* r = static_cast<uint8_t*>(recv);
    if (!x_->replay) {
      x_->sent[rank_].assign(s, s + P * block);
      std::memset(r, 0, P * block);
      std::memcpy(r + rank_ * block, s + rank_ * block, block);
      return;
    }
    for (size_t src = 0; src < P; ++src) {
      FUZZ_CHECK(x_->sent[src].size() == P * block);
      std::memcpy(r + src * block, x_->sent[src].data() + rank_ * block, block);
    }
    if (x_->corrupt && x_->corrupt_dest == rank_) {
      FUZZ_CHECK(elem_bytes == sizeof(int64_t));
      uint8_t* at = r + x_->corrupt_src * block + x_->corrupt_at * sizeof(int64_t);
      int64_t v;
      std::memcpy(&v, at, sizeof(v));
      v += x_->corrupt_delta;  // the caller made sure it does not overflow
      std::memcpy(at, &v, sizeof(v));
    }
  }
  void do_alltoallv(const void*, const int64_t*, const int64_t*, void*, const int64_t*,
                    const int64_t*, int64_t, const sy::CollectiveTag&, int64_t) override {
    __builtin_trap();
  }
  void do_alltoallv_blocks(const void*, const sy::BlockLayout&, void*, const sy::BlockLayout&,
                           int64_t, const sy::CollectiveTag&, int64_t) override {
    __builtin_trap();
  }
  void do_allreduce(const void*, void*, int64_t, sy::DType, sy::ReduceOp, const sy::CollectiveTag&,
                    int64_t) override {
    __builtin_trap();
  }
  void do_allgather(const void*, void*, int64_t, int64_t, const sy::CollectiveTag&,
                    int64_t) override {
    __builtin_trap();
  }
  void do_barrier(const sy::CollectiveTag&, int64_t) override { __builtin_trap(); }

 private:
  int rank_;
  Exchange* x_;
};

// Tokens split over P ranks, each holding whole capacity groups (dropless: any split), each
// planning its own; then the count exchange of a Dispatcher per rank.
void CheckRanks(Input& in, uint8_t flags, const Problem& pr, const CapacityPlan& whole, int64_t P64,
                int64_t max_recv) {
  const int64_t E = pr.E, K = pr.K, T = pr.T;
  if (P64 < 1 || P64 > kMaxRanks || E % P64 != 0 || P64 * E > kMaxRankExperts) return;
  const int P = static_cast<int>(P64);
  const int64_t e = E / P;

  sy::ExpertPlacement pl = sy::ExpertPlacement::contiguous(E, P);
  if (flags & kFlagShuffle) {
    std::vector<int32_t> perm;
    for (const auto& l : pl.experts_of_rank) perm.insert(perm.end(), l.begin(), l.end());
    for (int64_t i = E - 1; i > 0; --i)
      std::swap(perm[i], perm[in.le(2) % static_cast<uint64_t>(i + 1)]);
    for (int r = 0; r < P; ++r)
      pl.experts_of_rank[r].assign(perm.begin() + r * e, perm.begin() + (r + 1) * e);
  }
  bool broken = false;
  if (flags & kFlagBreak) {
    int32_t& victim = pl.experts_of_rank[P - 1][e - 1];
    switch (in.u8() % 5) {
      case 0:
        victim = -1;
        broken = true;
        break;
      case 1:
        victim = static_cast<int32_t>(E);
        broken = true;
        break;
      case 2:  // one expert twice, another nowhere
        if (E >= 2) {
          victim = victim == 0 ? 1 : 0;
          broken = true;
        }
        break;
      case 3:  // every expert once, but not E/P on every rank
        if (P >= 2) {
          pl.experts_of_rank[0].push_back(victim);
          pl.experts_of_rank[P - 1].pop_back();
          broken = true;
        }
        break;
      default:  // a placement for another number of ranks
        pl.ranks = P + 1;
        broken = true;
        break;
    }
  }
  const bool contiguous = pl == sy::ExpertPlacement::contiguous(E, P);
  sy::DispatcherOptions opt;
  opt.mode = (flags & kFlagSingle) ? sy::ExchangeMode::kSingle : sy::ExchangeMode::kBlocks;
  opt.max_recv_rows = max_recv;
  const bool create_ok = !broken && (opt.mode == sy::ExchangeMode::kBlocks || contiguous) &&
                         pr.D >= 1 && pr.D <= INT_MAX / static_cast<int64_t>(sizeof(float)) &&
                         max_recv >= 0;

  Exchange x;
  x.P = P;
  x.sent.resize(static_cast<size_t>(P));
  std::vector<std::unique_ptr<FuzzCommunicator>> comms;
  std::vector<std::unique_ptr<sy::Dispatcher>> ds;
  for (int r = 0; r < P; ++r) {
    comms.push_back(std::make_unique<FuzzCommunicator>(r, &x));
    auto d = sy::Dispatcher::create(comms.back().get(), pl, pr.D, opt);
    FUZZ_CHECK(d.ok() == create_ok);
    if (!d.ok()) {
      FUZZ_CHECK(d.status().code() == sy::StatusCode::kInvalidArgument);
      return;
    }
    ds.push_back(std::move(*d));
  }

  // Rank r's tokens [t0[r], t0[r+1]): whole groups, or any split when dropless.
  const int64_t G = pr.group(), groups = (T + G - 1) / G;
  const bool by_group = !(pr.dropless() && pr.cfg.group_tokens == 0);
  std::vector<int64_t> t0(static_cast<size_t>(P + 1));
  for (int r = 0; r <= P; ++r) t0[r] = by_group ? std::min(T, r * groups / P * G) : r * T / P;
  std::vector<CapacityPlan> plans(static_cast<size_t>(P));
  for (int r = 0; r < P; ++r) {
    const int64_t n = t0[r + 1] - t0[r];
    const bool any = n > 0;  // no pointer arithmetic on the empty vectors' null data()
    const sy::Status st = sy::plan_capacity_into(
        any ? pr.ids.data() + t0[r] * K : nullptr,
        any && !pr.probs.empty() ? pr.probs.data() + t0[r] * K : nullptr, n, E, K, pr.D, pr.cfg,
        any && !pr.mask.empty() ? pr.mask.data() + t0[r] : nullptr, &plans[r]);
    FUZZ_CHECK(st.ok());
    for (int64_t a = 0; a < n * K; ++a)
      FUZZ_CHECK(plans[r].kept_TK[a] == whole.kept_TK[t0[r] * K + a]);
  }

  // The count exchange, twice (record, then replay), with one count corrupted on request.
  if (flags & kFlagCorrupt) {
    x.corrupt_dest = in.u8() % P;
    x.corrupt_src = in.u8() % P;
    x.corrupt_at = static_cast<int64_t>(in.le(2) % static_cast<uint64_t>(e + 1));
    x.corrupt_delta = in.size();
    x.corrupt = x.corrupt_delta != 0;
  }
  std::vector<sy::DispatchHandle> handles(static_cast<size_t>(P));
  const sy::CollectiveTag tag{"fuzz", 0, 0};
  for (int r = 0; r < P; ++r) {
    try {
      ds[r]->exchange_counts(plans[r].kept_E.data(), plans[r].rows(), tag, &handles[r]);
    } catch (const Aborted&) {  // its own rows over the receive bound: checked below
    }
  }
  // What rank r must receive from s for its local expert j, and send to d.
  const auto kept_of = [&](int s, int r, int64_t j) -> int64_t {
    return plans[s].kept_E[pl.experts_of_rank[r][j]];
  };
  if (x.corrupt) {  // a count that overflows when changed is left alone
    const std::vector<uint8_t>& from = x.sent[x.corrupt_src];
    const size_t at =
        static_cast<size_t>(x.corrupt_dest * (e + 1) + x.corrupt_at) * sizeof(int64_t);
    FUZZ_CHECK(from.size() >= at + sizeof(int64_t));
    int64_t v;
    std::memcpy(&v, from.data() + at, sizeof(v));
    int64_t sum;
    if (__builtin_add_overflow(v, x.corrupt_delta, &sum)) x.corrupt = false;
  }
  x.replay = true;
  int64_t received = 0;
  bool all_received = true;
  for (int r = 0; r < P; ++r) {
    int64_t R = 0;
    for (int s = 0; s < P; ++s)
      for (int64_t j = 0; j < e; ++j) R += kept_of(s, r, j);
    const bool must_abort = (x.corrupt && x.corrupt_dest == r) || (max_recv > 0 && R > max_recv);
    bool aborted = false;
    try {
      ds[r]->exchange_counts(plans[r].kept_E.data(), plans[r].rows(), tag, &handles[r]);
    } catch (const Aborted& a) {
      FUZZ_CHECK(a.exit_code == sy::kExitBadInput);
      aborted = true;
    }
    FUZZ_CHECK(aborted == must_abort);
    if (aborted) {
      all_received = false;
      continue;
    }
    const sy::DispatchHandle& h = handles[r];
    const sy::ExchangeLoad& load = h.stats().load;
    FUZZ_CHECK(h.valid() && h.send_rows() == plans[r].rows() && h.recv_rows() == R);
    FUZZ_CHECK(load.rows_sent_P.size() == static_cast<size_t>(P) &&
               load.rows_recv_P.size() == static_cast<size_t>(P) &&
               load.bytes_sent_P.size() == static_cast<size_t>(P) &&
               load.bytes_recv_P.size() == static_cast<size_t>(P) &&
               load.rows_recv_e.size() == static_cast<size_t>(e) &&
               h.recv_counts_Pe().size() == static_cast<size_t>(P * e) &&
               h.local_offsets_e1().size() == static_cast<size_t>(e + 1));
    const int64_t row_bytes = pr.D * static_cast<int64_t>(sizeof(float));
    int64_t sent = 0;
    for (int d = 0; d < P; ++d) {
      int64_t to_d = 0, from_d = 0;
      for (int64_t j = 0; j < e; ++j) {
        to_d += kept_of(r, d, j);
        from_d += kept_of(d, r, j);
        FUZZ_CHECK(h.recv_counts_Pe()[d * e + j] == kept_of(d, r, j));
      }
      FUZZ_CHECK(load.rows_sent_P[d] == to_d && load.rows_recv_P[d] == from_d);
      FUZZ_CHECK(load.bytes_sent_P[d] == (d == r ? 0 : to_d * row_bytes) &&
                 load.bytes_recv_P[d] == (d == r ? 0 : from_d * row_bytes));
      sent += to_d;
    }
    FUZZ_CHECK(sent == plans[r].rows());
    // Expert-major: local expert j gets every source's rows for it, which together are what the
    // one-rank plan keeps for that expert.
    FUZZ_CHECK(h.local_offsets_e1()[0] == 0 && h.local_offsets_e1()[e] == R);
    for (int64_t j = 0; j < e; ++j) {
      const int64_t n = h.local_offsets_e1()[j + 1] - h.local_offsets_e1()[j];
      FUZZ_CHECK(n == whole.kept_E[pl.experts_of_rank[r][j]] && load.rows_recv_e[j] == n);
    }
    received += R;
  }
  if (all_received) FUZZ_CHECK(received == whole.rows());
}

CapacityPlan g_reused;  // reused across inputs, as a layer reuses its plan across steps
// A copy of g_reused's last successful plan (so a refusal can be seen to leave it as it was);
// invalid after a call that failed past the size checks (the plan is unspecified then).
CapacityPlan g_last;
bool g_last_valid = false;

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Input in(data, size);
  const uint8_t flags = in.u8();
  Problem pr;
  pr.T = in.size();
  pr.E = in.size();
  pr.K = in.size();
  pr.D = in.size();
  const int64_t P = in.size();
  pr.cfg.group_tokens = in.size();
  pr.cfg.choice_k = in.size();
  const int64_t max_recv = in.size();
  pr.cfg.capacity_factor = in.factor();
  pr.cfg.policy = (flags & kFlagPosition) ? DropPolicy::kPosition : DropPolicy::kProbs;
  pr.choice = pr.cfg.choice_k > 0;
  const int64_t T = pr.T, E = pr.E, K = pr.K, D = pr.D;

  // The size checks, against the 128-bit reference.
  const bool sizes_ok = SizesFit(T, E, K, D);
  const sy::Status sizes = sy::check_capacity_sizes(T, E, K, D);
  FUZZ_CHECK(sizes.ok() == sizes_ok);
  if (!sizes_ok) {
    FUZZ_CHECK(sizes.code() == sy::StatusCode::kInvalidArgument);
    if (T >= 0 && E >= 1 && K >= 1 && K <= E && D >= 0 && E <= INT_MAX)  // only an overflow
      FUZZ_CHECK(sizes.message().find("INT_MAX") != std::string::npos);
  }
  if (P >= INT_MIN && P <= INT_MAX)
    FUZZ_CHECK(sy::Dispatcher::check_sizes(E, static_cast<int>(P)).ok() ==
               (E >= 1 && P >= 1 && E % P == 0));

  const bool choice_ok = !pr.choice || (K == E && pr.cfg.choice_k <= E);
  if (!sizes_ok || !choice_ok || T * K > kMaxAssignments || E > kMaxExperts) {
    // Refused before anything is allocated or read (the inputs are null), the plan given left
    // as it was. Legal sizes get that far only with tokens (null ids are then refused); with
    // none the plan is O(E), which this target does not materialize beyond kMaxExperts.
    if (sizes_ok && choice_ok && T == 0) return 0;
    CapacityPlan fresh;
    const sy::Status st =
        sy::plan_capacity_into(nullptr, nullptr, T, E, K, D, pr.cfg, nullptr, &fresh);
    FUZZ_CHECK(!st.ok() && st.code() == sy::StatusCode::kInvalidArgument && Untouched(fresh));
    FUZZ_CHECK(
        !sy::plan_capacity_into(nullptr, nullptr, T, E, K, D, pr.cfg, nullptr, &g_reused).ok());
    if (g_last_valid) FUZZ_CHECK(SamePlan(g_last, g_reused));
    return 0;
  }

  // Small enough to build: ids, probabilities and mask from the input.
  const int64_t TK = T * K;
  pr.ids.resize(static_cast<size_t>(TK));
  for (auto& id : pr.ids) id = in.id(E);
  if (!(flags & kFlagNoProbs)) {
    pr.probs.resize(static_cast<size_t>(TK));
    for (auto& p : pr.probs) p = in.prob();
  }
  if (flags & kFlagMask) {
    pr.mask.resize(static_cast<size_t>(T));
    for (int64_t t = 0; t < T; t += 8) {
      const uint8_t padding = in.u8();
      for (int64_t i = t; i < std::min(T, t + 8); ++i) pr.mask[i] = !((padding >> (i - t)) & 1);
    }
  }
  bool ids_ok = true;
  for (int64_t t = 0; t < T; ++t)
    if (pr.real(t))
      for (int64_t k = 0; k < K; ++k) ids_ok &= pr.ids[t * K + k] >= 0 && pr.ids[t * K + k] < E;
  const bool expected = ids_ok && pr.cfg.group_tokens >= 0 &&
                        !(T > 0 && pr.ranks_by_probs() && !pr.dropless() && pr.probs.empty());

  auto fresh = sy::plan_capacity(pr.ids.data(), pr.probs_ptr(), T, E, K, D, pr.cfg, pr.mask_ptr());
  const sy::Status st = sy::plan_capacity_into(pr.ids.data(), pr.probs_ptr(), T, E, K, D, pr.cfg,
                                               pr.mask_ptr(), &g_reused);
  FUZZ_CHECK(fresh.ok() == expected && st.ok() == expected);
  if (!expected) {
    FUZZ_CHECK(fresh.status().code() == sy::StatusCode::kInvalidArgument &&
               st.code() == sy::StatusCode::kInvalidArgument);
    g_last_valid = false;
    return 0;
  }
  CheckPlan(pr, *fresh);
  FUZZ_CHECK(SamePlan(*fresh, g_reused));
  if (flags & kFlagSecondUse) {
    FUZZ_CHECK(sy::plan_capacity_into(pr.ids.data(), pr.probs_ptr(), T, E, K, D, pr.cfg,
                                      pr.mask_ptr(), &*fresh)
                   .ok());
    FUZZ_CHECK(SamePlan(*fresh, g_reused));
  }
  CheckRanks(in, flags, pr, *fresh, P, max_recv);
  g_last = std::move(*fresh);
  g_last_valid = true;
  return 0;
}
