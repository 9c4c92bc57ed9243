#!/usr/bin/env python3
"""Independent safetensors reader for the end-to-end tests (standard library only).

  st_tool.py names FILE                 tensor names, one per line
  st_tool.py compare DIR_A DIR_B [--except SUBSTR] [--only SUBSTR]
      Every tensor of model folder A (model.safetensors or the index's shards) must exist in
      folder B with the same dtype, shape and bytes, except names containing SUBSTR (which
      must DIFFER or be absent from B, so a test sees that they were trained or replaced).
      --only restricts to names with SUBSTR. A checkpoint root stands for its latest step. Prints a summary; exit 1 on any mismatch.
"""
import json
import os
import struct
import sys


def header(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        h = json.loads(f.read(n))
    h.pop("__metadata__", None)
    return h, 8 + n


def tensors(folder):
    """name -> (path, dtype, shape, begin, end) over a model folder (a checkpoint root: its
    latest step folder)."""
    steps = sorted(d for d in os.listdir(folder) if d.startswith("step-"))
    if not os.path.exists(os.path.join(folder, "config.json")) and steps:
        folder = os.path.join(folder, steps[-1])
    idx = os.path.join(folder, "model.safetensors.index.json")
    files = sorted(set(json.load(open(idx))["weight_map"].values())) if os.path.exists(idx) \
        else ["model.safetensors"]
    out = {}
    for fn in files:
        p = os.path.join(folder, fn)
        h, start = header(p)
        for name, e in h.items():
            b, en = e["data_offsets"]
            out[name] = (p, e["dtype"], e["shape"], start + b, start + en)
    return out


def read(rec):
    p, _, _, b, e = rec
    with open(p, "rb") as f:
        f.seek(b)
        return f.read(e - b)


def main(argv):
    if len(argv) >= 2 and argv[0] == "names":
        for n in sorted(header(argv[1])[0]):
            print(n)
        return 0
    if len(argv) >= 3 and argv[0] == "compare":
        a, b = tensors(argv[1]), tensors(argv[2])
        exc = argv[argv.index("--except") + 1] if "--except" in argv else None
        only = argv[argv.index("--only") + 1] if "--only" in argv else None
        same = changed = bad = 0
        for name, ra in sorted(a.items()):
            if only and only not in name:
                continue
            rb = b.get(name)
            if rb is None and exc and exc in name:
                changed += 1  # replaced by another router's parameters
                continue
            if rb is None:
                print("missing in B:", name)
                bad += 1
                continue
            eq = ra[1:3] == rb[1:3] and read(ra) == read(rb)
            if exc and exc in name:
                changed += not eq
                if eq:
                    print("expected a change:", name)
                    bad += 1
            elif eq:
                same += 1
            else:
                print("differs:", name)
                bad += 1
        print(f"{same} tensors bitwise equal, {changed} changed ({exc or '-'}), {bad} problems")
        return 1 if bad else 0
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
