#!/usr/bin/env bash
# End-to-end checks of `switchyard study` on a tiny Qwen2-MoE checkpoint, 2 ranks:
#   1. bad input: an unknown router in the list, a router listed twice, a dense BERT without
#      --upcycle-experts, upcycling options on a Qwen2-MoE, a negative --validate-every, more
#      validation sequences than the data has beside fine-tuning's (exit 21, the reason named),
#      nothing written; infer --router on a BERT-MoE distills the new router from the gate;
#   2. linear (the model's gate), hash and mlp (distilled, fine-tuned, early stopping kept the
#      warm start or the last step) with int4 experts:
#      study.json, study.md and study.html written; every router has its losses, latency,
#      per-layer figures and loss curve (hash none: it has no gradient); the figures that come
#      from the traces and reports (load per expert, drops at c = 1.0, bytes to other ranks per
#      token, ranks per token) recomputed independently from the saved traces
#      (study_check.py); the page loads in headless Chromium with every chart; the four routers
#      beyond the paper recomputed the same way (expert choice: kept slots only, load max/mean 1);
#   3. resumable: a rerun runs nothing and leaves the results as they are; a fault that kills
#      the job during a router's fine-tuning loses none of the finished routers, and the rerun
#      runs only the missing one; other settings rerun every router;
#   4. a study folder of another model is refused (exit 21) and keeps its results;
#   5. BERT: a tiny bert_moe (linear, hash, mlp; masked LM, the corpus framed [CLS] ... [SEP]
#      through its WordPiece vocabulary) and a tiny dense bert upcycled on load (linear, mlp):
#      the same outputs and the same study_check.py recomputation.
# Usage: study_e2e.sh SWITCHYARD_BIN WORK_DIR DATA_DIR SOURCE_DIR.
set -uo pipefail
bin=$1 work=$2 data=$3 src=$4
export SY_DATA_DIR=$data
# shellcheck source=tests/launch/e2e_lib.sh
source "$src/tests/launch/e2e_lib.sh"
e2e_begin

tiny_qwen "$work/ckpt" "$work/tokens.bin"
# study_on MODEL ARGS...: a small study of MODEL on 2 ranks; study ARGS...: of the tiny Qwen.
study_on() {
  local model=$1
  shift
  timeout 300 mpirun --oversubscribe -np 2 -x OPENBLAS_NUM_THREADS -x SY_FAULT \
    -x SY_COLLECTIVE_TIMEOUT_S=60 "$bin" study --model "$model" --token-file "$work/tokens.bin" \
    --seq-len 32 --eval-tokens 512 --batch 2 --distill-iters 10 --set latency_repeats=3 \
    --set latency_tokens=128 "$@"
}
study() { study_on "$work/ckpt" "$@"; }
export SY_FAULT=

# 1. Bad input.
expect 21 unknown-router study --routers linear,nosuch --out "$work/bad"
check unknown-router-named grep -q "unknown router 'nosuch'" "$work/unknown-router.log"
expect 21 twice study --routers mlp,mlp --out "$work/bad"
check twice-named grep -q "'mlp' is listed twice" "$work/twice.log"
# A tiny BERT-MoE (8 experts top-2 in both layers) and a tiny dense BERT, with init's vocab.txt.
bert_args=(--set hidden_size=32 --set num_hidden_layers=2 --set num_attention_heads=2
  --set intermediate_size=64)
expect 0 init-bert "$bin" init --arch bert_moe "${bert_args[@]}" --set moe_every=1 \
  --out "$work/bert"
expect 0 init-dense "$bin" init --arch bert "${bert_args[@]}" --out "$work/dense"
expect 21 dense study_on "$work/dense" --routers linear --out "$work/bad"
check dense-named grep -q "is a dense BERT (no routers): pass --upcycle-experts" "$work/dense.log"
expect 21 qwen-upcycle study --upcycle-experts 4 --routers linear --out "$work/bad"
check qwen-upcycle-named grep -q "apply to BERT checkpoints" "$work/qwen-upcycle.log"
expect 21 validate-every study --routers mlp --validate-every -1 --out "$work/bad"
check validate-every-named grep -q "validate_every (--validate-every)" "$work/validate-every.log"
expect 21 validate-too-many study --routers mlp --steps 3 --validate-every 1 \
  --validate-sequences 4096 --out "$work/bad"
