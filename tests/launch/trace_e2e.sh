#!/usr/bin/env bash
# End-to-end checks of routing traces (--trace DIR, `switchyard trace`), as a user runs them:
#   1. the synthetic stack traced at 2 ranks routes the same tokens the same way as at 1 rank
#      (`switchyard trace diff`: same token set, expert ids, weights bitwise, drops, probabilities);
#   2. `trace stats` prints loads, pairs and fan-out (text and --json; --ep that does not divide
#      E is exit 21);
#   3. the README's NumPy lines read a shard (skipped, with a note, without NumPy);
#   4. `train --trace` on a tiny Qwen2-MoE over 2 ranks: every step, every rank's tokens; `infer
#      --model --router` distills the new router from the gate, or with --no-distill says it runs
#      fresh routers and only then traces synthetic routing;
#   5. truncated and tampered shards, a missing shard: exit 22 naming the file.
# Usage: trace_e2e.sh SWITCHYARD_BIN WORK_DIR DATA_DIR. Exit 77 (ctest skip) without the tokenizer.
set -uo pipefail
bin=$1 work=$2 data=$3
export SY_DATA_DIR=$data
# shellcheck source=tests/launch/e2e_lib.sh
source "$(dirname "$0")/e2e_lib.sh"
e2e_begin tokenizer

# 1. P = 2 routes like P = 1.
expect 0 synth-np1 small_synthetic 1 --trace "$work/np1" --trace-probs
expect 0 synth-np2 small_synthetic 2 --trace "$work/np2" --trace-probs
check shards-np2 test -s "$work/np2/rank-0.safetensors" -a -s "$work/np2/rank-1.safetensors"
expect 0 diff-np2-np1 "$bin" trace diff "$work/np2" "$work/np1"
check diff-says-same grep -q "same routing: 1024 tokens, 2 MoE layers (2 vs 1 ranks)" "$work/diff-np2-np1.log"
small_synthetic 1 --router mlp --trace "$work/other" >"$work/other.log" 2>&1
expect 1 diff-other-router "$bin" trace diff "$work/np1" "$work/other"
check diff-names-token grep -q "traces differ: token " "$work/diff-other-router.log"
expect 21 probs-without-trace small_synthetic 1 --trace-probs

# 2. Stats.
expect 0 stats "$bin" trace stats "$work/np2" --ep 4 --top 3
for pat in "layer 1 (model layer 1): 1024 tokens, 2048 assignments" "co-activated pairs" \
  "send fan-out at EP 4" "synthetic routing"; do
  check "stats: $pat" grep -qF "$pat" "$work/stats.log"
done
expect 0 stats-json "$bin" trace stats "$work/np2" --json
check stats-json-parses python3 -c "import json,sys; j=json.load(open(sys.argv[1])); \
assert j['ep']==2 and len(j['layers'])==2 and sum(j['layers'][0]['routed_E'])==2048" \
  "$work/stats-json.log"
expect 21 stats-bad-ep "$bin" trace stats "$work/np2" --ep 3

# 3. NumPy, as the README shows it (the system python when the first one has no NumPy).
py=""
for p in python3 /usr/bin/python3; do
  if "$p" -c "import numpy" 2>/dev/null; then py=$p && break; fi
done
if [ -z "$py" ]; then
  echo "note numpy: no python3 with NumPy here; the README's NumPy lines were not run"
else
  cat >"$work/read_trace.py" <<'PY'
import json, sys
import numpy as np

def read_shard(path):  # the README's lines
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
        buf = f.read()
    meta = header.pop("__metadata__")
    dtypes = {"I64": np.int64, "I32": np.int32, "F32": np.float32, "U8": np.uint8}
    arrays = {name: np.frombuffer(buf[t["data_offsets"][0]:t["data_offsets"][1]],
                                  dtypes[t["dtype"]]).reshape(t["shape"])
              for name, t in header.items()}
    return meta, arrays

