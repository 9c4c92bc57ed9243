#include "comm/fault.h"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <thread>

namespace sy {

namespace {

struct KindName {
  FaultKind kind;
  const char* name;
};
constexpr KindName kKinds[] = {
    {FaultKind::kKill, "kill"},
    {FaultKind::kAbort, "abort"},
    {FaultKind::kThrow, "throw"},
    {FaultKind::kExit, "exit"},
    {FaultKind::kHang, "hang"},
    {FaultKind::kSlow, "slow"},
    {FaultKind::kNanLogits, "nan_logits"},
    {FaultKind::kInfGrad, "inf_grad"},
    {FaultKind::kCorruptCount, "corrupt_count"},
    {FaultKind::kOom, "oom"},
    {FaultKind::kEnospc, "enospc"},
    {FaultKind::kCrashInSave, "crash_in_save"},
    {FaultKind::kBitflipOnWrite, "bitflip_on_write"},
    {FaultKind::kAbortHang, "abort_hang"},
};

std::string known_kinds() {
  std::string s;
  for (const auto& k : kKinds) s += (s.empty() ? "" : ", ") + std::string(k.name);
  return s;
}

std::string trim(const std::string& s) {
  const size_t b = s.find_first_not_of(" \t");
  if (b == std::string::npos) return "";
  const size_t e = s.find_last_not_of(" \t");
  return s.substr(b, e - b + 1);
}

// A whole-string integer in [lo, hi].
bool parse_int(const std::string& s, int64_t lo, int64_t hi, int64_t* out) {
  if (s.empty()) return false;
  errno = 0;
  char* end = nullptr;
  const long long v = std::strtoll(s.c_str(), &end, 10);
  if (errno != 0 || *end != '\0' || v < lo || v > hi) return false;
  *out = v;
  return true;
}

StatusOr<FaultSpec> parse_one(const std::string& text) {
  const std::string where = "SY_FAULT '" + text + "': ";
  const size_t at = text.find('@');
  if (at == std::string::npos) {
    return InvalidArgument(where + "expected <kind>@rank=<r>[,step=<s>][,layer=<l>][,arg=<x>]");
  }
  FaultSpec spec;
  const std::string kind = trim(text.substr(0, at));
  bool known = false;
  for (const auto& k : kKinds) {
    if (kind == k.name) {
      spec.kind = k.kind;
      known = true;
    }
  }
  if (!known)
    return InvalidArgument(where + "unknown kind '" + kind + "' (known: " + known_kinds() + ")");

  bool have_rank = false;
  std::string rest = text.substr(at + 1);
  size_t pos = 0;
  while (pos <= rest.size()) {
    size_t comma = rest.find(',', pos);
    if (comma == std::string::npos) comma = rest.size();
    const std::string item = trim(rest.substr(pos, comma - pos));
    pos = comma + 1;
    if (item.empty()) continue;
    const size_t eq = item.find('=');
    if (eq == std::string::npos) return InvalidArgument(where + "'" + item + "' is not key=value");
    const std::string key = trim(item.substr(0, eq)), value = trim(item.substr(eq + 1));
    int64_t v = 0;
    if (key == "rank") {
      if (!parse_int(value, 0, INT_MAX, &v))
        return InvalidArgument(where + "bad rank '" + value + "'");
      spec.rank = static_cast<int>(v);
      have_rank = true;
    } else if (key == "step") {
      if (!parse_int(value, 0, INT64_MAX, &v))
        return InvalidArgument(where + "bad step '" + value + "'");
      spec.step = v;
    } else if (key == "layer") {
      if (!parse_int(value, 0, INT_MAX, &v))
        return InvalidArgument(where + "bad layer '" + value + "'");
      spec.layer = static_cast<int>(v);
    } else if (key == "arg") {
      if (value.empty()) return InvalidArgument(where + "empty arg");
      spec.arg = value;
    } else {
      return InvalidArgument(where + "unknown key '" + key + "' (known: rank, step, layer, arg)");
    }
  }
  if (!have_rank) return InvalidArgument(where + "rank=<r> is required");
  if (spec.kind == FaultKind::kSlow) {
    if (spec.arg.empty()) return InvalidArgument(where + "slow needs arg=<duration>, e.g. 500ms");
    auto d = parse_duration_seconds(spec.arg);
    if (!d.ok()) return InvalidArgument(where + d.status().message());
  }
  if (spec.kind == FaultKind::kExit && !spec.arg.empty()) {
    int64_t code = 0;
    if (!parse_int(spec.arg, 0, 255, &code)) {
      return InvalidArgument(where + "exit arg must be an exit code in [0, 255]");
    }
  }
  if (spec.kind == FaultKind::kCorruptCount && !spec.arg.empty()) {
    int64_t delta = 0;
    if (!parse_int(spec.arg, -1000000, 1000000, &delta) || delta == 0) {
      return InvalidArgument(where + "corrupt_count arg must be a non-zero integer delta");
    }
  }
  return spec;
}

std::vector<FaultSpec> load_from_env() {
  const char* env = std::getenv("SY_FAULT");
  auto faults = parse_faults(env ? env : "");
  if (!faults.ok()) {
    std::fprintf(stderr, "[switchyard] rank %d on %s: %s\n", log_rank(), host_name().c_str(),
                 faults.status().message().c_str());
    fatal_abort(kExitConfig);
  }
  return std::move(faults).value();
}

}  // namespace

const char* fault_kind_name(FaultKind kind) {
  for (const auto& k : kKinds) {
    if (k.kind == kind) return k.name;
  }
  return "?";
}

StatusOr<std::vector<FaultSpec>> parse_faults(const std::string& text) {
  std::vector<FaultSpec> out;
  size_t pos = 0;
  while (pos <= text.size()) {
    size_t semi = text.find(';', pos);
    if (semi == std::string::npos) semi = text.size();
    const std::string one = trim(text.substr(pos, semi - pos));
    pos = semi + 1;
    if (one.empty()) continue;
    SY_ASSIGN_OR_RETURN(FaultSpec spec, parse_one(one));
    out.push_back(spec);
  }
  return out;
}

StatusOr<double> parse_duration_seconds(const std::string& text) {
  errno = 0;
  char* end = nullptr;
  const double v = std::strtod(text.c_str(), &end);
  if (errno != 0 || end == text.c_str() || !std::isfinite(v) || v < 0) {
    return InvalidArgument("bad duration '" + text + "' (e.g. 500ms, 2s, 250us)");
  }
  const std::string unit = end;
  if (unit.empty() || unit == "ms") return v / 1e3;
  if (unit == "s") return v;
  if (unit == "us") return v / 1e6;
  return InvalidArgument("bad duration unit in '" + text + "' (ms, s or us)");
}

const std::vector<FaultSpec>& active_faults() {
  static const std::vector<FaultSpec> faults = load_from_env();
  return faults;
}

const FaultSpec* find_fault(FaultKind kind, int rank, int64_t step, int layer) {
  for (const auto& f : active_faults()) {
    if (f.matches(kind, rank, step, layer)) return &f;
  }
  return nullptr;
}

std::vector<FaultKind> process_fault_kinds() {
  return {FaultKind::kKill, FaultKind::kAbort, FaultKind::kThrow, FaultKind::kExit,
          FaultKind::kHang, FaultKind::kSlow,  FaultKind::kOom};
}

Status check_faults_supported(const std::string& command, const std::vector<FaultKind>& kinds) {
  for (const FaultSpec& f : active_faults()) {
    if (f.kind == FaultKind::kAbortHang ||
        std::find(kinds.begin(), kinds.end(), f.kind) != kinds.end())
      continue;
    std::string can;
    for (FaultKind k : kinds) can += (can.empty() ? "" : ", ") + std::string(fault_kind_name(k));
    return InvalidArgument("SY_FAULT=" + std::string(fault_kind_name(f.kind)) +
                           ": cannot fire in " + command + " (it carries out: " + can + ")");
  }
  return Status::Ok();
}

void inject_process_faults(int rank, int64_t step, int layer) {
  const auto& faults = active_faults();
  if (faults.empty()) return;
  auto say = [&](const FaultSpec& f) {
    std::fprintf(stderr,
                 "[switchyard] rank %d on %s: injected fault %s at step %lld layer %d%s%s\n", rank,
                 host_name().c_str(), fault_kind_name(f.kind), static_cast<long long>(step), layer,
                 f.arg.empty() ? "" : " arg ", f.arg.c_str());
    std::fflush(stderr);
  };
  for (const auto& f : faults) {
    if (!f.matches(f.kind, rank, step, layer)) continue;
    switch (f.kind) {
      case FaultKind::kKill:
        say(f);
        raise(SIGKILL);
        break;
      case FaultKind::kAbort:
        say(f);
        std::abort();
      case FaultKind::kThrow:
        say(f);
        throw std::runtime_error("injected fault: throw on rank " + std::to_string(rank) +
                                 " at step " + std::to_string(step));
      case FaultKind::kExit:
        say(f);
        std::exit(f.arg.empty() ? 0 : std::atoi(f.arg.c_str()));
      case FaultKind::kHang:
        say(f);
        // Sleeps rather than spins, so on a 2-core machine the healthy ranks keep a core.
        for (;;) std::this_thread::sleep_for(std::chrono::seconds(1));
      case FaultKind::kSlow: {
        say(f);
        const double s = parse_duration_seconds(f.arg).value();  // validated when parsed
        std::this_thread::sleep_for(std::chrono::duration<double>(s));
        break;
      }
      case FaultKind::kOom: {
        // An allocation that fails here, as a real one would: the out-of-memory exit.
        say(f);
        const int64_t bytes = f.arg.empty() ? (int64_t{1} << 40) : std::atoll(f.arg.c_str());
        out_of_memory(bytes, "SY_FAULT=oom");
      }
      default:
        break;  // data faults: acted on where they belong (fault_fires)
    }
  }
}

}  // namespace sy
