#!/usr/bin/env bash
# The unit tests and the multi-rank tests at 2 ranks under ASan + UBSan (docs/RELIABILITY.md G3), in
# the SY_SANITIZE=ON clang build folder (sanitize_build.sh). tests/CMakeLists.txt lists them
# there (sanitized_unit_tests.txt: every GoogleTest executable's single-process test;
# sanitized_mpi_tests.txt: every test of tests/comm and tests/moe_mpi at np 2, the
# fault-injection runs included). UBSan stops at its first report (-fno-sanitize-recover) and
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
start=$(date +%s)
echo "sanitize_tests: $(grep -c . "${lists[0]}") unit tests (LeakSanitizer on)"
# Devsim.RawDereferenceFaults dereferences a non-canonical pointer to see the SIGSEGV a device
# pointer gives on the host; ASan reports that SEGV itself and exits 1, so the case is left out.
GTEST_FILTER=-Devsim.RawDereferenceFaults ASAN_OPTIONS=detect_leaks=1:check_initialization_order=1 \
  ctest -R "$(regex "${lists[0]}")" --output-on-failure -j"$(nproc)" "$@"
rc1=$?
mid=$(date +%s)
echo "sanitize_tests: $(grep -c . "${lists[1]}") tests at 2 ranks (LeakSanitizer off)"
ASAN_OPTIONS=detect_leaks=0:check_initialization_order=1 \
  ctest -R "$(regex "${lists[1]}")" --output-on-failure -j"$(nproc)" "$@"
rc2=$?
late=$(date +%s)
# The end-to-end reliability probes (bad inputs, ranks that disagree, faults) through the
# sanitized switchyard binary: their time bounds scaled for -O0 + ASan.
echo "sanitize_tests: reliability_e2e with the sanitized switchyard (LeakSanitizer off)"
SY_TIME_SCALE=4 ASAN_OPTIONS=detect_leaks=0:check_initialization_order=1 \
  ctest -R '^reliability_e2e$' --output-on-failure "$@"
rc3=$?
end=$(date +%s)
echo "sanitize_tests: unit tests exit $rc1 in $((mid - start)) s, 2-rank tests exit $rc2 in" \
  "$((late - mid)) s, reliability_e2e exit $rc3 in $((end - late)) s"
[ "$rc1" -eq 0 ] && [ "$rc2" -eq 0 ] && [ "$rc3" -eq 0 ]
