#!/usr/bin/env bash
# The unit tests and the multi-rank tests at 2 and 4 ranks under ASan + UBSan
# (docs/RELIABILITY.md G3), in the SY_SANITIZE=ON clang build folder (sanitize_build.sh).
# tests/CMakeLists.txt lists them there (sanitized_unit_tests.txt: every GoogleTest executable's
# single-process test; sanitized_mpi_tests.txt: every test of tests/comm and tests/moe_mpi at
# np 2 and np 4, the fault-injection runs included), and reliability_e2e, train_e2e and
# save_crash_loop run through the sanitized switchyard. UBSan stops at its first report (-fno-sanitize-recover) and
# ASan at its first error, so any report fails the test it happens in. LeakSanitizer runs on
# the single-process tests only: Open MPI's own allocations outlive MPI_Finalize
# (detect_leaks=0 under mpirun).
#
# Usage: sanitize_tests.sh SOURCE_DIR WORK_DIR [CTEST_ARGS...]   e.g. -E comm_hang
# Under ctest (SY_SANITIZE_PREBUILT=1) the fixture sanitize_build has built the tests; run by
# hand the script builds them (target sanitize_tests). Exit 77 (ctest skip) without clang.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$1" && pwd) work=$2
shift 2
bash "$here/sanitize_build.sh" --check || exit $?
if [ -z "${SY_SANITIZE_PREBUILT:-}" ]; then
  bash "$here/sanitize_build.sh" "$src" "$work" sanitize_tests || exit 1
fi
lists=("$work/build/sanitized_unit_tests.txt" "$work/build/sanitized_mpi_tests.txt")
for f in "${lists[@]}"; do
  [ -s "$f" ] || { echo "FAIL: $f missing (configure $work/build with SY_SANITIZE=ON)"; exit 1; }
done
regex() { echo "^($(grep -v '^$' "$1" | paste -sd'|'))\$"; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
# mpirun's local ranks inherit its environment, so every rank gets the options.
cd "$work/build" || exit 1
logs=$work/logs
rm -rf "$logs" && mkdir -p "$logs"
# LeakSanitizer stops the process with ptrace-like calls at exit; where the sandbox forbids them
# it fails every test ("LeakSanitizer has encountered a fatal error"). One empty run of a test
# executable tells, and the unit tests then run with it off, saying so.
leaks=1
probe=$(grep -v '^$' "${lists[0]}" | head -n 1)
if ! ASAN_OPTIONS=detect_leaks=1 "tests/$probe" --gtest_filter=-* >"$logs/lsan_probe.log" 2>&1; then
  leaks=0
  echo "sanitize_tests: LeakSanitizer cannot run here ($(grep -m1 -i -E 'leak|error' \
    "$logs/lsan_probe.log" | cut -c1-160)): the unit tests run with it off"
fi
# Each phase's ctest output goes to a log; what failed is printed first (names and the first
# sanitizer or assertion lines), then the logs of the failed phases whole.
phase() {  # phase NAME ENV... -- CTEST_ARGS...: one ctest run, its exit code in $rc_NAME
  local name=$1
  shift
  local envs=()
  while [ "$1" != -- ]; do envs+=("$1"); shift; done
  shift
  local t0=$(date +%s)
  env "${envs[@]}" ctest --output-on-failure "$@" >"$logs/$name.log" 2>&1
  local rc=$?
  printf -v "rc_$name" '%s' "$rc"
  summary+=("$name exit $rc in $(($(date +%s) - t0)) s;")
}
summary=()
# Devsim.RawDereferenceFaults dereferences a non-canonical pointer to see the SIGSEGV a device
# pointer gives on the host; ASan reports that SEGV itself and exits 1, so the case is left out.
phase unit GTEST_FILTER=-Devsim.RawDereferenceFaults \
  ASAN_OPTIONS=detect_leaks=$leaks:check_initialization_order=1 -- \
  -R "$(regex "${lists[0]}")" -j"$(nproc)" "$@"
phase mpi ASAN_OPTIONS=detect_leaks=0:check_initialization_order=1 -- \
  -R "$(regex "${lists[1]}")" -j"$(nproc)" "$@"
# The end-to-end reliability probes (bad inputs, ranks that disagree, faults; their time bounds
# scaled for -O0 + ASan), the training checkpoints' crashes and corruptions (train_e2e) and the
# crash-during-save loop (save_crash_loop) through the sanitized switchyard binary, two at a time
# (chains of short 2- and 4-rank launches that keep ~1.5 cores busy: one at a time they took
# 168 + 200 + 78 = 447 s on the 2-core machine, two at a time 364 s, every time bound held).
phase reliability SY_TIME_SCALE=4 ASAN_OPTIONS=detect_leaks=0:check_initialization_order=1 -- \
  -R '^(reliability_e2e|train_e2e|save_crash_loop)$' -j"$(nproc)" "$@"
echo "sanitize_tests: $(grep -c . "${lists[0]}") unit tests (LeakSanitizer $([ $leaks = 1 ] &&
  echo on || echo off)), $(grep -c . "${lists[1]}") tests at 2 and 4 ranks, reliability_e2e," \
  "train_e2e and save_crash_loop" \
  "(LeakSanitizer off): ${summary[*]}"
bad=0
for name in unit mpi reliability; do
  rc_var=rc_$name
  [ "${!rc_var}" -eq 0 ] && continue
  bad=1
  echo "== $name failed: =="
  grep -E '\*\*\*|Failed|Timeout|Not Run' "$logs/$name.log" | grep -v '^[0-9]*% tests' | head -n 10
  grep -h -m3 -E 'ERROR: (Address|Leak)Sanitizer|runtime error:|^FAIL |Failure$|fatal error' \
    "$logs/$name.log" | cut -c1-300 | head -n 12
done
for name in unit mpi reliability; do
  rc_var=rc_$name
  [ "${!rc_var}" -eq 0 ] && continue
  echo "== $name: the whole log =="
  cat "$logs/$name.log"
done
exit $bad
