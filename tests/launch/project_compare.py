#!/usr/bin/env python3
"""Projection == measurement, exactly: projection.json (switchyard project, one router, one P)
against the load reports of a real run at that P (rank-<r>.json under --out): per layer, rows
and bytes per rank pair (both directions), routed and dropped assignments per expert, rows
received per expert. With CLUSTER (the merged report of `switchyard report REPORTS`), also: its
ranks' hosts are the projection's nodes (--gpus-per-node consecutive ranks each), and per layer
and over all layers its same-rank / intra-host / inter-host rows and bytes equal the
projection's self / same-node / other-node ones. Exit 1 with the first difference.
Usage: project_compare.py JSON REPORTS [CLUSTER]"""
import glob, json, sys
proj, reps = sys.argv[1], sys.argv[2]
pj = json.load(open(proj))
pt = pj["routers"][0]["points"][0]
ranks = [json.load(open(f)) for f in sorted(glob.glob(reps + "/rank-*.json"))]
P = len(ranks)
assert pt["ranks"] == P, (pt["ranks"], P)
checked = 0
for L in pt["layers"]:
    l = L["layer"]
    E = len(L["routed_E"])
    routed = [0] * E; dropped = [0] * E; kept = [0] * E
    for rk in ranks:
        r = rk["rank"]
        sent = [0] * P; recv = [0] * P; bs = [0] * P; br = [0] * P
        for e in rk["entries"]:
            if e["layer"] != l: continue
            for d in range(P):
                sent[d] += int(e["rows_sent_to_peer"][d]); recv[d] += int(e["rows_recv_from_peer"][d])
                bs[d] += int(e["bytes_sent_to_peer"][d]); br[d] += int(e["bytes_recv_from_peer"][d])
            for x in range(E):
                routed[x] += int(e["routed_per_expert"][x]); dropped[x] += int(e["dropped_per_expert"][x])
            for j, v in enumerate(e["received_per_local_expert"]):
                kept[rk["local_expert_begin"] + j] += int(v)
        want = dict(sent=[L["pair_rows"][r][d] for d in range(P)],
                    recv=[L["pair_rows"][d][r] for d in range(P)],
                    bs=[L["pair_bytes"][r][d] for d in range(P)],
                    br=[L["pair_bytes"][d][r] for d in range(P)])
        got = dict(sent=sent, recv=recv, bs=bs, br=br)
        for k in want:
            assert want[k] == got[k], "layer %d rank %d %s: projected %s, measured %s" % (l, r, k, want[k], got[k])
            checked += P
    assert routed == L["routed_E"], ("routed_E", l, routed, L["routed_E"])
    assert dropped == L["dropped_E"], ("dropped_E", l, dropped, L["dropped_E"])
    assert kept == [a - b for a, b in zip(L["routed_E"], L["dropped_E"])], ("kept", l)
    checked += 3 * E
print("exact: P=%d, %d layers, %d numbers equal (rows and bytes per rank pair, loads, drops)" % (P, len(pt["layers"]), checked))
if len(sys.argv) > 3:
    c = json.load(open(sys.argv[3]))
    gpn = pj["cluster"]["gpus_per_node"]
    hosts = c["rank_hosts"]
    nodes = [sorted(r for r in range(P) if r // gpn == n) for n in range(pt["nodes"])]
    by_host = sorted(sorted(r for r in range(P) if hosts[r] == h) for h in set(hosts))
    assert by_host == nodes, "hosts per rank %s, projected nodes %s" % (hosts, nodes)
    pairs = (("self", "same_rank"), ("same_node", "intra_host"), ("other_node", "inter_host"))
    want_all = {t: [0, 0] for t, _ in pairs}
    split = {int(S.get("layer", 0)): S["traffic_split"] for S in c["layers"]}
    for L in pt["layers"]:
        for t, h in pairs:
            want = [L["rows_sent_total"][t], L["bytes_sent_total"][t]]
            got = [int(split[L["layer"]][h]["rows"]), int(split[L["layer"]][h]["bytes"])]
            assert want == got, "layer %d: projected %s rows, bytes %s, report's %s %s" % (L["layer"], t, want, h, got)
            want_all[t] = [a + b for a, b in zip(want_all[t], want)]
    for t, h in pairs:
        got = [int(c["traffic_split"][h]["rows"]), int(c["traffic_split"][h]["bytes"])]
        assert want_all[t] == got, "all layers: projected %s rows, bytes %s, report's %s %s" % (t, want_all[t], h, got)
    print("tiers: hosts %s; projected self/same-node/other-node = the report's same-rank/intra-host/inter-host "
          "(rows, bytes over all layers: %s)" % (" ".join(hosts), " / ".join("%d, %d" % tuple(want_all[t]) for t, _ in pairs)))
