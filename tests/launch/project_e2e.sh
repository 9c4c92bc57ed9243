#!/usr/bin/env bash
# End-to-end checks of `switchyard project`, as a user runs it:
#   1. a trace recorded at P = 1 (synthetic stack, infer --trace), projected to P = 2 and 4,
#      equals the load reports of real P = 2 and 4 runs of the same configuration exactly: rows
#      and bytes per rank pair, loads and drops per expert (project_compare.py), and the
#      recomputed drops equal the recorded ones;
#   2. the default sweep to 1,024 ranks prints a table per router, labels synthetic routing,
#      says it samples whole sequences, and writes projection.json;
#   1b. --measured prints the same comparison and the times beside; --calibrate at P = 2 writes
#      a cluster file the projection reads;
#   3. bad input: a cluster file with a negative bandwidth (exit 22 naming file and field), an
#      unknown preset and P that does not divide E (exit 21), a truncated trace (exit 22).
# Usage: project_e2e.sh SWITCHYARD_BIN WORK_DIR DATA_DIR. Exit 77 (ctest skip) without the tokenizer.
set -uo pipefail
bin=$1 work=$2 data=$3
here=$(cd "$(dirname "$0")" && pwd)
export SY_DATA_DIR=$data
# shellcheck source=tests/launch/e2e_lib.sh
source "$here/e2e_lib.sh"
e2e_begin tokenizer
project() { "$bin" project "$work/np1" --hidden 32 --ffn-hidden 32 "$@"; }

# 1. Projection == measurement at P = 2 and 4 (2 ranks per "node": P = 4 has other-node rows).
expect 0 trace-np1 small_synthetic 1 --trace "$work/np1"
for P in 2 4; do
  expect 0 "real-np$P" small_synthetic "$P" --out "$work/rep$P"
  project_exact "np$P" "$P" "$work/np1" "$work/rep$P"
done
grep -A2 "measured beside" "$work/project-np4.log"

# 1b. --calibrate at P = 2 (one host: the self copy and the same-node tier measured, the
# other-node tier the preset's) writes a cluster file that `project --cluster` reads.
expect 0 calibrate timeout 120 mpirun --oversubscribe -np 2 -x OPENBLAS_NUM_THREADS "$bin" project \
  --calibrate --calibrate-iters 3 --hidden 32 --ffn-hidden 32 --out "$work/cal"
for pat in "2 ranks on 1 host(s)" "same-node  measured: latency" \
  "other-node not measured (one host), from dgx-h100" "wrote $work/cal/cluster.json"; do
  check "calibrate: $pat" grep -qF -- "$pat" "$work/calibrate.log"
done
check calibrate-json python3 -c "import json,sys; c=json.load(open(sys.argv[1])); \
assert c['gpus_per_node']==2 and c['same_node']['bandwidth_GBps']>0 and c['flops']>0; \
k=c['calibration']; assert len(k['samples'])==12 and k['same_node']==k['same_rank']=='measured', k" "$work/cal/cluster.json"
expect 0 project-calibrated project --ep 2 --cluster "$work/cal/cluster.json" --out "$work/pcal"
check project-calibrated-names grep -q "cluster calibrated (file $work/cal/cluster.json): 2 GPUs/node" \
  "$work/project-calibrated.log"
expect 21 calibrate-one-rank "$bin" project --calibrate --out "$work/x"

# 2. The sweep to 1,024 ranks (beyond E = 8: EP 8 x DP), two routers.
small_synthetic 1 --router mlp --trace "$work/mlp" >"$work/trace-mlp.log" 2>&1
expect 0 sweep "$bin" project "$work/np1,$work/mlp" --hidden 32 --ffn-hidden 32 \
  --ep 2,4,8,64,1024 --out "$work/sweep"
for pat in "router linear (synthetic routing)" "router mlp (synthetic routing)" \
  "each rank replays 1 whole sequences" "preset, from published figures" "  1024  8x128 " \
  "wrote $work/sweep/projection.json"; do
  check "sweep: $pat" grep -qF -- "$pat" "$work/sweep.log"
done
check sweep-json python3 -c "import json,sys; j=json.load(open(sys.argv[1])); \
assert j['format']=='switchyard.projection' and len(j['routers'])==2; \
p=j['routers'][0]['points'][-1]; assert p['ranks']==1024 and p['ep']==8 and p['dp']==128, p['ranks']; \
assert 'pair_rows' not in p['layers'][0] and p['time_s']>0" "$work/sweep/projection.json"

# 3. Bad input.
cat >"$work/neg.json" <<'JSON'
{"flops": 1e14, "same_node": {"latency_us": 2, "bandwidth_GBps": 100},
 "other_node": {"latency_us": 5, "bandwidth_GBps": -25}}
JSON
expect 22 cluster-negative project --ep 2 --cluster "$work/neg.json" --out "$work/x"
check cluster-negative-names grep -q "neg.json: field other_node.bandwidth_GBps" \
  "$work/cluster-negative.log"
expect 21 cluster-unknown project --ep 2 --cluster dgx-b9000 --out "$work/x"
expect 21 ep-not-divisor project --ep 3 --out "$work/x"
check ep-not-divisor-says grep -q "does not divide the 8 experts" "$work/ep-not-divisor.log"
expect 21 no-out project --ep 2
expect 21 measured-other-p project --ep 4 --measured "$work/rep2" --out "$work/x"
check measured-other-p-says grep -q "a run at 2 ranks, but --ep does not project P = 2" \
  "$work/measured-other-p.log"
f=$work/np1/rank-0.safetensors
mkdir -p "$work/bad" && head -c $(($(stat -c %s "$f") - 5)) "$f" >"$work/bad/rank-0.safetensors"
expect 22 truncated-trace "$bin" project "$work/bad" --out "$work/x"
check truncated-names-file grep -q "rank-0.safetensors" "$work/truncated-trace.log"

[ $fail = 0 ] && echo "project_e2e: all checks passed"
exit $fail
