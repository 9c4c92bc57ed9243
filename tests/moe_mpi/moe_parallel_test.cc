// "P ranks give the same result as 1 rank": the expert-parallel MoeLayer (ctest: mpiexec with 1,
// 2 and 4 ranks) against the single-process layer, for every registered router.
//
// Method. Every rank builds the same global problem from a seed: T tokens in capacity groups of
// G (the last group may be shorter), x [T, D], token ids [T] and a loss L = sum(c * y) with a
// fixed random c [T, D]. Every rank computes the 1-rank REFERENCE itself (MoeLayer::create(cfg,
// nullptr) over all T tokens, group_tokens = G), then runs the expert-parallel layer
// (create(cfg, comm)) over its own share: the n = ceil(T / G) groups are split contiguously,
// rank r holding groups [r*n/P, (r+1)*n/P) (shard_tokens, runtime/data/sequence_shard.h; a
// rank may hold none), and compares its slice with the reference's.
//
// What must hold, and why (the strongest property that holds is asserted):
//   * routing and the capacity plan: the same top-k ids and the same kept/dropped set (capacity
//     is per group and a group lives on one rank; routers/capacity.h);
//   * forward output y: BITWISE equal (memcmp). the layers run on a deterministic ExecContext
//     (row-stable GEMMs: a token row's result does not depend on the batch it is in), so the
//     router and the shared expert give every token the bits it gets in the 1-rank batch; the
//     routed experts see exactly the 1-rank inputs in the 1-rank order (comm/dispatcher.h:
//     expert-major receipt = global token order), and combine is per token in a fixed order;
//   * dx: BITWISE equal as well. dx is a per-token quantity: the expert rows come back
//     bitwise (same expert GEMM calls as 1 rank), and the router's and shared expert's dx GEMMs
//     (dy W, A = token rows) are row-stable in deterministic mode. (Without deterministic mode
//     dx would only be equal within rounding: OpenBLAS picks kernels by M.)
//   * gradients of the local routed experts: BITWISE equal to the reference's slice
//     [first, first + e) of the full expert gradient: the owner runs the same GEMM calls (same
//     M, same rows, same order) as the reference does for those experts;
//   * router gradients (all-reduced by the layer, summed over ranks) and shared-expert
//     gradients (summed over ranks by this test, see below): equal within
//     |a - b| <= 1e-5 * scale, scale = max_i |ref_i| of that tensor. They are sums over tokens
//     whose partition (P partial sums, then an allreduce) differs from the 1-rank sum: each
//     fp32 regrouping changes a sum of n terms by about sqrt(n) * 2^-24 * scale (n <= 128
//     tokens here: ~1e-6 * scale), so 1e-5 leaves a safety factor and still catches a missing or
//     double-counted token (an error of order scale / T).
//   * the exchange: every expert owner receives exactly the rows the 1-rank plan keeps for its
//     experts, and sum over ranks of received rows == sum routed - sum dropped;
//   * the layer's step stats (MoeStepStats) say the same as the plan and the other ranks:
//     check_step_stats.
//
// Shared expert: the layer all-reduces only the router's gradients; the (replicated) shared
// expert's weight gradients stay per-rank partial sums (moe_layer.h says nothing else). The test
// sums them itself before comparing.
//
// Every rank reaches every collective whatever fails (EXPECT, never ASSERT, between
// collectives); the verdict is the MAX over ranks (tests/comm/mpi_test_main.h), and failures
// on rank r are printed with "[rank r]" and the case (router, seed, sizes).
//
// Legend: T tokens (global), Tl this rank's tokens, G group size, D hidden, F expert hidden,
// E experts, e = E/P local experts, K top-k, P ranks.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "routers/registry.h"
#include "runtime/data/sequence_shard.h"
#include "runtime/kernels/cpu_kernels.h"
#include "runtime/moe/moe_layer.h"
#include "tests/comm/mpi_test_main.h"

