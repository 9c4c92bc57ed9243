#!/usr/bin/env bash
# Across hosts, load reports: 4 ranks over 2 network-namespace hosts write 4 reports, each
# naming its rank's host (ranks 0, 1 on h1; 2, 3 on h2), and `switchyard report` merges them
# with the hosts per rank in cluster.json.
# Usage: multihost_report.sh SWITCHYARD_BIN WORK_DIR DATA_DIR SOURCE_DIR. Exit 77 (ctest skip)
# where namespaces cannot be made or without the GPT-2 tokenizer.
set -uo pipefail
bin=$1 work=$2 data=$3 src=$4
export SY_COLLECTIVE_TIMEOUT_S=60
# shellcheck source=tests/launch/multihost_lib.sh
source "$src/tests/launch/multihost_lib.sh"
mh_begin mhr 10.213.2 tokenizer

expect 0 run-2x2 crun 4 infer --data-dir "$data" --corpus excerpt --max-tokens 1536 \
  --set data.group_tokens=128 --set moe.num_experts=8 --set moe.d_model=64 --set moe.ffn_hidden=96 \
  --out "$work/reports"
expect 0 report "$bin" report "$work/reports"
want=(h1 h1 h2 h2)
for r in 0 1 2 3; do
  got=$(grep -o '"host": *"[^"]*"' "$work/reports/rank-$r.json" | sed 's/.*"\([^"]*\)"$/\1/')
  if [ "$got" = "${want[$r]}" ]; then echo "ok   rank $r's report: host $got"; else
    echo "FAIL rank $r's report: host '$got', expected ${want[$r]}"; fail=1; fi
done
# cluster.json: the merged report names each rank's host
python3 - "$work/reports/cluster.json" <<'PY' || fail=1
import json, sys
c = json.load(open(sys.argv[1]))
hosts = []
def walk(x):
    if isinstance(x, dict):
        if "host" in x and "rank" in x: hosts.append((x["rank"], x["host"]))
        for v in x.values(): walk(v)
    elif isinstance(x, list):
        for v in x: walk(v)
walk(c)
got = sorted(set(hosts))
want = [(0, "h1"), (1, "h1"), (2, "h2"), (3, "h2")]
if got != want:
    print(f"FAIL cluster.json: rank/host pairs {got}, expected {want}"); sys.exit(1)
print(f"ok   cluster.json: rank/host pairs {got}")
# The tier split, against the rank reports' own rows and bytes per peer: inter-host is what a
# rank on h1 sent to one on h2 and back, intra-host what stayed on a host between two ranks.
host = {r: h for r, h in want}
tiers = {"same_rank": [0, 0], "intra_host": [0, 0], "inter_host": [0, 0]}
for r in range(4):
    rep = json.load(open(sys.argv[1].replace("cluster.json", f"rank-{r}.json")))
    for e in rep["entries"]:
        for q, (rows, nbytes) in enumerate(zip(e["rows_sent_to_peer"], e["bytes_sent_to_peer"])):
            t = "same_rank" if q == r else "intra_host" if host[q] == host[r] else "inter_host"
            tiers[t][0] += int(rows); tiers[t][1] += int(nbytes)
split = c["traffic_split"]
for t, (rows, nbytes) in tiers.items():
    got_t = (int(split[t]["rows"]), int(split[t]["bytes"]))
    if got_t != (rows, nbytes):
        print(f"FAIL cluster.json {t}: rows/bytes {got_t}, the rank reports say {(rows, nbytes)}")
        sys.exit(1)
if c["num_hosts"] != 2 or tiers["inter_host"][1] == 0:
    print(f"FAIL cluster.json: num_hosts {c['num_hosts']}, inter-host bytes {tiers['inter_host'][1]}")
    sys.exit(1)
print(f"ok   traffic split (rows, bytes): {tiers}")
PY
[ $fail = 0 ] && echo "multihost_report: all checks passed"
exit $fail
