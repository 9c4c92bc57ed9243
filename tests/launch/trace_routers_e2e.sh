#!/usr/bin/env bash
# End-to-end check of launch/trace_routers.sh on a tiny random Qwen2-MoE checkpoint: two routers
# on 2 ranks, one fine-tuned (mlp: distillation + 2 steps into OUT/ckpt-mlp) and hash (replaced at
# inference), a few sequences traced, projected to 1,024 ranks. Checks that each trace has a
# shard per rank and names its router and model (the step folder of ckpt-mlp: project reads its
# config.json), neither is labelled synthetic routing, projection.json
# and projection.html exist and name both routers, the projection at P = 2 equals both runs'
# counts exactly (`project --measured`, calibrated here), a second run reuses the checkpoint,
# and an unknown router is refused before anything runs.
# Usage: trace_routers_e2e.sh SWITCHYARD_BIN WORK_DIR DATA_DIR REPO_ROOT
set -uo pipefail
bin=$1 work=$2 data=$3 repo=$4
here=$(cd "$(dirname "$0")" && pwd)
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OPENBLAS_NUM_THREADS=1
export SY_DATA_DIR=$data SY_BIN=$bin SY_COLLECTIVE_TIMEOUT_S=60
rm -rf "$work" && mkdir -p "$work"
fail=0
# shellcheck source=tests/launch/e2e_lib.sh
source "$here/e2e_lib.sh"
tiny_qwen "$work/tiny" "$work/excerpt.tokens"
out=$work/out
run() {
  timeout 300 bash "$repo/launch/trace_routers.sh" --model "$work/tiny" --routers mlp,hash \
    --steps 2 --distill-iters 30 --tokens 1024 --seq-len 64 --corpus excerpt --held-out 4096 \
    --ep 8,64,1024 --out "$out" "$@"
}
expect 0 script run
for pat in "train --what routers --router mlp" "step 2/2" "no learned parameters" \
  "routing trace: $out/hash/rank-<r>.safetensors (2 shards)" "projection: $out/projection"; do
  check "script: $pat" grep -qF -- "$pat" "$work/script.log"
done
for r in mlp hash; do
  check "$r: one shard per rank" test -f "$out/$r/rank-0.safetensors" -a -f "$out/$r/rank-1.safetensors"
  expect 0 "stats-$r" "$bin" trace stats "$out/$r" --json
  check "$r: trace names its router, not synthetic" python3 -c "import json,sys
m = json.load(open(sys.argv[1]))['trace']
r, model = sys.argv[2], sys.argv[3]
assert m['router'] == r and not m['synthetic_routing'] and m['model'] == model, (m, model)" \
    "$work/stats-$r.log" "$r" "$(if [ $r = mlp ]; then echo "$out/ckpt-mlp/step-00000002"; else echo "$work/tiny"; fi)"
done
check "mlp: the checkpoint holds an mlp router" grep -q '"switchyard_router": "mlp"' \
  "$out"/ckpt-mlp/step-00000002/config.json
check "projection.html" test -s "$out/projection/projection.html"
check "projection.json names both routers" python3 -c "import json,sys
j = json.load(open(sys.argv[1]))
assert [r['router'] for r in j['routers']] == ['mlp', 'hash'], j['routers']
assert not any(r['synthetic_routing'] for r in j['routers'])
assert j['routers'][0]['points'][-1]['ranks'] == 1024" "$out/projection/projection.json"
check "projection: no synthetic routing" bash -c "! grep -q 'synthetic routing' '$work/script.log'"
# The projection at P = 2 beside the runs, with the cluster model calibrated here: every count
# equal for both routers (sequences dealt interleaved, as the runs dealt them).
check "calibrated" test -s "$out/calibration/cluster.json"
for r in mlp hash; do
  check "measured $r: counts equal" grep -qE "^ +2  equal \([0-9]+ numbers\) .*$out/run-$r\$" \
    "$work/script.log"
done
expect 0 again run --routers mlp
check "again: checkpoint reused" grep -qF "ckpt-mlp already holds step 2: reused" "$work/again.log"
expect 2 unknown-router run --routers mlp,nosuch
check "unknown router named" grep -qF "unknown router 'nosuch'" "$work/unknown-router.log"
exit $fail