meta, a = read_shard(sys.argv[1])
E, K, N = int(meta["experts"]), int(meta["top_k"]), int(meta["tokens"])
assert meta["format"] == "switchyard.trace" and meta["version"] == "1", meta
ids = a["layer.0.topk_ids"]
assert ids.shape == (N, K) and ids.max() < E and a["layer.0.probs"].shape == (N, E)
chosen = np.take_along_axis(a["layer.0.probs"], ids.astype(np.int64), axis=1)
top = -np.sort(-a["layer.0.probs"], axis=1)[:, :K]  # the K largest, as the router picked
assert np.array_equal(-np.sort(-chosen, axis=1), top)
assert np.array_equal(a["layer.0.topk_weights"], chosen)  # no norm_topk_prob: weights are p
print("numpy: %d tokens, E %d, K %d, kept %.3f" % (N, E, K, a["layer.0.kept"].mean()))
PY
  expect 0 numpy "$py" "$work/read_trace.py" "$work/np2/rank-1.safetensors"
fi

# 4. Training over 2 ranks, a tiny model.
expect 0 init "$bin" init --arch qwen2_moe --set hidden_size=32 --set num_hidden_layers=2 \
  --set num_experts=4 --set num_experts_per_tok=2 --set moe_intermediate_size=32 \
  --set shared_expert_intermediate_size=32 --set intermediate_size=64 \
  --set num_attention_heads=2 --set num_key_value_heads=1 --out "$work/model"
expect 0 train-np2 timeout 120 mpirun --oversubscribe -np 2 -x OPENBLAS_NUM_THREADS -x SY_DATA_DIR \
  "$bin" train --model "$work/model" --what routers --steps 3 --seq-len 16 --batch 2 \
  --corpus excerpt --eval-tokens 64 --eval-every 0 --trace "$work/train"
expect 0 train-stats "$bin" trace stats "$work/train" --json
check train-stats-tokens python3 -c "import json,sys; j=json.load(open(sys.argv[1])); \
t=j['trace']; assert t['source']=='train' and t['steps']==3 and t['tokens']==3*2*2*16, t" \
  "$work/train-stats.log"
# infer --model with --router: another kind than the checkpoint's is distilled from the gate on
# the input first (not synthetic routing), or with --no-distill a fresh, random router (said
# once, and its trace is synthetic routing); the checkpoint's own kind is not a replacement.
for r in mlp mlp-fresh linear; do
  flags=()
  [ "$r" = mlp ] && flags=(--distill-iters 5)
  [ "$r" = mlp-fresh ] && flags=(--no-distill)
  expect 0 "model-router-$r" "$bin" infer --model "$work/model" --router "${r%-fresh}" \
    "${flags[@]}" --corpus excerpt --max-tokens 64 --seq-len 16 --trace "$work/model-$r"
  expect 0 "model-router-$r-stats" "$bin" trace stats "$work/model-$r" --json
done
check model-router-mlp-fresh-says grep -q "note: --router mlp replaced every MoE gate by a freshly" \
  "$work/model-router-mlp-fresh.log"
check model-router-mlp-distills grep -q "router warm start: linear -> mlp, distilled on 64 router inputs" \
  "$work/model-router-mlp.log"
check model-router-linear-quiet bash -c "! grep -q 'note: --router\|warm start' '$work/model-router-linear.log'"
check model-router-synthetic python3 -c "import json,sys
a, b, c = (json.load(open(f))['trace'] for f in sys.argv[1:])
assert a['synthetic_routing'] and not b['synthetic_routing'] and not c['synthetic_routing'], (a, b, c)" \
  "$work/model-router-mlp-fresh-stats.log" "$work/model-router-mlp-stats.log" \
  "$work/model-router-linear-stats.log"

# 5. Bad traces: exit 22 naming the file.
cp -r "$work/np2" "$work/bad"
f=$work/bad/rank-1.safetensors
head -c $(($(stat -c %s "$f") - 5)) "$work/np2/rank-1.safetensors" >"$f"
expect 22 truncated "$bin" trace stats "$work/bad"
check truncated-names-file grep -q "rank-1.safetensors" "$work/truncated.log"
sed 's/"experts":"8"/"experts":"9"/' "$work/np2/rank-1.safetensors" >"$f"
expect 22 tampered "$bin" trace stats "$work/bad"
check tampered-names-field grep -q "rank-1.safetensors.*schema mismatch" "$work/tampered.log"
rm "$f"
expect 22 missing-shard "$bin" trace stats "$work/bad"
check missing-names-file grep -q "rank-1.safetensors missing (world size 2)" "$work/missing-shard.log"

[ $fail = 0 ] && echo "trace_e2e: all checks passed"
exit $fail