namespace sy {
namespace {

MpiCommunicator* g_comm = nullptr;

// How the router's choices are shaped (only for routers with a [E, D] "weight": linear and
// hybrid; the others route naturally).
enum class Routing {
  kNatural,
  kSkewed,     // x shifted by +0.5, weight row 0 += 0.3: expert 0 gets most tokens
  kOneExpert,  // x > 0, weight row 0 = 1, other rows 0: top-1 of every token is expert 0
};

struct Case {
  std::string router = "linear";
  uint64_t seed = 1;
  int64_t T = 91, G = 16;  // 6 groups, the last one 11 tokens
  int64_t D = 16, F = 24, E = 4, K = 2;
  double capacity_factor = 1.25;  // <= 0: dropless
  DropPolicy policy = DropPolicy::kProbs;
  int64_t shared_hidden = 0;
  bool norm_topk = false;
  Routing routing = Routing::kNatural;
  int64_t vocab = 1000;  // hash router
  // The expert-parallel layer runs a permuted expert placement (permuted_placement); the
  // reference stays contiguous: the results must not change.
  bool permuted = false;
  // The expert-parallel layer overlaps its exchange in this many chunks (1: blocking); the
  // results must not change.
  int chunks = 1;
};

// Not contiguous, and every rank's local order scrambled (also at P = 1): rank r holds
// perm[r*e, (r+1)*e) with perm[i] = (3 i + 1) mod E (3 is coprime to the E here).
ExpertPlacement permuted_placement(int64_t E, int P) {
  ExpertPlacement p = ExpertPlacement::contiguous(E, P);
  for (int r = 0; r < P; ++r)
    for (size_t j = 0; j < p.experts_of_rank[r].size(); ++j)
      p.experts_of_rank[r][j] = static_cast<int32_t>((3 * (r * E / P + j) + 1) % E);
  return p;
}

std::string describe(const Case& c) {
  std::ostringstream s;
  s << "case: router=" << c.router << " seed=" << c.seed << " T=" << c.T << " G=" << c.G
    << " D=" << c.D << " F=" << c.F << " E=" << c.E << " K=" << c.K
    << " capacity_factor=" << c.capacity_factor << " policy=" << drop_policy_name(c.policy)
    << " shared_hidden=" << c.shared_hidden << " norm_topk_prob=" << c.norm_topk << " routing="
    << (c.routing == Routing::kNatural  ? "natural"
        : c.routing == Routing::kSkewed ? "skewed"
                                        : "one_expert")
    << (c.permuted ? " placement=permuted" : "") << " exchange_chunks=" << c.chunks << " (rank "
    << g_comm->rank() << " of " << g_comm->size() << ")";
  return s.str();
}

MoeLayerConfig layer_config(const Case& c) {
  MoeLayerConfig cfg;
  cfg.exec = sy::make_context("cpu", /*deterministic=*/true);  // row-stable GEMMs
  cfg.d_model = c.D;
  cfg.ffn_hidden = c.F;
  cfg.num_experts = c.E;
  cfg.top_k = c.K;
  cfg.capacity_factor = c.capacity_factor;
  cfg.drop_policy = c.policy;
  cfg.shared_expert_hidden = c.shared_hidden;
  cfg.group_tokens = c.G;
  cfg.init_std = 0.2f;  // larger than the default so expert outputs are O(1)
  cfg.seed = 1000 + c.seed;
  cfg.router.name = c.router;
  cfg.router.hidden = 32;
  cfg.router.num_heads = 2;
  cfg.router.norm_topk_prob = c.norm_topk;
  cfg.router.init_std = 0.3f;
  cfg.router.seed = 2000 + c.seed;
  cfg.router.vocab_size = c.vocab;
  return cfg;
}

ExpertPlacement placement_of(const Case& c, int P) {
  return c.permuted ? permuted_placement(c.E, P) : ExpertPlacement::contiguous(c.E, P);
}

// The global problem of a case: the same on every rank.
struct Problem {
  std::vector<float> x_TD, c_TD;
  std::vector<int32_t> ids_T;
};

Problem make_problem(const Case& c) {
  std::mt19937_64 rng(c.seed * 0x9E3779B97F4A7C15ull + 12345);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_int_distribution<int32_t> tok(0, static_cast<int32_t>(c.vocab - 1));
  Problem pb;
  pb.x_TD.resize(static_cast<size_t>(c.T * c.D));
  pb.c_TD.resize(pb.x_TD.size());
  pb.ids_T.resize(static_cast<size_t>(c.T));
  for (float& v : pb.x_TD) {
    const float z = normal(rng);
    v = c.routing == Routing::kOneExpert ? std::fabs(z) + 0.1f
        : c.routing == Routing::kSkewed  ? z + 0.5f
                                         : z;
  }
  for (float& v : pb.c_TD) v = normal(rng);
  for (int32_t& t : pb.ids_T) t = tok(rng);
  return pb;
}

// Applies the case's routing to a freshly created layer (the same edit on every layer).
void shape_router(const Case& c, MoeLayer* layer) {
  if (c.routing == Routing::kNatural) return;
  Param* w = layer->find_param("gate.weight");
  if (w == nullptr || w->value.shape != std::vector<int64_t>{c.E, c.D}) return;
  for (int64_t e = 0; e < c.E; ++e)
    for (int64_t d = 0; d < c.D; ++d) {
      float& v = w->value.at(e, d);
      if (c.routing == Routing::kSkewed)
        v += e == 0 ? 0.3f : 0.0f;
      else
        v = e == 0 ? 1.0f : 0.0f;
    }
}

// True for routers whose experts choose their tokens (Router::experts_choose).
bool experts_choose(const std::string& router) {
  RouterConfig rc;
  rc.name = router;
  rc.d_model = 4;
  rc.num_experts = 2;
  rc.vocab_size = 2;
  auto r = make_router(rc);
  return r.ok() && (*r)->experts_choose();
}

bool shapes_router(const std::string& router) {
  return router == "linear" || router == "hybrid";
}

// [first, last) of tokens that rank r of P holds: whole groups, contiguous (as infer deals them).
std::pair<int64_t, int64_t> token_share(int64_t T, int64_t G, int r, int P) {
  const TokenShard s = shard_tokens(T, G, /*batch_groups=*/1, r, P);
  return {s.token_begin, s.token_end};
}

// "" when a and b are bitwise equal, else where and by how much they differ.
std::string bitwise_diff(const float* a, const float* b, int64_t n, int64_t row_len) {
  if (n == 0 || std::memcmp(a, b, static_cast<size_t>(n) * sizeof(float)) == 0) return "";
  int64_t first = -1, count = 0;
  double max_abs = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (std::memcmp(a + i, b + i, sizeof(float)) == 0) continue;
    if (first < 0) first = i;
    ++count;
    max_abs = std::max(max_abs, std::fabs(double(a[i]) - double(b[i])));
  }
  std::ostringstream s;
  s.precision(9);
  s << count << " of " << n << " values differ; first at row " << first / row_len << " col "
    << first % row_len << " (" << a[first] << " vs " << b[first] << "), max |diff| " << max_abs;
  return s.str();
}

// "" when |a - b| <= rtol * max_i |ref_i| everywhere, else the worst element.
std::string close_diff(const float* got, const float* ref, int64_t n, double rtol) {
  double scale = 0;
  for (int64_t i = 0; i < n; ++i) scale = std::max(scale, std::fabs(double(ref[i])));
  const double tol = rtol * scale;
  int64_t worst = -1;
  double worst_abs = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double d = std::fabs(double(got[i]) - double(ref[i]));
    if (!(d <= tol) && (worst < 0 || d > worst_abs)) {
      worst = i;
      worst_abs = d;
    }
  }
  if (worst < 0) return "";
  std::ostringstream s;
  s.precision(9);
  s << "element " << worst << ": " << got[worst] << " vs reference " << ref[worst] << ", |diff| "
    << worst_abs << " > " << rtol << " * scale " << scale;
  return s.str();
}