check validate-too-many-named grep -q "validation sequences beside the 12 that fine-tuning" \
  "$work/validate-too-many.log"
check bad-nothing-written test ! -e "$work/bad/study.json"
# infer --router on a BERT-MoE checkpoint: distilled from the gate, or fresh with --no-distill.
expect 0 bert-router "$bin" infer --model "$work/bert" --router mlp --token-ids 101,7592,102
check bert-router-distilled grep -q "router warm start: linear -> mlp" "$work/bert-router.log"
expect 0 bert-router-fresh "$bin" infer --model "$work/bert" --router mlp --no-distill \
  --token-ids 101,7592,102

# 2. Three routers.
out=$work/study
expect 0 study study --routers linear,hash,mlp --steps 3 --quantize int4 --validate-every 5 \
  --out "$out"
for f in study.json study.md study.html; do check "wrote-$f" test -s "$out/$f"; done
check progress grep -q "\[study 3/3 mlp\]: fine-tune step 3/3 .* ETA" "$work/study.log"
check early-stopping grep -q "\[study 3/3 mlp\]: kept the routers of .*(validation loss" \
  "$work/study.log"
check figures python3 - "$out/study.json" <<'EOF'
import json, sys
s = json.load(open(sys.argv[1]))
rs = {r["router"]: r for r in s["routers"]}
assert list(rs) == ["linear", "hash", "mlp"], list(rs)
for name, r in rs.items():
    for k in ("loss_gate", "loss_warm", "loss_tuned", "tokens_per_s"):
        assert r[k] > 0, (name, k, r.get(k))
    assert len(r["layers"]) == 2, name
    for l in r["layers"]:
        assert l["router_us_per_1k"] > 0 and l["gemm_us_per_1k"] > 0, (name, l)
        assert sum(int(x) for x in l["load_per_expert"]) == 512 * 2, (name, l)
    assert r["loss_gate"] == rs["linear"]["loss_gate"], name
# Early stopping (--validate-every 5: the last of 3 steps validated): hash has no
# fine-tuning; a kept warm start (step 0) without calibration gives back the warm start's loss.
assert int(rs["hash"].get("kept_step", 0)) == -1, rs["hash"].get("kept_step")
for name in ("linear", "mlp"):
    r = rs[name]
    assert int(r.get("kept_step", 0)) in (0, 3), (name, r.get("kept_step"))
    assert r["validation_warm"] > 0 and r["validation_kept"] <= r["validation_warm"], (name, r)
    if int(r.get("kept_step", 0)) == 0 and int(r.get("calibration_passes", 0)) == 0:
        assert r["loss_tuned"] == r["loss_warm"], (name, r["loss_tuned"], r["loss_warm"])
assert rs["linear"]["warm_start"].startswith("none") and rs["linear"]["loss_warm"] == rs["linear"]["loss_gate"]
assert rs["mlp"]["warm_start"] == "distilled" and rs["mlp"]["distill_top1"] > 0
assert len(rs["mlp"]["curve"]) == 3 and len(rs["linear"]["curve"]) == 3
assert not rs["hash"].get("curve") and int(rs["hash"].get("fine_tune_steps", 0)) == 0
assert int(rs["hash"]["overall"].get("params", 0)) == 0 and int(rs["mlp"]["overall"]["params"]) > 0
print("ok")
EOF
expect 0 recompute python3 "$src/tests/launch/study_check.py" "$out"
cat "$work/recompute.log"
check md-tables grep -q "held-out loss after fine-tuning" "$out/study.md"
check md-layers grep -q "Expert load max/mean per MoE layer" "$out/study.md"
browser=$(command -v chromium || command -v chromium-browser || true)
if [ -n "$browser" ]; then
  # Every chart the page holds, as Chromium built it: found once, drawn, not nested.
  grep -o '<svg [^>]*id="[^"]*"' "$out/study.html" | sed 's/.* id="//; s/"$//' >"$work/chart_ids.txt"
  for id in bar-loss_tuned bar-router_us bar-drops_c100 bar-study_ranks line-finetune_loss \
    heat-0 heat-2 traffic-1; do
    check "chart-$id" grep -qx "$id" "$work/chart_ids.txt"
  done
  timeout 120 "$browser" --headless --no-sandbox --disable-gpu --dump-dom \
    "file://$out/study.html" >"$work/dom.html" 2>"$work/chromium.log"
  expect 0 page python3 "$src/tests/launch/svg_dom_check.py" "$work/dom.html" "@$work/chart_ids.txt"
  cat "$work/page.log"
