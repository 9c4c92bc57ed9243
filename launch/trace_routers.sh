#!/usr/bin/env bash
# Routing traces of one model with every paper router, and their projection to 1,024 ranks:
#
#   bash launch/trace_routers.sh --out traces      # the default model, the six routers
#   options: --model M (default models/default), --routers linear,hash,... (default: the six),
#            --ranks P (default 2), --steps N (router fine-tuning steps after distillation,
#            default 20), --tokens T (tokens traced, default 65536), --seq-len S (default 256),
#            --ep LIST (default 8,16,32,64,128,256,512,1024), --corpus C (default sotu),
#            --held-out H (default 65536), --distill-iters I (default: train's, 300),
#            --cluster C (the projection's cluster: a preset or file, default dgx-h100)
#
# Per router, on P ranks (launch/mpirun.sh):
#   linear   the model's own gate: traced as it is (no replacement, no training);
#   hash     no learned parameters: traced with `infer --router hash` (distillation and
#            fine-tuning would change nothing);
#   others   `train --what routers --router NAME`: each gate replaced, warmed up by distillation
#            from the model's gate, then N fine-tuning steps (experts and everything else
#            frozen), saved into OUT/ckpt-NAME, itself a model folder; a finished checkpoint is
#            reused when the script runs again.
# then `infer --model ... --trace OUT/NAME --out OUT/run-NAME` over T tokens as sequences of S
# (a trace and the run's load reports), and finally:
#   1. the projection's error measured here, at P: `switchyard project --calibrate` on the P
#      ranks (the cluster model fitted to this machine: OUT/calibration/cluster.json), then
#      `switchyard project` of every trace at P ranks with that cluster, sequences dealt as the
#      runs dealt them (--deal interleaved), beside each router's run (--measured OUT/run-NAME):
#      counts equal or not, exchange and expert time measured, projected and the error
#      (OUT/validation);
#   2. `switchyard project OUT/<router>,... --ep LIST --out OUT/projection` (projection.json,
#      .html): the routers at scale on the --cluster preset or file (default dgx-h100).
#
# Text: the model folder's tokenizer on corpus C (default: the State of the Union corpus,
# which the default model trained on, all but its last H = 65,536 tokens). Router training
# reads the same first part; the traces read text the model never trained on: C's last H
# tokens, then Moby Dick, cycled from the start again when T asks for more (the script says
# how much of it repeats). Every command's full output is in OUT/logs/.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
model=$root/models/default routers=linear,attention,mlp,hybrid,hash,mlp_hadamard
ranks=2 steps=20 tokens=65536 seq_len=256 ep=8,16,32,64,128,256,512,1024 corpus=sotu
held_out=65536 distill_iters=300 out= cluster=dgx-h100
die() {
  echo "trace_routers.sh: $*" >&2
  exit 2
}
while [ $# -gt 0 ]; do
  [ $# -ge 2 ] || die "$1 needs a value"
  case $1 in
    --model) model=$2 ;;
    --routers) routers=$2 ;;
    --ranks) ranks=$2 ;;
    --steps) steps=$2 ;;
    --tokens) tokens=$2 ;;
    --seq-len) seq_len=$2 ;;
    --ep) ep=$2 ;;
    --corpus) corpus=$2 ;;
    --held-out) held_out=$2 ;;
    --distill-iters) distill_iters=$2 ;;
    --cluster) cluster=$2 ;;
    --out) out=$2 ;;
    *) die "unknown argument $1" ;;
  esac
  shift 2