// Largest |a - b| / max|ref| seen over all tolerance comparisons (reported at the end, so the
// margin of the 1e-5 bound is visible in the log).
double g_worst_rel = 0;

void track_rel(const float* got, const float* ref, int64_t n) {
  double scale = 0, worst = 0;
  for (int64_t i = 0; i < n; ++i) scale = std::max(scale, std::fabs(double(ref[i])));
  for (int64_t i = 0; i < n; ++i) worst = std::max(worst, std::fabs(double(got[i]) - ref[i]));
  if (scale > 0) g_worst_rel = std::max(g_worst_rel, worst / scale);
}

constexpr double kGradRtol = 1e-5;

// What one case saw, for the callers' own checks.
struct Result {
  bool ran = false;
  int64_t routed = 0, dropped = 0;  // reference (global)
  int64_t local_first = 0, local_T = 0;
  std::vector<float> y_ref, dx_ref, y_par, dx_par;  // y/dx: reference [T, D]; par [Tl, D]
  CapacityPlan ref_plan;
  std::vector<uint8_t> par_kept;  // this rank's kept_TK
};

// The expert-parallel layer's step stats against its plan and the other ranks' stats (one
// source per number): counts are the plan's (kept + dropped = routed), rows sent to rank d are
// the plan's kept rows for d's experts, rows received from s are what s says it sent here,
// bytes = rows * D * 4 for every other rank and 0 for self, and each local expert receives
// what the 1-rank plan keeps for it. Collective (one allgather); EXPECT only.
void check_step_stats(const MoeLayer& par, const CapacityPlan& ref_plan, const Case& c) {
  const int P = g_comm->size(), r = g_comm->rank();
  const MoeStepStats& st = par.last_stats();
  const CapacityPlan& plan = par.plan();
  const int64_t e = c.E / P, row_bytes = c.D * static_cast<int64_t>(sizeof(float));
  const ExpertPlacement pl = placement_of(c, P);
  EXPECT_EQ(st.routed, plan.total_routed);
  EXPECT_EQ(st.kept, plan.total_kept);
  EXPECT_EQ(st.dropped, plan.total_dropped);
  EXPECT_EQ(st.kept + st.dropped, st.routed);
  int64_t routed_sum = 0;
  for (int64_t g = 0; g < c.E && static_cast<size_t>(g) < st.routed_E.size(); ++g) {
    routed_sum += st.routed_E[g];
    EXPECT_EQ(st.kept_E[g], plan.kept_E[g]) << "kept of expert " << g;
    EXPECT_EQ(st.kept_E[g] + st.dropped_E[g], st.routed_E[g]) << "expert " << g;
  }
  EXPECT_EQ(routed_sum, st.routed);

  const ExchangeLoad& x = st.exchange;
  std::vector<int64_t> sent(static_cast<size_t>(P), 0), sent_PP(static_cast<size_t>(P * P), 0);
  EXPECT_EQ(x.rows_sent_P.size(), static_cast<size_t>(P));
  EXPECT_EQ(x.rows_recv_P.size(), static_cast<size_t>(P));
  for (int d = 0; d < P && static_cast<size_t>(d) < x.rows_sent_P.size(); ++d) {
    sent[d] = x.rows_sent_P[d];
    int64_t want = 0;
    for (int64_t j = 0; j < e; ++j) want += plan.kept_E[pl.experts_of_rank[d][j]];
    EXPECT_EQ(x.rows_sent_P[d], want) << "rows sent to rank " << d;
    EXPECT_EQ(x.bytes_sent_P[d], d == r ? 0 : x.rows_sent_P[d] * row_bytes) << "to rank " << d;
    EXPECT_EQ(x.bytes_recv_P[d], d == r ? 0 : x.rows_recv_P[d] * row_bytes) << "from " << d;
  }
  g_comm->allgather(sent.data(), sent_PP.data(), P, {"test.stats_rows"});
  int64_t recv_sum = 0, per_expert_sum = 0;
  for (int s = 0; s < P && static_cast<size_t>(s) < x.rows_recv_P.size(); ++s) {
    recv_sum += x.rows_recv_P[s];
    EXPECT_EQ(x.rows_recv_P[s], sent_PP[s * P + r]) << "rows received from rank " << s;
  }
  EXPECT_EQ(x.rows_recv_e.size(), static_cast<size_t>(e));
  for (size_t j = 0; j < x.rows_recv_e.size(); ++j) {
    per_expert_sum += x.rows_recv_e[j];
    EXPECT_EQ(x.rows_recv_e[j], ref_plan.kept_E[pl.experts_of_rank[r][j]])
        << "rows received for global expert " << pl.experts_of_rank[r][j];
  }
  EXPECT_EQ(per_expert_sum, recv_sum);
  EXPECT_GE(st.bandwidth_gbps, 0.0);
  if (P == 1) {
    EXPECT_EQ(st.bandwidth_gbps, 0.0);
  }
  EXPECT_GE(st.forward.total_s(), 0.0);
  EXPECT_GE(st.backward.total_s(), 0.0);
}

