#!/usr/bin/env bash
# Reliability probes (issue 13, ../shared/RELIABILITY.md; docs/RELIABILITY.md maps each row to
# its case): every probe ends with its documented exit code, a message naming the cause, and
# within a time bound; no input ends in a signal.
#   1. empty inputs: a token file with zero ids, a corpus that gives no tokens;
#   2. JSON nested 100,000 deep in config.json: refused before parsing (exit 22);
#   3. ranks that disagree (MPMD launches): --lr, --batch in train, --quantize in
#      infer --model, a --set in synthetic infer: exit 21, rank 0 names each differing setting
#      with every rank's value (docs/RELIABILITY.md D1); ranks resuming from different latest steps of
#      the same --checkpoint-dir path (a mount namespace per rank): exit 23 naming both steps
#      (E6); a truncated or emptied shard of the latest checkpoint: exit 23 naming it (E3);
#      the same run twice is bitwise the same (C6); a 2-rank checkpoint on 1 and 4 ranks gives
#      the same logits (E4);
#   4. --resume refuses a changed --lr or --batch, naming both values; --resume-override
#      accepts them with a warning;
#   5. sizes without bounds (data.batch_groups 2^57, moe.num_layers 1e9, moe.d_model 1e12,
#      moe.ffn_hidden 2^62, --seq-len 2^40): exit 21 naming the field, at once;
#   6. unbounded reads: --config /dev/zero, a FIFO, a folder: exit 22 naming what it is, at once;
#   7. faults: oom (exit 26, "out of memory", nothing published: the previous checkpoint stays
#      the latest, A7), enospc during a save (exit 23 on every rank, the previous checkpoint
#      stays the latest and resumes, E2), enospc on a load report (a warning and the count of
#      reports not written, exit 0, G1), a straggler named by the merged report (A5), a skipped
#      step counted in it (C3),
#      infer --model carries out SY_FAULT (hang -> 20), a fault a command cannot fire (21);
#   8. wrong class or late: a symbolic-link loop as --model (22), a --checkpoint-dir that
#      cannot be written (23 before step 1), a --dump that fails (23, no .npy left), train
#      --corpus FILE (works).
# Usage: reliability_e2e.sh SWITCHYARD_BIN WORK_DIR DATA_DIR. sanitize_tests.sh runs it again
# with the ASan + UBSan binary (docs/RELIABILITY.md G3).
set -uo pipefail
bin=$1 work=$2 data=$3
# shellcheck source=tests/launch/e2e_lib.sh
source "$(dirname "$0")/e2e_lib.sh"
e2e_begin
export SY_DATA_DIR=$data SY_DEFAULT_MODEL=$work/no-default-model SY_FAULT=
mpi() {  # mpi NP ARGS...: one program on NP ranks
  local np=$1
  shift
  timeout 120 mpirun --oversubscribe -np "$np" -x OPENBLAS_NUM_THREADS -x SY_FAULT \
    -x SY_DEFAULT_MODEL -x SY_COLLECTIVE_TIMEOUT_S=20 "$bin" "$@"
}
mpmd() {  # mpmd "ARGS OF RANK 0" "ARGS OF RANK 1": two programs (an MPMD launch)
  # shellcheck disable=SC2086
  timeout 120 mpirun --oversubscribe -x OPENBLAS_NUM_THREADS -x SY_DEFAULT_MODEL \
    -x SY_COLLECTIVE_TIMEOUT_S=20 -np 1 "$bin" $1 : -np 1 "$bin" $2
}
# within SECS CODE NAME CMD...: expect CODE, in at most SECS seconds of wall time (times
# $SY_TIME_SCALE, 4 in the sanitized build: sanitize_tests.sh).
within() {
  local secs=$(($1 * ${SY_TIME_SCALE:-1})) code=$2 name=$3
  shift 3
  local t0=$SECONDS
  expect "$code" "$name" "$@"
  local took=$((SECONDS - t0))
  if [ "$took" -gt "$secs" ]; then echo "FAIL $name: took $took s, more than $secs s"; fail=1; fi
}
has() {  # has NAME PATTERN: the log of NAME contains PATTERN (fixed string)
  if grep -qF -- "$2" "$work/$1.log"; then echo "ok   $1 says '$2'"; else
    echo "FAIL $1: no '$2' in its log"; tail -n 15 "$work/$1.log"; fail=1; fi
}
lacks() {  # lacks NAME PATTERN
  if grep -qF -- "$2" "$work/$1.log"; then echo "FAIL $1: '$2' in its log"; fail=1; else
    echo "ok   $1 does not say '$2'"; fi
}

