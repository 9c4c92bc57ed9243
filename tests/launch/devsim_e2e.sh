#!/usr/bin/env bash
# The commands on the emulated device: `--backend devsim` (runtime/backend/devsim/: memory the
# host cannot dereference, the CPU's arithmetic) must give the CPU backend's results byte for
# byte through the whole command line, one rank:
#   infer --model: the logits (--dump), the generated tokens and the load report's counts;
#   train --what all: the checkpoint files after 3 steps;
#   train --router mlp: the distillation warm start, then fine-tuning, then --resume;
#   study (--device devsim): the held-out losses of two routers;
# and --comm nccl / --precision bf16 refused with the reason where they cannot run.
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
# study on the emulated device (--device, the alias of --backend): the CPU's held-out losses,
# bitwise (the router latency path uploads its inputs into the model's memory).
for b in cpu devsim; do
  expect 0 "study-$b" "$bin" study --model "$m" --token-file "$work/tokens.bin" --seq-len 32 \
    --eval-tokens 256 --batch 2 --steps 2 --routers linear,mlp --quantize none \
    --distill-iters 10 --set latency_repeats=3 --set latency_tokens=64 --deterministic \
    --device "$b" --out "$work/study-$b"
done
losses() {
  python3 -c 'import json,sys; d=json.load(open(sys.argv[1]))
print(" ".join("%s %r %r %r" % (r["router"], r.get("lossGate", r.get("loss_gate")),
      r.get("lossWarm", r.get("loss_warm")), r.get("lossTuned", r.get("loss_tuned")))
      for r in d["routers"]))' "$work/study-$1/study.json"
}
if [ -n "$(losses cpu)" ] && [ "$(losses cpu)" = "$(losses devsim)" ]; then
  echo "ok   study losses bitwise ($(losses devsim))"; else
  echo "FAIL study losses differ: cpu '$(losses cpu)' devsim '$(losses devsim)'"; fail=1; fi
expect 21 bad-backend "$bin" infer --model "$m" --prompt hi --backend nope
# --comm and --precision are refused where they cannot run, with the reason (exit 21).
expect 21 comm-nccl-cpu "$bin" infer --model "$m" --prompt hi --comm nccl
check comm-nccl-cpu-says grep -q "needs --backend cuda" "$work/comm-nccl-cpu.log"
expect 21 bf16-cpu "$bin" "${train[@]}" --steps 1 --precision bf16
check bf16-cpu-says grep -q "computes its GEMMs in fp32 only" "$work/bf16-cpu.log"
expect 21 bf16-study-devsim "$bin" study --model "$m" --token-file "$work/tokens.bin" \
  --routers linear --device devsim --precision bf16 --out "$work/study-bf16"
exit $fail