// Runs one case on every rank and checks everything listed at the top of the file.
Result run_case(const Case& c) {
  SCOPED_TRACE(describe(c));
  Result res;
  const int P = g_comm->size(), r = g_comm->rank();
  const int64_t T = c.T, D = c.D;
  const MoeLayerConfig cfg = layer_config(c);
  const Problem pb = make_problem(c);

  // ---- the 1-rank reference, over every token ----
  auto ref_or = MoeLayer::create(cfg, nullptr);
  MoeLayerConfig par_cfg = cfg;
  par_cfg.exchange_chunks = c.chunks;
  if (c.permuted) par_cfg.placement = std::make_shared<ExpertPlacement>(placement_of(c, P));
  auto par_or = MoeLayer::create(par_cfg, g_comm);
  // The config is the same on every rank, so either every rank returns here or none does.
  if (!ref_or.ok() || !par_or.ok()) {
    ADD_FAILURE() << "create: " << (ref_or.ok() ? par_or.status() : ref_or.status()).message();
    return res;
  }
  MoeLayer& ref = *ref_or.value();
  MoeLayer& par = *par_or.value();
  shape_router(c, &ref);
  shape_router(c, &par);
  const int64_t K = ref.router().slots_per_token();  // slots per token: E for expert choice

  res.y_ref.assign(static_cast<size_t>(T * D), -1.0f);
  res.dx_ref.assign(static_cast<size_t>(T * D), -1.0f);
  {
    const Status st = ref.forward(pb.x_TD.data(), pb.ids_T.data(), T, res.y_ref.data());
    EXPECT_TRUE(st.ok()) << "reference forward: " << st.message();
    if (st.ok()) ref.backward(pb.c_TD.data(), res.dx_ref.data());
  }
  res.ref_plan = ref.plan();
  res.routed = ref.plan().total_routed;
  res.dropped = ref.plan().total_dropped;

  // ---- expert parallel, over this rank's groups (collective) ----
  const auto [t0, t1] = token_share(T, c.G, r, P);
  const int64_t Tl = t1 - t0;
  res.local_first = t0;
  res.local_T = Tl;
  res.y_par.assign(static_cast<size_t>(Tl * D), -2.0f);
  res.dx_par.assign(static_cast<size_t>(Tl * D), -2.0f);
  {
    const Status st =
        par.forward(pb.x_TD.data() + t0 * D, pb.ids_T.data() + t0, Tl, res.y_par.data());
    // forward fails only on bad sizes, which are the same on every rank.
    EXPECT_TRUE(st.ok()) << "parallel forward: " << st.message();
    if (!st.ok()) return res;
    par.backward(pb.c_TD.data() + t0 * D, res.dx_par.data());
  }
  res.par_kept = par.plan().kept_TK;
  res.ran = true;

  // Routing and plan: the same choices and the same kept set as the 1-rank slice.
  const std::vector<int32_t>& ids_ref = ref.router_output().topk_ids_TK;
  const std::vector<int32_t>& ids_par = par.router_output().topk_ids_TK;
  EXPECT_TRUE(std::equal(ids_par.begin(), ids_par.begin() + Tl * K, ids_ref.begin() + t0 * K))
      << "top-k expert ids differ from the 1-rank slice";
  EXPECT_EQ(std::vector<uint8_t>(res.par_kept.begin(), res.par_kept.begin() + Tl * K),
            std::vector<uint8_t>(res.ref_plan.kept_TK.begin() + t0 * K,
                                 res.ref_plan.kept_TK.begin() + t1 * K))
      << "kept/dropped set differs from the 1-rank plan";

  // Forward and dx: bitwise (deterministic GEMM mode; see the top of the file).
  EXPECT_EQ(bitwise_diff(res.y_par.data(), res.y_ref.data() + t0 * D, Tl * D, D), "")
      << "forward output is not bitwise the 1-rank output";
  EXPECT_EQ(bitwise_diff(res.dx_par.data(), res.dx_ref.data() + t0 * D, Tl * D, D), "")
      << "dx is not bitwise the 1-rank dx";

  // Local routed experts: bitwise the reference's slices of the full expert gradient (local
  // expert j is global ids[j]: [first, first + e) with the contiguous placement).
  const int64_t first = par.first_local_expert(), e = par.num_local_experts();
  const std::vector<int32_t> ids = placement_of(c, P).experts_of_rank[r];
  EXPECT_EQ(par.local_expert_ids(), ids);
  if (!c.permuted) {
    EXPECT_EQ(first, r * c.E / P);
  }
  EXPECT_EQ(e, c.E / P);
  for (Param& p : par.experts().params()) {
    Param* rp = nullptr;
    for (Param& q : ref.experts().params())
      if (q.name == p.name) rp = &q;
    if (rp == nullptr) {
      ADD_FAILURE() << "reference has no expert param " << p.name;
      continue;
    }
    const int64_t per_expert = rp->grad.numel() / c.E;
    EXPECT_EQ(p.grad.numel(), per_expert * e) << p.name;
    if (p.grad.numel() != per_expert * e) continue;
    for (int64_t j = 0; j < e && j < static_cast<int64_t>(ids.size()); ++j) {
      const int64_t at = j * per_expert, ref_at = ids[j] * per_expert;
      EXPECT_EQ(bitwise_diff(p.grad.ptr() + at, rp->grad.ptr() + ref_at, per_expert, per_expert),
                "")
          << "gradient of " << p.name << " (local expert " << j << " = global " << ids[j]
          << ") is not bitwise the reference's slice";
      EXPECT_EQ(bitwise_diff(p.value.ptr() + at, rp->value.ptr() + ref_at, per_expert, per_expert),
                "")
          << "init of " << p.name << " (global expert " << ids[j]
          << ") differs from the reference's slice";
    }
  }

  // Router gradients: all-reduced (summed) by the layer; a different summation grouping.
  {
    auto& pr = par.router().params();
    auto& rr = ref.router().params();
    EXPECT_EQ(pr.size(), rr.size());
    for (size_t i = 0; i < std::min(pr.size(), rr.size()); ++i) {
      EXPECT_EQ(pr[i].grad.numel(), rr[i].grad.numel()) << pr[i].name;
      if (pr[i].grad.numel() != rr[i].grad.numel()) continue;
      track_rel(pr[i].grad.ptr(), rr[i].grad.ptr(), rr[i].grad.numel());
      EXPECT_EQ(close_diff(pr[i].grad.ptr(), rr[i].grad.ptr(), rr[i].grad.numel(), kGradRtol), "")
          << "router gradient gate." << pr[i].name << " (summed over ranks)";
    }
  }

  // Shared expert: this rank's partial gradient sums, summed here over the ranks (collective:
  // every rank has the same params, so every rank makes the same calls).
  if (c.shared_hidden > 0) {
    SharedExpert* ps = par.shared_expert();
    SharedExpert* rs = ref.shared_expert();
    EXPECT_TRUE(ps != nullptr && rs != nullptr);
    if (ps && rs) {
      for (size_t i = 0; i < ps->params().size(); ++i) {
        Param& p = ps->params()[i];
        const Param& q = rs->params()[i];
        // The layer sums the replicated shared expert's gradients over the ranks itself.
        track_rel(p.grad.ptr(), q.grad.ptr(), q.grad.numel());
        EXPECT_EQ(close_diff(p.grad.ptr(), q.grad.ptr(), q.grad.numel(), kGradRtol), "")
            << "shared-expert gradient " << p.name << " (summed over ranks by the layer)";
      }
    }
  }

  // Exchange: the owner receives exactly what the 1-rank plan keeps for its experts, and the
  // rows received over all ranks are the routed minus the dropped assignments.
  const ExchangeLoad& xs = par.last_stats().exchange;
  EXPECT_EQ(static_cast<int64_t>(xs.rows_recv_e.size()), e);
  int64_t sums[4] = {0, par.plan().total_routed, par.plan().total_dropped, par.plan().total_kept};
  for (size_t j = 0; j < xs.rows_recv_e.size(); ++j) {
    sums[0] += xs.rows_recv_e[j];
    EXPECT_EQ(xs.rows_recv_e[j], res.ref_plan.kept_E[ids[j]])
        << "rows received for global expert " << ids[j];
  }
  g_comm->allreduce(sums, 4, ReduceOp::kSum, {"test.exchange_sums"});
  EXPECT_EQ(sums[0], res.routed - res.dropped) << "sum over ranks of received rows";
  EXPECT_EQ(sums[1], res.routed) << "sum over ranks of routed assignments";
  EXPECT_EQ(sums[2], res.dropped) << "sum over ranks of dropped assignments";
  EXPECT_EQ(sums[3], res.ref_plan.total_kept) << "sum over ranks of kept assignments";
  check_step_stats(par, res.ref_plan, c);
  return res;
}