else
  echo "SKIP page: chromium absent (launch/setup.sh --deps installs it)"
fi

# The routers beyond the paper's: expert choice (every token offered to all experts, only the
# taken ones move) and the bias-balanced sigmoid router, recomputed from their traces too.
expect 0 study-new study --routers expert_choice,sigmoid_bias,noisy_topk,sinkhorn --steps 2 \
  --quantize int4 --out "$work/study-new"
expect 0 recompute-new python3 "$src/tests/launch/study_check.py" "$work/study-new"
cat "$work/recompute-new.log"
# With a balance bias (--balance-rate): the routers that take one are calibrated after their
# fine-tuning and say so; hash ignores the rate.
expect 0 study-bias study --routers mlp,hash --steps 2 --quantize int4 --balance-rate 0.01 \
  --calibrate-balance 3 --out "$work/study-bias"
check bias-calibrated grep -q "\[study 1/2 mlp\]: balance calibration: worst layer max/mean" \
  "$work/study-bias.log"
check bias-not-hash bash -c "! grep -q '\[study 2/2 hash\]: balance calibration' '$work/study-bias.log'"
check bias-settings grep -q "Balance bias rate 0.01 (0: none). Routers with a balance bias ran 3" \
  "$work/study-bias/study.md"
check expert-choice-balanced python3 -c "import json,sys
r = json.load(open(sys.argv[1]))['routers'][0]
assert r['router'] == 'expert_choice' and r['overall']['expert_load_max_over_mean'] == 1, r['overall']" \
  "$work/study-new/study.json"

# 3. Resumable.
stamp() { stat -c %Y "$out/routers/$1/result.json"; }
before="$(stamp linear) $(stamp hash) $(stamp mlp)"
sleep 1
expect 0 rerun study --routers linear,hash,mlp --steps 3 --quantize int4 --validate-every 5 \
  --out "$out"
check rerun-nothing grep -q "(0 to run, 3 finished before)" "$work/rerun.log"
check rerun-kept test "$before" = "$(stamp linear) $(stamp hash) $(stamp mlp)"
rm "$out/routers/mlp/result.json"
SY_FAULT=exit@rank=1,step=1,arg=3 expect 3 fault study --routers linear,hash,mlp --steps 3 \
  --quantize int4 --validate-every 5 --out "$out"
check fault-kept test "$(stamp linear) $(stamp hash)" = "$(echo "$before" | cut -d' ' -f1-2)"
check fault-no-result test ! -e "$out/routers/mlp/result.json"
expect 0 resume study --routers linear,hash,mlp --steps 3 --quantize int4 --validate-every 5 \
  --out "$out"
check resume-one grep -q "(1 to run, 2 finished before)" "$work/resume.log"
check resume-mlp-only bash -c "! grep -q '\[study 1/1 linear\]' '$work/resume.log' && grep -q '\[study 1/1 mlp\]: done' '$work/resume.log'"
expect 0 other-settings study --routers linear,hash --steps 2 --quantize int4 --out "$out"
check other-settings-rerun grep -q "(2 to run, 0 finished before)" "$work/other-settings.log"

