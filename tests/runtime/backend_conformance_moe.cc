// Backend conformance, part 2 (linked into backend_conformance_test): routing and the MoE data
// path, the optimizer and the reductions. The tolerances and the harness are in
// backend_conformance.h; the coverage check in backend_conformance_test.cc counts these cases.
#include "tests/runtime/backend_conformance.h"

#include "runtime/kernels/balance.h"
#include "runtime/kernels/hash_route.h"

namespace sy {
namespace conformance {
namespace {

// ---- routing and the MoE data path -----------------------------------------------------------

// The drop rule of runtime/kernels/capacity.h, re-implemented plainly: per expert and capacity
// group, the routed (unmasked) assignments in (token, slot) order; over capacity C_g =
// min(G_g K, ceil(capacity_factor G_g K / E)) (dropless: G_g K), keep the C_g with the highest
// ranking probability (NaN as -inf; ties keep the lower flat index) or, for kPosition, the first
// C_g. Kept rows are grouped by expert, ascending (token, slot) within an expert.
CapacityPlan plan_reference(const std::vector<int32_t>& ids, const std::vector<float>& rank_p,
                            int64_t T, int64_t E, int64_t K, const CapacityConfig& cfg,
                            const std::vector<uint8_t>& mask) {
  CapacityPlan p;
  p.T = T;
  p.E = E;
  p.K = K;
  p.dropless = cfg.dropless();
  p.kept_TK.assign(static_cast<size_t>(T * K), 0);
  p.row_of_TK.assign(static_cast<size_t>(T * K), -1);
  p.routed_E.assign(static_cast<size_t>(E), 0);
  p.kept_E.assign(static_cast<size_t>(E), 0);
  p.dropped_E.assign(static_cast<size_t>(E), 0);
  p.offsets_E1.assign(static_cast<size_t>(E + 1), 0);
  std::vector<int32_t> order;
  const int64_t G = cfg.group_tokens > 0 ? cfg.group_tokens : std::max<int64_t>(T, 1);
  const int64_t groups = (T + G - 1) / G;
  const auto real = [&](int64_t t) { return mask.empty() || mask[t] != 0; };
  std::vector<int64_t> cap(static_cast<size_t>(groups), 0);
  for (int64_t t = 0; t < T; ++t) cap[t / G] += real(t) ? K : 0;  // G_g K first
  for (int64_t& cg : cap) {
    if (!cfg.dropless())
      cg = std::min<int64_t>(cg, static_cast<int64_t>(std::ceil(cfg.capacity_factor * cg / E)));
    p.capacity = std::max(p.capacity, cg);
  }
  const auto key = [&](int32_t a) { return std::isnan(rank_p[a]) ? -INFINITY : rank_p[a]; };
  for (int64_t e = 0; e < E; ++e) {
    for (int64_t g = 0; g < groups; ++g) {
      std::vector<int32_t> cand;
      for (int64_t t = g * G; t < std::min(T, (g + 1) * G); ++t)
        for (int64_t k = 0; k < K; ++k)
          if (real(t) && ids[t * K + k] == e) cand.push_back(static_cast<int32_t>(t * K + k));
      p.routed_E[e] += static_cast<int32_t>(cand.size());
      if (static_cast<int64_t>(cand.size()) > cap[g]) {
        if (cfg.policy == DropPolicy::kProbs)
          std::stable_sort(cand.begin(), cand.end(),
                           [&](int32_t a, int32_t b) { return key(a) > key(b); });
        cand.resize(static_cast<size_t>(cap[g]));
        std::sort(cand.begin(), cand.end());
      }
      order.insert(order.end(), cand.begin(), cand.end());
      p.kept_E[e] += static_cast<int32_t>(cand.size());
    }
    p.dropped_E[e] = p.routed_E[e] - p.kept_E[e];
    p.offsets_E1[e + 1] = p.offsets_E1[e] + p.kept_E[e];
  }
  p.order_A = order;
  for (size_t r = 0; r < p.order_A.size(); ++r) {
    p.kept_TK[p.order_A[r]] = 1;
    p.row_of_TK[p.order_A[r]] = static_cast<int32_t>(r);
  }
  p.total_kept = static_cast<int64_t>(p.order_A.size());
  p.total_routed = std::accumulate(p.routed_E.begin(), p.routed_E.end(), int64_t{0});
  p.total_dropped = p.total_routed - p.total_kept;
  return p;
}

void expect_same_plan(const CapacityPlan& got, const CapacityPlan& want, const std::string& what) {
  EXPECT_EQ(got.T, want.T) << what;
  EXPECT_EQ(got.E, want.E) << what;
  EXPECT_EQ(got.K, want.K) << what;
  EXPECT_EQ(got.capacity, want.capacity) << what;
  EXPECT_EQ(got.dropless, want.dropless) << what;
  EXPECT_EQ(got.total_routed, want.total_routed) << what;
  EXPECT_EQ(got.total_kept, want.total_kept) << what;
  EXPECT_EQ(got.total_dropped, want.total_dropped) << what;
  expect_bitwise(got.kept_TK, want.kept_TK, what + " kept_TK");
  expect_bitwise(got.row_of_TK.to_host(), want.row_of_TK.to_host(), what + " row_of_TK");
  expect_bitwise(got.routed_E, want.routed_E, what + " routed_E");
  expect_bitwise(got.kept_E, want.kept_E, what + " kept_E");
  expect_bitwise(got.dropped_E, want.dropped_E, what + " dropped_E");
  expect_bitwise(got.offsets_E1, want.offsets_E1, what + " offsets_E1");
  expect_bitwise(got.order_A.to_host(), want.order_A.to_host(), what + " order_A");
}

// Routing that overflows expert 0: distinct experts per token, ranking probabilities from a
// few values (ties) with one NaN, and padding tokens.
struct Routing {
  int64_t T, E, K;
  std::vector<int32_t> ids;
  std::vector<float> rank_p;
  std::vector<uint8_t> mask;
};

Routing make_routing(int64_t T, int64_t E, int64_t K, uint64_t seed) {
  Routing r{T, E, K, {}, {}, {}};
  Rng rng(seed);
  for (int64_t t = 0; t < T; ++t) {
    std::vector<int32_t> picked;
    while (static_cast<int64_t>(picked.size()) < K) {
      const int32_t e = rng.uniform() < 0.4 ? 0 : static_cast<int32_t>(rng.below(E));
      if (std::find(picked.begin(), picked.end(), e) == picked.end()) picked.push_back(e);
    }
    r.ids.insert(r.ids.end(), picked.begin(), picked.end());
    for (int64_t k = 0; k < K; ++k) r.rank_p.push_back(0.1f * static_cast<float>(1 + rng.below(3)));
    r.mask.push_back(t % 7 == 3 ? 0 : 1);
  }
  if (T > 4) r.rank_p[4 * K] = kNaN;
  return r;
}

TEST_P(BackendConformance, CapacityPlan) {
  const ExecContext& c = ctx();
  const Routing r = make_routing(37, 6, 2, 1300);
  const auto cfg = [](double factor, DropPolicy policy, int64_t group) {
    CapacityConfig k;
    k.capacity_factor = factor;
    k.policy = policy;
    k.group_tokens = group;
    return k;
  };
  struct Case {
    std::string name;
    CapacityConfig cfg;
    bool masked;
    int64_t T;
  };
  const Case cases[] = {
      {"probs", cfg(1.0, DropPolicy::kProbs, 0), true, r.T},
      {"probs, no mask", cfg(1.25, DropPolicy::kProbs, 0), false, r.T},
      {"probs, groups of 8", cfg(1.0, DropPolicy::kProbs, 8), true, r.T},
      {"position", cfg(0.75, DropPolicy::kPosition, 0), true, r.T},
      {"position, groups of 8", cfg(1.0, DropPolicy::kPosition, 8), false, r.T},
      {"dropless", cfg(0.0, DropPolicy::kProbs, 0), true, r.T},
      {"no tokens", cfg(1.0, DropPolicy::kProbs, 0), true, 0},
  };
  Buffer ids = up(r.ids), rank_p = up(r.rank_p), mask = up(r.mask);
  for (const Case& k : cases) {
    const std::vector<uint8_t> no_mask;
    const CapacityPlan want =
        plan_reference(r.ids, r.rank_p, k.T, r.E, r.K, k.cfg, k.masked ? r.mask : no_mask);
    CapacityPlan got(backend());  // the index arrays in the backend's memory
    got.order_A.assign(3, 99);    // stale contents of a reused plan must not leak through
    const Status st = ops::capacity_plan(c, ids.as<int32_t>(), rank_p.as<float>(), k.T, r.E, r.K,
                                         64, k.cfg, k.masked ? mask.as<uint8_t>() : nullptr, &got);
    ASSERT_TRUE(st.ok()) << k.name << ": " << st.ToString();
    expect_same_plan(got, want, "capacity_plan " + k.name);
  }
  // An expert id out of range is an error, not a plan.
  std::vector<int32_t> bad = r.ids;
  bad[5] = static_cast<int32_t>(r.E);
  Buffer bad_ids = up(bad);
  CapacityPlan plan(backend());
  EXPECT_FALSE(ops::capacity_plan(c, bad_ids.as<int32_t>(), rank_p.as<float>(), r.T, r.E, r.K, 64,
                                  cfg(1.0, DropPolicy::kProbs, 0), nullptr, &plan)
                   .ok());
}

TEST_P(BackendConformance, Routing) {
  const ExecContext& c = ctx();
  const int64_t T = 17, E = 9, K = 3, V = 31;
  const Routing r = make_routing(T, E, K, 1400);
  const std::vector<float> probs = randn(T * E, 1.0, 1401);
  std::vector<float> want;
  for (int64_t i = 0; i < T * K; ++i) want.push_back(probs[(i / K) * E + r.ids[i]]);
  Buffer pb = up(probs), ids = up(r.ids), out = up(nans(T * K));
  ops::gather_topk_probs(c, pb.as<float>(), ids.as<int32_t>(), T, E, K, out.as<float>());
  ops::gather_topk_probs(c, nullptr, nullptr, 0, E, K, nullptr);
  expect_bitwise(down<float>(out), want, "gather_topk_probs");

  // hash_route, with a table and with the fixed hashes: ids, and the one-hot-style outputs.
  const std::vector<int32_t> table = randint(V * K, 0, static_cast<int32_t>(E), 1402);
  const std::vector<int32_t> tokens = randint(T, 0, static_cast<int32_t>(V), 1403);  // repeats
  const uint64_t seed = 77;
  for (bool with_table : {true, false}) {
    std::vector<int32_t> routed;
    for (int32_t tok : tokens) {
      std::vector<int32_t> row(static_cast<size_t>(K));
      if (with_table)
        std::copy(table.begin() + tok * K, table.begin() + (tok + 1) * K, row.begin());
      else
        hash_route_experts(seed, E, K, tok, /*sorted=*/true, row.data());
      routed.insert(routed.end(), row.begin(), row.end());
    }
    std::vector<float> logits(static_cast<size_t>(T * E), -INFINITY), probs(logits.size(), 0.0f);
    const std::vector<float> weights(static_cast<size_t>(T * K), 1.0f / static_cast<float>(K));
    for (int64_t i = 0; i < T * K; ++i) {
      logits[static_cast<size_t>((i / K) * E + routed[i])] = 0.0f;
      probs[static_cast<size_t>((i / K) * E + routed[i])] = 1.0f / static_cast<float>(K);
    }
    Buffer tab = up(table), tb = up(tokens),
           got = up(std::vector<int32_t>(static_cast<size_t>(T * K), -7));
    Buffer lg = up(nans(T * E)), pr = up(nans(T * E)), wt = up(nans(T * K));
    ops::hash_route(c, with_table ? tab.as<int32_t>() : nullptr, V, seed, tb.as<int32_t>(), T, E, K,
                    got.as<int32_t>(), lg.as<float>(), pr.as<float>(), wt.as<float>());
    ops::hash_route(c, nullptr, V, seed, nullptr, 0, E, K, nullptr, nullptr, nullptr, nullptr);
    const std::string what = with_table ? "hash_route (table)" : "hash_route (hashes)";
    expect_bitwise(down<int32_t>(got), routed, what + " ids");
    expect_bitwise(down<float>(lg), logits, what + " logits");
    expect_bitwise(down<float>(pr), probs, what + " probs");
    expect_bitwise(down<float>(wt), weights, what + " weights");
  }
}

// The router's remaining row ops: renormalized top-k weights and their backward, the Switch
// loss, and the scalar-from-memory axpy / dot_add of the hybrid router; the embedding lookup.
TEST_P(BackendConformance, RouterRows) {
  const ExecContext& c = ctx();
  const int64_t T = 13, E = 7, K = 3, D = 10, V = 23;
  const Routing r = make_routing(T, E, K, 1600);
  std::vector<float> w = randn(T * K, 1.0, 1601);
  for (float& x : w) x = std::fabs(x);
  w[0] = w[1] = w[2] = 0.0f;  // a row summing to 0 stays as it is
  std::vector<float> want = w;
  for (int64_t t = 0; t < T; ++t) {
    float s = 0.0f;
    for (int64_t k = 0; k < K; ++k) s += want[t * K + k];
    if (s > 0.0f)
      for (int64_t k = 0; k < K; ++k) want[t * K + k] /= s;
  }
  Buffer wb = up(w);
  ops::normalize_rows(c, wb.as<float>(), T, K);
  expect_bitwise(down<float>(wb), want, "normalize_rows");

  const std::vector<float> dw = randn(T * K, 1.0, 1602), dp0 = randn(T * E, 1.0, 1603);
  for (bool normalized : {false, true}) {
    std::vector<float> dp = dp0;
    for (int64_t t = 0; t < T; ++t) {
      const float* v = w.data() + t * K;
      float S = 0.0f, dot = 0.0f;
      for (int64_t k = 0; k < K; ++k) S += v[k];
      if (normalized && S <= 0.0f) continue;
      for (int64_t k = 0; k < K; ++k) dot += dw[t * K + k] * (v[k] / S);
      for (int64_t k = 0; k < K; ++k)
        dp[t * E + r.ids[t * K + k]] += normalized ? (dw[t * K + k] - dot) / S : dw[t * K + k];
    }
    Buffer dwb = up(dw), vb = up(w), ib = up(r.ids), dpb = up(dp0);
    ops::topk_weights_backward(c, dwb.as<float>(), vb.as<float>(), ib.as<int32_t>(), T, E, K,
                               normalized, dpb.as<float>());
    expect_bitwise(down<float>(dpb), dp,
                   normalized ? "topk_weights_backward (normalized)" : "topk_weights_backward");
  }

  // The Switch loss against runtime/kernels/balance.h's definition (host), written and added.
  std::vector<float> probs = randn(T * E, 1.0, 1604);
  for (float& x : probs) x = std::fabs(x);
  for (bool accumulate : {false, true}) {
    std::vector<float> dp = dp0;
    const double loss =
        switch_aux_loss(probs.data(), r.ids.data(), T, E, K, 0.01f, dp.data(), accumulate);
    Buffer pb = up(probs), ib = up(r.ids), dpb = up(dp0);
    const double got = ops::switch_aux_loss(c, pb.as<float>(), ib.as<int32_t>(), T, E, K, 0.01f,
                                            dpb.as<float>(), accumulate);
    EXPECT_NEAR(got, loss, 1e-12 * std::fabs(loss)) << "switch_aux_loss";
    expect_bitwise(down<float>(dpb), dp, "switch_aux_loss gradient");
  }

  // axpy and dot_add read their scalar from the backend's memory.
  const std::vector<float> x = randn(T * E, 1.0, 1605), y0 = randn(T * E, 1.0, 1606);
  const float alpha = 0.37f;
  Buffer ab = up(std::vector<float>{alpha}), xb = up(x), yb = up(y0), zb = up(nans(T * E));
  ops::axpy(c, ab.as<float>(), xb.as<float>(), yb.as<float>(), T * E, /*accumulate=*/true);
  ops::axpy(c, ab.as<float>(), xb.as<float>(), zb.as<float>(), T * E, /*accumulate=*/false);
  std::vector<float> ya = y0, za(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    ya[i] += alpha * x[i];
    za[i] = alpha * x[i];
  }
  expect_bitwise(down<float>(yb), ya, "axpy (accumulate)");
  expect_bitwise(down<float>(zb), za, "axpy");
  double s = 0.0;
  for (size_t i = 0; i < x.size(); ++i) s += static_cast<double>(x[i]) * y0[i];
  Buffer out = up(std::vector<float>{1.5f}), y0b = up(y0);
  ops::dot_add(c, xb.as<float>(), y0b.as<float>(), T * E, out.as<float>());
  expect_bitwise(down<float>(out), std::vector<float>{1.5f + static_cast<float>(s)}, "dot_add");

  // embedding_rows: a copy of each token's row (ids repeat).
  const std::vector<float> table = randn(V * D, 1.0, 1607);
  const std::vector<int32_t> ids = randint(T, 0, static_cast<int32_t>(V), 1608);
  std::vector<float> rows;
  for (int32_t id : ids)
    rows.insert(rows.end(), table.begin() + id * D, table.begin() + (id + 1) * D);
  Buffer tb = up(table), idb = up(ids), eb = up(nans(T * D));
  ops::embedding_rows(c, tb.as<float>(), V, idb.as<int32_t>(), T, D, eb.as<float>());
  expect_bitwise(down<float>(eb), rows, "embedding_rows");
}

TEST_P(BackendConformance, PermuteCombine) {
  const ExecContext& c = ctx();
  const int64_t D = 19;
  CapacityConfig cfg;
  cfg.capacity_factor = 1.0;
  for (int64_t T : {37, 0}) {
    // A plan with dropped slots and padding tokens (row_of = -1), from the reference above.
    const Routing rt = make_routing(T, 6, 2, 1500);
    const int64_t K = rt.K;
    const CapacityPlan plan = plan_reference(rt.ids, rt.rank_p, T, rt.E, K, cfg, rt.mask);
    const int64_t R = plan.rows();
    const std::string at = " T=" + std::to_string(T);
    const std::vector<float> x = randn(T * D, 1.0, 1501), rows = randn(R * D, 1.0, 1502);
    const std::vector<float> w = randn(T * K, 0.5, 1503), dy = randn(T * D, 1.0, 1504);
    Buffer xb = up(x), rb = up(rows), wb = up(w), dyb = up(dy);
    Buffer order = up(plan.order_A.to_host()), row_of = up(plan.row_of_TK.to_host());

    // gather_rows and scatter_rows_weighted: a copy and one fp32 product per element.
    std::vector<float> gathered, scattered;
    for (int64_t r = 0; r < R; ++r) {
      const int32_t a = plan.order_A[r];
      for (int64_t d = 0; d < D; ++d) {
        gathered.push_back(x[(a / K) * D + d]);
        scattered.push_back(w[a] * dy[(a / K) * D + d]);
      }
    }
    Buffer g = up(nans(R * D)), s = up(nans(R * D));
    ops::gather_rows(c, xb.as<float>(), order.as<int32_t>(), R, K, D, g.as<float>());
    ops::scatter_rows_weighted(c, dyb.as<float>(), order.as<int32_t>(), wb.as<float>(), R, K, D,
                               s.as<float>());
    expect_bitwise(down<float>(g), gathered, "gather_rows" + at);
    expect_bitwise(down<float>(s), scattered, "scatter_rows_weighted" + at);

    // combine_rows (weighted and not): sums of at most K rows; tokens with every slot
    // dropped get exact zeros. combine_weights_backward: a dot of length D per kept slot.
    for (bool weighted : {true, false}) {
      Ref y_ref;
      for (int64_t t = 0; t < T; ++t)
        for (int64_t d = 0; d < D; ++d) {
          double acc = 0.0, mag = 0.0;
          for (int64_t k = 0; k < K; ++k) {
            const int32_t r = plan.row_of_TK[t * K + k];
            if (r < 0) continue;
            const double term = (weighted ? w[t * K + k] : 1.0) * rows[r * D + d];
            acc += term;
            mag += std::fabs(term);
          }
          y_ref.add(acc, sum_tol(K, mag));
        }
      Buffer y = up(nans(T * D));
      ops::combine_rows(c, rb.as<float>(), row_of.as<int32_t>(),
                        weighted ? wb.as<float>() : nullptr, T, K, D, y.as<float>());
      expect_close(down<float>(y), y_ref,
                   std::string("combine_rows") + (weighted ? "" : " unweighted") + at);
    }
    Ref dw_ref;
    for (int64_t i = 0; i < T * K; ++i) {
      const int32_t r = plan.row_of_TK[i];
      double acc = 0.0, mag = 0.0;
      for (int64_t d = 0; r >= 0 && d < D; ++d) {
        acc += static_cast<double>(dy[(i / K) * D + d]) * rows[r * D + d];
        mag += std::fabs(static_cast<double>(dy[(i / K) * D + d]) * rows[r * D + d]);
      }
      dw_ref.add(acc, sum_tol(D, mag));
    }
    Buffer dw = up(nans(T * K));
    ops::combine_weights_backward(c, dyb.as<float>(), rb.as<float>(), row_of.as<int32_t>(), T, K, D,
                                  dw.as<float>());
    expect_close(down<float>(dw), dw_ref, "combine_weights_backward" + at);
  }
}

TEST_P(BackendConformance, GatedShared) {
  const ExecContext& c = ctx();
  const int64_t T = 21, D = 19;
  const std::vector<float> logits = randn(T, 2.0, 1600), s = randn(T * D, 1.0, 1601);
  const std::vector<float> y0 = randn(T * D, 1.0, 1602), dy = randn(T * D, 1.0, 1603);
  std::vector<uint8_t> mask(static_cast<size_t>(T), 1);
  mask[0] = mask[4] = mask[T - 1] = 0;
  Buffer sb = up(s), dyb = up(dy), mb = up(mask);
  for (bool masked : {true, false}) {
    const auto real = [&](int64_t t) { return !masked || mask[t] != 0; };
    const std::string at = masked ? " (masked)" : "";
    // y += sigmoid(g) s for real tokens; g becomes sigmoid(g) for every token.
    Ref g_ref, y_ref;
    std::vector<float> gate(static_cast<size_t>(T));
    for (int64_t t = 0; t < T; ++t) {
      const double gt = sigmoid(logits[t]);
      gate[t] = static_cast<float>(gt);
      g_ref.add(gt, elem_tol(gt));
      for (int64_t d = 0; d < D; ++d) {
        const double add = real(t) ? gt * s[t * D + d] : 0.0;
        y_ref.add(y0[t * D + d] + add,
                  real(t) ? elem_tol(std::fabs(y0[t * D + d]) + std::fabs(add)) : 0.0);
      }
    }
    Buffer g = up(logits), y = up(y0);
    const uint8_t* mp = masked ? mb.as<uint8_t>() : nullptr;
    ops::gated_add_rows(c, g.as<float>(), sb.as<float>(), mp, T, D, y.as<float>());
    expect_close(down<float>(g), g_ref, "gated_add_rows gate" + at);
    expect_close(down<float>(y), y_ref, "gated_add_rows y" + at);

    // ds = g dy, dlogit = (dy . s) g (1 - g); both 0 for masked tokens.
    Ref ds_ref, dl_ref;
    for (int64_t t = 0; t < T; ++t) {
      const double gt = gate[t];
      double dot = 0.0, mag = 0.0;
      for (int64_t d = 0; d < D; ++d) {
        const double p = static_cast<double>(dy[t * D + d]) * s[t * D + d];
        dot += p;
        mag += std::fabs(p);
        ds_ref.add(real(t) ? gt * dy[t * D + d] : 0.0,
                   real(t) ? elem_tol(std::fabs(gt * dy[t * D + d])) : 0.0);
      }
      dl_ref.add(real(t) ? dot * gt * (1.0 - gt) : 0.0,
                 real(t) ? elem_tol(mag * gt * (1.0 - gt)) : 0.0);
    }
    Buffer gb = up(gate), ds = up(nans(T * D)), dl = up(nans(T));
    ops::gated_add_rows_backward(c, dyb.as<float>(), sb.as<float>(), gb.as<float>(), mp, T, D,
                                 ds.as<float>(), dl.as<float>());
    expect_close(down<float>(ds), ds_ref, "gated_add_rows_backward ds" + at);
    expect_close(down<float>(dl), dl_ref, "gated_add_rows_backward dlogit" + at);
  }
}

// ---- optimizer, reductions -------------------------------------------------------------------

TEST_P(BackendConformance, AdamW) {
  const ExecContext& c = ctx();
  const int64_t n = 1001;
  const std::vector<float> w0 = randn(n, 1.0, 1700), g = randn(n, 2.0, 1701);
  const std::vector<float> m0 = randn(n, 0.1, 1702);
  std::vector<float> v0 = randn(n, 0.1, 1703);
  for (float& x : v0) x = x * x;
  v0[0] = 0.0f;
  for (double wd : {0.1, 0.0}) {
    AdamWStep st;
    st.lr = 1e-2;
    st.eps = 1e-8;
    st.weight_decay = wd;
    st.clip = wd > 0 ? 0.5 : 1.0;
    st.bc1 = 1.0 - std::pow(0.9, 3);
    st.bc2 = 1.0 - std::pow(0.999, 3);
    Ref w_ref, m_ref, v_ref;
    for (int64_t i = 0; i < n; ++i) {
      const double gi = static_cast<float>(g[i] * st.clip), b1 = st.beta1, b2 = st.beta2;
      const double m = b1 * m0[i] + (1.0 - b1) * gi, v = b2 * v0[i] + (1.0 - b2) * gi * gi;
      m_ref.add(m, elem_tol(std::fabs(b1 * m0[i]) + std::fabs((1.0 - b1) * gi)));
      v_ref.add(v, elem_tol(b2 * v0[i] + (1.0 - b2) * gi * gi));
      const double adam = m / st.bc1 / (std::sqrt(v / st.bc2) + st.eps);
      const double upd = adam + wd * w0[i], upd_mag = std::fabs(adam) + wd * std::fabs(w0[i]);
      // w: one ulp (a double computed in another order may round to the other neighbour) plus
      // the fp32 rounding that m and v carry into the update.
      w_ref.add(w0[i] - st.lr * upd,
                2 * kU * std::fabs(w0[i] - st.lr * upd) + elem_tol(st.lr * upd_mag));
    }
    Buffer w = up(w0), gb = up(g), m = up(m0), v = up(v0);
    ops::adamw_update(c, w.as<float>(), gb.as<float>(), m.as<float>(), v.as<float>(), n, st);
    ops::adamw_update(c, nullptr, nullptr, nullptr, nullptr, 0, st);
    const std::string at = wd > 0 ? " (decay, clip)" : "";
    expect_close(down<float>(m), m_ref, "adamw_update m" + at);
    expect_close(down<float>(v), v_ref, "adamw_update v" + at);
    expect_close(down<float>(w), w_ref, "adamw_update w" + at);
  }
}

TEST_P(BackendConformance, Reductions) {
  const ExecContext& c = ctx();
  const int64_t n = 1001;
  const std::vector<float> x = randn(n, 1.0, 1800), y = randn(n, 1.0, 1801);
  double ss = 0.0, dot = 0.0, dot_mag = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    ss += static_cast<double>(x[i]) * x[i];
    dot += static_cast<double>(x[i]) * y[i];
    dot_mag += std::fabs(static_cast<double>(x[i]) * y[i]);
  }
  Buffer xb = up(x), yb = up(y);
  EXPECT_NEAR(ops::sum_squares(c, xb.as<float>(), n), ss, kDoubleRel * ss) << "sum_squares";
  EXPECT_NEAR(ops::dot(c, xb.as<float>(), yb.as<float>(), n), dot, sum_tol(n, dot_mag)) << "dot";
  EXPECT_EQ(ops::sum_squares(c, nullptr, 0), 0.0);
  EXPECT_EQ(ops::dot(c, nullptr, nullptr, 0), 0.0f);

  EXPECT_TRUE(ops::all_finite(c, xb.as<float>(), n));
  EXPECT_TRUE(ops::all_finite(c, nullptr, 0));
  for (float bad : {kNaN, kInf, -kInf}) {
    for (int64_t at : {int64_t{0}, n / 2, n - 1}) {
      std::vector<float> z = x;
      z[at] = bad;
      Buffer zb = up(z);
      EXPECT_FALSE(ops::all_finite(c, zb.as<float>(), n)) << bad << " at " << at;
      EXPECT_TRUE(ops::all_finite(c, zb.as<float>(), at)) << "the first " << at << " values";
    }
  }
}

}  // namespace
}  // namespace conformance
}  // namespace sy
