#!/usr/bin/env bash
# The comparison page (runtime/report/compare.h) in a real browser: compare_test writes the
# page of three synthetic runs and the ids of its charts, headless Chromium (Debian's
# `chromium`) loads it, and svg_dom_check.py finds every chart in the DOM Chromium built, once,
# drawn, not nested in another. Exit 77 (ctest skip) without chromium.
# Usage: compare_html_check.sh COMPARE_TEST_BIN WORK_DIR SOURCE_DIR.
set -uo pipefail
test_bin=$1 work=$2 src=$3
browser=$(command -v chromium || command -v chromium-browser || true)
[ -n "$browser" ] || { echo "SKIP: no chromium"; exit 77; }
rm -rf "$work" && mkdir -p "$work"
SY_COMPARE_SAMPLE_DIR=$work "$test_bin" --gtest_filter='Compare.Renderings*' >"$work/test.log" 2>&1 ||
  { echo "FAIL compare_test"; tail -n 20 "$work/test.log"; exit 1; }
timeout 120 "$browser" --headless --no-sandbox --disable-gpu --dump-dom \
  "file://$work/compare.html" >"$work/dom.html" 2>"$work/chromium.log"
[ -s "$work/dom.html" ] || { echo "FAIL chromium dumped no DOM"; tail -n 20 "$work/chromium.log"; exit 1; }
python3 "$src/tests/launch/svg_dom_check.py" "$work/dom.html" "@$work/chart_ids.txt"