# 4. Another model.
expect 0 init-other "$bin" init --arch qwen2_moe --set hidden_size=64 --set num_hidden_layers=2 \
  --set num_experts=8 --set num_experts_per_tok=2 --set moe_intermediate_size=32 \
  --set shared_expert_intermediate_size=128 --set intermediate_size=128 \
  --set num_attention_heads=4 --set num_key_value_heads=2 --out "$work/other"
expect 21 other-model study_on "$work/other" --routers linear --out "$out"
check other-model-named grep -q "holds a study of another model" "$work/other-model.log"
check other-model-kept test -s "$out/routers/linear/result.json"

# 5. BERT: the corpus through the checkpoint's WordPiece vocabulary, masked LM.
bert_study() {
  local model=$1
  shift
  timeout 300 mpirun --oversubscribe -np 2 -x OPENBLAS_NUM_THREADS -x SY_FAULT \
    -x SY_COLLECTIVE_TIMEOUT_S=60 "$bin" study --model "$model" --corpus excerpt --seq-len 32 \
    --eval-tokens 512 --batch 2 --distill-iters 10 --set latency_repeats=3 \
    --set latency_tokens=128 "$@"
}
# bert_figures STUDY ROUTERS LAYERS: every router's losses, latency, load and curve, masked LM.
bert_figures() {
  python3 - "$1/study.json" "$2" "$3" <<'EOF'
import json, sys
s = json.load(open(sys.argv[1]))
want, n_layers = sys.argv[2].split(","), int(sys.argv[3])
rs = {r["router"]: r for r in s["routers"]}
assert list(rs) == want, list(rs)
assert s["settings"]["objective"] == "masked LM", s["settings"]
for name, r in rs.items():
    for k in ("loss_gate", "loss_warm", "loss_tuned", "tokens_per_s"):
        assert r[k] > 0, (name, k, r.get(k))
    assert len(r["layers"]) == n_layers, name
    for l in r["layers"]:
        assert l["router_us_per_1k"] > 0 and l["gemm_us_per_1k"] > 0, (name, l)
        assert sum(int(x) for x in l["load_per_expert"]) == 512 * s["top_k"], (name, l)
    assert r["loss_gate"] == rs["linear"]["loss_gate"], name
assert rs["linear"]["warm_start"].startswith("none")
assert rs["mlp"]["warm_start"] == "distilled" and rs["mlp"]["distill_top1"] > 0
assert len(rs["mlp"]["curve"]) == 3
assert "hash" not in rs or not rs["hash"].get("curve")
print("ok")
EOF
}
bout=$work/bert-study
expect 0 bert-study bert_study "$work/bert" --routers linear,hash,mlp --steps 3 --quantize int4 \
  --out "$bout"
for f in study.json study.md study.html; do check "bert-wrote-$f" test -s "$bout/$f"; done
check bert-figures bert_figures "$bout" linear,hash,mlp 2
check bert-md-objective grep -q "Every loss is the masked LM loss" "$bout/study.md"
check bert-banner grep -q "held-out sequences of 32; masked LM$" "$work/bert-study.log"
expect 0 bert-recompute python3 "$src/tests/launch/study_check.py" "$bout"
cat "$work/bert-recompute.log"
uout=$work/upcycled-study
expect 0 upcycled bert_study "$work/dense" --upcycle-experts 4 --experts-top-k 2 \
  --upcycle-noise 0.01 --routers linear,mlp --steps 3 --quantize none --out "$uout"
check upcycled-figures bert_figures "$uout" linear,mlp 2
check upcycled-banner grep -q "masked LM, upcycled on load" "$work/upcycled.log"
check upcycled-baseline-said grep -q "its gate, the baseline, is a freshly initialized linear" \
  "$uout/study.md"
check upcycled-gate-named grep -q "upcycled model's fresh linear router" "$uout/study.json"
expect 0 upcycled-recompute python3 "$src/tests/launch/study_check.py" "$uout"
cat "$work/upcycled-recompute.log"
exit $fail