m=$work/model
tiny_qwen "$m" "$work/tokens.bin"
base=(train --model "$m" --what all --token-file "$work/tokens.bin" --eval-tokens 256
  --eval-every 0)
train=("${base[@]}" --seq-len 32 --batch 2 --lr 3e-3)
tb="${base[*]} --seq-len 32"  # for the MPMD launches, as one string

# 1. Empty inputs.
head -c 32 "$work/tokens.bin" >"$work/zero.bin"
printf '\0\0\0\0\0\0\0\0' | dd of="$work/zero.bin" bs=1 seek=16 conv=notrunc status=none
within 30 22 empty-token-file mpi 2 infer --model "$m" --token-file "$work/zero.bin"
has empty-token-file "holds no tokens"
: >"$work/empty.txt"
within 30 22 empty-corpus mpi 2 infer --model "$m" --corpus "$work/empty.txt"
has empty-corpus "gives no tokens"

# 2. JSON nested 100,000 deep (config.json's rope_scaling).
cp -r "$m" "$work/deep"
python3 - "$work/deep/config.json" <<'EOF'
import json, sys
c = json.load(open(sys.argv[1]))
text = json.dumps(c)[:-1] + ', "rope_scaling": ' + "[" * 100000 + "]" * 100000 + "}"
open(sys.argv[1], "w").write(text)
EOF
within 30 22 deep-json mpi 2 infer --model "$work/deep" --token-file "$work/tokens.bin"
has deep-json "JSON nested deeper than 64 levels"

# 3. Ranks that disagree.
within 30 21 mpmd-lr mpmd "$tb --steps 2 --lr 1e-3" "$tb --steps 2 --lr 2e-3"
has mpmd-lr "the configuration differs between ranks (1 setting)"
has mpmd-lr "lr: 0.001 on rank 0; 0.002 on rank 1"
within 30 21 mpmd-batch mpmd "$tb --steps 2 --batch 2" "$tb --steps 2 --batch 3"
has mpmd-batch "batch: 2 on rank 0; 3 on rank 1"
within 30 21 mpmd-quantize mpmd "infer --model $m --token-file $work/tokens.bin --quantize int8" \
  "infer --model $m --token-file $work/tokens.bin --quantize int4"
has mpmd-quantize 'model.quantize: "int4" on rank 1; "int8" on rank 0'
syn="infer --synthetic --data-dir $data --corpus excerpt --max-tokens 1024"
within 30 21 mpmd-synthetic mpmd "$syn --set moe.top_k=2" "$syn --set moe.top_k=4"
has mpmd-synthetic "moe.top_k: 2 on rank 0; 4 on rank 1"
# E6: the same --checkpoint-dir path holds step 4 on rank 0's host and only step 2 on rank 1's
# (a mount namespace per rank stands for two hosts' local disks).
expect 0 save-2-4 mpi 2 "${train[@]}" --steps 4 --save-every 2 --keep-last 0 \
  --checkpoint-dir "$work/ck-a"
cp -r "$work/ck-a" "$work/ck-b" && rm -rf "$work/ck-b/step-00000004"
mkdir -p "$work/ck"
if unshare -m true 2>/dev/null; then
  ns() { echo "unshare -m sh -c 'mount --bind $1 $work/ck && exec $bin ${train[*]} --steps 6 \
--save-every 2 --checkpoint-dir $work/ck --resume'"; }
  within 30 23 resume-steps-differ timeout 120 mpirun --oversubscribe -x OPENBLAS_NUM_THREADS \
    -x SY_COLLECTIVE_TIMEOUT_S=20 -np 1 sh -c "$(ns "$work/ck-a")" : -np 1 sh -c "$(ns "$work/ck-b")"
  has resume-steps-differ "checkpoint step: 2 on rank 1; 4 on rank 0"
  # The same --token-file path holds another file on each "host" (infer --model --seq-len reads
  # only its own part of it): the sequence counts are agreed before any step.
  head -c 8000 "$data/moby_dick_excerpt.txt" >"$work/short.txt"
  expect 0 tokenize-short "$bin" tokenize --tokenizer "$m" --corpus "$work/short.txt" \
    --out "$work/short.bin"
  : >"$work/tok.bin"
  tok() { echo "unshare -m sh -c 'mount --bind $1 $work/tok.bin && exec $bin infer --model $m \
--token-file $work/tok.bin --seq-len 32'"; }
  within 30 21 token-files-differ timeout 120 mpirun --oversubscribe -x OPENBLAS_NUM_THREADS \
    -x SY_COLLECTIVE_TIMEOUT_S=20 -np 1 sh -c "$(tok "$work/tokens.bin")" : \
    -np 1 sh -c "$(tok "$work/short.bin")"
  has token-files-differ "infer --model --seq-len: the token file differs between ranks"
