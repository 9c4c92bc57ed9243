// libFuzzer target for a checkpoint's config.json: any text goes through the path every
// checkpoint open takes (runtime/core/json_input.h parse_json_object_bounded, then
// runtime/io/hf_checkpoint.h JsonConfigReader into Qwen2MoeConfig::from_json and
// BertMoeConfig::from_json) and gives a Status, never a crash, leak or UB; deep nesting is
// refused before the parser runs. Every top-level key is also read as each type with the widest
// bounds (the conversions a future key would use), and a config that reads writes (to_json) a
// config.json that reads back to the same one. Built only with clang (fuzz/CMakeLists.txt); run
// longer with
//   bash tests/launch/fuzz_smoke.sh . /tmp/fz config_json 1000000
#include <cstdint>
#include <limits>
#include <string>

#include "runtime/core/json_input.h"
#include "runtime/io/hf_checkpoint.h"
#include "runtime/model/bert_moe.h"
#include "runtime/model/qwen2_moe.h"

namespace {

// from_json(to_json(c)) reads and writes the same config.json again.
template <typename Config>
void CheckRoundTrip(const Config& c) {
  const nlohmann::json written = c.to_json();
  auto again = Config::from_json(sy::JsonConfigReader(written, "round trip"));
  if (!again.ok() || again->to_json() != written) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  auto j = sy::parse_json_object_bounded(text, "fuzz/config.json");
  if (!j.ok()) return 0;
  if (!j->is_object()) __builtin_trap();
  const sy::JsonConfigReader r(*j, "fuzz/config.json");
  constexpr double kHuge = std::numeric_limits<double>::max();
  int keys = 0;
  for (auto it = j->begin(); it != j->end() && keys < 64; ++it, ++keys) {
    (void)r.get_int(it.key(), std::numeric_limits<int64_t>::min(),
                    std::numeric_limits<int64_t>::max());
    (void)r.get_int(it.key(), 1, 1 << 20, 7);
    (void)r.get_float(it.key(), -kHuge, kHuge);
    (void)r.get_bool(it.key(), false);
    (void)r.get_string(it.key(), "");
    (void)sy::json_brief(it.value());
  }
  if (auto q = sy::Qwen2MoeConfig::from_json(r); q.ok()) CheckRoundTrip(*q);
  if (auto b = sy::BertMoeConfig::from_json(r); b.ok()) CheckRoundTrip(*b);
  return 0;
}
