#!/usr/bin/env bash
# Across hosts, the projection against measurement: a routing trace recorded at P = 1 (the
# small synthetic job of project_e2e.sh, infer --trace, in the root namespace), projected to
# 4 ranks with 2 per node (ranks 0, 1 on node 0; 2, 3 on node 1), equals the load reports of
# the same job run for real as 4 ranks over 2 network-namespace hosts (mpirun puts ranks 0, 1
# on h1 and 2, 3 on h2) exactly: rows and bytes per rank pair, loads and drops per expert, and
# the projection's same-node / other-node split of the rows and bytes is the merged report's
# intra-host / inter-host split, per layer and over all layers (project_compare.py).
# Usage: multihost_project.sh SWITCHYARD_BIN WORK_DIR DATA_DIR SOURCE_DIR. Exit 77 (ctest
# skip) where namespaces cannot be made or without the GPT-2 tokenizer.
set -uo pipefail
bin=$1 work=$2 data=$3 src=$4
export SY_COLLECTIVE_TIMEOUT_S=30 OPENBLAS_NUM_THREADS=1
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# shellcheck source=tests/launch/multihost_lib.sh
source "$src/tests/launch/multihost_lib.sh"
mh_begin mhp 10.213.5 tokenizer

expect 0 trace-np1 small_synthetic 1 --trace "$work/np1"
expect 0 real-2x2 crun 4 "${small_synthetic_args[@]}" --out "$work/reports"
expect 0 report "$bin" report "$work/reports"
has report "inter-host"
project_exact 2x2 4 "$work/np1" "$work/reports" "$work/reports/cluster.json"
[ $fail = 0 ] && echo "multihost_project: all checks passed"
exit $fail
