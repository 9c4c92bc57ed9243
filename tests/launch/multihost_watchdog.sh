#!/usr/bin/env bash
# Across hosts, the MPI_Abort watchdog (comm/mpi_communicator.cc abort_world): when MPI_Abort
# does not end the job within 3 s, as it does not towards a cut host, the aborting rank ends
# itself with the intended exit code and says so. SY_FAULT=abort_hang@rank=r makes rank r
# block where it would call MPI_Abort, so only the watchdog can end it. A 4-rank job over 2
# network-namespace hosts (ranks 0, 1 on h1; 2, 3 on h2):
#   deadline: rank 0 hangs at step 2; ranks 1-3 reach the collective deadline (2 s) and their
#     aborts block -> exit 20, "rank R on hN: MPI_Abort did not end the job within 3 s;
#     exiting with code 20";
#   one-rank: rank 3 (on h2) throws at step 2 and its abort blocks while the others wait in a
#     collective whose deadline (60 s) is far off -> exit 1 (kExitBug), that message from rank
#     3 on h2 alone: the watchdog's exit on a remote host ends the ranks on both;
#   control: the same throw without abort_hang -> exit 1 before the watchdog could fire, and
#     no watchdog message.
# Each case measures the time from the message that starts the abort to the end of the job:
# at least the watchdog's 3 s and at most 8 s where the abort blocks; under 3 s in the control.
# No switchyard process may be left on either host after each case.
# Why across hosts rather than a plain mpi test: the watchdog exists for aborts across hosts;
# here the rank that ends itself runs under a remote daemon, mpirun must learn of it through
# that daemon and tear down the ranks of both hosts, and the message names the host.
# Usage: multihost_watchdog.sh SWITCHYARD_BIN WORK_DIR DATA_DIR SOURCE_DIR. Exit 77 (ctest
# skip) where namespaces cannot be made or without the GPT-2 tokenizer.
set -uo pipefail
bin=$1 work=$2 data=$3 src=$4
# shellcheck source=tests/launch/multihost_lib.sh
source "$src/tests/launch/multihost_lib.sh"
mh_begin mhw 10.213.6 tokenizer
job=(infer --data-dir "$data" --corpus excerpt --max-tokens 0 --set data.group_tokens=128
  --set data.batch_groups=1 --set moe.num_experts=8 --set moe.d_model=32 --set moe.ffn_hidden=32)

# watchdog_case NAME CODE START LO_MS HI_MS FAULT TIMEOUT_S PATTERN...: runs the job under
# SY_FAULT=FAULT and SY_COLLECTIVE_TIMEOUT_S=TIMEOUT_S; checks the exit code, that the job
# ended LO_MS..HI_MS after the first line matching START (the message before the abort), and
# that its log matches each PATTERN (a leading '!': does not match).
watchdog_case() {
  local name=$1 want=$2 start=$3 lo=$4 hi=$5 fault=$6 deadline=$7
  shift 7
  SY_FAULT=$fault SY_COLLECTIVE_TIMEOUT_S=$deadline crun 4 "${job[@]}" >"$work/$name.log" 2>&1 &
  local pid=$! t0="" t1 code
  while kill -0 "$pid" 2>/dev/null; do
    if grep -qE -- "$start" "$work/$name.log"; then t0=$(now_ms); break; fi
    sleep 0.02
  done
  wait "$pid"
  code=$?
  t1=$(now_ms)
  if [ -z "$t0" ]; then
    echo "FAIL $name: no '$start' before the job ended (exit $code)"; tail -n 15 "$work/$name.log"
    fail=1
    return
  fi
  local el=$((t1 - t0)) s
  printf -v s '%d.%03d s' $((el / 1000)) $((el % 1000))
  if [ "$code" = "$want" ] && [ $el -ge "$lo" ] && [ $el -le "$hi" ]; then
    echo "ok   $name: exit $code, $s after '$start'"
  else
    echo "FAIL $name: exit $code (expected $want), $s after '$start' (expected $lo-$hi ms)"
    tail -n 20 "$work/$name.log"
    fail=1
  fi
  local p
  for p in "$@"; do
    if [ "${p:0:1}" = '!' ]; then
      if grep -qE -- "${p:1}" "$work/$name.log"; then echo "FAIL $name: its log says '${p:1}'"; fail=1
      else echo "ok   $name does not say '${p:1}'"; fi
    else
      has "$name" "$p"
    fi
  done
  none_left "$name"
}

said="MPI_Abort did not end the job within 3 s; exiting with code"
watchdog_case deadline 20 "collective timeout" 2900 8000 \
  "hang@rank=0,step=2;abort_hang@rank=1;abort_hang@rank=2;abort_hang@rank=3" 2 \
  "rank [123] on h[12]: injected fault abort_hang" "rank [123] on h[12]: $said 20"
watchdog_case one-rank 1 "uncaught exception" 2900 8000 "throw@rank=3,step=2;abort_hang@rank=3" 60 \
  "rank 3 on h2: injected fault abort_hang" "rank 3 on h2: $said 1" "!rank [012] on h[12]: $said"
watchdog_case control 1 "uncaught exception" 0 2900 "throw@rank=3,step=2" 60 \
  "rank 3 on h2: uncaught exception: injected fault: throw" "!$said"
[ $fail = 0 ] && echo "multihost_watchdog: all checks passed"
exit $fail
