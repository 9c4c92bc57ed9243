#!/usr/bin/env bash
# End-to-end checks of `switchyard train` checkpoints, through the binary as a user runs it:
#   1. 6 steps straight and 3 steps + --resume + 3 steps (2 ranks, full training) end with
#      bitwise-identical weights and optimizer moments (every safetensors file cmp-equal);
#   2. a crash injected while rank 1 writes its shard of the step-4 save (SY_FAULT
#      crash_in_save) leaves step 2 the latest checkpoint: `infer --model C` loads it and
#      --resume continues from it;
#   3. a byte flipped in a saved shard is refused (exit 23, "is corrupted", the file named),
#      and so is a bit flipped on its way to the disk (SY_FAULT bitflip_on_write);
#   4. a 2-rank checkpoint resumes on 4 ranks (experts stored by global id) and is refused on
#      3 ranks (8 experts) with both numbers in the message; without --resume a folder that
#      holds checkpoints is refused;
#   6. NaN logits injected on rank 1 at step 2: both ranks skip that step (skip policy), or
#      an Inf router gradient stops both ranks with exit 24 and the same message naming rank 1,
#      layer 1, step 1 (stop policy);
#   7. without --model, train and infer use the default model ($SY_DEFAULT_MODEL here);
#   8. one config: a --config file plus --set give the flags' config (--print-config output
#      identical) and the same run (same losses), the printed config reads back to itself,
#      and a bad field is exit 21 with one line naming it;
#   5. router-only fine-tuning with a replaced router (mlp_hadamard) on 4 ranks with int4
#      experts: every non-router tensor of the saved model is bitwise the source's, every
#      router tensor changed, router.safetensors holds exactly model.layers.{i}.mlp.gate.*.
# Usage: train_e2e.sh SWITCHYARD_BIN WORK_DIR DATA_DIR SOURCE_DIR.
set -uo pipefail
bin=$1 work=$2 data=$3 src=$4
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OPENBLAS_NUM_THREADS=1
export SY_DATA_DIR=$data
rm -rf "$work" && mkdir -p "$work"
fail=0
# shellcheck source=tests/launch/e2e_lib.sh
source "$(dirname "$0")/e2e_lib.sh"
st="python3 $src/tests/launch/st_tool.py"
mpi() {  # mpi NP ARGS...
  local np=$1
  shift
  timeout 300 mpirun --oversubscribe -np "$np" -x OPENBLAS_NUM_THREADS -x SY_FAULT -x SY_DEFAULT_MODEL \
    -x SY_COLLECTIVE_TIMEOUT_S=60 "$bin" "$@"
}
has() {  # has NAME PATTERN: the log of NAME contains PATTERN
  if grep -q -- "$2" "$work/$1.log"; then echo "ok   $1 says '$2'"; else
    echo "FAIL $1: no '$2' in its log"; tail -n 15 "$work/$1.log"; fail=1; fi
}
export SY_FAULT= SY_DEFAULT_MODEL=$work/no-default-model
m=$work/model
# The excerpt through the model's (Qwen) tokenizer once, so the runs skip loading it.
tiny_qwen "$m" "$work/tokens.bin"
args=(train --model "$m" --what all --seq-len 32 --batch 2 --token-file "$work/tokens.bin"
  --eval-tokens 256 --eval-every 0 --lr 3e-3)