done
[ -n "$out" ] || die "--out DIR is required"
for v in ranks steps tokens seq_len held_out distill_iters; do
  [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "--${v//_/-} must be a positive integer (got '${!v}')"
done
[ "$tokens" -ge $((seq_len * ranks)) ] || die "--tokens $tokens is less than one sequence per rank"
bin=${SY_BIN:-$root/build/switchyard}
[ -x "$bin" ] || die "no $bin: build first (bash launch/setup.sh)"
[ -d "$model" ] || die "no model folder $model (bash launch/train_default.sh --quick builds it)"
# The sub-commands run on P ranks; launch/mpirun.sh runs $SY_BIN.
export SY_BIN=$bin
mpi() { bash "$root/launch/mpirun.sh" "$ranks" "$@"; }
IFS=, read -r -a names <<<"$routers"
known=" $("$bin" routers | awk 'NR > 2 { printf "%s ", $1 }')"
for r in "${names[@]}"; do
  [[ $known == *" $r "* ]] || die "--routers: unknown router '$r' (registered:$known)"
done
mkdir -p "$out/logs" "$out/tokens"

# Token files (runtime/data/token_file.h): a 32-byte header (magic, version, vocabulary size,
# count, reserved), then little-endian int32 ids. count_ids FILE; ids FILE FIRST N writes ids
# [FIRST, FIRST + N) to stdout; le64 V writes V as 8 little-endian bytes.
count_ids() { echo $((($(stat -c %s "$1") - 32) / 4)); }
ids() { dd if="$1" bs=1M iflag=skip_bytes,count_bytes skip=$((32 + 4 * $2)) count=$((4 * $3)) status=none; }
le64() {
  local i
  for i in 0 1 2 3 4 5 6 7; do printf '%b' "\\x$(printf %02x $((($1 >> (8 * i)) & 255)))"; done
}
# write_tokens OUT SRC N: a header for N ids with SRC's vocabulary, the ids from stdin.
write_tokens() {
  { head -c 16 "$2"; le64 "$3"; le64 0; cat; } >"$1.tmp"
  [ "$(count_ids "$1.tmp")" = "$3" ] || die "internal: $1 holds $(count_ids "$1.tmp") ids, not $3"
  mv "$1.tmp" "$1"
}
t0=$SECONDS
tok=$out/tokens
if [ ! -f "$tok/$corpus.tokens" ]; then
  "$bin" tokenize --tokenizer "$model" --corpus "$corpus" --out "$tok/$corpus.tokens" \
    >"$out/logs/tokenize-$corpus.log" 2>&1 || {
    tail -5 "$out/logs/tokenize-$corpus.log"
    die "tokenize --corpus $corpus failed"
  }
fi
n_corpus=$(count_ids "$tok/$corpus.tokens")
[ "$n_corpus" -gt $((held_out + seq_len * ranks)) ] ||
  die "corpus $corpus has $n_corpus tokens: too few to hold out $held_out"
n_train=$((n_corpus - held_out))
ids "$tok/$corpus.tokens" 0 "$n_train" | write_tokens "$tok/train.tokens" "$tok/$corpus.tokens" "$n_train"
# The held-out stream: the corpus tail, then Moby Dick (when T asks for more), cycled.
parts=("$tok/$corpus.tokens:$n_train:$held_out")
if [ "$tokens" -gt "$held_out" ] && [ "$corpus" != moby_dick ]; then
  if [ ! -f "$tok/moby_dick.tokens" ]; then
    "$bin" tokenize --tokenizer "$model" --corpus moby_dick --out "$tok/moby_dick.tokens" \
      >"$out/logs/tokenize-moby_dick.log" 2>&1 || die "tokenize --corpus moby_dick failed"
  fi
  parts+=("$tok/moby_dick.tokens:0:$(count_ids "$tok/moby_dick.tokens")")
fi
distinct=0
for p in "${parts[@]}"; do distinct=$((distinct + ${p##*:})); done
left=$tokens
while [ "$left" -gt 0 ]; do
  for p in "${parts[@]}"; do
    IFS=: read -r f first n <<<"$p"
    [ "$n" -le "$left" ] || n=$left
    ids "$f" "$first" "$n"
    left=$((left - n))
    [ "$left" -gt 0 ] || break
  done
done | write_tokens "$tok/held_out.tokens" "$tok/$corpus.tokens" "$tokens"
if [ "$tokens" -le "$distinct" ]; then
  repeat="none repeats"
else
  repeat="$distinct distinct, then cycled"
fi
printf 'text: %d training tokens of %s (%s); %d traced tokens (%s): the last %d of %s%s\n' \
  "$n_train" "$corpus" "$tok/train.tokens" "$tokens" "$repeat" "$held_out" "$corpus" \
  "$(if [ ${#parts[@]} -gt 1 ]; then echo ', then Moby Dick'; fi)"

# show PATTERN: the lines of a command's output shown as progress (distillation, steps,
# evaluation, throughput), indented; never fails itself, so a pipeline's status is the command's.
show() { { grep -E --line-buffered "$1" || true; } | sed -u 's/^/   /'; }
traces=() runs=()
for r in "${names[@]}"; do
  echo "== router $r"
  set_router=() m=$model ts=$SECONDS
  case $r in
    linear) echo "   the model's own gate: no replacement, no training" ;;
    hash) set_router=(--router hash) && echo "   no learned parameters: replaced at inference" ;;
    *)
      m=$out/ckpt-$r
      if [ -f "$m/step-$(printf %08d "$steps")/manifest.json" ]; then
        echo "   $m already holds step $steps: reused"
      else
        rm -rf "$m"
        echo "   train --what routers --router $r: distillation from the model's gate, $steps steps"
        mpi train --what routers --router "$r" --model "$model" --token-file "$tok/train.tokens" \
          --distill-iters "$distill_iters" --steps "$steps" --seq-len "$seq_len" \
          --eval-tokens 2048 --eval-every 0 --log-every 5 --checkpoint-dir "$m" --keep-last 1 \
          2>&1 | tee "$out/logs/train-$r.log" |
          show '^(router warm start|  layer|  distilled layer|step |eval loss|trained|saved)' ||
          die "train --router $r failed (log: $out/logs/train-$r.log)"
      fi
      ;;
  esac
  rm -rf "${out:?}/$r" "${out:?}/run-$r"
  mpi infer --model "$m" "${set_router[@]+"${set_router[@]}"}" \
    --token-file "$tok/held_out.tokens" --seq-len "$seq_len" --trace "$out/$r" \
    --out "$out/run-$r" 2>&1 |
    tee "$out/logs/infer-$r.log" | show '^(\[forward|[0-9]+ tokens in|routing trace)' ||
    die "infer --trace $out/$r failed (log: $out/logs/infer-$r.log)"
  echo "   router $r: $((SECONDS - ts)) s"
  traces+=("$out/$r")
  runs+=("$out/run-$r")
done
join() {
  local IFS=,
  echo "$*"
}
list=$(join "${traces[@]}")

echo "== the projection against the runs above, at P = $ranks (the cluster model calibrated here)"
# D and F of the model: the exchange's rows and the expert the calibration times.
config=$model/config.json
[ -f "$config" ] || config=$(ls -d "$model"/step-*/config.json 2>/dev/null | tail -n 1)
num() { grep -oE "\"$1\": *[0-9]+" "$config" | grep -oE '[0-9]+$'; }
mpi project --calibrate --hidden "$(num hidden_size)" --ffn-hidden "$(num moe_intermediate_size)" \
  --out "$out/calibration" >"$out/logs/calibrate.log" 2>&1 ||
  die "project --calibrate failed (log: $out/logs/calibrate.log)"
grep -E '^(self copy|same-node|other-node|expert FFN|fit error)' "$out/logs/calibrate.log" | sed 's/^/   /'
"$bin" project "$list" --ep "$ranks" --deal interleaved --cluster "$out/calibration/cluster.json" \
  --tokens-per-rank $((tokens / ranks)) --exchange-tokens "$seq_len" --measured "$(join "${runs[@]}")" \
  --out "$out/validation" >"$out/logs/validation.log" 2>&1 ||
  die "switchyard project --measured failed (log: $out/logs/validation.log)"
# One line per router (its run folder last): the header once, then each router's line.
grep -m 1 -A 1 'measured beside' "$out/logs/validation.log" | tail -n 1 || true
grep -E "^ +$ranks  (equal|DIFFER)" "$out/logs/validation.log" || true

echo "== switchyard project, P = $ep ($cluster)"
tp=$SECONDS
"$bin" project "$list" --ep "$ep" --cluster "$cluster" --out "$out/projection" 2>&1 |
  tee "$out/logs/project.log" || die "switchyard project failed (log: $out/logs/project.log)"
echo "project: $((SECONDS - tp)) s; whole script: $((SECONDS - t0)) s"
echo "traces: ${traces[*]}"
echo "projection: $out/projection/projection.json; open $out/projection/projection.html"
echo "measured error at P = $ranks: $out/logs/validation.log, $out/validation/projection.html"
