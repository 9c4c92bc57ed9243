#!/usr/bin/env bash
# Runs the whole test suite: fetches the pinned data if absent, builds, runs ctest (labels
# cpu and mpi; gpu tests skip with a message where no GPU is visible). Exit status is ctest's.
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/setup.sh --data --build
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
cd build
ctest --output-on-failure -j"$(nproc)" "$@"
