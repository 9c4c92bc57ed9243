#!/usr/bin/env bash
# End-to-end `switchyard train` on a BERT-MoE checkpoint (masked LM), through the binary:
#   1. `init --arch bert_moe` makes a tiny model; 6 masked-LM steps on 2 ranks lower the
#      held-out loss;
#   2. 3 steps + save + --resume + 3 steps end with weights and optimizer moments bitwise those
#      of the 6 straight steps (every safetensors file cmp-equal), experts stored by global id
#      (bert.encoder.layer.{i}.moe.experts.{j}.*);
#   3. the same 2-rank checkpoint resumes on 4 ranks;
#   4. router-only training with int8 experts changes only the router tensors;
#   5. --router mlp replaces the routers: the saved config names mlp and `infer` loads it;
#   6. --corpus with a checkpoint that has no tokenizer, and --what routers on a dense BERT,
#      are refused (exit 21) with the reason;
#   7. 1, 2 and 4 ranks on the same global batch (--deterministic) print the same losses (the
#      masks are drawn per global sequence, not per rank).
# Usage: bert_train_e2e.sh SWITCHYARD_BIN WORK_DIR DATA_DIR SOURCE_DIR.
set -uo pipefail
bin=$1 work=$2 data=$3 src=$4
export SY_DATA_DIR=$data SY_FAULT=
# shellcheck source=tests/launch/e2e_lib.sh
source "$(dirname "$0")/e2e_lib.sh"
e2e_begin
st="python3 $src/tests/launch/st_tool.py"
mpi() {  # mpi NP ARGS...
  local np=$1
  shift
  timeout 300 mpirun --oversubscribe -np "$np" -x OPENBLAS_NUM_THREADS -x SY_FAULT \
    -x SY_COLLECTIVE_TIMEOUT_S=60 "$bin" "$@"
}
has() {  # has NAME PATTERN: the log of NAME contains PATTERN
  if grep -q -- "$2" "$work/$1.log"; then echo "ok   $1 says '$2'"; else
    echo "FAIL $1: no '$2' in its log"; tail -n 15 "$work/$1.log"; fail=1; fi
}
m=$work/model
expect 0 init "$bin" init --arch bert_moe --set hidden_size=32 --set num_hidden_layers=2 \
  --set num_attention_heads=2 --set intermediate_size=64 --set num_experts=4 --set moe_every=1 \
  --set max_position_embeddings=64 --out "$m"
