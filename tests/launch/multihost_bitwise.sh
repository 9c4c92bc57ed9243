#!/usr/bin/env bash
# Across hosts, bitwise: 4 ranks over 2 network-namespace hosts (2 each, TCP between them)
# give the same deterministic outputs as 1 rank, byte for byte:
#   1. the synthetic stack (`infer`, the final hidden states) for two routers;
#   2. a tiny Qwen2-MoE checkpoint (`infer --model`, the logits);
#   3. both again with the exchange overlapped (SY_EXCHANGE_CHUNKS=2).
# Usage: multihost_bitwise.sh SWITCHYARD_BIN WORK_DIR DATA_DIR SOURCE_DIR. Exit 77 (ctest skip)
# where namespaces cannot be made (not root, no iproute2) or without the GPT-2 tokenizer.
set -uo pipefail
bin=$1 work=$2 data=$3 src=$4
export SY_COLLECTIVE_TIMEOUT_S=60
# shellcheck source=tests/launch/multihost_lib.sh
source "$src/tests/launch/multihost_lib.sh"
mh_begin mhb 10.213.1 tokenizer

syn=(infer --data-dir "$data" --corpus excerpt --max-tokens 1536 --set data.group_tokens=128
  --set data.batch_groups=2 --set moe.num_experts=8 --set moe.top_k=2 --set moe.d_model=64
  --set moe.ffn_hidden=96 --set deterministic=true)
for r in linear hash; do
  expect 0 "$r-np1" local1 "${syn[@]}" --router "$r" --dump "$work/$r-np1.npy"
  expect 0 "$r-2x2" crun 4 "${syn[@]}" --router "$r" --dump "$work/$r-2x2.npy"
  same "$r: 2 hosts x 2 ranks vs 1 rank" "$work/$r-2x2.npy" "$work/$r-np1.npy"
done

ids=1,5,9,100,7,3,999,42,0,17,256,511,77,300,12,8
expect 0 init-tiny "$bin" init --arch qwen2_moe --set vocab_size=1000 --set hidden_size=64 \
  --set num_attention_heads=4 --set num_key_value_heads=2 --set num_hidden_layers=3 \
  --set mlp_only_layers=[1] --set num_experts=8 --set num_experts_per_tok=2 \
  --set moe_intermediate_size=48 --set shared_expert_intermediate_size=80 \
  --set intermediate_size=96 --set initializer_range=0.1 --out "$work/tiny"
expect 0 qwen-np1 local1 infer --model "$work/tiny" --token-ids "$ids" --deterministic \
  --dump "$work/qwen-np1.npy"
expect 0 qwen-2x2 crun 4 infer --model "$work/tiny" --token-ids "$ids" --deterministic \
  --dump "$work/qwen-2x2.npy"
same "qwen2_moe: 2 hosts x 2 ranks vs 1 rank" "$work/qwen-2x2.npy" "$work/qwen-np1.npy"
# 3. the same with the exchange overlapped (2 chunks of local experts, non-blocking MPI over TCP,
#    the shared expert computing while rows move): still the 1-rank bits.
export SY_EXCHANGE_CHUNKS=2
expect 0 qwen-2x2-overlap crun 4 infer --model "$work/tiny" --token-ids "$ids" --deterministic \
  --dump "$work/qwen-2x2-overlap.npy"
expect 0 linear-2x2-overlap crun 4 "${syn[@]}" --router linear --dump "$work/linear-2x2-overlap.npy"
unset SY_EXCHANGE_CHUNKS
same "qwen2_moe overlapped: 2 hosts x 2 ranks vs 1 rank" "$work/qwen-2x2-overlap.npy" \
  "$work/qwen-np1.npy"
same "linear overlapped: 2 hosts x 2 ranks vs 1 rank" "$work/linear-2x2-overlap.npy" \
  "$work/linear-np1.npy"
[ $fail = 0 ] && echo "multihost_bitwise: all checks passed"
exit $fail
