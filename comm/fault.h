// Fault injection for the reliability tests (tests/comm, tests/launch). Compiled into every
// build: when SY_FAULT is unset, a check is one comparison.
//
//   SY_FAULT=<kind>@rank=<r>[,step=<s>][,layer=<l>][,arg=<x>][;<kind>@...]
//
// e.g. SY_FAULT=hang@rank=1,step=2   SY_FAULT=slow@rank=1,arg=1000ms
//      SY_FAULT=nan_logits@rank=1,step=2,layer=0   SY_FAULT=exit@rank=1,step=2,arg=3
// rank is required; a missing step or layer matches every step or layer. Several faults are
// separated by ';'. SY_FAULT is read once, on the first query (MpiRuntime queries it at
// start-up, so a malformed value fails every rank before any collective, with exit code 21).
//
// The process faults (kill, abort, throw, exit, hang, slow, oom) are carried out by
// inject_process_faults(); the data faults (nan_logits, inf_grad, corrupt_count, enospc,
// crash_in_save, bitflip_on_write) are acted on by the code they concern, which asks
// fault_fires() at the point where the fault belongs. abort_hang is read by the MPI abort
// itself (comm/mpi_communicator.cc), not through active_faults(); step and layer do not apply.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "runtime/core/status.h"

namespace sy {

enum class FaultKind {
  kKill,            // raise(SIGKILL): a crashed rank
  kAbort,           // std::abort(): SIGABRT
  kThrow,           // an uncaught std::runtime_error
  kExit,            // std::exit(arg, default 0) without MPI_Finalize
  kHang,            // sleep forever (alive but stuck)
  kSlow,            // sleep arg (a duration) at every matching step: a straggler
  kNanLogits,       // router logits become NaN
  kInfGrad,         // a router gradient becomes Inf
  kCorruptCount,    // a reported dispatch count is changed, not the rows (arg: delta, default 1)
  kOom,             // an allocation fails at the step (arg: its bytes): exit 26, out_of_memory
  kEnospc,          // a checkpoint or report write fails with ENOSPC (arg: after this many bytes)
  kCrashInSave,     // the process dies after arg bytes of a checkpoint shard
  kBitflipOnWrite,  // one bit of a written file is flipped (arg: byte offset)
  kAbortHang,       // the rank blocks where it would call MPI_Abort (the abort watchdog's test)
};

const char* fault_kind_name(FaultKind kind);

struct FaultSpec {
  FaultKind kind = FaultKind::kKill;
  int rank = 0;
  int64_t step = -1;  // -1: every step
  int layer = -1;     // -1: every layer
  std::string arg;    // "" when not given

  bool matches(FaultKind k, int r, int64_t s, int l) const {
    return kind == k && rank == r && (step < 0 || step == s) && (layer < 0 || layer == l);
  }
};

// Parses a whole SY_FAULT value ("" gives no faults). Errors name the bad part and list the
// known kinds and keys.
StatusOr<std::vector<FaultSpec>> parse_faults(const std::string& text);

// Parses an arg duration: "1000ms", "2s", "250us", or a bare number of milliseconds.
StatusOr<double> parse_duration_seconds(const std::string& text);

// The faults from SY_FAULT, parsed on the first call (a malformed value prints the error and
// ends the process through fatal_abort with exit code 21).
const std::vector<FaultSpec>& active_faults();

// The first active fault of `kind` that matches this rank, step and layer, or nullptr.
// Callers outside a layer pass layer -1 (it then matches only faults without a layer).
const FaultSpec* find_fault(FaultKind kind, int rank, int64_t step, int layer = -1);
inline bool fault_fires(FaultKind kind, int rank, int64_t step, int layer = -1) {
  return find_fault(kind, rank, step, layer) != nullptr;
}

// Every command says which kinds it can carry out; an active fault of another kind (one that
// would parse and never fire) is InvalidArgument naming it, the command and the kinds it
// supports. abort_hang is always allowed (the MPI abort reads it in every command).
Status check_faults_supported(const std::string& command, const std::vector<FaultKind>& kinds);
// The process faults (kill, abort, throw, exit, hang, slow, oom): every command that calls
// inject_process_faults at its steps carries them out.
std::vector<FaultKind> process_fault_kinds();

// Carries out the process faults that match (kill, abort, throw, exit, hang, slow). Call it
// where the fault should strike, e.g. at the top of every step; a no-op without SY_FAULT.
// The message on stderr names rank, step and kind first, so tests can find it.
void inject_process_faults(int rank, int64_t step, int layer = -1);

}  // namespace sy
