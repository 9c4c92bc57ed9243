#!/usr/bin/env bash
# Across hosts, resume: router fine-tuning (`train --what routers`) of a tiny Qwen2-MoE on
# 4 ranks over 2 network-namespace hosts, checkpointing every 3 steps into one folder that
# every host sees (the one filesystem the namespaces share). Rank 3 (on h2) is killed in step
# 5 (SY_FAULT kill): the job ends with 137 and step 3 stays the latest checkpoint; --resume
# continues from it to step 6, and every saved file equals an uninterrupted 6-step run's,
# byte for byte.
# Usage: multihost_resume.sh SWITCHYARD_BIN WORK_DIR DATA_DIR SOURCE_DIR. Exit 77 (ctest
# skip) where namespaces cannot be made.
set -uo pipefail
bin=$1 work=$2 data=$3 src=$4
export SY_DATA_DIR=$data SY_COLLECTIVE_TIMEOUT_S=60 SY_FAULT=
# shellcheck source=tests/launch/multihost_lib.sh
source "$src/tests/launch/multihost_lib.sh"
mh_begin mhs 10.213.4

m=$work/model
tiny_qwen "$m" "$work/tokens.bin"
args=(train --model "$m" --what routers --seq-len 32 --batch 2 --token-file "$work/tokens.bin"
  --eval-tokens 256 --eval-every 0 --lr 3e-3 --steps 6)

expect 0 straight6 crun 4 "${args[@]}" --checkpoint-dir "$work/c6"
SY_FAULT="kill@rank=3,step=5" expect 137 killed crun 4 "${args[@]}" --save-every 3 \
  --checkpoint-dir "$work/ck"
has killed "process rank 3 with PID [0-9]+ on node h2 exited on signal 9"
if [ -d "$work/ck/step-00000003" ] && [ ! -d "$work/ck/step-00000006" ]; then
  echo "ok   after the kill: step-00000003 is the latest checkpoint"
else echo "FAIL after the kill: $(ls "$work/ck" | tr '\n' ' ')"; fail=1; fi
expect 0 resumed crun 4 "${args[@]}" --save-every 3 --checkpoint-dir "$work/ck" --resume
has resumed "resuming at step 3"
n=0
for f in "$work"/c6/step-00000006/*; do
  [ -f "$f" ] || continue
  case "$(basename "$f")" in *.safetensors) ;; *) continue ;; esac
  if cmp -s "$f" "$work/ck/step-00000006/$(basename "$f")"; then n=$((n + 1)); else
    echo "FAIL resume: $(basename "$f") differs"; fail=1; fi
done
if [ $n -gt 0 ]; then echo "ok   uninterrupted vs killed + resumed: $n safetensors files bitwise equal"
else echo "FAIL resume: no safetensors files compared"; fail=1; fi
[ $fail = 0 ] && echo "multihost_resume: all checks passed"
exit $fail
