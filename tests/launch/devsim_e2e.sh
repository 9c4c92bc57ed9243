#!/usr/bin/env bash
# The commands on the emulated device: `--backend devsim` (runtime/backend/devsim/: memory the
# host cannot dereference, the CPU's arithmetic) must give the CPU backend's results byte for
# byte through the whole command line, one rank:
#   infer --model: the logits (--dump), the generated tokens and the load report's counts;
#   train --what all: the checkpoint files after 3 steps;
#   train --router mlp: the distillation warm start, then fine-tuning, then --resume.
# Usage: devsim_e2e.sh SWITCHYARD_BIN WORK_DIR DATA_DIR SOURCE_DIR.
set -uo pipefail
bin=$1 work=$2 data=$3 src=$4
export SY_DATA_DIR=$data
rm -rf "$work" && mkdir -p "$work"
fail=0
# shellcheck source=tests/launch/e2e_lib.sh
source "$src/tests/launch/e2e_lib.sh"
m=$work/model
tiny_qwen "$m" "$work/tokens.bin"
same_files() {  # same_files NAME DIR_A DIR_B: every .safetensors file byte-identical
  local n=0 bad=0 f
  while IFS= read -r f; do
    n=$((n + 1))
    cmp -s "$2/$f" "$3/$f" || { echo "FAIL $1: $f differs"; bad=1; }
  done < <(cd "$2" && find . -name '*.safetensors' | sort)
  if [ "$bad" = 0 ] && [ "$n" -gt 0 ]; then echo "ok   $1 ($n files bitwise)"; else fail=1; fi
}
train=(train --model "$m" --seq-len 32 --batch 2 --token-file "$work/tokens.bin"
  --eval-tokens 256 --eval-every 0 --lr 3e-3 --deterministic)
for b in cpu devsim; do
  expect 0 "infer-$b" "$bin" infer --model "$m" --prompt "It was the best of times" \
    --max-new-tokens 4 --dump "$work/logits-$b.npy" --out "$work/report-$b" --backend "$b"
  expect 0 "train-$b" "$bin" "${train[@]}" --what all --steps 3 --save-every 3 \
    --checkpoint-dir "$work/all-$b" --backend "$b"
  expect 0 "routers-$b" "$bin" "${train[@]}" --what routers --router mlp \
    --set distill.iterations=20 --steps 2 --save-every 2 --checkpoint-dir "$work/mlp-$b" \
    --backend "$b"
  expect 0 "resume-$b" "$bin" "${train[@]}" --what routers --router mlp \
    --set distill.iterations=20 --steps 4 --save-every 2 --checkpoint-dir "$work/mlp-$b" \
    --resume --backend "$b"
done
expect 0 compare "$bin" compare "$work/logits-devsim.npy" "$work/logits-cpu.npy"
if grep -q " 0 bitwise different" "$work/compare.log"; then echo "ok   logits bitwise"; else
  echo "FAIL logits differ: $(cat "$work/compare.log")"; fail=1; fi
gen() { grep "^generated" "$work/infer-$1.log" | sed 's/ in .*://'; }
if [ "$(gen cpu)" = "$(gen devsim)" ]; then echo "ok   generated text"; else
  echo "FAIL generated text differs"; fail=1; fi
counts() { grep -oE '"(routed|dropped)_per_expert":\["[^]]*\]' "$work/report-$1/rank-0.json"; }
if [ -n "$(counts cpu)" ] && [ "$(counts cpu)" = "$(counts devsim)" ]; then
  echo "ok   load report counts"; else echo "FAIL load report counts differ"; fail=1; fi
same_files "train --what all" "$work/all-cpu" "$work/all-devsim"
same_files "router fine-tuning + resume" "$work/mlp-cpu" "$work/mlp-devsim"
expect 21 bad-backend "$bin" infer --model "$m" --prompt hi --backend nope
exit $fail