else
  echo "skip resume-steps-differ, token-files-differ: unshare -m is not permitted here"
fi

# E3: a truncated or emptied shard of the latest checkpoint is refused when read, naming it.
for cut in truncated empty; do
  cp -r "$work/ck-a" "$work/ck-$cut"
  shard=$work/ck-$cut/step-00000004/model-experts-00001-of-00002.safetensors
  if [ "$cut" = truncated ]; then truncate -s -100 "$shard"; else : >"$shard"; fi
  within 30 23 "resume-$cut-shard" mpi 2 "${train[@]}" --steps 6 --checkpoint-dir \
    "$work/ck-$cut" --resume
  has "resume-$cut-shard" "is corrupted: model-experts-00001-of-00002.safetensors has"
done

# C6: the same 2-rank run twice gives bitwise-identical weights and optimizer moments.
for run in a b; do
  expect 0 "twice-$run" mpi 2 "${train[@]}" --steps 2 --checkpoint-dir "$work/twice-$run"
done
same=0
for f in "$work"/twice-a/step-00000002/*.safetensors; do
  if cmp -s "$f" "$work/twice-b/step-00000002/$(basename "$f")"; then same=$((same + 1)); else
    echo "FAIL twice: $(basename "$f") differs between two identical runs"; fail=1; fi
done
echo "ok   twice: $same safetensors files bitwise equal"
# E4: the 2-rank checkpoint loaded on 1 and on 4 ranks (experts regrouped by global id) gives
# the same hidden states, bitwise (deterministic kernels).
for np in 1 4; do
  expect 0 "reshard-$np" mpi "$np" infer --model "$work/ck-a" --token-ids 1,2,3,4,5,6,7,8 \
    --deterministic --dump "$work/reshard-$np.npy"
done
check reshard-1-equals-4 cmp -s "$work/reshard-1.npy" "$work/reshard-4.npy"

# 4. --resume with changed settings.
cp -r "$work/ck-b" "$work/ck-r"
within 30 21 resume-changed-lr mpi 2 "${base[@]}" --seq-len 32 --steps 4 \
  --checkpoint-dir "$work/ck-r" --resume --lr 1e-3 --batch 3
has resume-changed-lr "batch 2 -> 3, lr 0.003 -> 0.001"
has resume-changed-lr "--resume-override"
expect 0 resume-override mpi 2 "${base[@]}" --seq-len 32 --batch 2 --steps 4 \
  --checkpoint-dir "$work/ck-r" --resume --lr 1e-3 --resume-override
has resume-override "warning: --resume-override: settings changed since the save (lr 0.003 -> 0.001)"

# 5. Sizes without bounds: refused at once, naming the field.
within 20 21 batch-groups mpi 2 $syn --set data.batch_groups=144115188075855872
has batch-groups "data.batch_groups must be in [1, 16777216]"
within 20 21 num-layers mpi 2 $syn --set moe.num_layers=1000000000
has num-layers "moe.num_layers must be in [1, 4096]"
within 20 21 d-model mpi 2 $syn --set moe.d_model=1000000000000
has d-model "moe.d_model must be in [1, 65536]"
within 20 21 ffn-hidden mpi 2 $syn --set moe.ffn_hidden=4611686018427387904
has ffn-hidden "moe.ffn_hidden must be in [0, 1048576]"
within 20 21 expert-values mpi 2 $syn --set moe.num_experts=16384 --set moe.d_model=65536 \
  --set moe.ffn_hidden=1048576
has expert-values "values in one layer's expert weights: SwiGLU matrices 3 x moe.num_experts 16384"
within 20 21 seq-len mpi 2 "${base[@]}" --steps 2 --seq-len 1099511627776
has seq-len "train: seq_len (--seq-len) must be in [2, 1048576]"

# 6. Reads bounded before they happen.
within 20 22 config-dev-zero mpi 2 infer --config /dev/zero
has config-dev-zero "config /dev/zero: a character device, not a regular file"
mkfifo "$work/fifo"
within 20 22 config-fifo mpi 2 infer --config "$work/fifo"
has config-fifo "a FIFO, not a regular file"
within 20 22 config-folder mpi 2 infer --config "$work"
has config-folder "a folder, not a regular file"

# 7. Faults.
SY_FAULT="oom@rank=1,step=3" within 30 26 oom mpi 2 "${train[@]}" --steps 4 --save-every 2 \
  --checkpoint-dir "$work/ck-oom"
has oom "rank 1 on"
has oom "out of memory: allocating 1099511627776 bytes (SY_FAULT=oom) failed"
check oom-nothing-published test "$(ls "$work/ck-oom")" = step-00000002
SY_FAULT="enospc@rank=0,step=4" within 30 23 enospc-save mpi 2 "${train[@]}" --steps 4 \
  --save-every 2 --checkpoint-dir "$work/ck-full"
has enospc-save "No space left on device"
check enospc-previous-latest test "$(ls "$work/ck-full")" = step-00000002
expect 0 enospc-resume mpi 2 "${train[@]}" --steps 4 --save-every 2 \
  --checkpoint-dir "$work/ck-full" --resume
has enospc-resume "resuming at step 2"
SY_FAULT="enospc@rank=1" within 60 0 enospc-report mpi 2 infer --model "$m" \
  --token-file "$work/tokens.bin" --max-tokens 512 --out "$work/rep"
has enospc-report "rank 1: warning: load report not written"
has enospc-report "No space left on device"
has enospc-report "warning: 1 of 2 load reports not written (rank 1)"
check enospc-report-rank0-written test -f "$work/rep/rank-0.pb"
# A5: a straggler below the deadline (rank 1 sleeps 1 s in the step, the deadline is 20 s): no
# timeout, exit 0, and the merged report names rank 1 from the step times (its own work, not the
# time inside collectives, where rank 0 waits for it).
SY_FAULT="slow@rank=1,arg=1000ms" within 60 0 straggler mpi 2 infer --model "$m" \
  --token-file "$work/tokens.bin" --max-tokens 128 --out "$work/slow"
expect 0 straggler-report "$bin" report "$work/slow"
has straggler-report "warning: rank 1 is a straggler"
lacks straggler-report "rank 0 is a straggler"
check straggler-rank1-flagged grep -qE '^ +1 +[0-9.]+ +[0-9.]+ +[0-9.]+  STRAGGLER' \
  "$work/straggler-report.log"
# C3: a skipped step (an infinite gradient on rank 1, --on-nonfinite skip) is counted in the
# load report.
SY_FAULT="inf_grad@rank=1,step=1,layer=1" within 60 0 skip-counted mpi 2 "${train[@]}" \
  --steps 3 --on-nonfinite skip --log-every 1 --out "$work/skip"
has skip-counted "(1 skipped)"
expect 0 skip-report "$bin" report "$work/skip"
has skip-report "training steps skipped (non-finite gradients): 1"
SY_FAULT="hang@rank=1,step=0" within 45 20 infer-model-hang mpi 2 infer --model "$m" \
  --token-file "$work/tokens.bin" --max-tokens 512
has infer-model-hang "injected fault hang"
SY_FAULT="crash_in_save@rank=1,step=2" within 20 21 fault-cannot-fire mpi 2 infer --model "$m" \
  --token-file "$work/tokens.bin"
has fault-cannot-fire "SY_FAULT=crash_in_save: cannot fire in infer --model"

# 8. Wrong class or late.
ln -s loop1 "$work/loop2" && ln -s loop2 "$work/loop1"
within 20 22 symlink-loop mpi 2 train --model "$work/loop1" --steps 2
has symlink-loop "Too many levels of symbolic links"
within 20 23 ckdir-unwritable mpi 2 "${train[@]}" --steps 2 --checkpoint-dir "$work/empty.txt/ck"
has ckdir-unwritable "train: --checkpoint-dir $work/empty.txt/ck: cannot create"
lacks ckdir-unwritable "step 1/"
within 30 23 dump-fails mpi 2 infer --model "$m" --token-ids 1,2,3 --dump "$work/no/such/dir/h.npy"
has dump-fails "cannot write $work/no/such/dir/h.npy"
check dump-no-npy-left test ! -e "$work/no/such/dir/h.npy"
head -c 20000 "$data/moby_dick_excerpt.txt" >"$work/text.txt"
expect 0 train-corpus-file mpi 2 train --model "$m" --what all --seq-len 32 --batch 2 \
  --corpus "$work/text.txt" --eval-tokens 256 --eval-every 0 --steps 2
has train-corpus-file "step 2/2"

exit $fail
