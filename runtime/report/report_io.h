// Load-report files (proto/report.proto): every rank writes its RankReport under --out DIR as
// rank-<r>.pb (binary protobuf) and rank-<r>.json (protobuf's canonical JSON mapping);
// `switchyard report DIR` reads them back.
//
// Writing is atomic per file (a temp file in DIR, fsync, rename), so a reader never sees half a
// report; a crash leaves at most a hidden ".rank-<r>.pb.tmp.<pid>" behind. Reports are not
// critical to a run: a failed write returns a Status, and the caller warns, counts it
// and carries on.
//
// JSON: MessageToJsonString with always_print_primitive_fields (zeros and empty lists are
// written, so a script sees every field) and preserve_proto_field_names (snake_case keys, as in
// report.proto; the parser accepts both spellings). 64-bit integers are JSON strings, as the
// canonical mapping says. Unknown JSON keys are ignored when reading (a newer writer), as the
// binary parser keeps unknown fields.
//
// Reading is defensive: the files are untrusted. A missing, empty, oversized (> 256 MiB),
// truncated or corrupt file, wrong JSON types, or a report whose contents break the schema's
// invariants (sizes, ranges, negative counts, non-finite times) gives a BadInput Status that
// names the file; it never crashes.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "proto/report.pb.h"
#include "runtime/core/file_output.h"
#include "runtime/core/status.h"

namespace sy {

// Bytes a report file may have; larger files are refused before they are read.
constexpr int64_t kMaxReportFileBytes = int64_t{256} << 20;
// Bounds a report must respect (checked on read; they also cap what a merge allocates).
constexpr int32_t kMaxReportRanks = 1 << 16;
constexpr int32_t kMaxReportExperts = 1 << 16;
constexpr int32_t kMaxReportLayers = 1 << 12;

// "<dir>/rank-<r>.<ext>", ext "pb" or "json".
std::string rank_report_path(const std::string& dir, int rank, const std::string& ext);

// Canonical JSON of any report message (the options above), ending with a newline.
StatusOr<std::string> report_message_to_json(const google::protobuf::Message& msg);

struct ReportWriteOptions {
  bool write_pb = true;
  bool write_json = true;
  // Fault injection (SY_FAULT=enospc, asked by the caller through comm/fault.h): the writes
  // fail as if the disk were full (write_file_atomic's fail_errno).
  bool fail_enospc = false;
};

// Writes rank-<report.rank>.pb and .json under dir (created when missing). The first failure
// is returned; the other file is still attempted.
Status write_rank_report(const std::string& dir, const switchyard::RankReport& report,
                         const ReportWriteOptions& opt = {});

// Reads one report file by its extension (.pb binary, else JSON) and checks it
// (check_rank_report). Every error is BadInput (NotFound when the file is absent) and names
// the file.
StatusOr<switchyard::RankReport> read_rank_report(const std::string& path);

// The invariants one RankReport must satisfy on its own: sane header (world_size, rank,
// num_experts, top_k, local experts, num_layers within the bounds above), every entry's
// layer in [0, num_layers) and step >= 0 with (layer, step) unique, per-expert lists of size
// E, received_per_local_expert of size local_expert_count, per-peer lists of size world_size
// and tokens_by_rank_count of size world_size + 1 (an empty list stands for all zeros: a
// producer may leave out what it does not measure), counts >= 0, dropped <= routed per expert,
// times and metric sums finite and >= 0, step_losses with steps >= 0 and no NaN.
// `source` names the report in messages (its file).
Status check_rank_report(const switchyard::RankReport& r, const std::string& source);

// The global id of rank r's j-th local expert: local_expert_ids[j] when the report has them (a
// placement file), else local_expert_begin + j.
inline int32_t local_expert_id(const switchyard::RankReport& r, int j) {
  return r.local_expert_ids_size() > 0 ? r.local_expert_ids(j) : r.local_expert_begin() + j;
}

// The invariants a set of reports must satisfy together: the same world_size, router,
// num_experts, top_k and num_layers; ranks 0..P-1 each exactly once; local expert ranges that
// tile [0, E); the same (layer, step) entries on every rank. sources[i] names reports[i] in
// messages (may be empty: "rank <r>").
Status check_rank_report_set(const std::vector<switchyard::RankReport>& reports,
                             const std::vector<std::string>& sources = {});

struct RankReportSet {
  std::vector<switchyard::RankReport> reports;  // sorted by rank
  std::vector<std::string> files;               // the file each report was read from
  std::vector<std::string> warnings;            // e.g. a .pb unreadable, its .json used
};

// Finds rank-<r>.pb and rank-<r>.json in dir, reads each rank from its .pb (or its .json when
// there is no .pb, or the .pb is unreadable and the .json is fine: a warning), checks every
// report and then the set. Errors are BadInput naming the file or the folder.
StatusOr<RankReportSet> load_rank_reports(const std::string& dir);

}  // namespace sy
