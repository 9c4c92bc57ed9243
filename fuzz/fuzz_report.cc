// libFuzzer target for per-rank load reports (runtime/report/report_io.h): any bytes, written
// to a file of this process, give read_rank_report's Status, never a crash, leak or UB
// (docs/RELIABILITY.md G1). Inputs starting with '{' or white space are read as rank-<r>.json (the
// canonical JSON mapping), others as rank-<r>.pb (binary protobuf). A report that reads is
// written again both ways (the writers' encodings) and reads back the same; a one-rank report of
// a modest size is also merged into a cluster report and rendered as text and HTML, as
// `switchyard report` does. Built only with clang (fuzz/CMakeLists.txt); run longer with
//   bash tests/launch/fuzz_smoke.sh . /tmp/fz report 1000000
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <string>

#include <google/protobuf/util/field_comparator.h>
#include <google/protobuf/util/message_differencer.h>

#include "fuzz/fuzz_file.h"
#include "runtime/report/cluster_report.h"
#include "runtime/report/report_io.h"

namespace {

bool LooksLikeJson(const uint8_t* data, size_t size) {
  if (size == 0) return false;
  const uint8_t c = data[0];
  return c == '{' || c == ' ' || c == '\n' || c == '\r' || c == '\t';
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string in =
      sy::fuzz::TmpPath("report", LooksLikeJson(data, size) ? ".in.json" : ".in.pb");
  if (!sy::fuzz::WriteFile(in, data, size)) return 0;
  auto r = sy::read_rank_report(in);
  ::unlink(in.c_str());
  if (!r.ok()) {
    const sy::StatusCode code = r.status().code();
    if (code != sy::StatusCode::kBadInput) __builtin_trap();  // always exit 22
    return 0;
  }

  // Binary: the same message, unknown fields included.
  const std::string pb = sy::fuzz::TmpPath("report", ".rt.pb"),
                    json = sy::fuzz::TmpPath("report", ".rt.json");
  const std::string bytes = r->SerializeAsString();
  if (!sy::fuzz::WriteFile(pb, bytes.data(), bytes.size())) return 0;
  auto from_pb = sy::read_rank_report(pb);
  if (!from_pb.ok() || from_pb->SerializeAsString() != bytes) __builtin_trap();
  // JSON (unknown fields are dropped, as the mapping says): the same values. Compared as values,
  // not as text: protobuf writes a double -0.0 as -0, which reads back as +0.
  auto text = sy::report_message_to_json(*r);
  if (!text.ok() || !sy::fuzz::WriteFile(json, text->data(), text->size())) __builtin_trap();
  auto from_json = sy::read_rank_report(json);
  if (!from_json.ok()) __builtin_trap();
  switchyard::RankReport known = *r;
  known.DiscardUnknownFields();
  google::protobuf::util::DefaultFieldComparator values;
  values.set_treat_nan_as_equal(true);
  google::protobuf::util::MessageDifferencer diff;
  diff.set_field_comparator(&values);
  // A proto3 -0.0 counts as set, +0.0 as absent: compare absent fields as their defaults.
  diff.set_message_field_comparison(google::protobuf::util::MessageDifferencer::EQUIVALENT);
  if (!diff.Compare(known, *from_json)) __builtin_trap();
  ::unlink(pb.c_str());
  ::unlink(json.c_str());

  // A one-rank run merged and rendered. Bounded so that each input stays fast (the bounds of
  // the reader itself, 2^16 experts and 2^12 layers, are what check_rank_report enforces).
  if (r->world_size() == 1 && r->num_experts() <= 512 && r->num_layers() <= 64) {
    auto c = sy::merge_rank_reports({*r}, {in});
    if (c.ok()) {
      (void)sy::render_cluster_text(*c);
      (void)sy::render_cluster_html(*c);
    }
  }
  return 0;
}
