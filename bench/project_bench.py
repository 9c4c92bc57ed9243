#!/usr/bin/env python3
"""Times `switchyard project` on the issue's target: six 1M-token traces of the default model's
shape (E 16, K 2, 2 MoE layers, sequences of 512), P = 8 .. 1,024, on one core.

The traces are written here (no NumPy needed), with random routing of six different skews
(labelled synthetic routing; recorded kept flags all 1, so the table reports how many of them the
recomputed drops differ from). Usage:
  bench/project_bench.py SWITCHYARD_BIN WORK_DIR [TOKENS]
Prints the command's wall time and its last lines; exit 1 when it fails."""
import array
import json
import os
import random
import struct
import subprocess
import sys
import time

E, K, L, G, BATCH = 16, 2, 2, 512, 4


def write_shard(path, router, N, skew, seed):
    rng = random.Random(seed)
    weights = [1.0 / (e + 1) ** skew for e in range(E)]
    tensors = {}
    tensors["step"] = ("I64", [N], array.array("q", (n // (G * BATCH) for n in range(N))))
    tensors["token_index"] = ("I64", [N], array.array("q", range(N)))
    tensors["token_id"] = ("I32", [N], array.array("i", (rng.randrange(50257) for _ in range(N))))
    for l in range(L):
        ids, w = array.array("i"), array.array("f")
        for _ in range(N):
            a = rng.choices(range(E), weights)[0]
            b = a
            while b == a:
                b = rng.choices(range(E), weights)[0]
            p = rng.uniform(0.2, 0.6)
            ids.extend((a, b))
            w.extend((p, p * rng.uniform(0.3, 1.0)))
        tensors[f"layer.{l}.topk_ids"] = ("I32", [N, K], ids)
        tensors[f"layer.{l}.topk_weights"] = ("F32", [N, K], w)
        tensors[f"layer.{l}.kept"] = ("U8", [N, K], array.array("B", bytes(N * K * [1])))
    meta = {"format": "switchyard.trace", "version": "1", "source": "infer", "model": "synthetic",
            "router": router, "synthetic_routing": "1", "experts": str(E), "top_k": str(K),
            "layers": json.dumps(list(range(L))), "capacity_factor": "1.25",
            "group_tokens": str(G), "probs": "0", "rank": "0", "world_size": "1", "host": "bench",
            "first_step": "0", "steps": str((N + G * BATCH - 1) // (G * BATCH)),
            "tokens": str(N)}
    header, blobs, off = {"__metadata__": meta}, [], 0
    for name in sorted(tensors):
        dtype, shape, arr = tensors[name]
        b = arr.tobytes()
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h)
        for b in blobs:
            f.write(b)


def main():
    binary, work = sys.argv[1], sys.argv[2]
    N = int(sys.argv[3]) if len(sys.argv) > 3 else 1 << 20
    routers = ["linear", "mlp", "hash", "expert_choice", "soft", "random"]
    dirs = []
    for i, r in enumerate(routers):
        d = os.path.join(work, f"trace-{r}")
        if not os.path.exists(os.path.join(d, "rank-0.safetensors")):
            write_shard(os.path.join(d, "rank-0.safetensors"), r, N, 0.2 * i, 1234 + i)
        dirs.append(d)
    cmd = ["taskset", "-c", "0", binary, "project", ",".join(dirs), "--ep",
           "8,16,32,64,128,256,512,1024", "--out", os.path.join(work, "out")]
    t0 = time.time()
    p = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.time() - t0
    print("\n".join(p.stdout.splitlines()[-12:]))
    print(p.stderr[-2000:])
    print(f"project: {N} tokens x {len(routers)} routers, P = 8..1024: {wall:.1f} s wall, one core")
    return p.returncode


if __name__ == "__main__":
    sys.exit(main())
