#!/usr/bin/env bash
# Fuzzing in CI: the libFuzzer target fuzz_NAME (fuzz/fuzz_NAME.cc; NAME one of safetensors,
# trace, wordpiece, config, config_json, token_file, report, capacity), built with clang, ASan and UBSan in
# the shared sanitizer build folder (sanitize_build.sh), replays its committed corpus
# fuzz/corpus/NAME once, then runs RUNS executions (libFuzzer -runs: a fixed amount of work, not
# of time, so a slow CI machine fuzzes as much as a fast one) from a scratch copy of the corpus
# with fuzz/NAME.dict. Any crash, leak, UB report, timeout or out-of-memory fails the test; the
# reproducer is left in WORK_DIR/fuzz-NAME/ (copy it into fuzz/corpus/NAME/ to keep it as a
# regression case: step 1 replays it every run).
#
# Usage: fuzz_smoke.sh SOURCE_DIR WORK_DIR NAME [RUNS]
#   RUNS defaults to FUZZ_RUNS or 20000. FUZZ_SEED pins libFuzzer's seed (the log prints the one
#   used). Under ctest (SY_FUZZ_PREBUILT=1) the fixture sanitize_build has built the target;
#   run by hand the script builds what it needs. To fuzz longer than CI does, e.g. a million
#   executions of every target (about 1-6 min each on 2 cores):
#     for t in safetensors trace wordpiece config config_json token_file report capacity; do
#       bash tests/launch/fuzz_smoke.sh . /tmp/fz $t 1000000 || break; done
#   or one target for a time: FUZZ_SECONDS=600 bash tests/launch/fuzz_smoke.sh . /tmp/fz report
# Exit 77 (ctest skip) without clang's libFuzzer.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$1" && pwd) work=$2 name=$3
runs=${4:-${FUZZ_RUNS:-20000}}
bash "$here/sanitize_build.sh" --check || exit $?
mkdir -p "$work"
work=$(cd "$work" && pwd)
fuzzer=$work/build/fuzz/fuzz_$name
if [ -z "${SY_FUZZ_PREBUILT:-}" ]; then
  bash "$here/sanitize_build.sh" "$src" "$work" "fuzz_$name" || exit 1
fi
[ -x "$fuzzer" ] || { echo "FAIL: $fuzzer not built (see $work/build.log)"; exit 1; }
[ -d "$src/fuzz/corpus/$name" ] || { echo "FAIL: no corpus fuzz/corpus/$name"; exit 1; }
# Leaks count as findings here (one process, no MPI); a reader asked for absurd sizes must
# refuse them, so a failed allocation returns null rather than aborting the run.
export ASAN_OPTIONS=allocator_may_return_null=1:detect_leaks=1:check_initialization_order=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
out=$work/fuzz-$name
rm -rf "$out" && mkdir -p "$out/corpus" "$out/replay"
cd "$out" || exit 1  # libFuzzer writes its reproducers (crash-*, leak-*, ...) here
# 1. every committed case, once (a new input would go to the first folder, not the source tree)
"$fuzzer" -runs=0 "$out/replay" "$src/fuzz/corpus/$name" >"$out/replay.log" 2>&1 ||
  { tail -n 60 "$out/replay.log"; echo "FAIL: fuzz_$name: corpus replay"; exit 1; }
# 2. fuzz from a scratch copy of the corpus (new inputs land there, not in the source tree)
cp "$src/fuzz/corpus/$name"/* "$out/corpus/"
limit=(-runs="$runs")
[ -n "${FUZZ_SECONDS:-}" ] && limit=(-max_total_time="$FUZZ_SECONDS")
seed=()
[ -n "${FUZZ_SEED:-}" ] && seed=(-seed="$FUZZ_SEED")
start=$(date +%s)
"$fuzzer" "$out/corpus" -dict="$src/fuzz/$name.dict" "${limit[@]}" "${seed[@]}" \
  -rss_limit_mb=2048 -timeout=30 -print_final_stats=1 >"$out/fuzz.log" 2>&1
rc=$?
secs=$(($(date +%s) - start))
grep -E '^(INFO: Seed|stat::number_of_executed_units|stat::peak_rss_mb)' "$out/fuzz.log"
if [ "$rc" -ne 0 ]; then
  tail -n 80 "$out/fuzz.log"
  echo "fuzz_$name: FAILED (exit $rc) after $secs s; reproducer: $(ls "$out"/crash-* "$out"/leak-* \
    "$out"/timeout-* "$out"/oom-* 2>/dev/null | head -n 1)"
  exit 1
fi
what="$runs runs"
[ -n "${FUZZ_SECONDS:-}" ] && what="$FUZZ_SECONDS s of fuzzing"
echo "fuzz_$name: $what in $secs s ($(grep -o 'stat::number_of_executed_units: *[0-9]*' "$out/fuzz.log" |
  grep -o '[0-9]*$') executions), no finding"
