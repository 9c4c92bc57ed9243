#!/usr/bin/env bash
# `switchyard report` after the commands that write load reports, as a user runs them:
#   1. every command that prints "merge with: switchyard report DIR" (infer on the synthetic
#      stack, infer --model, train at its default --batch) is followed by exactly that command,
#      which must succeed; train's reports carry each logged step's loss and every entry the
#      per-token rank counts;
#   2. `switchyard report A B` compares runs: compare.html and compare.md in the folders'
#      common parent (or --out), one column per run labelled by router where the routers
#      differ, the communication rows, the warm-up left out and said so, loss where a run
#      computed it (n/a elsewhere), the single-run report's steady figures;
#   3. headless Chromium (when installed) finds every chart of compare.html in its DOM.
# Usage: report_compare_e2e.sh SWITCHYARD_BIN WORK_DIR DATA_DIR SOURCE_DIR. Exit 77 (ctest skip)
# without the tokenizer.
set -uo pipefail
bin=$1 work=$2 data=$3 src=$4
# shellcheck source=tests/launch/e2e_lib.sh
source "$(dirname "$0")/e2e_lib.sh"
e2e_begin tokenizer
export SY_DATA_DIR=$data
mpi() {  # mpi NP ARGS...
  local np=$1
  shift
  timeout 300 mpirun --oversubscribe -np "$np" -x OPENBLAS_NUM_THREADS -x SY_DATA_DIR \
    -x SY_COLLECTIVE_TIMEOUT_S=60 "$bin" "$@"
}
has() {  # has NAME PATTERN: the log of NAME contains PATTERN (a grep -E pattern)
  if grep -qE -- "$2" "$work/$1.log"; then echo "ok   $1 says '$2'"; else
    echo "FAIL $1: no '$2' in its log"; tail -n 15 "$work/$1.log"; fail=1; fi
}
# merged NAME: runs the command NAME's log printed after "merge with:" (switchyard = $bin),
# exactly as printed, into the log NAME-merge.
merged() {
  local line
  line=$(grep -oE 'merge with: switchyard report .*$' "$work/$1.log" | head -n 1)
  if [ -z "$line" ]; then echo "FAIL $1: no 'merge with' line"; fail=1; return; fi
  read -r -a words <<<"${line#merge with: switchyard }"
  expect 0 "$1-merge" "$bin" "${words[@]}"
}

# 1. The commands that print "merge with", each followed by that command.
expect 0 syn-linear small_synthetic 2 --router linear --out "$work/runs/linear"
merged syn-linear
expect 0 syn-hash small_synthetic 2 --router hash --out "$work/runs/hash"
merged syn-hash
m=$work/model
tiny_qwen "$m" "$work/tokens.bin"
expect 0 model-infer mpi 2 infer --model "$m" --token-ids 1,5,9,100,7,3,999,42,0,17,256,511 \
  --out "$work/model-infer"
merged model-infer
expect 0 train mpi 2 train --model "$m" --what all --seq-len 32 --steps 3 \
  --token-file "$work/tokens.bin" --eval-tokens 256 --eval-every 0 --out "$work/train"
merged train
has train-merge "training loss \(last step\)"
n_loss=$(python3 -c "import json,sys; print(len(json.load(open(sys.argv[1]))['step_losses']))" \
  "$work/train/rank-1.json")
check "train: 3 step losses in rank-1.json (got $n_loss)" [ "$n_loss" = 3 ]
check "train: every entry counts its tokens by ranks" python3 -c "
import json, sys
r = json.load(open(sys.argv[1]))
P = r['world_size']
for e in r['entries']:
    h = [int(x) for x in e['tokens_by_rank_count']]
    assert len(h) == P + 1 and sum(h) == int(e['tokens']), e
" "$work/train/rank-0.json"

# 2. Runs compared: labels by router, files in the common parent.
expect 0 compare "$bin" report "$work/runs/linear" "$work/runs/hash"
for f in compare.html compare.md; do
  check "compare wrote runs/$f" [ -s "$work/runs/$f" ]
done
has compare "^ +linear +hash$"
has compare "assignments kept on their own rank"
has compare "receive imbalance"
has compare "distinct ranks per token"
has compare "the first 1 recorded step of each run left out"
check "compare.md has the communication table" grep -q "^| communication | linear | hash |" \
  "$work/runs/compare.md"
# A training run beside an inference run (the same router: labelled by folder), --warmup 0.
expect 0 compare-mixed "$bin" report "$work/train" "$work/model-infer" --warmup 0 --out "$work/mixed"
has compare-mixed "^ +train +model-infer$"
has compare-mixed "training loss \(last step\) +[0-9.]+ +n/a"
has compare-mixed "the first 0 recorded steps"
check "compare-mixed wrote mixed/compare.html" [ -s "$work/mixed/compare.html" ]
expect 22 compare-missing "$bin" report "$work/runs/linear" "$work/nowhere"
expect 21 compare-bad-warmup "$bin" report "$work/runs/linear" --warmup -1

# 3. Every chart in Chromium's DOM.
browser=$(command -v chromium || command -v chromium-browser || true)
if [ -n "$browser" ]; then
  timeout 120 "$browser" --headless --no-sandbox --disable-gpu --dump-dom \
    "file://$work/runs/compare.html" >"$work/dom.html" 2>"$work/chromium.log"
  expect 0 compare-dom python3 "$src/tests/launch/svg_dom_check.py" "$work/dom.html" \
    bar-imbalance bar-load_cv bar-drops bar-local_fraction bar-recv_imbalance \
    bar-ranks_per_token bar-bytes_per_token bar-moe_ms bar-exchange_ms line-imbalance \
    line-recv_imbalance line-exchange_ms heat-0 heat-1 traffic-0 traffic-1
else
  echo "skip chromium: not installed"
fi
exit $fail
