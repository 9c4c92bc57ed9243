#!/usr/bin/env bash
# The projection's time model against measurement (issue 11): a routing trace of the main job's
# synthetic stack (`infer --synthetic`) recorded at P = 1, projected to P = 2 and 4 on this host and to 2 namespace hosts x 2 ranks,
# each beside a real run of the same configuration at that P, with the cluster model calibrated
# on the same layout just before (`switchyard project --calibrate`: the runtime's exchange
# timed between the ranks and hosts of the job, each link tier fitted).
#
#   bash bench/project_validate.sh [--out DIR] [--rounds N] [--no-hosts] [--bin BIN]
#
# Each round runs, for every layout in turn, calibrate -> real run -> project --measured (the
# layouts alternate, so a busy moment hits all of them); the summary gives per layout the
# median over rounds of the measured and projected exchange time per layer and forward, and
# of each round's error. Counts (rows and bytes per rank pair, loads, drops) must be equal in every round.
# `project --measured` defines the measured exchange: count exchange + dispatch + return of
# one forward, each phase the rank that waited least (the last to arrive), median over the
# run's forwards. The time target (within 25%) holds where ranks do not outnumber cores; the
# table says where they do. A benchmark, not a test: run it on a quiet machine.
# --no-hosts skips the namespace layout (it needs root and iproute2; it is skipped, saying
# why, where namespaces cannot be made).
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=$root/out/project_validate rounds=3 hosts=1 bin=$root/build/switchyard
while [ $# -gt 0 ]; do
  case $1 in
    --out) out=$2; shift ;;
    --rounds) rounds=$2; shift ;;
    --no-hosts) hosts=0 ;;
    --bin) bin=$2; shift ;;
    *) echo "project_validate.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OPENBLAS_NUM_THREADS=1
export SY_BIN=$bin
rm -rf "$out" && mkdir -p "$out"
cores=$(nproc)
tokens=65536 batch=2048  # the main job: data.max_tokens, data.group_tokens x data.batch_groups
die() { echo "project_validate.sh: $*" >&2; exit 1; }

echo "trace at P = 1 (the synthetic stack of the main job: infer --synthetic)"
"$bin" infer --synthetic --trace "$out/trace" >"$out/trace.log" 2>&1 || die "trace failed: see $out/trace.log"

cluster=(bash "$root/launch/netns_cluster.sh" --prefix syval --subnet 10.211.9)
layouts="p2 p4"
if [ "$hosts" = 1 ]; then
  "${cluster[@]}" down >/dev/null 2>&1
  if "${cluster[@]}" up 2 >"$out/cluster-up.log" 2>&1; then
    layouts="$layouts 2x2"
    trap '"${cluster[@]}" down >/dev/null 2>&1' EXIT
  else
    echo "2 namespace hosts x 2: skipped ($(tail -n 1 "$out/cluster-up.log"))"
  fi
fi

# launch LAYOUT ARGS...: switchyard on the layout's ranks.
launch() {
  local layout=$1
  shift
  case $layout in
    p2) bash "$root/launch/mpirun.sh" 2 "$@" ;;
    p4) bash "$root/launch/mpirun.sh" 4 "$@" ;;
    2x2) "${cluster[@]}" run 4 "$@" ;;
  esac
}
ranks_of() { case $1 in p2) echo 2 ;; *) echo 4 ;; esac; }
per_node() { case $1 in p2) echo 2 ;; p4) echo 4 ;; 2x2) echo 2 ;; esac; }

for r in $(seq 1 "$rounds"); do
  for layout in $layouts; do
    d=$out/$layout/round$r P=$(ranks_of "$layout")
    mkdir -p "$d"
    launch "$layout" project --calibrate --out "$d/cal" >"$d/calibrate.log" 2>&1 ||
      die "calibrate $layout failed: see $d/calibrate.log"
    launch "$layout" infer --synthetic --out "$d/run" >"$d/run.log" 2>&1 || die "run $layout failed: see $d/run.log"
    "$bin" project "$out/trace" --ep "$P" --gpus-per-node "$(per_node "$layout")" \
      --cluster "$d/cal/cluster.json" --tokens-per-rank $((tokens / P)) --exchange-tokens $batch \
      --measured "$d/run" --out "$d/proj" >"$d/project.log" 2>&1 ||
      die "project $layout failed: see $d/project.log"
    echo "round $r $layout: $(grep -A2 'measured beside' "$d/project.log" | tail -n 1 | sed 's/  */ /g')"
  done
done

python3 - "$out" "$rounds" "$cores" $layouts <<'EOF'
import json, statistics as st, sys
out, rounds, cores, layouts = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
names = {"p2": "P = 2, one host", "p4": "P = 4, one host", "2x2": "2 hosts x 2 ranks"}
print("\nprojection vs measurement, per layer and forward (median over %d rounds; %d cores here)" % (rounds, cores))
print("%-20s %-26s %14s %14s %9s %14s %14s %9s" % ("layout", "counts", "exchange meas", "projected",
      "error", "compute meas", "projected", "error"))
fail = 0
for lay in layouts:
    ms = []
    for r in range(1, rounds + 1):
        j = json.load(open("%s/%s/round%d/proj/projection.json" % (out, lay, r)))
        pt = j["routers"][0]["points"][0]
        ms.append(pt["measured"][0])
    equal = all(m["counts_equal"] for m in ms)
    fail |= not equal
    med = lambda k: st.median(m[k] for m in ms)
    xm, xp, cm, cp = med("exchange_s_mean"), med("projected_exchange_s_mean"), med("compute_s_mean"), med("projected_compute_s_mean")
    # The error: the median over rounds of each round's error (a round's calibration and run
    # see the same load), not the error of the medians.
    xe, ce = med("exchange_error_pct"), med("compute_error_pct")
    ranks = 2 if lay == "p2" else 4
    note = "" if ranks <= cores else "  (%d ranks on %d cores)" % (ranks, cores)
    counts = "equal (%d numbers)" % ms[0]["numbers_compared"] if equal else "DIFFER"
    print("%-20s %-26s %11.1f us %11.1f us %+8.1f%% %11.1f us %11.1f us %+8.1f%%%s" % (
        names[lay], counts, xm * 1e6, xp * 1e6, xe, cm * 1e6, cp * 1e6, ce, note))
    errs = ", ".join("%+.1f%%" % m["exchange_error_pct"] for m in ms)
    print("%-20s exchange error per round: %s" % ("", errs))
sys.exit(1 if fail else 0)
EOF
