#include "runtime/report/report_io.h"

#include <fcntl.h>
#include <google/protobuf/util/json_util.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <set>
#include <sstream>
#include <utility>

#include "runtime/core/file_input.h"

namespace sy {
namespace fs = std::filesystem;
using switchyard::LayerStepReport;
using switchyard::RankReport;

namespace {

// A Status that names the report and what is wrong with it.
template <typename... Args>
Status bad(const std::string& source, const Args&... parts) {
  std::ostringstream os;
  os << source << ": ";
  (os << ... << parts);
  return BadInput(os.str());
}

StatusOr<std::string> read_file_capped(const std::string& path) {
  SY_ASSIGN_OR_RETURN(std::string data, read_file_bounded(path, kMaxReportFileBytes, "report"));
  if (data.empty()) return BadInput(path + ": empty file (0 bytes)");
  return data;
}

bool has_suffix(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// An empty list stands for all zeros; otherwise it must have n values, each >= 0.
Status check_counts(const google::protobuf::RepeatedField<int64_t>& v, int64_t n,
                    const std::string& where, const char* name, const char* n_name) {
  if (!v.empty() && v.size() != n)
    return bad(where, name, " has ", v.size(), " values, expected ", n, " (", n_name, ") or none");
  for (int i = 0; i < v.size(); ++i)
    if (v.Get(i) < 0) return bad(where, name, "[", i, "] = ", v.Get(i), " is negative");
  return Status::Ok();
}

// Sum of non-negative counts; false on int64 overflow.
bool sum_counts(const google::protobuf::RepeatedField<int64_t>& v, int64_t* sum) {
  *sum = 0;
  for (int64_t x : v)
    if (__builtin_add_overflow(*sum, x, sum)) return false;
  return true;
}

bool finite_nonneg(double x) {
  return std::isfinite(x) && x >= 0.0;
}

Status check_entry(const RankReport& r, const LayerStepReport& e, const std::string& source) {
  std::ostringstream w;
  w << source << ": layer " << e.layer() << " step " << e.step();
  const std::string where = w.str();
  const int64_t E = r.num_experts(), P = r.world_size();
  if (e.tokens() < 0 || e.assignments_routed() < 0 || e.assignments_dropped() < 0)
    return bad(where, "negative tokens or assignment counts");
  if (e.assignments_dropped() > e.assignments_routed())
    return bad(where, "assignments_dropped ", e.assignments_dropped(), " > assignments_routed ",
               e.assignments_routed());
  SY_RETURN_IF_ERROR(
      check_counts(e.routed_per_expert(), E, where, "routed_per_expert", "num_experts"));
  SY_RETURN_IF_ERROR(
      check_counts(e.dropped_per_expert(), E, where, "dropped_per_expert", "num_experts"));
  SY_RETURN_IF_ERROR(check_counts(e.received_per_local_expert(), r.local_expert_count(), where,
                                  "received_per_local_expert", "local_expert_count"));
  SY_RETURN_IF_ERROR(
      check_counts(e.rows_sent_to_peer(), P, where, "rows_sent_to_peer", "world_size"));
  SY_RETURN_IF_ERROR(
      check_counts(e.rows_recv_from_peer(), P, where, "rows_recv_from_peer", "world_size"));
  SY_RETURN_IF_ERROR(
      check_counts(e.bytes_sent_to_peer(), P, where, "bytes_sent_to_peer", "world_size"));
  SY_RETURN_IF_ERROR(
      check_counts(e.bytes_recv_from_peer(), P, where, "bytes_recv_from_peer", "world_size"));
  SY_RETURN_IF_ERROR(check_counts(e.tokens_by_rank_count(), P + 1, where, "tokens_by_rank_count",
                                  "world_size + 1"));
  int64_t routed = 0, dropped = 0;
  if (!sum_counts(e.routed_per_expert(), &routed) || !sum_counts(e.dropped_per_expert(), &dropped))
    return bad(where, "per-expert counts overflow int64");
  if (!e.dropped_per_expert().empty() && e.routed_per_expert().empty() && dropped > 0)
    return bad(where, "dropped_per_expert without routed_per_expert");
  for (int i = 0; i < e.dropped_per_expert().size() && !e.routed_per_expert().empty(); ++i)
    if (e.dropped_per_expert(i) > e.routed_per_expert(i))
      return bad(where, "expert ", i, ": dropped ", e.dropped_per_expert(i), " > routed ",
                 e.routed_per_expert(i));
  if (!e.routed_per_expert().empty() && routed != e.assignments_routed())
    return bad(where, "routed_per_expert sums to ", routed, " but assignments_routed is ",
               e.assignments_routed());
  if (!e.dropped_per_expert().empty() && dropped != e.assignments_dropped())
    return bad(where, "dropped_per_expert sums to ", dropped, " but assignments_dropped is ",
               e.assignments_dropped());
  const auto& t = e.times();
  for (double x :
       {t.route_s(), t.plan_s(), t.count_exchange_s(), t.dispatch_s(), t.experts_s(), t.combine_s(),
        t.unpermute_s(), t.dispatch_exchange_s(), e.exchange_bandwidth_gbps()})
    if (!finite_nonneg(x)) return bad(where, "a phase time or bandwidth is ", x);
  const auto& m = e.metrics();
  if (m.tokens() < 0) return bad(where, "metrics.tokens is negative");
  for (double x : {m.entropy_sum(), m.exp_entropy_sum(), m.topk_mass_sum()})
    if (!finite_nonneg(x)) return bad(where, "a metrics sum is ", x);
  return Status::Ok();
}

std::string source_of(const std::vector<std::string>& sources, size_t i, const RankReport& r) {
  return i < sources.size() ? sources[i] : "rank " + std::to_string(r.rank());
}

}  // namespace

std::string rank_report_path(const std::string& dir, int rank, const std::string& ext) {
  return (fs::path(dir) / ("rank-" + std::to_string(rank) + "." + ext)).string();
}

StatusOr<std::string> report_message_to_json(const google::protobuf::Message& msg) {
  google::protobuf::util::JsonPrintOptions opt;
  opt.always_print_primitive_fields = true;
  opt.preserve_proto_field_names = true;
  std::string out;
  const auto st = google::protobuf::util::MessageToJsonString(msg, &out, opt);
  if (!st.ok()) return Internal("JSON of " + msg.GetTypeName() + ": " + st.ToString());
  out += '\n';
  return out;
}

Status write_rank_report(const std::string& dir, const RankReport& report,
                         const ReportWriteOptions& opt) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return BadInput("cannot create report folder " + dir + ": " + ec.message());
  Status first = Status::Ok();
  AtomicWriteOptions write_opt;
  if (opt.fail_enospc) write_opt.fail_errno = ENOSPC;
  if (opt.write_pb) {
    std::string bytes;
    Status st =
        report.SerializeToString(&bytes)
            ? write_file_atomic(rank_report_path(dir, report.rank(), "pb"), bytes, write_opt)
            : Internal("cannot serialize the report of rank " + std::to_string(report.rank()));
    if (!st.ok() && first.ok()) first = st;
  }
  if (opt.write_json) {
    StatusOr<std::string> json = report_message_to_json(report);
    Status st = json.ok() ? write_file_atomic(rank_report_path(dir, report.rank(), "json"),
                                              json.value(), write_opt)
                          : json.status();
    if (!st.ok() && first.ok()) first = st;
  }
  return first;
}

StatusOr<RankReport> read_rank_report(const std::string& path) {
  SY_ASSIGN_OR_RETURN(const std::string data, read_file_capped(path));
  RankReport r;
  if (has_suffix(path, ".pb")) {
    if (!r.ParseFromString(data))
      return BadInput(path + ": not a valid binary RankReport (truncated or corrupt)");
  } else {
    google::protobuf::util::JsonParseOptions opt;
    opt.ignore_unknown_fields = true;
    const auto st = google::protobuf::util::JsonStringToMessage(data, &r, opt);
    if (!st.ok()) return BadInput(path + ": not a valid RankReport JSON: " + st.ToString());
  }
  SY_RETURN_IF_ERROR(check_rank_report(r, path));
  return r;
}

Status check_rank_report(const RankReport& r, const std::string& source) {
  if (r.world_size() < 1 || r.world_size() > kMaxReportRanks)
    return bad(source, "world_size ", r.world_size(), " not in [1, ", kMaxReportRanks, "]");
  if (r.rank() < 0 || r.rank() >= r.world_size())
    return bad(source, "rank ", r.rank(), " not in [0, ", r.world_size(), ")");
  if (r.num_experts() < 1 || r.num_experts() > kMaxReportExperts)
    return bad(source, "num_experts ", r.num_experts(), " not in [1, ", kMaxReportExperts, "]");
  if (r.top_k() < 0 || r.top_k() > r.num_experts())
    return bad(source, "top_k ", r.top_k(), " not in [0, ", r.num_experts(), "]");
  const int64_t begin = r.local_expert_begin(), count = r.local_expert_count();
  if (r.local_expert_ids_size() > 0) {  // a placement: ids of its own, each once
    if (r.local_expert_ids_size() != count)
      return bad(source, "local_expert_ids has ", r.local_expert_ids_size(),
                 " ids but local_expert_count is ", count);
    std::set<int32_t> ids;
    for (int32_t e : r.local_expert_ids())
      if (e < 0 || e >= r.num_experts() || !ids.insert(e).second)
        return bad(source, "local_expert_ids: ", e, " is out of [0, ", r.num_experts(),
                   ") or repeated");
  } else if (begin < 0 || count < 0 || begin + count > r.num_experts()) {
    return bad(source, "local experts [", begin, ", ", begin + count, ") not within [0, ",
               r.num_experts(), ")");
  }
  if (r.num_layers() < 0 || r.num_layers() > kMaxReportLayers)
    return bad(source, "num_layers ", r.num_layers(), " not in [0, ", kMaxReportLayers, "]");
  std::set<std::pair<int32_t, int64_t>> seen;
  for (const LayerStepReport& e : r.entries()) {
    if (e.layer() < 0 || e.layer() >= r.num_layers())
      return bad(source, "entry for layer ", e.layer(), " but num_layers is ", r.num_layers());
    if (e.step() < 0) return bad(source, "layer ", e.layer(), ": negative step ", e.step());
    if (!seen.emplace(e.layer(), e.step()).second)
      return bad(source, "two entries for layer ", e.layer(), " step ", e.step());
    SY_RETURN_IF_ERROR(check_entry(r, e, source));
  }
  for (const switchyard::StepLoss& l : r.step_losses())
    if (l.step() < 0 || std::isnan(l.loss()))
      return bad(source, "step_losses: step ", l.step(), " loss ", l.loss());
  std::set<int64_t> timed;
  for (const switchyard::StepTime& t : r.step_times()) {
    if (t.step() < 0 || !finite_nonneg(t.seconds()) || !finite_nonneg(t.collective_s()))
      return bad(source, "step_times: step ", t.step(), " seconds ", t.seconds(), " collective ",
                 t.collective_s());
    if (!timed.insert(t.step()).second) return bad(source, "step_times: step ", t.step(), " twice");
  }
  if (r.skipped_steps() < 0) return bad(source, "skipped_steps ", r.skipped_steps(), " < 0");
  return Status::Ok();
}

Status check_rank_report_set(const std::vector<RankReport>& reports,
                             const std::vector<std::string>& sources) {
  if (reports.empty()) return BadInput("no rank reports");
  const RankReport& ref = reports[0];
  const std::string ref_src = source_of(sources, 0, ref);
  const int P = ref.world_size();
  std::vector<int> where(static_cast<size_t>(P), -1);  // rank -> index in reports
  for (size_t i = 0; i < reports.size(); ++i) {
    const RankReport& r = reports[i];
    const std::string src = source_of(sources, i, r);
    if (r.world_size() != P)
      return bad(src, "world_size ", r.world_size(), " differs from ", ref_src, "'s ", P);
    if (r.router() != ref.router())
      return bad(src, "router '", r.router(), "' differs from ", ref_src, "'s '", ref.router(),
                 "'");
    if (r.num_experts() != ref.num_experts())
      return bad(src, "num_experts ", r.num_experts(), " differs from ", ref_src, "'s ",
                 ref.num_experts());
    if (r.top_k() != ref.top_k())
      return bad(src, "top_k ", r.top_k(), " differs from ", ref_src, "'s ", ref.top_k());
    if (r.num_layers() != ref.num_layers())
      return bad(src, "num_layers ", r.num_layers(), " differs from ", ref_src, "'s ",
                 ref.num_layers());
    if (r.rank() < 0 || r.rank() >= P) return bad(src, "rank ", r.rank(), " out of range");
    int& slot = where[static_cast<size_t>(r.rank())];
    if (slot >= 0)
      return bad(src, "duplicate rank ", r.rank(), " (also in ",
                 source_of(sources, static_cast<size_t>(slot), reports[slot]), ")");
    slot = static_cast<int>(i);
  }
  for (int r = 0; r < P; ++r)
    if (where[static_cast<size_t>(r)] < 0)
      return BadInput("missing the report of rank " + std::to_string(r) + " (world_size " +
                      std::to_string(P) + ", " + std::to_string(reports.size()) + " reports)");
  // Local experts must cover [0, E) once, or loads would be lost or counted twice: a placement
  // file's ids, else ranges that tile [0, E) in rank order.
  bool placed = false;
  for (const RankReport& r : reports) placed = placed || r.local_expert_ids_size() > 0;
  if (placed) {
    std::vector<int> owner(static_cast<size_t>(ref.num_experts()), -1);
    for (int r = 0; r < P; ++r) {
      const RankReport& rr = reports[static_cast<size_t>(where[static_cast<size_t>(r)])];
      for (int j = 0; j < rr.local_expert_count(); ++j) {
        const int32_t e = local_expert_id(rr, j);
        if (e < 0 || e >= ref.num_experts() || owner[static_cast<size_t>(e)] >= 0)
          return bad(source_of(sources, static_cast<size_t>(where[r]), rr), "expert ", e,
                     " is out of range or also held by rank ",
                     e >= 0 && e < ref.num_experts() ? owner[static_cast<size_t>(e)] : -1);
        owner[static_cast<size_t>(e)] = r;
      }
    }
    for (size_t e = 0; e < owner.size(); ++e)
      if (owner[e] < 0) return BadInput("no rank holds expert " + std::to_string(e));
  }
  int64_t next = 0;
  for (int r = 0; r < P && !placed; ++r) {
    const RankReport& rr = reports[static_cast<size_t>(where[static_cast<size_t>(r)])];
    if (rr.local_expert_begin() != next)
      return bad(source_of(sources, static_cast<size_t>(where[r]), rr), "local experts begin at ",
                 rr.local_expert_begin(), ", expected ", next,
                 " (ranks' expert ranges must tile [0, num_experts) in rank order)");
    next += rr.local_expert_count();
  }
  if (!placed && next != ref.num_experts())
    return BadInput("local expert ranges of all ranks cover [0, " + std::to_string(next) +
                    ") but num_experts is " + std::to_string(ref.num_experts()));
  // Every rank takes part in every layer forward, so the (layer, step) entries must match.
  std::set<std::pair<int32_t, int64_t>> ref_keys;
  for (const LayerStepReport& e : ref.entries()) ref_keys.emplace(e.layer(), e.step());
  for (size_t i = 1; i < reports.size(); ++i) {
    std::set<std::pair<int32_t, int64_t>> keys;
    for (const LayerStepReport& e : reports[i].entries()) keys.emplace(e.layer(), e.step());
    if (keys == ref_keys) continue;
    const std::string src = source_of(sources, i, reports[i]);
    for (const auto& k : ref_keys)
      if (!keys.count(k))
        return bad(src, "no entry for layer ", k.first, " step ", k.second, " (", ref_src,
                   " has one)");
    for (const auto& k : keys)
      if (!ref_keys.count(k))
        return bad(src, "entry for layer ", k.first, " step ", k.second, " that ", ref_src,
                   " lacks");
  }
  return Status::Ok();
}

StatusOr<RankReportSet> load_rank_reports(const std::string& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return BadInput(dir + ": no such folder");
  std::map<int, std::pair<std::string, std::string>> found;  // rank -> (pb path, json path)
  fs::directory_iterator it(dir, ec), end;
  if (ec) return BadInput("cannot list " + dir + ": " + ec.message());
  for (; it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    std::string ext;
    if (name.rfind("rank-", 0) != 0) continue;
    if (has_suffix(name, ".pb"))
      ext = "pb";
    else if (has_suffix(name, ".json"))
      ext = "json";
    else
      continue;
    const std::string digits = name.substr(5, name.size() - 5 - ext.size() - 1);
    if (digits.empty() || digits.size() > 9 ||
        !std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; }))
      continue;  // not a report name (rank-x.json.bak, ...)
    const long rank = std::stol(digits);
    const std::string path = it->path().string();
    if (rank >= kMaxReportRanks)
      return BadInput(path + ": rank " + digits + " over the limit of " +
                      std::to_string(kMaxReportRanks) + " ranks");
    std::string& slot = ext == "pb" ? found[rank].first : found[rank].second;
    if (!slot.empty())
      return BadInput("two report files for rank " + digits + ": " + slot + " and " + path);
    slot = path;
  }
  if (ec) return BadInput("cannot list " + dir + ": " + ec.message());
  if (found.empty()) return BadInput(dir + ": no rank-<r>.pb or rank-<r>.json report files");
  RankReportSet set;
  for (const auto& [rank, paths] : found) {
    const auto& [pb, json] = paths;
    StatusOr<RankReport> r = read_rank_report(pb.empty() ? json : pb);
    std::string used = pb.empty() ? json : pb;
    if (!r.ok() && !pb.empty() && !json.empty()) {
      StatusOr<RankReport> rj = read_rank_report(json);
      if (!rj.ok()) return BadInput(r.status().message() + "; and " + rj.status().message());
      set.warnings.push_back(r.status().message() + "; read " + json + " instead");
      r = std::move(rj);
      used = json;
    }
    if (!r.ok()) return r.status();
    if (r->rank() != rank)
      return BadInput(used + ": holds the report of rank " + std::to_string(r->rank()));
    set.reports.push_back(std::move(r.value()));
    set.files.push_back(used);
  }
  SY_RETURN_IF_ERROR(check_rank_report_set(set.reports, set.files));
  return set;
}

}  // namespace sy
