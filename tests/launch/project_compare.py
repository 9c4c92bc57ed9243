#!/usr/bin/env python3
"""Projection == measurement, exactly: projection.json (switchyard project, one router, one P)
against the load reports of a real run at that P (rank-<r>.json under --out): per layer, rows
and bytes per rank pair (both directions), routed and dropped assignments per expert, rows
received per expert. Exit 1 with the first difference. Usage: project_compare.py JSON REPORTS"""
import glob, json, sys
proj, reps = sys.argv[1], sys.argv[2]
pt = json.load(open(proj))["routers"][0]["points"][0]
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