std::vector<Case> variants_of(const std::string& router, uint64_t seed, int64_t T) {
  std::vector<Case> out;
  Case base;
  base.router = router;
  base.seed = seed;
  base.T = T;
  // Capacity factor 1.0: drops in most groups. Skewed where the router can be skewed.
  Case cap = base;
  cap.capacity_factor = 1.0;
  cap.routing = shapes_router(router) ? Routing::kSkewed : Routing::kNatural;
  out.push_back(cap);
  Case pos = cap;  // the other drop rule
  pos.policy = DropPolicy::kPosition;
  pos.seed += 100;
  out.push_back(pos);
  Case dropless = base;
  dropless.capacity_factor = 0;
  out.push_back(dropless);
  Case shared = base;
  shared.shared_hidden = 20;
  shared.capacity_factor = 1.0;
  out.push_back(shared);
  Case norm = base;
  norm.norm_topk = true;
  norm.K = 3;
  out.push_back(norm);
  return out;
}

// Every registered router, 6 groups of 16 (the last 11 tokens): capacity 1.0 (skewed for the
// routers with a weight matrix, both drop rules), dropless, shared expert, norm_topk_prob.
TEST(MoeParallel, EveryRouterMatchesOneRank) {
  const std::vector<std::string> names = router_names();
  EXPECT_GE(names.size(), 6u);
  for (const std::string& name : names) {
    int64_t dropped_at_cap1 = 0;
    for (const Case& c : variants_of(name, 7, 91)) {
      const Result res = run_case(c);
      if (c.capacity_factor == 1.0 && c.shared_hidden == 0) dropped_at_cap1 += res.dropped;
      if (c.capacity_factor <= 0) {
        EXPECT_EQ(res.dropped, 0) << describe(c);
      }
    }
    // Not vacuous: capacity 1.0 really dropped something (token choice; when the experts
    // choose, capacity is the choice and nothing is dropped).
    if (!experts_choose(name)) {
      EXPECT_GT(dropped_at_cap1, 0) << "router " << name << ": no drops at capacity 1.0";
    }
  }
}

