#include "runtime/project/eplb.h"

#include <algorithm>
#include <string>

#include "runtime/core/check.h"

namespace sy {

namespace {

// One thing to pack: an expert (step 1) or one copy of an expert (step 3).
struct Item {
  int32_t expert;
  double load;
};

// Heaviest first; equal loads by ascending expert id (copies of one expert stay together).
void sort_items(std::vector<Item>* items) {
  std::stable_sort(items->begin(), items->end(), [](const Item& a, const Item& b) {
    return a.load != b.load ? a.load > b.load : a.expert < b.expert;
  });
}

bool holds(const std::vector<int32_t>& bin, int32_t e) {
  return std::find(bin.begin(), bin.end(), e) != bin.end();
}

// Longest processing time first with a count constraint: each item, heaviest first, goes to
// the least loaded bin (lowest id on ties) with fewer than `cap` items and, when `distinct`,
// without a copy of the same expert. Items must fill the bins exactly (items = bins * cap).
// When every bin with room already holds the expert (possible only with distinct), the item
// goes to the least loaded bin q without it, and one expert of q that the bin with room lacks
// moves there: q is full and the bin with room is not, so such an expert exists.
std::vector<std::vector<int32_t>> pack(const std::vector<Item>& sorted, int bins, int64_t cap,
                                       bool distinct) {
  SY_CHECK_EQ(static_cast<int64_t>(sorted.size()), bins * cap);
  std::vector<std::vector<int32_t>> out(static_cast<size_t>(bins));
  std::vector<double> load(static_cast<size_t>(bins), 0.0);
  std::vector<double> item_load_of;  // by expert: the load of one of its items
  for (const Item& it : sorted) {
    if (static_cast<size_t>(it.expert) >= item_load_of.size()) item_load_of.resize(it.expert + 1);
    item_load_of[it.expert] = it.load;
  }
  auto lightest = [&](auto eligible) {
    int best = -1;
    for (int b = 0; b < bins; ++b) {
      if (eligible(b) && (best < 0 || load[b] < load[best])) best = b;
    }
    return best;
  };
  for (const Item& it : sorted) {
    const auto room = [&](int b) { return static_cast<int64_t>(out[b].size()) < cap; };
    int b = lightest([&](int c) { return room(c) && !(distinct && holds(out[c], it.expert)); });
    if (b < 0) {
      const int r = lightest(room);
      const int q = lightest([&](int c) { return !holds(out[c], it.expert); });
      SY_CHECK(r >= 0 && q >= 0) << "eplb: no bin for expert " << it.expert;
      int32_t y = -1;  // the lightest expert of q that r lacks
      for (int32_t c : out[q]) {
        if (!holds(out[r], c) && (y < 0 || item_load_of[c] < item_load_of[y] ||
                                  (item_load_of[c] == item_load_of[y] && c < y))) {
          y = c;
        }
      }
      SY_CHECK_GE(y, 0);
      out[q].erase(std::find(out[q].begin(), out[q].end(), y));
      load[q] -= item_load_of[y];
      out[r].push_back(y);
      load[r] += item_load_of[y];
      b = q;
    }
    out[b].push_back(it.expert);
    load[b] += it.load;
  }
  return out;
}

}  // namespace

StatusOr<ExpertPlacement> eplb_placement(const std::vector<int64_t>& load_E, int P,
                                         int ranks_per_node, int64_t redundant) {
  const int64_t E = static_cast<int64_t>(load_E.size()), R = redundant;
  const std::string sizes = "eplb: E = " + std::to_string(E) + ", P = " + std::to_string(P) +
                            ", ranks_per_node = " + std::to_string(ranks_per_node) +
                            ", redundant = " + std::to_string(R);
  if (E < 1 || P < 1 || ranks_per_node < 1 || R < 0) {
    return InvalidArgument(sizes + ": need E, P, ranks_per_node >= 1 and redundant >= 0");
  }
  for (int64_t e = 0; e < E; ++e) {
    if (load_E[e] < 0) {
      return InvalidArgument("eplb: load of expert " + std::to_string(e) + " is negative (" +
                             std::to_string(load_E[e]) + ")");
    }
  }
  if ((E + R) % P != 0) {
    return InvalidArgument(sizes +
                           ": E + redundant must be a multiple of P (every rank holds "
                           "the same number of experts)");
  }
  if (P > ranks_per_node && P % ranks_per_node != 0) {
    return InvalidArgument(sizes + ": P must be a multiple of ranks_per_node (whole nodes)");
  }
  // Step 1 only when the nodes divide the experts; else one pool of all P ranks (eplb.py's
  // global policy).
  int nodes = P > ranks_per_node ? P / ranks_per_node : 1;
  if (E % nodes != 0) nodes = 1;
  const int ranks_in_node = P / nodes;
  const int64_t experts_in_node = E / nodes, per_rank = (E + R) / P;
  // At most one copy per rank of a node.
  if (R > E * (ranks_in_node - 1)) {
    return InvalidArgument(sizes + ": more replicas than ranks to hold them (at most " +
                           std::to_string(E * (ranks_in_node - 1)) + ")");
  }

  // 1. Experts onto nodes.
  std::vector<std::vector<int32_t>> experts_of_node(1);
  {
    std::vector<Item> items;
    for (int64_t e = 0; e < E; ++e) {
      items.push_back({static_cast<int32_t>(e), static_cast<double>(load_E[e])});
    }
    if (nodes > 1) {
      sort_items(&items);
      experts_of_node = pack(items, nodes, experts_in_node, /*distinct=*/false);
    } else {
      for (const Item& it : items) experts_of_node[0].push_back(it.expert);
    }
  }

  ExpertPlacement out;
  out.num_experts = E;
  out.ranks = P;
  out.experts_of_rank.resize(static_cast<size_t>(P));
  std::vector<int64_t> copies(static_cast<size_t>(E), 1);
  for (int n = 0; n < nodes; ++n) {
    std::vector<int32_t> mine = experts_of_node[n];
    std::sort(mine.begin(), mine.end());
    // 2. The node's replicas, one at a time, to the highest load per copy (compared exactly:
    // a/b > c/d as a*d > c*b; loads and copies are small enough for 128 bits).
    for (int64_t k = 0; k < R / nodes; ++k) {
      int32_t best = -1;
      for (int32_t e : mine) {
        if (copies[e] >= ranks_in_node) continue;
        if (best < 0 || static_cast<__int128>(load_E[e]) * copies[best] >
                            static_cast<__int128>(load_E[best]) * copies[e]) {
          best = e;
        }
      }
      SY_CHECK_GE(best, 0);  // R is bounded above
      ++copies[best];
    }
    // 3. Copies onto the node's ranks.
    std::vector<Item> items;
    for (int32_t e : mine) {
      for (int64_t c = 0; c < copies[e]; ++c) {
        items.push_back({e, static_cast<double>(load_E[e]) / static_cast<double>(copies[e])});
      }
    }
    sort_items(&items);
    std::vector<std::vector<int32_t>> of_rank =
        pack(items, ranks_in_node, per_rank, /*distinct=*/true);
    for (int i = 0; i < ranks_in_node; ++i) {
      std::sort(of_rank[i].begin(), of_rank[i].end());  // local order: ascending global id
      out.experts_of_rank[n * ranks_in_node + i] = std::move(of_rank[i]);
    }
  }
  const Status s = out.validate(/*allow_replicas=*/R > 0);
  SY_CHECK(s.ok()) << "eplb built an invalid placement: " << s.message();
  return out;
}

}  // namespace sy
