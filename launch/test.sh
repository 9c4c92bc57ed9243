#!/usr/bin/env bash
# Runs the whole test suite: fetches the pinned data if absent, builds, runs ctest (labels
# cpu and mpi; gpu tests skip with a message where no GPU is visible). Exit status is ctest's.
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/setup.sh --data --build
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# reliability_e2e and train_e2e also run through the sanitized binary (sanitize_tests: the same
# checks under ASan + UBSan). Where clang can build that, the whole suite (no arguments) leaves
# out their unsanitized copies, so CI does not pay for the two longest probes twice; `ctest` by
# hand, or this script with arguments, runs them too.
args=("$@")
if [ ${#args[@]} -eq 0 ] && bash tests/launch/sanitize_build.sh --check >/dev/null 2>&1; then
  args=(-E '^(reliability_e2e|train_e2e)$')
  echo "test.sh: reliability_e2e and train_e2e run sanitized only (in sanitize_tests)"
fi
cd build
ctest --output-on-failure -j"$(nproc)" "${args[@]}"
