#!/usr/bin/env bash
# Router-only fine-tuning of a trained model with each learned router (issue 5): every MoE
# layer's gate is replaced by ROUTER, warmed up by distillation from the original gate on real
# activations, then the routers alone are fine-tuned (experts frozen, int8 unless QUANT says
# otherwise) on another text. Prints the held-out loss before (original gate, and the replaced
# router after its warm start) and after, per router, and checks that every non-router tensor
# of the saved model is bitwise the source's.
#
#   bash bench/router_finetune.sh [MODEL] [RANKS] [STEPS]
#       MODEL default models/default (launch/train_default.sh), RANKS 4, STEPS 20
#   env: CORPUS (moby_dick), QUANT (int8), LR (3e-3), BATCH (2)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
model=${1:-$root/models/default} ranks=${2:-4} steps=${3:-20}
corpus=${CORPUS:-moby_dick} quant=${QUANT:-int8} lr=${LR:-3e-3} batch=${BATCH:-2}
work=${TMPDIR:-/tmp}/sy_router_finetune
rm -rf "$work" && mkdir -p "$work"
echo "| router | held-out loss, original gate | after warm start | after $steps steps | warm start: KL, top-1 agreement (layer 0) | non-router tensors |"
echo "|---|---|---|---|---|---|"
for r in linear attention mlp hybrid mlp_hadamard; do
  log=$work/$r.log
  bash "$root/launch/mpirun.sh" "$ranks" train --what routers --router "$r" --model "$model" \
    --quantize "$quant" --corpus "$corpus" --eval-tokens 8192 --seq-len 256 --batch "$batch" \
    --steps "$steps" --lr "$lr" --warmup 5 --eval-every 0 --log-every 10 --distill-iters 200 \
    --distill-tokens 1024 \
    --checkpoint-dir "$work/ckpt_$r" >"$log" 2>&1
  before=$(grep -m1 '^eval loss' "$log" | awk '{print $3}')
  after=$(grep '^eval loss' "$log" | tail -n 1 | awk '{print $3}')
  orig=$(grep -m1 '^eval loss' "$work/linear.log" | awk '{print $3}')
  warm=$(grep -m1 'layer 0: KL' "$log" | sed -E 's/ *layer 0: (KL [^,]*), (top-1 agreement [^,]*),.*/\1, \2/' || true)
  same=$(python3 "$root/tests/launch/st_tool.py" compare "$model" "$work/ckpt_$r" --except .mlp.gate. |
    tail -n 1 | cut -d, -f1)
  echo "| $r | $orig | $before | $after | ${warm:--} | $same |"
done
