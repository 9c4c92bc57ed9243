#!/usr/bin/env bash
# The clang build folder with SY_SANITIZE=ON (ASan + UBSan on every library, test and fuzz
# target) shared by the libFuzzer runs (fuzz_smoke.sh) and the sanitized tests
# (sanitize_tests.sh): configured once, built incrementally, at low priority (nice) so other
# work on the machine keeps its CPU.
#
#   sanitize_build.sh SOURCE_DIR WORK_DIR [TARGET...]   build WORK_DIR/build (default targets:
#                                                       fuzz_all and sanitize_tests, i.e. all)
#   sanitize_build.sh --check                           exit 77 unless clang can build them
#
# Exit 77 (ctest skip) without clang or its libFuzzer / sanitizer runtimes (launch/setup.sh
# installs clang and libclang-rt-14-dev). ctest runs it as the fixture sanitize_build.
set -uo pipefail

check_clang() {
  if ! command -v clang++ >/dev/null 2>&1; then
    echo "SKIP: clang++ not installed (launch/setup.sh installs clang and libclang-rt-14-dev)"
    exit 77
  fi
  if ! echo 'extern "C" int LLVMFuzzerTestOneInput(const unsigned char*, unsigned long) { return 0; }' |
    clang++ -x c++ -fsanitize=fuzzer,address,undefined - -o /dev/null 2>/dev/null; then
    echo "SKIP: clang++ cannot link -fsanitize=fuzzer,address,undefined (libclang-rt-*-dev missing)"
    exit 77
  fi
}

if [ "${1:-}" = --check ]; then
  check_clang
  exit 0
fi
src=$1 work=$2
shift 2
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(fuzz_all sanitize_tests)
check_clang
mkdir -p "$work"
start=$(date +%s)
# Release (NDEBUG, as CI's own build) with SY_SANITIZE's -O0 (top-level CMakeLists.txt says why).
# CUDA and the benchmarks are not part of it.
# ccache, where a developer has it, makes a fresh folder's build a cache lookup.
launcher=()
command -v ccache >/dev/null 2>&1 &&
  launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_C_COMPILER_LAUNCHER=ccache)
if [ ! -f "$work/build/CMakeCache.txt" ]; then
  cmake -S "$src" -B "$work/build" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_COMPILER=clang++ \
    -DCMAKE_C_COMPILER=clang -DSY_SANITIZE=ON -DSY_WITH_CUDA=OFF -DSY_WITH_BENCH=OFF \
    "${launcher[@]}" >"$work/configure.log" 2>&1 || { cat "$work/configure.log"; exit 1; }
fi
nice -n 5 cmake --build "$work/build" -j"$(nproc)" --target "${targets[@]}" >"$work/build.log" 2>&1 ||
  { grep -E 'error|Error' "$work/build.log" | head -n 20; tail -n 40 "$work/build.log"; exit 1; }
echo "sanitize_build: ${targets[*]} built in $(($(date +%s) - start)) s ($work/build)"
