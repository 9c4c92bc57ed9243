// Multi-rank tests of the MoE dispatcher (ctest: mpiexec with 1, 2 and 4 ranks).
//
// Every rank builds EVERY rank's problem from the seed (token counts, routing, capacity plan),
// so each rank knows exactly what every other rank planned to send it and checks its own
// receipt; the payload row of assignment (token t, slot k) on rank s encodes (s, t, k) in its
// D floats. Failure messages carry the seed. Collectives are reached on every rank whatever
// happens (EXPECT, never ASSERT, between collectives).
//
// Legend: P ranks, E experts, e = E/P local experts, K top-k, T tokens, D floats per row,
// A rows a rank sends (plan order), R rows it receives (expert-major).
#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "comm/dispatcher.h"
#include "comm/local_communicator.h"
#include "runtime/kernels/capacity.h"
#include "tests/comm/mpi_test_main.h"

namespace sy {
namespace {

MpiCommunicator* g_comm = nullptr;

// One rank's tokens and their routing. Tokens have a global id (first + t) when a batch is
// split contiguously over ranks.
struct RankInput {
  int64_t T = 0, first = 0;
  std::vector<int32_t> ids_TK;
  std::vector<float> probs_TK;
};

struct Problem {
  int P = 1;
  int64_t E = 1, K = 1, D = 3;
  CapacityConfig cap;
  std::vector<RankInput> ranks;     // [P]
  std::vector<CapacityPlan> plans;  // [P], each over that rank's own tokens
};

// K distinct experts for one token: uniform, or skewed towards low ids (weight 1/(g+1)^2, so
// rank 0's experts get most of the traffic and some experts none).
void route_token(std::mt19937_64& rng, int64_t E, int64_t K, bool skewed, int32_t* ids,
                 float* probs) {
  std::vector<double> w(E);
  for (int64_t g = 0; g < E; ++g) w[g] = skewed ? 1.0 / double((g + 1) * (g + 1)) : 1.0;
  for (int64_t k = 0; k < K; ++k) {
    std::discrete_distribution<int64_t> pick(w.begin(), w.end());
    const int64_t g = pick(rng);
    ids[k] = static_cast<int32_t>(g);
    probs[k] = static_cast<float>(rng() % 1000) / 1000.f;  // ties happen: the drop rule breaks them
    w[g] = 0;
  }
}

// The problem of `seed`, the same on every rank. Seed 0: every rank has 0 tokens; seeds
// divisible by 5: rank seed % P has 0 tokens. `group`: > 0 gives token counts that are
// multiples of it and capacity groups of that size (drops then match one rank's).
Problem make_problem(uint64_t seed, int P, int64_t group = 0) {
  std::mt19937_64 rng(seed * 7919 + 17);
  Problem pb;
  pb.P = P;
  pb.E = P * (int64_t{1} << (rng() % 3));  // e in {1, 2, 4}
  pb.K = 1 + static_cast<int64_t>(rng() % pb.E);
  pb.D = 3 + static_cast<int64_t>(rng() % 4);
  const bool skewed = rng() % 2;
  switch (seed % 3) {
    case 0:
      pb.cap.capacity_factor = 0;  // dropless
      break;
    case 1:
      pb.cap.capacity_factor = 1.0;
      pb.cap.policy = DropPolicy::kPosition;
      break;
    default:
      pb.cap.capacity_factor = 1.0;
      pb.cap.policy = DropPolicy::kProbs;
  }
  pb.cap.group_tokens = group;
  pb.ranks.resize(P);
  int64_t first = 0;
  for (int s = 0; s < P; ++s) {
    RankInput& in = pb.ranks[s];
    in.T = group > 0 ? group * static_cast<int64_t>(rng() % 9) : static_cast<int64_t>(rng() % 65);
    if (seed == 0 || (seed % 5 == 0 && s == static_cast<int>(seed % P))) in.T = 0;
    in.first = first;
    first += in.T;
    in.ids_TK.resize(in.T * pb.K);
    in.probs_TK.resize(in.T * pb.K);
    for (int64_t t = 0; t < in.T; ++t) {
      route_token(rng, pb.E, pb.K, skewed, &in.ids_TK[t * pb.K], &in.probs_TK[t * pb.K]);
    }
    auto plan = plan_capacity(in.ids_TK.data(), in.probs_TK.data(), in.T, pb.E, pb.K, pb.D, pb.cap);
    SY_CHECK_OK(plan.status());
    pb.plans.push_back(std::move(plan.value()));
  }
  return pb;
}

// The payload of (source rank, token, slot): integers well below 2^24 / (E + 1), so floats hold
// them exactly even after the test's "expert" multiplies them by (global expert + 1).
void encode_row(int src, int64_t token, int64_t slot, int64_t D, float* row) {
  row[0] = static_cast<float>(src);
  row[1] = static_cast<float>(token);
  row[2] = static_cast<float>(slot);
  for (int64_t d = 3; d < D; ++d) row[d] = static_cast<float>(src * 4096 + token * 64 + slot + d);
}

// Rank s's rows in plan order (A = plan.rows()).
std::vector<float> plan_rows(const Problem& pb, int s) {
  const CapacityPlan& plan = pb.plans[s];
  std::vector<float> rows(plan.rows() * pb.D);
  for (int64_t a = 0; a < plan.rows(); ++a) {
    encode_row(s, plan.token_of_row(a), plan.slot_of_row(a), pb.D, &rows[a * pb.D]);
  }
  return rows;
}

// What rank r must receive, expert-major: for each local expert, every source's rows of that
// expert in the source's plan order, sources ascending.
std::vector<float> expected_recv(const Problem& pb, int r, std::vector<int64_t>* offsets_e1) {
  const int64_t e = pb.E / pb.P;
  std::vector<float> out;
  offsets_e1->assign(1, 0);
  for (int64_t j = 0; j < e; ++j) {
    const int64_t g = r * e + j;
    for (int s = 0; s < pb.P; ++s) {
      const CapacityPlan& plan = pb.plans[s];
      for (int64_t a = plan.offsets_E1[g]; a < plan.offsets_E1[g + 1]; ++a) {
        out.resize(out.size() + pb.D);
        encode_row(s, plan.token_of_row(a), plan.slot_of_row(a), pb.D, &out[out.size() - pb.D]);
      }
    }
    offsets_e1->push_back(static_cast<int64_t>(out.size()) / pb.D);
  }
  return out;
}

// Rows as sortable vectors, for the set comparison.
std::vector<std::vector<float>> as_rows(const std::vector<float>& flat, int64_t D) {
  std::vector<std::vector<float>> rows;
  for (size_t i = 0; i + D <= flat.size(); i += D) rows.emplace_back(&flat[i], &flat[i] + D);
  std::sort(rows.begin(), rows.end());
  return rows;
}

// Runs the whole forward + backward exchange of `seed` on this rank and returns what went
// wrong ("" = nothing). Also adds this rank's kept and received rows to *kept_recv.
std::string check_seed(Dispatcher& disp, const Problem& pb, uint64_t seed, int64_t* kept_recv) {
  std::ostringstream err;
  const int r = g_comm->rank();
  const int64_t e = pb.E / pb.P, D = pb.D;
  const CapacityPlan& plan = pb.plans[r];
  const std::vector<float> x_AD = plan_rows(pb, r);
  const int64_t A = plan.rows();
  const CollectiveTag tag{"test.dispatch", 3, static_cast<int64_t>(seed)};

  DispatchHandle h;
  std::vector<float> recv_RD;
  disp.dispatch(plan.kept_E.data(), x_AD.data(), A, tag, &h, &recv_RD);
  std::vector<int64_t> want_off;
  const std::vector<float> want = expected_recv(pb, r, &want_off);
  const int64_t R = h.recv_rows();
  kept_recv[0] += A;
  kept_recv[1] += R;
  if (R * D != static_cast<int64_t>(want.size()))
    err << "R " << R << " vs " << want.size() / D << "; ";
  if (h.local_offsets_e1() != want_off) err << "local_offsets_e1 differ; ";
  // As a set, then in order (expert-major, sources ascending, plan order within a source).
  if (as_rows(recv_RD, D) != as_rows(want, D)) err << "received set differs; ";
  if (recv_RD != want) err << "received order differs; ";

  // Stats agree with the counts.
  const ExchangeLoad& st = h.stats().load;
  int64_t sent = 0, recvd = 0, per_e = 0;
  for (int p = 0; p < pb.P; ++p) {
    sent += st.rows_sent_P[p];
    recvd += st.rows_recv_P[p];
    const int64_t bytes = p == r ? 0 : st.rows_sent_P[p] * D * 4;
    if (st.bytes_sent_P[p] != bytes) err << "bytes_sent_P[" << p << "]; ";
  }
  for (int64_t j = 0; j < e; ++j) per_e += st.rows_recv_e[j];
  if (sent != A || recvd != R || per_e != R) err << "stats rows " << sent << "/" << recvd << "; ";

  // Experts: row * (global expert + 1); return_rows must give each row back transformed, in plan
  // order.
  std::vector<float> y_RD(recv_RD.size()), y_AD(A * D, -1.f);
  for (int64_t j = 0; j < e; ++j) {
    const float f = static_cast<float>(disp.first_local_expert() + j + 1);
    for (int64_t i = h.local_offsets_e1()[j] * D; i < h.local_offsets_e1()[j + 1] * D; ++i) {
      y_RD[i] = recv_RD[i] * f;
    }
  }
  disp.return_rows(&h, y_RD.data(), y_AD.data(), tag);
  for (int64_t g = 0, bad = 0; g < pb.E; ++g) {
    for (int64_t a = plan.offsets_E1[g]; a < plan.offsets_E1[g + 1]; ++a) {
      for (int64_t d = 0; d < D; ++d) {
        if (y_AD[a * D + d] != x_AD[a * D + d] * static_cast<float>(g + 1) && bad++ < 3) {
          err << "return row " << a << " col " << d << "; ";
        }
      }
    }
  }

  // Backward: gradients go out along the same pattern with no count exchange, and come back.
  const int64_t seq_before = g_comm->seq();
  std::vector<float> g_AD(x_AD), g_RD(R * D, -1.f), dx_AD(A * D, -1.f);
  for (float& v : g_AD) v *= -2.f;
  disp.dispatch_rows(&h, g_AD.data(), g_RD.data(), tag);
  for (size_t i = 0; i < g_RD.size(); ++i) {
    if (g_RD[i] != -2.f * want[i]) {
      err << "dispatch_rows element " << i << "; ";
      break;
    }
  }
  disp.return_rows(&h, g_RD.data(), dx_AD.data(), tag);
  if (dx_AD != g_AD) err << "backward round trip differs; ";
  if (g_comm->seq() - seq_before != 2)
    err << "backward used " << g_comm->seq() - seq_before << " collectives; ";
  const std::string s = err.str();
  return s.empty() ? s : "seed " + std::to_string(seed) + " rank " + std::to_string(r) + ": " + s;
}

class DispatcherModes : public ::testing::TestWithParam<ExchangeMode> {};

// The property test: 30 seeds of random token counts (0 included), top-k 1..E, uniform and
// skewed routing, dropless and capacity 1.0.
TEST_P(DispatcherModes, RandomRoutingRoundTrip) {
  const int P = g_comm->size();
  int64_t totals[4] = {0, 0, 0, 0};  // kept, received, routed, dropped (this rank)
  for (uint64_t seed = 0; seed < 30; ++seed) {
    const Problem pb = make_problem(seed, P);
    DispatcherOptions opt;
    opt.mode = GetParam();
    opt.max_recv_rows = 64 * pb.K * P;  // every token of every rank, the dropless worst case
    auto disp = Dispatcher::create(g_comm, pb.E, pb.D, opt);
    ASSERT_TRUE(disp.ok()) << disp.status().ToString();  // same on every rank
    EXPECT_EQ(check_seed(**disp, pb, seed, totals), "");
    totals[2] += pb.plans[g_comm->rank()].total_routed;
    totals[3] += pb.plans[g_comm->rank()].total_dropped;
  }
  // Conservation: what all ranks received is what they routed minus what they dropped.
  g_comm->allreduce(totals, 4, ReduceOp::kSum, {"test.totals"});
  EXPECT_EQ(totals[1], totals[0]);
  EXPECT_EQ(totals[1], totals[2] - totals[3]);
}

// Tokens split contiguously over ranks in rank order: every expert sees its rows in global
// token order, bitwise the rows a 1-rank dispatcher (LocalCommunicator) gives that expert for
// the whole batch. Capacity groups of 8 tokens, whole groups per rank, so drops match too.
TEST_P(DispatcherModes, ExpertMajorIsGlobalTokenOrderAndMatchesOneRank) {
  const int P = g_comm->size(), r = g_comm->rank();
  for (uint64_t seed = 1; seed < 13; ++seed) {
    const Problem pb = make_problem(seed, P, /*group=*/8);
    // The whole batch on one rank.
    RankInput all;
    for (const RankInput& in : pb.ranks) {
      all.T += in.T;
      all.ids_TK.insert(all.ids_TK.end(), in.ids_TK.begin(), in.ids_TK.end());
      all.probs_TK.insert(all.probs_TK.end(), in.probs_TK.begin(), in.probs_TK.end());
    }
    auto one =
        plan_capacity(all.ids_TK.data(), all.probs_TK.data(), all.T, pb.E, pb.K, pb.D, pb.cap);
    ASSERT_TRUE(one.ok());
    // Payload: (global token, slot), the same on both sides.
    auto rows_of = [&](const CapacityPlan& plan, int64_t first) {
      std::vector<float> x(plan.rows() * pb.D);
      for (int64_t a = 0; a < plan.rows(); ++a) {
        encode_row(0, first + plan.token_of_row(a), plan.slot_of_row(a), pb.D, &x[a * pb.D]);
      }
      return x;
    };
    DispatcherOptions opt;
    opt.mode = GetParam();
    LocalCommunicator local;
    auto ref = Dispatcher::create(&local, pb.E, pb.D, opt);
    auto dist = Dispatcher::create(g_comm, pb.E, pb.D, opt);
    ASSERT_TRUE(ref.ok() && dist.ok());
    const std::vector<float> x1 = rows_of(*one, 0), xr = rows_of(pb.plans[r], pb.ranks[r].first);
    DispatchHandle h1, hr;
    std::vector<float> y1, yr;
    (*ref)->dispatch(one->kept_E.data(), x1.data(), one->rows(), {"test.one", 0, 0}, &h1, &y1);
    (*dist)->dispatch(pb.plans[r].kept_E.data(), xr.data(), pb.plans[r].rows(), {"test.p", 0, 0},
                      &hr, &yr);
    // Rank r's experts [r*e, (r+1)*e) are one contiguous run of the 1-rank expert-major rows.
    const int64_t e = pb.E / P, D = pb.D;
    const int64_t lo = h1.local_offsets_e1()[r * e], hi = h1.local_offsets_e1()[(r + 1) * e];
    const std::vector<float> want(y1.begin() + lo * D, y1.begin() + hi * D);
    EXPECT_EQ(yr, want) << "seed " << seed << " rank " << r;
    for (int64_t j = 0; j < e; ++j) {
      EXPECT_EQ(hr.local_offsets_e1()[j + 1] - hr.local_offsets_e1()[j],
                h1.local_offsets_e1()[r * e + j + 1] - h1.local_offsets_e1()[r * e + j])
          << "seed " << seed;
      for (int64_t i = hr.local_offsets_e1()[j] + 1; i < hr.local_offsets_e1()[j + 1]; ++i) {
        const float* a = &yr[(i - 1) * D];
        const float* b = &yr[i * D];
        EXPECT_TRUE(a[1] < b[1] || (a[1] == b[1] && a[2] < b[2]))
            << "seed " << seed << ": expert " << r * e + j << " row " << i << " out of order";
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Modes, DispatcherModes,
                         ::testing::Values(ExchangeMode::kBlocks, ExchangeMode::kSingle),
                         [](const ::testing::TestParamInfo<ExchangeMode>& i) {
                           return std::string(exchange_mode_name(i.param));
                         });

// Every rank with 0 tokens, many times over one handle: every call is still a collective on
// every rank (nothing hangs), and nothing is received.
TEST(Dispatcher, ZeroTokensEverywhere) {
  const int P = g_comm->size();
  auto disp = Dispatcher::create(g_comm, 2 * P, 4);
  ASSERT_TRUE(disp.ok());
  std::vector<int32_t> kept(2 * P, 0);
  DispatchHandle h;
  std::vector<float> recv;
  for (int step = 0; step < 5; ++step) {
    (*disp)->dispatch(kept.data(), nullptr, 0, {"test.zero", 0, step}, &h, &recv);
    (*disp)->return_rows(&h, nullptr, nullptr, {"test.zero", 0, step});
    EXPECT_EQ(h.recv_rows(), 0);
    EXPECT_EQ(h.stats().load.remote_bytes(), 0);
  }
}

TEST(Dispatcher, SizesAreChecked) {
  EXPECT_TRUE(Dispatcher::check_sizes(8, 4).ok());
  const Status s = Dispatcher::check_sizes(6, 4);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("num_experts 6 is not a multiple of the number of ranks 4"),
            std::string::npos)
      << s.message();
  EXPECT_FALSE(Dispatcher::check_sizes(0, 1).ok());
  LocalCommunicator local;
  EXPECT_FALSE(Dispatcher::create(&local, 4, 0).ok());
  DispatcherOptions neg;
  neg.max_recv_rows = -1;
  EXPECT_FALSE(Dispatcher::create(&local, 4, 8, neg).ok());
  auto d = Dispatcher::create(&local, 4, 8);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ((*d)->local_experts(), 4);
  EXPECT_EQ((*d)->first_local_expert(), 0);
}

}  // namespace
}  // namespace sy

int main(int argc, char** argv) {
  return sy::testutil::run_all_tests_mpi(&argc, &argv, &sy::g_comm);
}
