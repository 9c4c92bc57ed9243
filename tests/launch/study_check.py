#!/usr/bin/env python3
"""Recomputes some of a study's figures from its saved routing traces, independently of the
C++ code (standard library only), and compares them with study.json.

  study_check.py STUDY_DIR

For every router and MoE layer, from routers/<name>/trace/rank-<r>.safetensors (the run is
dropless, so every token-choice assignment was kept; an expert-choice router offers each token
to all E experts and its kept flags say which took it):
  - rows kept for each expert (the load) == layers[l].load_per_expert (from the load reports);
  - assignments dropped at capacity factor 1.0: per capacity group (one rank's forward: the
    rows of one (rank, step)), C = ceil(1.0 * T * K / E) per expert, an expert with n > C
    assignments drops n - C of them (expert choice: none) == layers[l].drop_fraction_c1;
  - bytes sent to other ranks per token (each kept row D float32 values; expert e lives on rank
    e // (E / P)) == layers[l].bytes_between_ranks_per_token;
  - distinct ranks a token's kept rows go to, mean over tokens == layers[l].ranks_per_token.
Prints one line per router; exit 1 on any difference.
"""
import json
import math
import os
import struct
import sys

from collections import Counter

FORMATS = {"I64": "q", "I32": "i", "U8": "B", "F32": "f"}


def read_safetensors(path):
    with open(path, "rb") as f:
        blob = f.read()
    n = struct.unpack("<Q", blob[:8])[0]
    header = json.loads(blob[8 : 8 + n])
    meta = header.pop("__metadata__", {})
    out = {}
    for name, t in header.items():
        b, e = t["data_offsets"]
        flat = list(memoryview(blob[8 + n + b : 8 + n + e]).cast(FORMATS[t["dtype"]]))
        cols = t["shape"][1] if len(t["shape"]) == 2 else 0
        out[name] = [flat[i : i + cols] for i in range(0, len(flat), cols)] if cols else flat
    return meta, out


def close(a, b, tol=1e-9):
    return abs(a - b) <= tol * max(1.0, abs(a), abs(b))


def check_router(study_dir, study, r):
    E, K, D = study["num_experts"], study["top_k"], study["d_model"]
    P = study["settings"]["ranks"]
    trace_dir = os.path.join(study_dir, r["trace_dir"])
    shards = [read_safetensors(os.path.join(trace_dir, f"rank-{q}.safetensors")) for q in range(P)]
    problems = []
    L = len(r["layers"])
    for l in range(L):
        load = [0] * E
        routed = dropped = 0
        bytes_out = 0
        tokens = 0
        rank_sum = 0
        for q, (meta, t) in enumerate(shards):
            ids = t[f"layer.{l}.topk_ids"]
            kept = t[f"layer.{l}.kept"]
            step = t["step"]
            tokens += len(ids)
            # Expert choice offers every token to all E experts (E slots a row) and keeps what
            # the experts take: no drops by definition. Token choice: K slots a row.
            experts_choose = len(ids[0]) == E and K < E
            groups = {}
            for row, keep, s in zip(ids, kept, step):
                taken = [e for e, k in zip(row, keep) if k]
                owners = [e // (E // P) for e in taken]
                bytes_out += sum(o != q for o in owners) * D * 4
                rank_sum += len(set(owners))
                for e in taken:
                    load[e] += 1
                groups.setdefault(s, []).append(row)
            for rows in groups.values():
                n_e = Counter(e for row in rows for e in row)
                routed += sum(n_e.values())
                if not experts_choose:
                    cap = math.ceil(1.0 * len(rows) * K / E)
                    dropped += sum(max(0, n - cap) for n in n_e.values())
        want = r["layers"][l]
        have_load = [int(x) for x in want.get("load_per_expert", [])]
        if have_load != load:
            problems.append(f"layer {l}: load {have_load} != trace {load}")
        drop = dropped / routed if routed else 0.0
        if not close(drop, want.get("drop_fraction_c1", 0.0)):
            problems.append(f"layer {l}: drops at c=1.0 {want.get('drop_fraction_c1')} != {drop}")
        bpt = bytes_out / tokens
        if not close(bpt, want.get("bytes_between_ranks_per_token", 0.0)):
            problems.append(
                f"layer {l}: bytes per token {want.get('bytes_between_ranks_per_token')} != {bpt}"
            )
        rpt = rank_sum / tokens
        if not close(rpt, want.get("ranks_per_token", 0.0)):
            problems.append(f"layer {l}: ranks per token {want.get('ranks_per_token')} != {rpt}")
    return L, problems


def main():
    study_dir = sys.argv[1]
    with open(os.path.join(study_dir, "study.json")) as f:
        study = json.load(f)
    bad = 0
    for r in study["routers"]:
        L, problems = check_router(study_dir, study, r)
        if problems:
            bad += 1
            print(f"{r['router']}: {len(problems)} difference(s)")
            for p in problems[:10]:
                print("  " + p)
        else:
            print(
                f"{r['router']}: {L} layers: load per expert, drops at c=1.0, bytes to other "
                f"ranks per token and ranks per token equal the trace's"
            )
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