# 1. 6 straight == 3 + resume + 3, bitwise.
expect 0 straight6 mpi 2 "${args[@]}" --steps 6 --checkpoint-dir "$work/c6"
has straight6 "eval loss"
expect 0 first3 mpi 2 "${args[@]}" --steps 6 --checkpoint-dir "$work/c33" --save-every 3
rm -rf "$work/c33/step-00000006"  # keep only the step-3 checkpoint of that run
expect 0 resume3 mpi 2 "${args[@]}" --steps 6 --checkpoint-dir "$work/c33" --resume
has resume3 "resuming at step 3"
n=0
for f in "$work"/c6/step-00000006/*.safetensors; do
  if cmp -s "$f" "$work/c33/step-00000006/$(basename "$f")"; then n=$((n + 1)); else
    echo "FAIL resume: $(basename "$f") differs"; fail=1; fi
done
echo "ok   6 vs 3 + resume + 3: $n safetensors files bitwise equal"
# The checkpoint folder is a model folder.
expect 0 infer_ckpt mpi 2 infer --model "$work/c6" --token-ids 1,2,3
has infer_ckpt "step-00000006"

# 2. A crash during the step-4 save: step 2 stays the latest, infer loads it, resume uses it.
SY_FAULT="crash_in_save@rank=1,step=4,arg=1000" mpi 2 "${args[@]}" --steps 6 \
  --checkpoint-dir "$work/cc" --save-every 2 >"$work/crash.log" 2>&1
code=$?
# The killed rank takes the job down: mpirun reports 128 + SIGKILL.
if [ "$code" != 137 ]; then echo "FAIL crash: exit $code, expected 137 (a rank killed)"; fail=1; else
  echo "ok   crash in save (exit $code)"; fi
has crash "crash_in_save at step 4"
if [ -d "$work/cc/step-00000002" ] && [ ! -d "$work/cc/step-00000004" ]; then
  echo "ok   after the crash: step-00000002 published, step 4 not"
else echo "FAIL after the crash: $(ls -a "$work/cc" | tr '\n' ' ')"; fail=1; fi
expect 0 infer_after_crash mpi 2 infer --model "$work/cc" --token-ids 1,2,3
has infer_after_crash "step-00000002"
expect 0 resume_after_crash mpi 2 "${args[@]}" --steps 6 --checkpoint-dir "$work/cc" --resume
has resume_after_crash "resuming at step 2"

# 3. Corruption is refused.
cp -r "$work/c6" "$work/cflip"
python3 - "$work/cflip/step-00000006/model-experts-00001-of-00002.safetensors" <<'EOF'
import sys
p = sys.argv[1]
with open(p, "r+b") as f:
    f.seek(5000); b = f.read(1); f.seek(5000); f.write(bytes([b[0] ^ 1]))
EOF
expect 23 flipped_byte mpi 2 "${args[@]}" --steps 8 --checkpoint-dir "$work/cflip" --resume
has flipped_byte "is corrupted: model-experts-00001-of-00002.safetensors"
expect 23 flipped_infer mpi 2 infer --model "$work/cflip" --token-ids 1,2,3
SY_FAULT="bitflip_on_write@rank=1,step=2,arg=4000" expect 0 bitflip_save mpi 2 "${args[@]}" \
  --steps 2 --checkpoint-dir "$work/cbit"
expect 23 bitflip_load mpi 2 infer --model "$work/cbit" --token-ids 1,2,3
has bitflip_load "is corrupted"

# 4. Another P: 2 -> 4 works (experts by global id), 2 -> 3 refused; no silent overwrite.
cp -r "$work/c6" "$work/c4"
expect 0 resume_p4 mpi 4 "${args[@]}" --steps 8 --checkpoint-dir "$work/c4" --resume
has resume_p4 "experts regrouped by global id"
expect 21 resume_p3 mpi 3 "${args[@]}" --steps 8 --checkpoint-dir "$work/c6" --resume
has resume_p3 "saved with 2 ranks; its 8 experts do not split over 3 ranks"
expect 21 no_resume mpi 2 "${args[@]}" --steps 8 --checkpoint-dir "$work/c6"
has no_resume "pass --resume"

# 6. NaN on one rank: every rank skips the same step, or every rank stops with the same message.
SY_FAULT="nan_logits@rank=1,step=2" expect 0 nan_skip mpi 2 "${args[@]}" --steps 4 \
  --checkpoint-dir "$work/cnan"
has nan_skip "step 3/4 skipped: non-finite logits on rank 1, layer -1, step 2"
has nan_skip "(1 skipped)"
SY_FAULT="inf_grad@rank=1,step=1,layer=1" expect 24 nan_stop mpi 2 "${args[@]}" --steps 4 \
  --on-nonfinite stop
# Both ranks stop (exit 24) with the same agreed message, which rank 0 prints once.
has nan_stop "\[switchyard\] train: step: .*non-finite gradient on rank 1, layer 1, step 1"
if [ "$(grep -c "train: step: .*non-finite gradient" "$work/nan_stop.log")" != 1 ]; then
  echo "FAIL nan_stop: the agreed message is not printed exactly once"; fail=1; fi

# 5. Router-only with a replaced router, int4 experts, 4 ranks: only routers change.
expect 0 routers_mlp_hadamard mpi 4 train --what routers --router mlp_hadamard --model "$m" \
  --steps 4 --seq-len 32 --batch 2 --token-file "$work/tokens.bin" --eval-tokens 256 --eval-every 2 \
  --quantize int4 --checkpoint-dir "$work/cr" --out "$work/cr_reports" --distill-iters 60 \
  --distill-tokens 256
has routers_mlp_hadamard "router warm start: linear -> mlp_hadamard"
has routers_mlp_hadamard "  distilled layer 0 (1/2): KL .* s, ETA"  # progress as it goes
has routers_mlp_hadamard "eval loss"
if $st compare "$m" "$work/cr" --except .mlp.gate. >"$work/compare.log" 2>&1; then
  echo "ok   router-only: $(tail -n 1 "$work/compare.log")"
else echo "FAIL router-only: non-router tensors changed"; cat "$work/compare.log"; fail=1; fi
$st names "$work/cr/$(ls "$work/cr")/router.safetensors" >"$work/router_names.log"
if grep -qv '^model\.layers\.[0-9]*\.mlp\.gate\.' "$work/router_names.log" ||
  ! grep -q 'mlp\.gate\.' "$work/router_names.log"; then
  echo "FAIL router.safetensors: $(tr '\n' ' ' <"$work/router_names.log")"; fail=1
else echo "ok   router.safetensors: $(wc -l <"$work/router_names.log") tensors, all mlp.gate.*"; fi
n_reports=$(ls "$work/cr_reports"/rank-*.pb 2>/dev/null | wc -l)
if [ "$n_reports" = 4 ]; then echo "ok   4 load reports"; else
  echo "FAIL load reports: $n_reports"; fail=1; fi
expect 0 report "$bin" report "$work/cr_reports"
# A step's batch of 2 sequences is one entry per layer and step (2 x 32 tokens), not two that
# `report` refuses ("two entries for layer 0 step 1").
check one-entry-per-step python3 -c "import json,sys
r = json.load(open(sys.argv[1]))
keys = [(e.get('layer', 0), e.get('step', '0')) for e in r['entries']]
assert len(keys) == len(set(keys)) and keys, keys
assert all(int(e['tokens']) == 64 for e in r['entries']), [e['tokens'] for e in r['entries']]" \
  "$work/cr_reports/rank-0.json"

# 6b. Routing that collapses (a huge learning rate, no balancing loss) is said, naming the layers.
expect 0 collapse mpi 2 train --model "$m" --what routers --steps 4 --seq-len 32 --batch 2 \
  --token-file "$work/tokens.bin" --eval-tokens 256 --eval-every 0 --log-every 1 --lr 100 \
  --warmup 0 --aux-loss 0
has collapse "warning: routing collapsed in MoE layer.* at step .* a larger --aux-loss (now 0)"

# 6c. The balance bias on the checkpoint's gate (--balance-rate: the model has none, it starts at
# zero) and the calibration after the last step: the bias is saved with its rate, and a load
# of the result routes with it (infer reads config.json's rate).
expect 0 balance mpi 2 train --model "$m" --what routers --steps 2 --seq-len 32 --batch 2 \
  --token-file "$work/tokens.bin" --eval-tokens 256 --balance-rate 0.01 --calibrate-balance 5 \
  --checkpoint-dir "$work/cbal"
has balance "balance calibration 5/5: worst layer max/mean"
has balance "balance calibration: 5 forward passes of 2 x 32 tokens per rank, weights fixed"
check balance-rate-saved grep -q '"switchyard_router_balance_rate": 0.01' \
  "$work/cbal/step-00000002/config.json"
check balance-bias-saved bash -c "cat '$work/cbal/step-00000002/'*.safetensors | grep -qa 'mlp.gate.balance_bias'"
expect 0 balance_infer mpi 2 infer --model "$work/cbal" --token-ids 1,2,3
expect 0 no_bias_calibrate mpi 2 train --model "$m" --what routers --steps 1 --seq-len 32 \
  --batch 1 --token-file "$work/tokens.bin" --eval-tokens 256 --calibrate-balance 3
has no_bias_calibrate "balance calibration skipped: no router has a balance bias"
expect 21 balance_bad mpi 1 train --model "$m" --what routers --steps 1 --seq-len 32 \
  --token-file "$work/tokens.bin" --eval-tokens 256 --balance-rate 2
has balance_bad "balance_rate (--balance-rate) must be <= 1"

# 7. The default model: train and infer without --model use it (here: this test's model).
SY_DEFAULT_MODEL=$m expect 0 default_train mpi 2 train --what routers --steps 1 --seq-len 32 \
  --batch 1 --token-file "$work/tokens.bin" --eval-tokens 256
has default_train "switchyard train: $m"
SY_DEFAULT_MODEL=$work/cr expect 0 default_infer mpi 2 infer --corpus excerpt --max-tokens 512 \
  --out "$work/default_reports"
has default_infer "the embedded default model"
has default_infer "next-token loss over"
SY_DEFAULT_MODEL=$work/cr expect 0 default_router mpi 1 infer --router hash --corpus excerpt \
  --max-tokens 512
has default_router "runs the synthetic MoE stack (seeded, untrained routers and experts"
SY_DEFAULT_MODEL=$work/absent expect 22 default_absent mpi 2 train --what routers --steps 1
has default_absent "launch/train_default.sh"

# 8. One config system: flags == --config + --set, --print-config round trip, a bad field.
same() {  # same NAME A B: identical files
  if cmp -s "$2" "$3"; then echo "ok   $1"; else echo "FAIL $1: $2 and $3 differ"; diff "$2" "$3" | head; fail=1; fi
}
mpi 1 "${args[@]}" --steps 2 --print-config >"$work/flags.pbtxt"
printf 'model: "%s"\nwhat: "all"\nseq_len: 32\nbatch: 2\nsteps: 9\n' "$m" >"$work/partial.pbtxt"
mpi 1 train --config "$work/partial.pbtxt" --set "token_file=$work/tokens.bin" --set eval_tokens=256 \
  --set eval_every=0 --lr 3e-3 --steps 7 --set steps=2 --print-config >"$work/set.pbtxt"
same config-vs-flags "$work/set.pbtxt" "$work/flags.pbtxt"
mpi 1 train --config "$work/flags.pbtxt" --print-config >"$work/again.pbtxt"
same print-config-round-trip "$work/again.pbtxt" "$work/flags.pbtxt"
expect 0 run_flags mpi 2 "${args[@]}" --steps 2
expect 0 run_config mpi 2 train --config "$work/set.pbtxt"
for r in run_flags run_config; do
  grep -o -e '^eval loss .*' -e '^step [0-9]*/[0-9]* loss [0-9.]*' "$work/$r.log" >"$work/$r.losses"
done
if [ -s "$work/run_flags.losses" ]; then same config-run-vs-flags-run "$work/run_config.losses" \
  "$work/run_flags.losses"; else echo "FAIL run_flags: no losses"; fail=1; fi
expect 21 bad_field mpi 2 train --config "$work/flags.pbtxt" --set no_such=1
has bad_field "train: config: .*--set no_such: no field 'no_such' in TrainConfig"
if [ "$(grep -c '^\[switchyard\]' "$work/bad_field.log")" != 1 ]; then  # mpirun adds its own
  echo "FAIL bad_field: not one line"; cat "$work/bad_field.log"; fail=1; fi
expect 21 bad_value mpi 2 "${args[@]}" --steps two
has bad_value "\-\-steps: 'two' is not a valid int64"
exit $fail