// Fewer groups than ranks: on 4 ranks, ranks 2 and 3 hold no tokens and still take part in
// every exchange (and T = 0 everywhere).
TEST(MoeParallel, MoreRanksThanGroups) {
  for (const std::string& name : router_names()) {
    for (int64_t T : {32, 20, 0}) {  // 2 groups, 2 groups (short last), none
      Case c;
      c.router = name;
      c.seed = 11 + T;
      c.T = T;
      c.capacity_factor = 1.0;
      c.shared_hidden = T == 20 ? 8 : 0;
      const Result res = run_case(c);
      if (res.ran && g_comm->size() == 4 && T > 0) {
        EXPECT_EQ(res.local_T, g_comm->rank() % 2 == 0 ? 0 : (g_comm->rank() == 1 ? 16 : T - 16))
            << describe(c);
      }
    }
  }
}

// Worst skew: every token's top-1 is expert 0 (and with K = 2 every second slot expert 1).
// Per group exactly routed - capacity assignments per expert are dropped, the same set as one
// rank, and a token whose assignments are all dropped gets y = 0 and dx = 0 (no residual
// inside the layer, no gradient through a dropped slot).
TEST(MoeParallel, AllTokensToOneExpert) {
  for (int64_t K : {1, 2}) {
    for (double cf : {1.0, 1.25, 0.0}) {
      Case c;
      c.router = "linear";
      c.seed = 21 + K;
      c.T = 5 * 16 - 3;  // 5 groups, the last 13 tokens
      c.K = K;
      c.capacity_factor = cf;
      c.routing = Routing::kOneExpert;
      const Result res = run_case(c);
      if (!res.ran) continue;
      SCOPED_TRACE(describe(c));
      // Routed to expert k (slot k) = T; dropped per group = G_g - C_g for each of them.
      const CapacityPlan& pl = res.ref_plan;
      int64_t expect_dropped = 0;
      for (int64_t g0 = 0; g0 < c.T; g0 += c.G) {
        const int64_t Gg = std::min(c.G, c.T - g0);
        const int64_t C =
            cf <= 0 ? Gg * K : static_cast<int64_t>(std::ceil(cf * double(Gg * K) / double(c.E)));
        expect_dropped += std::max<int64_t>(0, Gg - C);
      }
      for (int64_t e = 0; e < c.E; ++e) {
        EXPECT_EQ(pl.routed_E[e], e < K ? c.T : 0) << "expert " << e;
        EXPECT_EQ(pl.dropped_E[e], e < K ? expect_dropped : 0) << "expert " << e;
      }
      if (cf > 0) {
        EXPECT_GT(expect_dropped, 0);
      }
      // Rows of tokens with every slot dropped are exactly zero, on every rank.
      int64_t zero_rows = 0;
      for (int64_t t = 0; t < res.local_T; ++t) {
        const int64_t tg = res.local_first + t;
        bool any_kept = false;
        for (int64_t k = 0; k < K; ++k) any_kept |= res.par_kept[t * K + k] != 0;
        if (any_kept) continue;
        ++zero_rows;
        for (int64_t d = 0; d < c.D; ++d) {
          EXPECT_EQ(res.y_par[t * c.D + d], 0.0f) << "dropped token " << tg;
          EXPECT_EQ(res.dx_par[t * c.D + d], 0.0f) << "dropped token " << tg;
        }
      }
      int64_t all_zero = zero_rows;
      g_comm->allreduce(&all_zero, 1, ReduceOp::kSum, {"test.zero_rows"});
      // With K = 2, slot 0 and slot 1 rank by different probabilities, so a token can keep one
      // slot and lose the other; with K = 1 every dropped token is a zero row.
      if (K == 1) {
        EXPECT_EQ(all_zero, expect_dropped);
      }
    }
  }
}