# Token ids in bert-base-uncased's range: sentences over 60 words with a fixed pattern, so the
# masked words are predictable from their neighbours.
python3 - "$work/tokens.bin" <<'PY'
import struct, sys
ids = [2000 + (7 * t + (t // 11)) % 60 for t in range(8192)]
with open(sys.argv[1], "wb") as f:
    f.write(b"SYTOK1\0\0" + struct.pack("<IIQQ", 1, 30522, len(ids), 0))
    f.write(struct.pack("<%di" % len(ids), *ids))
PY
base=(train --model "$m" --seq-len 32 --token-file "$work/tokens.bin"
  --eval-tokens 256 --eval-every 0 --lr 3e-3 --log-every 1)
args=("${base[@]}" --what all --batch 2)

# 1 + 2. 6 straight == 3 + resume + 3, bitwise; the held-out loss goes down.
expect 0 straight6 mpi 2 "${args[@]}" --steps 6 --checkpoint-dir "$work/c6"
has straight6 "masked LM"
first=$(grep -m1 "eval loss" "$work/straight6.log" | awk '{print $3}')
last=$(grep "eval loss" "$work/straight6.log" | tail -n 1 | awk '{print $3}')
check "eval loss falls ($first -> $last)" python3 -c "import sys; sys.exit(not $last < $first - 0.05)"
expect 0 first3 mpi 2 "${args[@]}" --steps 6 --checkpoint-dir "$work/c33" --save-every 3
rm -rf "$work/c33/step-00000006"
expect 0 resume3 mpi 2 "${args[@]}" --steps 6 --checkpoint-dir "$work/c33" --resume
has resume3 "resuming at step 3"
n=0
for f in "$work"/c6/step-00000006/*.safetensors; do
  if cmp -s "$f" "$work/c33/step-00000006/$(basename "$f")"; then n=$((n + 1)); else
    echo "FAIL resume: $(basename "$f") differs"; fail=1; fi
done
check "resume: $n safetensors files bitwise equal" test "$n" -ge 5
$st names "$work/c6/step-00000006/model-experts-00001-of-00002.safetensors" >"$work/names.txt"
check "experts saved by global id" grep -qx bert.encoder.layer.1.moe.experts.3.output.dense.weight \
  "$work/names.txt"
expect 0 infer_saved "$bin" infer --model "$work/c6" --token-file "$work/tokens.bin" --max-tokens 64

# 3. The 2-rank checkpoint resumes on 4 ranks.
cp -r "$work/c33" "$work/c4"
rm -rf "$work/c4/step-00000006"
expect 0 resume4 mpi 4 "${args[@]}" --steps 6 --checkpoint-dir "$work/c4" --resume
has resume4 "resuming at step 3"

# 4. Routers only, int8 experts: only router tensors change.
expect 0 routers mpi 2 "${base[@]}" --batch 2 --what routers --quantize int8 --steps 2 \
  --checkpoint-dir "$work/cr"
check "routers only: router.safetensors written" test -f "$work/cr/step-00000002/router.safetensors"
expect 0 routers_only_changed $st compare "$m" "$work/cr" --except .moe.gate.
has routers_only_changed "2 changed"

# 5. Replaced routers.
expect 0 router_replace mpi 2 "${args[@]}" --steps 2 --router mlp --checkpoint-dir "$work/cm"
has router_replace "router warm start: linear -> mlp, distilling"
has router_replace "top-1 agreement"
# --no-distill: fresh routers, said so.
expect 0 router_fresh mpi 2 "${args[@]}" --steps 1 --router mlp --no-distill \
  --checkpoint-dir "$work/cf"
has router_fresh "by fresh mlp routers (no warm start)"
check "the saved config names the mlp router" grep -q '"router": "mlp"' \
  "$work/cm/step-00000002/config.json"
expect 0 infer_mlp "$bin" infer --model "$work/cm" --token-file "$work/tokens.bin" --max-tokens 64

# 6. Refusals.
# --corpus reads the text through the checkpoint's WordPiece vocabulary (init writes vocab.txt);
# a folder without one is refused.
expect 0 corpus mpi 1 train --model "$m" --steps 1 --corpus excerpt --seq-len 32 --eval-tokens 256
cp -r "$m" "$work/notok" && rm -f "$work/notok/vocab.txt"
expect 21 corpus_no_tokenizer mpi 1 train --model "$work/notok" --steps 1 --corpus excerpt --seq-len 32
has corpus_no_tokenizer "token-file"
expect 0 init_dense "$bin" init --arch bert --set hidden_size=32 --set num_hidden_layers=1 \
  --set num_attention_heads=2 --set intermediate_size=64 --out "$work/dense"
expect 21 dense_routers mpi 1 train --model "$work/dense" --what routers --steps 1 --seq-len 32 \
  --token-file "$work/tokens.bin"
has dense_routers "no routers"
expect 21 bert_calibrate mpi 1 train --model "$m" --steps 1 --seq-len 32 \
  --token-file "$work/tokens.bin" --calibrate-balance 2
has bert_calibrate "--calibrate-balance is not supported for BERT models yet"

# 7. P = 1, 2, 4 on one global batch of 4 sequences: the same losses as printed.
for p in 1 2 4; do
  expect 0 "p$p" mpi "$p" "${base[@]}" --what all --steps 3 --batch $((4 / p)) --deterministic
  grep -E "loss" "$work/p$p.log" | sed -E 's/ lr .*//; s/ \(masked LM.*\)//' >"$work/p$p.loss"
done
check "P = 1 printed 5 losses" test "$(wc -l <"$work/p1.loss")" = 5
check "P = 2 prints P = 1's losses" cmp -s "$work/p1.loss" "$work/p2.loss"
check "P = 4 prints P = 1's losses" cmp -s "$work/p1.loss" "$work/p4.loss"

[ $fail = 0 ] && echo "bert_train_e2e: all checks passed"
exit $fail
