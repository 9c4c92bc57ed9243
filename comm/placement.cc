#include "comm/placement.h"

#include <cstdio>
#include <fstream>
#include <limits>
#include <sstream>

#include <nlohmann/json.hpp>

#include "runtime/core/check.h"
#include "runtime/core/file_input.h"
#include "runtime/core/file_output.h"
#include "runtime/core/json_input.h"

namespace sy {

namespace {

using json = nlohmann::json;

constexpr const char* kFormat = "switchyard.placement";
constexpr int64_t kVersion = 1;
// Bounds on what a file may ask for, so a hostile file cannot make the reader allocate without
// limit: far above any model here (E <= 1,024 in every paper config) and the projection's P.
constexpr int64_t kMaxExperts = 1 << 20;
constexpr int64_t kMaxRanks = 1 << 20;
// A file is a few ids per expert; this is generous and still cheap to read whole.
constexpr int64_t kMaxFileBytes = int64_t{256} << 20;

std::string ids(int64_t e, int r) {
  return "expert " + std::to_string(e) + " on rank " + std::to_string(r);
}

}  // namespace

ExpertPlacement ExpertPlacement::contiguous(int64_t E, int P) {
  SY_CHECK(E >= 1 && P >= 1 && E % P == 0)
      << "contiguous placement needs P | E, got E = " << E << ", P = " << P;
  ExpertPlacement p;
  p.num_experts = E;
  p.ranks = P;
  const int64_t e = E / P;
  p.experts_of_rank.resize(static_cast<size_t>(P));
  for (int r = 0; r < P; ++r) {
    for (int64_t j = 0; j < e; ++j) p.experts_of_rank[r].push_back(static_cast<int32_t>(r * e + j));
  }
  return p;
}

std::vector<std::vector<int32_t>> ExpertPlacement::ranks_of_expert() const {
  std::vector<std::vector<int32_t>> out(static_cast<size_t>(num_experts));
  for (int r = 0; r < static_cast<int>(experts_of_rank.size()); ++r) {
    for (int32_t e : experts_of_rank[r]) {
      SY_CHECK(e >= 0 && e < num_experts) << ids(e, r) << " outside [0, " << num_experts << ")";
      out[e].push_back(r);  // r ascends, so each list does
    }
  }
  return out;
}

int64_t ExpertPlacement::replicas() const {
  int64_t placed = 0;
  for (const auto& l : experts_of_rank) placed += static_cast<int64_t>(l.size());
  return placed - num_experts;
}

Status ExpertPlacement::validate(bool allow_replicas) const {
  if (num_experts < 1 || num_experts > kMaxExperts) {
    return InvalidArgument("placement: num_experts " + std::to_string(num_experts) +
                           " outside [1, " + std::to_string(kMaxExperts) + "]");
  }
  if (ranks < 1 || ranks > kMaxRanks) {
    return InvalidArgument("placement: ranks " + std::to_string(ranks) + " outside [1, " +
                           std::to_string(kMaxRanks) + "]");
  }
  if (static_cast<int64_t>(experts_of_rank.size()) != ranks) {
    return InvalidArgument("placement: experts_of_rank has " +
                           std::to_string(experts_of_rank.size()) + " lists for " +
                           std::to_string(ranks) + " ranks");
  }
  std::vector<int64_t> copies(static_cast<size_t>(num_experts), 0);
  std::vector<int> last_rank(static_cast<size_t>(num_experts), -1);
  for (int r = 0; r < ranks; ++r) {
    for (int32_t e : experts_of_rank[r]) {
      if (e < 0 || e >= num_experts) {
        return InvalidArgument("placement: " + ids(e, r) + " outside [0, " +
                               std::to_string(num_experts) + ")");
      }
      if (last_rank[e] == r) {
        return InvalidArgument("placement: " + ids(e, r) + " twice");
      }
      last_rank[e] = r;
      ++copies[e];
    }
  }
  for (int64_t e = 0; e < num_experts; ++e) {
    if (copies[e] == 0) {
      return InvalidArgument("placement: expert " + std::to_string(e) + " is on no rank");
    }
  }
  if (allow_replicas) return Status::Ok();
  for (int64_t e = 0; e < num_experts; ++e) {
    if (copies[e] != 1) {
      return InvalidArgument("placement: expert " + std::to_string(e) + " is on " +
                             std::to_string(copies[e]) +
                             " ranks (the runtime runs one copy of each expert)");
    }
  }
  if (num_experts % ranks != 0) {
    return InvalidArgument("placement: " + std::to_string(num_experts) + " experts on " +
                           std::to_string(ranks) +
                           " ranks: the runtime needs the same number on every rank");
  }
  const int64_t e = num_experts / ranks;
  for (int r = 0; r < ranks; ++r) {
    if (static_cast<int64_t>(experts_of_rank[r].size()) != e) {
      return InvalidArgument("placement: rank " + std::to_string(r) + " holds " +
                             std::to_string(experts_of_rank[r].size()) +
                             " experts, not E/P = " + std::to_string(e));
    }
  }
  return Status::Ok();
}

std::string placement_to_json(const ExpertPlacement& p) {
  // One rank per line: diffable, and readable for the few hundred ranks a projection places.
  std::ostringstream o;
  o << "{\"format\": \"" << kFormat << "\", \"version\": " << kVersion
    << ", \"num_experts\": " << p.num_experts << ", \"ranks\": " << p.ranks
    << ",\n \"experts_of_rank\": [";
  for (size_t r = 0; r < p.experts_of_rank.size(); ++r) {
    o << (r ? ",\n  [" : "\n  [");
    for (size_t j = 0; j < p.experts_of_rank[r].size(); ++j) {
      o << (j ? ", " : "") << p.experts_of_rank[r][j];
    }
    o << "]";
  }
  o << "\n]}\n";
  return o.str();
}

Status write_placement_file(const std::string& path, const ExpertPlacement& p) {
  // Written whole to a temporary and renamed, so a reader never sees half a file.
  return write_file_atomic(path, placement_to_json(p));
}

StatusOr<ExpertPlacement> read_placement_file(const std::string& path) {
  const std::string where = "placement file " + path + ": ";
  SY_ASSIGN_OR_RETURN(std::string text, read_file_bounded(path, kMaxFileBytes, "placement"));
  SY_ASSIGN_OR_RETURN(const json j, parse_json_object_bounded(text, "placement file " + path));

  auto field = [&](const char* name) -> const json* {
    auto it = j.find(name);
    return it == j.end() ? nullptr : &*it;
  };
  // An integer field within [lo, hi]; JSON floats ("8.0") and bools are refused.
  auto integer = [&](const char* name, int64_t lo, int64_t hi, int64_t* out) -> Status {
    const json* v = field(name);
    if (v == nullptr) return BadInput(where + "field '" + name + "' missing");
    if (!v->is_number_integer()) return BadInput(where + "field '" + name + "' is not an integer");
    // Unsigned JSON integers may exceed int64: compare them as unsigned first.
    const bool too_big = v->is_number_unsigned() && v->get<uint64_t>() > static_cast<uint64_t>(hi);
    const int64_t x = too_big ? hi : v->get<int64_t>();
    if (too_big || x < lo || x > hi) {
      return BadInput(where + "field '" + name + "' = " + v->dump() + " outside [" +
                      std::to_string(lo) + ", " + std::to_string(hi) + "]");
    }
    *out = x;
    return Status::Ok();
  };

  const json* fmt = field("format");
  if (fmt == nullptr) return BadInput(where + "field 'format' missing");
  if (!fmt->is_string() || fmt->get<std::string>() != kFormat) {
    return BadInput(where + "field 'format' is " + fmt->dump() + ", expected \"" + kFormat + "\"");
  }
  int64_t version = 0, E = 0, P = 0;
  SY_RETURN_IF_ERROR(integer("version", 0, std::numeric_limits<int32_t>::max(), &version));
  if (version != kVersion) {
    return BadInput(where + "field 'version' is " + std::to_string(version) +
                    "; this build reads version " + std::to_string(kVersion));
  }
  SY_RETURN_IF_ERROR(integer("num_experts", 1, kMaxExperts, &E));
  SY_RETURN_IF_ERROR(integer("ranks", 1, kMaxRanks, &P));

  const json* lists = field("experts_of_rank");
  if (lists == nullptr) return BadInput(where + "field 'experts_of_rank' missing");
  if (!lists->is_array()) return BadInput(where + "field 'experts_of_rank' is not an array");
  if (static_cast<int64_t>(lists->size()) != P) {
    return BadInput(where + "field 'experts_of_rank' has " + std::to_string(lists->size()) +
                    " lists, field 'ranks' says " + std::to_string(P));
  }
  ExpertPlacement p;
  p.num_experts = E;
  p.ranks = static_cast<int>(P);
  p.experts_of_rank.resize(static_cast<size_t>(P));
  for (int64_t r = 0; r < P; ++r) {
    const json& l = (*lists)[static_cast<size_t>(r)];
    const std::string at = "field 'experts_of_rank[" + std::to_string(r) + "]'";
    if (!l.is_array()) return BadInput(where + at + " is not an array");
    // A rank holds each expert at most once, so more than E entries is already wrong.
    if (static_cast<int64_t>(l.size()) > E) {
      return BadInput(where + at + " has " + std::to_string(l.size()) + " entries for " +
                      std::to_string(E) + " experts");
    }
    for (size_t k = 0; k < l.size(); ++k) {
      const json& v = l[k];
      const bool ok = v.is_number_integer() &&
                      (v.is_number_unsigned() ? v.get<uint64_t>() < static_cast<uint64_t>(E)
                                              : v.get<int64_t>() >= 0 && v.get<int64_t>() < E);
      if (!ok) {
        return BadInput(where + "field 'experts_of_rank[" + std::to_string(r) + "][" +
                        std::to_string(k) + "]' = " + v.dump() + " is not an expert id in [0, " +
                        std::to_string(E) + ")");
      }
      p.experts_of_rank[r].push_back(static_cast<int32_t>(v.get<int64_t>()));
    }
  }
  const Status s = p.validate(/*allow_replicas=*/true);
  if (!s.ok()) return BadInput(where + "field 'experts_of_rank': " + s.message());
  return p;
}

}  // namespace sy