// Property test of the exchange: 20 seeds of random layouts (group size, token count with a
// short last group or none at all), top_k in [1, E], E in {4, 8}, capacity (dropless, 1.0,
// 1.25, both drop rules), shared expert, norm_topk_prob, skew, cycling through the routers.
TEST(MoeParallel, RandomizedProperty) {
  const std::vector<std::string> names = router_names();
  for (uint64_t seed = 0; seed < 20; ++seed) {
    std::mt19937_64 rng(seed * 31337 + 5);
    Case c;
    c.seed = 100 + seed;
    c.router = names[seed % names.size()];
    const int64_t Gs[] = {4, 8, 16};
    c.G = Gs[rng() % 3];
    c.T = seed == 3 ? 0 : static_cast<int64_t>(rng() % (8 * c.G + 1));
    c.E = rng() % 2 ? 8 : 4;
    c.K = 1 + static_cast<int64_t>(rng() % c.E);
    const double cfs[] = {0.0, 1.0, 1.25};
    c.capacity_factor = cfs[rng() % 3];
    c.policy = rng() % 3 == 0 ? DropPolicy::kPosition : DropPolicy::kProbs;
    c.shared_hidden = rng() % 3 == 0 ? 12 : 0;
    c.norm_topk = rng() % 2;
    c.routing = rng() % 2 ? Routing::kSkewed : Routing::kNatural;
    c.chunks = 1 + static_cast<int>(rng() % 3);
    // Test part results are recorded for failures only: a new one means this seed failed.
    const ::testing::TestResult* tr =
        ::testing::UnitTest::GetInstance()->current_test_info()->result();
    const int before = tr->total_part_count();
    run_case(c);
    if (tr->total_part_count() != before)
      std::fprintf(stderr, "[rank %d] property test FAILED for property seed %llu: %s\n",
                   g_comm->rank(), static_cast<unsigned long long>(seed), describe(c).c_str());
  }
}

