#!/usr/bin/env bash
# Fuzzing in CI: builds the libFuzzer target fuzz_NAME (default safetensors; trace) with clang
# (ASan + UBSan) in its own build folder, replays the committed corpus fuzz/corpus/NAME, then
# fuzzes for FUZZ_SECONDS (default 30) from it with fuzz/NAME.dict. Any crash, leak or UB report
# fails the test; the reproducer is left in WORK_DIR (copy it into fuzz/corpus/NAME/ to keep it
# as a regression case).
# Usage: fuzz_smoke.sh SOURCE_DIR WORK_DIR [NAME]. Exit 77 (ctest skip) without clang's libFuzzer.
set -uo pipefail
src=$1 work=$2 name=${3:-safetensors}
secs=${FUZZ_SECONDS:-30}
if ! command -v clang++ >/dev/null 2>&1; then
  echo "SKIP: clang++ not installed (launch/setup.sh installs clang and libclang-rt-14-dev)"
  exit 77
fi
if ! echo 'extern "C" int LLVMFuzzerTestOneInput(const unsigned char*, unsigned long) { return 0; }' |
  clang++ -x c++ -fsanitize=fuzzer - -o /dev/null 2>/dev/null; then
  echo "SKIP: clang++ cannot link -fsanitize=fuzzer (libclang-rt-*-dev missing)"
  exit 77
fi
mkdir -p "$work"
cmake -S "$src" -B "$work/build" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_COMPILER=clang++ \
  -DCMAKE_C_COMPILER=clang -DSY_WITH_CUDA=OFF -DSY_WITH_BENCH=OFF >"$work/configure.log" 2>&1 ||
  { cat "$work/configure.log"; exit 1; }
cmake --build "$work/build" -j"$(nproc)" --target "fuzz_$name" >"$work/build.log" 2>&1 ||
  { tail -n 40 "$work/build.log"; exit 1; }
fuzzer=$work/build/fuzz/fuzz_$name
export ASAN_OPTIONS=allocator_may_return_null=1:detect_leaks=1
# 1. every committed case, once
"$fuzzer" -runs=0 "$src/fuzz/corpus/$name" || { echo "FAIL: corpus replay"; exit 1; }
# 2. fuzz from a scratch copy of the corpus
rm -rf "$work/corpus" && mkdir -p "$work/corpus" && cp "$src/fuzz/corpus/$name"/* "$work/corpus/"
cd "$work" && "$fuzzer" "$work/corpus" -dict="$src/fuzz/$name.dict" -max_total_time="$secs" \
  -rss_limit_mb=2048 -print_final_stats=1 2>&1 | tail -n 25
rc=${PIPESTATUS[0]}
[ "$rc" -eq 0 ] && echo "fuzz_smoke: $secs s of fuzzing, no crash" || echo "fuzz_smoke: FAILED (exit $rc)"
exit "$rc"
