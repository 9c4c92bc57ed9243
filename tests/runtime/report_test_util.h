// Synthetic, self-consistent rank reports for the report tests (and a sample report.html):
// P ranks, E experts (E / P per rank), top-K, L layers, S steps, T tokens per rank and step.
// Every rank routes its tokens with a skewed, seeded choice of experts, drops assignments over
// a per-(rank, expert) capacity, and the exchange is worked out exactly, so the ground truth
// (loads, traffic, times) is known independently of merge_rank_reports.
#pragma once

#include <array>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "proto/report.pb.h"
#include "runtime/core/version.h"

namespace sy::testing {

struct SyntheticTruth {
  std::vector<std::vector<int64_t>> load_LE, routed_LE, dropped_LE;  // [L][E]
  std::vector<std::vector<int64_t>> bytes_LPP, rows_LPP;             // [L][P * P], i sends to j
  std::vector<std::vector<std::array<double, 7>>> times_LP;          // [L][P] per-rank totals
};

inline constexpr int64_t kSyntheticBytesPerRow = 64 * 2;  // d_model 64, bf16

inline std::vector<switchyard::RankReport> make_synthetic_reports(
    int P, int E, int K, int L, int S, int T, uint64_t seed, SyntheticTruth* truth = nullptr,
    const std::string& router = "linear") {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> uni(0.0, 1.0);
  const int e_per = E / P;
  std::vector<switchyard::RankReport> reps(static_cast<size_t>(P));
  for (int r = 0; r < P; ++r) {
    auto& rep = reps[static_cast<size_t>(r)];
    rep.set_rank(r);
    rep.set_world_size(P);
    rep.set_host("node" + std::to_string(r / 2));
    rep.set_router(router);
    rep.set_num_experts(E);
    rep.set_top_k(K);
    rep.set_d_model(64);
    rep.set_local_expert_begin(r * e_per);
    rep.set_local_expert_count(e_per);
    rep.set_num_layers(L);
    rep.set_config_text("moe { num_experts: " + std::to_string(E) + " }");
    rep.set_wall_s(1.5 + r);
    rep.set_switchyard_version(sy::kVersion);
  }
  SyntheticTruth t;
  t.load_LE.assign(L, std::vector<int64_t>(E, 0));
  t.routed_LE = t.dropped_LE = t.load_LE;
  t.bytes_LPP.assign(L, std::vector<int64_t>(static_cast<size_t>(P * P), 0));
  t.rows_LPP = t.bytes_LPP;
  t.times_LP.assign(L, std::vector<std::array<double, 7>>(P, std::array<double, 7>{}));
  const int64_t cap = (static_cast<int64_t>(T) * K + E - 1) / E + T / 8;
  for (int l = 0; l < L; ++l) {
    // A skew that grows with the layer: expert e has weight 1 / (1 + skew * e), shuffled.
    std::vector<double> w(E);
    for (int e = 0; e < E; ++e) w[e] = 1.0 / (1.0 + 0.15 * (l + 1) * ((e * 7) % E));
    for (int s = 0; s < S; ++s) {
      std::vector<std::vector<int64_t>> routed(P, std::vector<int64_t>(E, 0)), kept = routed,
                                                                               dropped = routed;
      for (int r = 0; r < P; ++r) {
        std::discrete_distribution<int> pick(w.begin(), w.end());
        for (int tok = 0; tok < T; ++tok) {
          std::vector<bool> used(E, false);
          for (int k = 0; k < K; ++k) {
            int e = pick(rng);
            while (used[e]) e = (e + 1) % E;
            used[e] = true;
            ++routed[r][e];
          }
        }
        for (int e = 0; e < E; ++e) {
          dropped[r][e] = std::max<int64_t>(0, routed[r][e] - cap);
          kept[r][e] = routed[r][e] - dropped[r][e];
        }
      }
      for (int r = 0; r < P; ++r) {
        auto* x = reps[static_cast<size_t>(r)].add_entries();
        x->set_layer(l);
        x->set_step(s);
        x->set_tokens(T);
        x->set_assignments_routed(static_cast<int64_t>(T) * K);
        int64_t nd = 0;
        for (int e = 0; e < E; ++e) {
          x->add_routed_per_expert(routed[r][e]);
          x->add_dropped_per_expert(dropped[r][e]);
          nd += dropped[r][e];
          t.routed_LE[l][e] += routed[r][e];
          t.dropped_LE[l][e] += dropped[r][e];
        }
        x->set_assignments_dropped(nd);
        for (int j = 0; j < e_per; ++j) {
          int64_t got = 0;
          for (int q = 0; q < P; ++q) got += kept[q][r * e_per + j];
          x->add_received_per_local_expert(got);
          t.load_LE[l][r * e_per + j] += got;
        }
        int64_t remote_bytes = 0;
        for (int q = 0; q < P; ++q) {
          int64_t out = 0, in = 0;
          for (int j = 0; j < e_per; ++j) {
            out += kept[r][q * e_per + j];
            in += kept[q][r * e_per + j];
          }
          x->add_rows_sent_to_peer(out);
          x->add_rows_recv_from_peer(in);
          x->add_bytes_sent_to_peer(out * kSyntheticBytesPerRow);
          x->add_bytes_recv_from_peer(in * kSyntheticBytesPerRow);
          t.rows_LPP[l][static_cast<size_t>(r * P + q)] += out;
          t.bytes_LPP[l][static_cast<size_t>(r * P + q)] += out * kSyntheticBytesPerRow;
          if (q != r) remote_bytes += (out + in) * kSyntheticBytesPerRow;
        }
        // Phase times: rank 0 is a slow expert rank, the others wait for it in the exchange.
        std::array<double, 7> ph = {2e-4, 1e-4, 5e-5, 4e-4, 1.2e-3, 4e-4, 2e-4};
        for (double& v : ph) v *= 0.8 + 0.4 * uni(rng);
        if (r == 0) ph[4] *= 1.8;
        if (r != 0) ph[3] *= 2.2;
        auto* tm = x->mutable_times();
        tm->set_route_s(ph[0]);
        tm->set_plan_s(ph[1]);
        tm->set_count_exchange_s(ph[2]);
        tm->set_dispatch_s(ph[3]);
        tm->set_experts_s(ph[4]);
        tm->set_combine_s(ph[5]);
        tm->set_unpermute_s(ph[6]);
        for (int k = 0; k < 7; ++k) t.times_LP[l][r][k] += ph[k];
        x->set_exchange_bandwidth_gbps(2.0 * remote_bytes / (ph[3] + ph[5]) / 1e9);
        auto* m = x->mutable_metrics();
        const double H = (0.6 + 0.3 * uni(rng)) * std::log(static_cast<double>(E));
        m->set_tokens(T);
        m->set_entropy_sum(T * H);
        m->set_exp_entropy_sum(T * std::exp(H));
        m->set_topk_mass_sum(T * 0.55);
      }
    }
  }
  if (truth) *truth = std::move(t);
  return reps;
}

// Reports with a given dispatch traffic: P ranks on hosts[r], E = P experts (expert r on rank
// r), top-1, nothing dropped, so rows_LPP[l][i * P + j] rows from rank i to rank j are routed
// by rank i to expert j; each row is one token and bytes_per_row bytes. Every layer runs
// `steps` steps of the same traffic. A rank whose host is "" has none (an older report).
inline std::vector<switchyard::RankReport> make_traffic_reports(
    const std::vector<std::vector<int64_t>>& rows_LPP, const std::vector<std::string>& hosts,
    int steps, int64_t bytes_per_row) {
  const int P = static_cast<int>(hosts.size()), L = static_cast<int>(rows_LPP.size());
  std::vector<switchyard::RankReport> reps(static_cast<size_t>(P));
  for (int r = 0; r < P; ++r) {
    auto& rep = reps[static_cast<size_t>(r)];
    rep.set_rank(r);
    rep.set_world_size(P);
    rep.set_host(hosts[static_cast<size_t>(r)]);
    rep.set_router("linear");
    rep.set_num_experts(P);
    rep.set_top_k(1);
    rep.set_local_expert_begin(r);
    rep.set_local_expert_count(1);
    rep.set_num_layers(L);
    for (int l = 0; l < L; ++l)
      for (int s = 0; s < steps; ++s) {
        const auto rows = [&](int i, int j) {
          return rows_LPP[static_cast<size_t>(l)][static_cast<size_t>(i * P + j)];
        };
        auto* x = rep.add_entries();
        x->set_layer(l);
        x->set_step(s);
        int64_t tokens = 0, received = 0;
        for (int q = 0; q < P; ++q) {
          tokens += rows(r, q);
          received += rows(q, r);
          x->add_routed_per_expert(rows(r, q));
          x->add_dropped_per_expert(0);
          x->add_rows_sent_to_peer(rows(r, q));
          x->add_rows_recv_from_peer(rows(q, r));
          x->add_bytes_sent_to_peer(rows(r, q) * bytes_per_row);
          x->add_bytes_recv_from_peer(rows(q, r) * bytes_per_row);
        }
        x->set_tokens(tokens);
        x->set_assignments_routed(tokens);
        x->add_received_per_local_expert(received);
        x->mutable_metrics()->set_tokens(tokens);
      }
  }
  return reps;
}

}  // namespace sy::testing