// A permuted expert placement (moe.placement) changes where experts run, not the result: the
// same checks as above, bitwise against the contiguous 1-rank layer, for every router.
TEST(MoeParallel, PermutedPlacementMatchesOneRank) {
  for (const std::string& name : router_names()) {
    for (int variant = 0; variant < 3; ++variant) {
      Case c;
      c.router = name;
      c.seed = 31 + variant;
      c.E = variant == 1 ? 8 : 4;
      c.capacity_factor = variant == 2 ? 0.0 : 1.0;
      c.shared_hidden = variant == 1 ? 8 : 0;
      c.routing = variant == 0 && shapes_router(name) ? Routing::kSkewed : Routing::kNatural;
      c.permuted = true;
      run_case(c);
    }
  }
}

// The exchange overlapped with compute (MoeLayerConfig::exchange_chunks): chunks of local
// experts go out, run and come back in a pipeline, and the shared expert runs around the routed
// experts (forward and backward). The same checks, bitwise against the 1-rank layer: chunk
// counts that divide the local experts, that do not (uneven chunks), more chunks than local
// experts, ranks with no tokens at all (T = G: one group), and expert choice (every expert
// gets rows).
TEST(MoeParallel, OverlappedExchangeMatchesOneRank) {
  const std::vector<std::string> names = router_names();
  int variant = 0;
  for (const int chunks : {2, 3, 1024}) {
    for (const int64_t E : {8, 12}) {
      for (const bool shared : {false, true}) {
        Case c;
        c.router = names[variant % names.size()];
        c.seed = 71 + variant;
        c.E = E;
        c.K = 2;
        c.chunks = chunks;
        c.shared_hidden = shared ? 12 : 0;
        c.capacity_factor = variant % 3 == 0 ? 0.0 : 1.25;
        if (variant % 4 == 3) c.T = c.G;  // one group: every other rank holds no tokens
        if (E % g_comm->size() == 0) run_case(c);
        ++variant;
      }
    }
  }
  for (const std::string& name : names) {
    if (!experts_choose(name)) continue;
    Case c;
    c.router = name;
    c.E = 8;
    c.chunks = 3;
    c.shared_hidden = 8;
    run_case(c);
  }
}

// Last: the margin actually seen under the 1e-5 gradient tolerance (max over ranks).
TEST(MoeParallel, ReportGradientMargin) {
  double worst = g_worst_rel;
  g_comm->allreduce(&worst, 1, ReduceOp::kMax, {"test.margin"});
  if (g_comm->rank() == 0)
    std::printf("worst |diff| / max|ref| of summed gradients: %.3g (bound %.0e)\n", worst,
                kGradRtol);
  EXPECT_LE(worst, kGradRtol);
}

}  // namespace
}  // namespace sy

int main(int argc, char** argv) {
  return sy::testutil::run_all_tests_mpi(&argc, &argv, &sy::g_comm);
}
